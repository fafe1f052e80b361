"""Subnormal floats in attention: what a constant additive mask does to a softmax and the product after it.

exp(x) of a float32 is subnormal for x in (-103.97, -87.34). An additive attention mask of -100
(Swin's shifted windows, as torchvision and timm write it) makes the softmax emit subnormal
probabilities, and x86 CPUs compute with subnormal operands through microcode assists (ONNX Runtime
does not flush them to zero unless the session sets `session.set_denormal_as_zero`). On the
development host a masked softmax costs 22 ns and the attn·V product 3.9 ns per subnormal element
x output column more: 50x the product's normal time, 30 ms of Swin-T's 200 ms. The profile's
overheads `subnormal_exp` and `subnormal_mac` (calibrate.py) price them.
"""

from __future__ import annotations

import numpy as np

from ..graph.walk import is_constant, producer

SUBNORMAL_EXP = (-103.97, -87.34)
PASS_THROUGH = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Transpose"})


def _skip_views(node):
    while node is not None and node.op in PASS_THROUGH:
        node = producer(node.inputs[0])
    return node


def mask_share(values) -> float:
    """The share of mask values that put exp() of a score in the subnormal range."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = SUBNORMAL_EXP
    return float(np.mean((v > lo) & (v <= hi))) if v.size else 0.0


def subnormal_fraction(t) -> float:
    """The share of a softmax's output (or of a tensor it flows into through reshapes) that is
    subnormal: the share of a constant additive mask on its scores (through Adds and reshapes)
    whose values put exp() in the subnormal range. 0 when there is none; a mask computed from an
    input cannot be read, so it counts as none."""
    node = _skip_views(producer(t))
    if node is None or node.op != "Softmax":
        return 0.0
    node = _skip_views(producer(node.inputs[0]))
    while node is not None and node.op == "Add":
        scores = None
        for x in node.inputs:
            if is_constant(x):
                share = mask_share(x.values)
                if share > 0:
                    return share
            elif scores is None:
                scores = producer(x)
        node = _skip_views(scores)
    return 0.0


PROBE = (48, 49, 32)  # (batch, tokens, head dim): a Swin-T stage-3 window attention
PROBE_MASKED = 0.5


def probe_model(masked: float, probe=PROBE):
    """scores [b, t, t] (scaled by 0.1: the row max stays near 0) + a constant mask with -100 on the
    first `masked` share of each row -> Softmax -> x V [b, t, d]; nodes named softmax and product."""
    from onnx import helper, numpy_helper

    from ..bench.calibrate import _model

    b, t, d = probe
    mask = np.zeros((1, t, t), np.float32)
    mask[..., : int(round(masked * t))] = -100.0
    inits = [numpy_helper.from_array(np.float32(0.1), "scale"), numpy_helper.from_array(mask, "mask")]
    nodes = [helper.make_node("Mul", ["s", "scale"], ["s1"], name="scale"),
             helper.make_node("Add", ["s1", "mask"], ["s2"], name="mask"),
             helper.make_node("Softmax", ["s2"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="product")]
    return _model(nodes, inits, {"s": [b, t, t], "v": [b, t, d]}, "y")


def probe_seconds(masked: float, *, threads: int, runs: int, flush: bool) -> dict[str, float]:
    """Kernel seconds of the probe's softmax and product (profiler, less its own cost)."""
    from ..bench.calibrate import kernel_times

    times = kernel_times(probe_model(masked), threads=threads, runs=runs, flush=flush, net=True)
    return {k: times[k] for k in ("softmax", "product")}


def overheads(plain: dict[str, float], masked: dict[str, float], probe=PROBE,
              share: float = PROBE_MASKED) -> dict[str, float]:
    """Seconds per subnormal softmax output ("subnormal_exp") and per subnormal MAC of the product
    after it ("subnormal_mac"), from the probe timed without and with its mask."""
    b, t, d = probe
    count = b * t * int(round(share * t))
    return {"subnormal_exp": max(masked["softmax"] - plain["softmax"], 0.0) / count,
            "subnormal_mac": max(masked["product"] - plain["product"], 0.0) / (count * d)}
