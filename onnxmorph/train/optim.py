"""Optimizer step graphs (AdamW, SGD with momentum) as plain ONNX models.

One model updates every parameter: inputs are the learning rate and bias corrections (host
scalars), then per parameter its value, gradient and state; outputs the new value and state. The
engine binds parameters and state as device OrtValues, so a step moves no weights to the host.
AdamW follows PyTorch's (and onnxruntime-training's) update:
    p <- p - lr*wd*p;  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxMorphError

LR, BC1, BC2 = "opt__lr", "opt__bc1", "opt__bc2"  # bc1 = 1/(1-b1^t), bc2 = 1/sqrt(1-b2^t)


@dataclass
class OptimizerSpec:
    kind: str = "adamw"  # adamw | sgd
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6  # onnxruntime-training's AdamW default
    weight_decay: float = 0.0
    momentum: float = 0.9

    @property
    def states(self) -> tuple[str, ...]:
        """Per-parameter state tensors, named `<state>__<param>`."""
        return ("m", "v") if self.kind == "adamw" else ("mom",)

    def scalars(self, lr: float, step: int) -> dict[str, np.ndarray]:
        """Host-side scalars for step `step` (1-based)."""
        out = {LR: np.array(lr, np.float32)}
        if self.kind == "adamw":
            b1, b2 = self.betas
            out[BC1] = np.array(1.0 / (1.0 - b1 ** step), np.float32)
            out[BC2] = np.array(1.0 / np.sqrt(1.0 - b2 ** step), np.float32)
        return out


def optimizer_spec(name: str) -> OptimizerSpec:
    if name not in ("adamw", "sgd"):
        raise OnnxMorphError(f"unknown optimizer '{name}': use adamw or sgd")
    return OptimizerSpec(kind=name)


def state_name(state: str, param: str) -> str:
    return f"{state}__{param}"


def new_name(name: str) -> str:
    return f"{name}__new"


def step_model(spec: OptimizerSpec, params: dict[str, tuple[list[int], int]], opset: int = 17) -> onnx.ModelProto:
    """The step graph for `params` (name -> (shape, onnx element type)); gradients come as `grad__<p>`."""
    nodes, inits, inputs, outputs = [], [], [], []
    scalar_names = [LR] + ([BC1, BC2] if spec.kind == "adamw" else [])
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in scalar_names]

    def const(value, name):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    b1, b2 = spec.betas
    k = {"b1": const(b1, "k_b1"), "1-b1": const(1 - b1, "k_1mb1"), "b2": const(b2, "k_b2"),
         "1-b2": const(1 - b2, "k_1mb2"), "eps": const(spec.eps, "k_eps"), "mom": const(spec.momentum, "k_mom"),
         "decay": const(1.0, "k_one")}
    for p, (shape, dtype) in params.items():
        if dtype != TensorProto.FLOAT:
            raise OnnxMorphError(f"parameter '{p}' is not float32: the optimizer graphs train float32 weights")
        g = f"grad__{p}"
        vi = lambda n: helper.make_tensor_value_info(n, dtype, shape)  # noqa: E731
        inputs += [vi(p), vi(g)] + [vi(state_name(s, p)) for s in spec.states]
        outputs += [vi(new_name(p))] + [vi(new_name(state_name(s, p))) for s in spec.states]

        def op(kind, ins, out=None, _p=p, **attrs):
            out = out or f"{_p}__{kind}{len(nodes)}"
            nodes.append(helper.make_node(kind, ins, [out], **attrs))
            return out

        if spec.kind == "adamw":
            m, v = state_name("m", p), state_name("v", p)
            m_new = op("Add", [op("Mul", [m, k["b1"]]), op("Mul", [g, k["1-b1"]])], new_name(m))
            v_new = op("Add", [op("Mul", [v, k["b2"]]), op("Mul", [op("Mul", [g, g]), k["1-b2"]])], new_name(v))
            denom = op("Add", [op("Mul", [op("Sqrt", [v_new]), BC2]), k["eps"]])
            step = op("Mul", [op("Div", [m_new, denom]), op("Mul", [LR, BC1])])
            base = p
            if spec.weight_decay:
                keep = op("Sub", [k["decay"], op("Mul", [LR, const(spec.weight_decay, f"k_wd_{p}")])])
                base = op("Mul", [p, keep])
            op("Sub", [base, step], new_name(p))
        else:
            mom = state_name("mom", p)
            mom_new = op("Add", [op("Mul", [mom, k["mom"]]), g], new_name(mom))
            op("Sub", [p, op("Mul", [mom_new, LR])], new_name(p))
    graph = helper.make_graph(nodes, "onnxmorph_optimizer", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnxmorph")
    model.ir_version = 8
    return model


def accumulate_model(params: dict[str, tuple[list[int], int]]) -> onnx.ModelProto:
    """acc__new = acc + grad for every parameter (gradient accumulation across micro-batches)."""
    nodes, inputs, outputs = [], [], []
    for p, (shape, dtype) in params.items():
        a, g = state_name("acc", p), f"grad__{p}"
        inputs += [helper.make_tensor_value_info(a, dtype, shape), helper.make_tensor_value_info(g, dtype, shape)]
        outputs.append(helper.make_tensor_value_info(new_name(a), dtype, shape))
        nodes.append(helper.make_node("Add", [a, g], [new_name(a)]))
    graph = helper.make_graph(nodes, "onnxmorph_accumulate", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxmorph")
    model.ir_version = 8
    return model
