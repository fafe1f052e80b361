"""Subnormal floats in attention: what a constant additive mask does to a softmax and the product after it.

exp(x) of a float32 is subnormal for x in (-103.97, -87.34). An additive attention mask of -100
(Swin's shifted windows, as torchvision and timm write it) makes the softmax emit subnormal
probabilities, and x86 CPUs compute with subnormal operands through microcode assists (ONNX Runtime
does not flush them to zero unless the session sets `session.set_denormal_as_zero`). On the
development host a masked softmax costs 22 ns and the attn·V product 3.9 ns per subnormal element
x output column more: 50x the product's normal time, 30 ms of Swin-T's 200 ms. The profile's
overheads `subnormal_exp` and `subnormal_mac` (timed by bench/subnormal.py) price them.
"""

from __future__ import annotations

import numpy as np

from ..graph.walk import is_constant, producer
from ..ops import VALUE_VIEWS

SUBNORMAL_EXP = (-103.97, -87.34)


def _skip_views(node):
    while node is not None and node.op in VALUE_VIEWS:
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
