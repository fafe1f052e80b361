"""Assemble the training graph: student (instrumented, lowered) + distillation/CE loss + cost regularizer.

Everything that must not receive a gradient (teacher targets, the per-unit cost weights of the
regularizer, its strength, gate noise) enters as a graph input fed each step from numpy, which is
how MorphNet's "alive counts held constant" is expressed without a stop-gradient op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..graph.builder import NodeBuilder
from ..graph.export import export_graph
from ..graph.outputs import classify_output
from ..ops import LINEAR_OPS, WEIGHT_SLOTS
from .lowering import lower_for_training


REG_WEIGHTS = "onnxmorph_reg_weights"
REG_STRENGTH = "onnxmorph_reg_strength"
LABELS = "onnxmorph_labels_onehot"
UNIT_MASK = "onnxmorph_unit_mask"  # per-unit 0/1 multiplier of every gate (recovery fine-tuning)
TOP1_PREFIX = "onnxmorph_top1__"  # per class output: 1.0 where student and teacher agree on the top class


@dataclass
class LossSpec:
    """How each model output is matched: "kl" (logits, with temperature), "probs" (KL against
    probabilities the model already outputs), "mse", or "skip"."""

    kinds: dict[str, str]
    temperature: float = 4.0
    label_output: str | None = None  # the logits output compared with labels (cross-entropy)
    num_classes: int = 0
    distill_weight: float = 1.0  # weight of distillation when labels are given (CE weight is 1 - it)
    scales: dict[str, object] = field(default_factory=dict)  # per MSE output: the teacher's std (per channel)
    class_axes: dict[str, int] = field(default_factory=dict)  # per "probs" output: its class axis


@dataclass
class TrainingGraph:
    model: onnx.ModelProto
    trainable: list[str]
    targets: dict[str, str]  # model output -> input fed with the teacher's target
    outputs: list[str]  # loss first, then diagnostics
    notes: list[str] = field(default_factory=list)


def weight_initializers(graph: gs.Graph) -> list[str]:
    names = []
    for node in graph.nodes:
        slots = WEIGHT_SLOTS.get(node.op, ())
        if node.op == "Add" and node.inputs and any(
                p.op in LINEAR_OPS for t in node.inputs if not isinstance(t, gs.Constant) for p in t.inputs):
            slots = tuple(i for i, t in enumerate(node.inputs) if isinstance(t, gs.Constant))  # a Linear's bias
        for i in slots:
            if i < len(node.inputs):
                t = node.inputs[i]
                if isinstance(t, gs.Constant) and t.values.dtype == np.float32 and t.values.size > 0 \
                        and t.name not in names:
                    names.append(t.name)
    return names


def loss_spec(teacher: dict[str, np.ndarray], temperature: float) -> LossSpec:
    """How to match each output, from the teacher's values (`graph.outputs`): KL for logits and for
    probabilities, MSE scaled by the teacher's spread per channel for dense outputs."""
    spec = LossSpec(kinds={}, temperature=temperature)
    for name, v in teacher.items():
        kind = classify_output(v)
        spec.kinds[name] = {"logits": "kl", "probs": "probs", "dense": "mse"}.get(kind.kind, "skip")
        if kind.kind == "probs":
            spec.class_axes[name] = kind.class_axis
        elif kind.kind == "dense":
            v = np.asarray(v, np.float64)
            overall = float(v.std()) + 1e-8
            if v.ndim >= 2:
                per = v.swapaxes(0, 1).reshape(v.shape[1], -1).std(axis=1)
                spec.scales[name] = np.sqrt(per ** 2 + (0.1 * overall) ** 2)  # near-constant channels
            else:
                spec.scales[name] = overall
    return spec


def _mean_all(b: NodeBuilder, x):
    return b.op("ReduceMean", [x], {"keepdims": 0})


def _sum_all(b: NodeBuilder, x):
    return b.op("ReduceSum", [x], {"keepdims": 0})


def _top1_hits(b: NodeBuilder, out, target, axis: int):
    """1.0 where the student's top class is the teacher's, per sample and position (no gradient)."""
    top = [b.op("ArgMax", [t], {"axis": axis, "keepdims": 0}, dtype=np.int64) for t in (out, target)]
    return b.op("Cast", [b.op("Equal", top, dtype=np.bool_)], {"to": onnx.TensorProto.FLOAT})


def _task_loss(b: NodeBuilder, graph: gs.Graph, spec: LossSpec, targets: dict[str, str], hits: dict):
    terms = []
    for out in list(graph.outputs):
        kind = spec.kinds.get(out.name, "mse")
        if kind == "skip":
            continue
        shape = [int(d) for d in out.shape]
        target = b.input(f"onnxmorph_target__{out.name}", shape)
        targets[out.name] = target.name
        if kind in ("kl", "probs"):
            # KL(p_teacher || q_student) per position; the teacher's log-probs come as a second input
            logp = b.input(f"onnxmorph_target_logp__{out.name}", shape)
            targets[f"{out.name}::logp"] = logp.name
            if kind == "kl":  # logits [N, C]: T^2 * KL at temperature T
                t = spec.temperature
                logq = b.op("LogSoftmax", [b.op("Div", [out, b.const(t)])], {"axis": 1})
                weight = t * t / shape[0]
            else:  # probabilities (softmax already applied; CTC [N, T, C] too): per position
                logq = b.op("Log", [b.op("Add", [out, b.const(1e-8)])])
                weight = 1.0 / (int(np.prod(shape)) // shape[spec.class_axes.get(out.name, -1)])
            kl = _sum_all(b, b.op("Mul", [target, b.op("Sub", [logp, logq])]))
            terms.append(b.op("Mul", [kl, b.const(weight)]))
            axis = (1 if kind == "kl" else spec.class_axes.get(out.name, -1)) % len(shape)
            hits[out.name] = (_top1_hits(b, out, target, axis), shape[:axis] + shape[axis + 1:])
        else:
            # divided by the teacher's spread (per channel where given), so outputs and channels of
            # any scale weigh alike
            scale = np.asarray(spec.scales.get(out.name, 1.0), np.float32)
            if scale.ndim == 1 and len(shape) >= 2:
                scale = scale.reshape([1, -1] + [1] * (len(shape) - 2))
            diff = b.op("Div", [b.op("Sub", [out, target]), b.const(scale)])
            terms.append(_mean_all(b, b.op("Mul", [diff, diff])))
    if not terms:
        raise ValueError("the model has no float outputs to distill")
    task = terms[0]
    for t in terms[1:]:
        task = b.op("Add", [task, t])
    if spec.label_output is not None:
        out = next(o for o in graph.outputs if o.name == spec.label_output)
        shape = [int(d) for d in out.shape]
        onehot = b.input(LABELS, shape)
        if spec.kinds.get(out.name) == "probs":
            logp = b.op("Log", [b.op("Add", [out, b.const(1e-8)])])
        else:
            logp = b.op("LogSoftmax", [out], {"axis": 1})
        rows = int(np.prod(shape)) // shape[spec.class_axes.get(out.name, 1)]  # samples x positions
        ce = b.op("Mul", [_sum_all(b, b.op("Mul", [onehot, logp])), b.const(-1.0 / rows)])
        w = spec.distill_weight
        task = b.op("Add", [b.op("Mul", [task, b.const(w)]), b.op("Mul", [ce, b.const(1.0 - w)])])
    return task


def build_training_graph(analysis, method, spec: LossSpec, engine: str = "onnxmorph") -> TrainingGraph:
    """The training ModelProto for `analysis` (at the training batch size) instrumented by `method`;
    `engine` "ort-training" adds the rewrites of ops onnxruntime-training cannot differentiate."""
    graph = analysis.loaded.graph()
    trainable = weight_initializers(graph)
    b = NodeBuilder(graph, "onnxmorph")
    inst = method.instrument(graph, analysis, b)
    trainable += list(inst.params)
    rewritten = lower_for_training(graph, ort_training=engine == "ort-training")
    targets: dict[str, str] = {}
    hits: dict = {}
    task = _task_loss(b, graph, spec, targets, hits)
    weights = b.input(REG_WEIGHTS, [analysis.num_units])
    strength = b.input(REG_STRENGTH, [])
    reg = _sum_all(b, b.op("Mul", [inst.reg_vector, weights]))
    loss = b.op("Add", [task, b.op("Mul", [reg, strength])], name="onnxmorph_loss")
    task_out = b.op("Identity", [task], name="onnxmorph_task_loss")
    reg_out = b.op("Identity", [reg], name="onnxmorph_reg_value")
    vec_out = b.op("Identity", [inst.reg_vector], name="onnxmorph_reg_vector")
    outputs = [(loss, []), (task_out, []), (reg_out, []), (vec_out, [analysis.num_units])] + [
        (b.op("Identity", [t], name=f"onnxmorph_extra__{k}"), inst.extra_shapes.get(k))
        for k, t in inst.extra_outputs.items()] + [
        (b.op("Identity", [t], name=f"{TOP1_PREFIX}{k}"), shape) for k, (t, shape) in hits.items()]
    for t, shape in outputs:  # graph outputs need declared shapes for the artifact generator
        t.dtype, t.shape = np.float32, shape
    graph.outputs = [t for t, _ in outputs]
    model = export_graph(graph, analysis.loaded, infer_shapes=True)
    return TrainingGraph(model, trainable, targets, [t.name for t in graph.outputs],
                         [f"training graph rewrites: {', '.join(sorted(set(rewritten)))}"] if rewritten else [])
