"""What ONNX Runtime's CPU graph optimizer makes of a model, read from the optimized graph itself.

The latency of a node depends on what the runtime runs: a BatchNorm after a conv is folded into
it, a Relu is applied inside the conv kernel while a Clip or HardSigmoid costs an extra pass over
its output, HardSwish is expanded into two kernels, and tensors that cross between the blocked
NCHWc layout and plain NCHW are copied by ReorderInput/ReorderOutput nodes. Rather than imitate
the optimizer's rules, `ort_plan` asks it: it optimizes the model once (all levels, one thread) and
maps the kernels of the optimized graph back to the nodes and tensors of the original.

The plan is made on the unpruned model and applied to every keep-mask: fusions and layout choices
do not change when channel counts are cut to multiples of the runtime's block size.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..ops import VIEW_KERNELS
from ..runtime import onnxruntime

NCHWC_SUFFIX = "_nchwc"
REORDERS = ("ReorderInput", "ReorderOutput")
CONV_OPS = ("Conv", "FusedConv")
# activations MLAS applies inside the convolution's kernel loop; others run as a pass over the output
FREE_ACTIVATIONS = ("Relu", "")


@dataclass
class RuntimePlan:
    """Per original node, how many kernels it runs as (`kernels`; absent: folded into another
    node) and which (`ops`: the op types of those that pass over data; `views`: how many only
    re-label a buffer), the nodes folded into a conv that still cost a pass over its output
    (`activation_pass`), and the original tensors copied between layouts (`reordered`)."""

    kernels: Counter = field(default_factory=Counter)
    ops: dict[str, list[str]] = field(default_factory=dict)
    views: Counter = field(default_factory=Counter)
    activation_pass: set[str] = field(default_factory=set)
    reordered: set[str] = field(default_factory=set)
    runtime: str = ""

    def passes(self, node: str) -> int:
        return self.kernels.get(node, 0)


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider runs for `model` (weights left out)."""
    ort = onnxruntime()

    with tempfile.TemporaryDirectory(prefix="onnxmorph-plan-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(path)
        # weights go to a side file that is never read back: the plan needs the graph only
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "64")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(str(path), load_external_data=False)


def plan_from_graphs(original: onnx.GraphProto, optimized: onnx.GraphProto) -> RuntimePlan:
    """Map the kernels of `optimized` back to the nodes and tensors of `original`."""
    names = {n.name for n in original.node if n.name}
    producer = {t: n for n in original.node for t in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for k in optimized.node:
        for t in k.input:
            consumers.setdefault(t, []).append(k)
    plan = RuntimePlan()
    for k in optimized.node:
        if k.op_type in REORDERS:
            tensor = k.input[0] if k.op_type == "ReorderInput" else k.output[0]
            if tensor in producer or any(i.name == tensor for i in original.input):
                plan.reordered.add(tensor)
            continue
        anchor = _anchor_or_consumer(k, names, producer, consumers)
        if anchor is None:
            continue
        plan.kernels[anchor] += 1
        if k.op_type in CONV_OPS:
            act = next((a.s.decode() for a in k.attribute if a.name == "activation"), "")
            last = producer.get(k.name[: -len(NCHWC_SUFFIX)]) if k.name.endswith(NCHWC_SUFFIX) else None
            last = last or producer.get(k.output[0])
            if act not in FREE_ACTIVATIONS and last is not None and last.op_type not in CONV_OPS:
                plan.activation_pass.add(last.name)
        elif k.op_type in VIEW_KERNELS:
            plan.views[anchor] += 1
        else:
            plan.ops.setdefault(anchor, []).append(k.op_type)
    return plan


def _anchor_or_consumer(k: onnx.NodeProto, names: set[str], producer: dict, consumers: dict, depth: int = 4):
    """`_anchor`, or for a kernel the optimizer made up (the HardSigmoid of an expanded HardSwish,
    the Split that replaces a fan of Gathers) the anchor of the first kernel that reads it."""
    anchor = _anchor(k, names, producer)
    if anchor is not None or depth == 0:
        return anchor
    for t in k.output:
        for c in consumers.get(t, []):
            anchor = _anchor_or_consumer(c, names, producer, consumers, depth - 1)
            if anchor is not None:
                return anchor
    return None


def _anchor(k: onnx.NodeProto, names: set[str], producer: dict) -> str | None:
    """The original node an optimized kernel stands for: same name (or a fusion named after it), the node named by an NCHWc
    kernel's `<tensor>_nchwc` name, or the producer of its first original output."""
    if k.name in names:
        return k.name
    if "/" in k.name and k.name.split("/")[0] in names:  # "<node>/<Fusion>/" (onnxruntime >= 1.20)
        return k.name.split("/")[0]
    if k.name.endswith(NCHWC_SUFFIX):
        p = producer.get(k.name[: -len(NCHWC_SUFFIX)])
        if p is not None:
            if k.op_type in CONV_OPS:  # named after its last fused op: walk back to the conv
                while p is not None and p.op_type not in ("Conv", "ConvTranspose") and p.input:
                    p = producer.get(p.input[0])
            if p is not None:
                return p.name
    for t in k.output:
        if t in producer:
            return producer[t].name
    return None


def ort_plan(model: onnx.ModelProto) -> RuntimePlan | None:
    """The plan of ONNX Runtime's CPU provider for `model`, or None when it cannot be made (the
    latency model then falls back to its built-in approximation of the optimizer's rules)."""
    try:
        ort = onnxruntime()
        plan = plan_from_graphs(model.graph, optimized_graph(model).graph)
        plan.runtime = f"onnxruntime {ort.__version__} CPU"
        return plan
    except Exception:  # a plan is an accuracy refinement, never a reason to fail a prune
        return None
