"""Timing the subnormal costs of masked attention (see analysis/subnormal.py): a softmax over a
-100 mask and the product after it, timed without and with the mask."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from .timing import kernel_times, small_model


PROBE = (48, 49, 32)  # (batch, tokens, head dim): a Swin-T stage-3 window attention


PROBE_MASKED = 0.5


def probe_model(masked: float, probe=PROBE):
    """scores [b, t, t] (scaled by 0.1: the row max stays near 0) + a constant mask with -100 on the
    first `masked` share of each row -> Softmax -> x V [b, t, d]; nodes named softmax and product."""

    b, t, d = probe
    mask = np.zeros((1, t, t), np.float32)
    mask[..., : int(round(masked * t))] = -100.0
    inits = [numpy_helper.from_array(np.float32(0.1), "scale"), numpy_helper.from_array(mask, "mask")]
    nodes = [helper.make_node("Mul", ["s", "scale"], ["s1"], name="scale"),
             helper.make_node("Add", ["s1", "mask"], ["s2"], name="mask"),
             helper.make_node("Softmax", ["s2"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["p", "v"], ["y"], name="product")]
    return small_model(nodes, inits, {"s": [b, t, t], "v": [b, t, d]}, "y")


def probe_seconds(masked: float, *, threads: int, runs: int, flush: bool) -> dict[str, float]:
    """Kernel seconds of the probe's softmax and product (profiler, less its own cost)."""

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
