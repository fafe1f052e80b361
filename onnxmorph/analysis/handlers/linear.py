"""Gemm and MatMul with a constant weight (fully connected / Linear layers); MatMul between two
activations (attention) is in `attention.py`."""

from __future__ import annotations

import numpy as np

from ..node_cost import Bilinear
from .attention import label_mlp_hidden, propagate_matmul_activations
from .base import OpHandler, const_value, is_present, register
from .conv import F32


def _features_map(ctx, node, x):
    """The input map if it is on the last axis alone; other maps are frozen."""
    cmap = ctx.map(x)
    last = ctx.rank(x) - 1
    if cmap is not None and not (cmap.is_1d and cmap.axis == last):
        ctx.freeze(cmap, f"{node.op} '{node.name}' input channels are not on the feature axis")
        return None
    return cmap


@register
class GemmHandler(OpHandler):
    op_types = ("Gemm",)

    def propagate(self, node, ctx) -> None:
        a, b_t = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        b = const_value(b_t)
        if b is None:
            raise ValueError("weights are not constant")
        if int(node.attrs.get("transA", 0)):
            raise ValueError("transA=1 is not supported")
        trans_b = int(node.attrs.get("transB", 0))
        _features_map(ctx, node, a)
        ctx.new_channels(y, 1, node.name)
        ctx.gate(node, a)
        ctx.weight(node, b_t, 1 if trans_b else 0, a)
        ctx.weight(node, b_t, 0 if trans_b else 1, y)
        rows = ctx.shape(a)[0]
        has_bias = is_present(node, 2)
        params = Bilinear(a=1, c=1 if has_bias else 0)
        ctx.cost(node, a, y, 1, 1, macs=Bilinear(a=rows), params=params,
                 bytes=(params + Bilinear(b=rows, c=rows)).scaled(F32), extra={"kind": "gemm", "size": float(rows)})

    def emit(self, node, ctx) -> None:
        kin, kout = ctx.kept(node.inputs[0]), ctx.kept(node.outputs[0])
        trans_b = int(node.attrs.get("transB", 0))
        b = const_value(node.inputs[1])
        in_axis, out_axis = (1, 0) if trans_b else (0, 1)
        if kin is not None:
            b = np.take(b, kin, axis=in_axis)
        if kout is not None:
            b = np.take(b, kout, axis=out_axis)
            if is_present(node, 2):
                c = const_value(node.inputs[2])
                if c is not None and c.ndim >= 1 and c.shape[-1] > 1:
                    ctx.set_input(node, 2, np.take(c, kout, axis=-1))
        if kin is not None or kout is not None:
            ctx.set_input(node, 1, b)


@register
class MatMulHandler(OpHandler):
    op_types = ("MatMul",)

    def propagate(self, node, ctx) -> None:
        a, b_t = node.inputs
        y = node.outputs[0]
        b = const_value(b_t)
        if b is None and const_value(a) is None:
            return propagate_matmul_activations(node, ctx)  # attention: Q·Kᵀ, attn·V
        if b is None or b.ndim != 2 or const_value(a) is not None or ctx.rank(a) < 2:
            raise ValueError("only activation @ constant 2-D weight is supported")
        _features_map(ctx, node, a)
        label_mlp_hidden(node, ctx, a)
        ctx.new_channels(y, ctx.rank(y) - 1, node.name)
        ctx.gate(node, a)
        ctx.weight(node, b_t, 0, a)
        ctx.weight(node, b_t, 1, y)
        rows = int(np.prod(ctx.shape(a)[:-1]))
        last_a, last_y = ctx.rank(a) - 1, ctx.rank(y) - 1
        params = Bilinear(a=1)
        ctx.cost(node, a, y, last_a, last_y, macs=Bilinear(a=rows), params=params,
                 bytes=(params + Bilinear(b=rows, c=rows)).scaled(F32), extra={"kind": "gemm", "size": float(rows)})

    def emit(self, node, ctx) -> None:
        b = const_value(node.inputs[1])
        if b is None:
            return  # between activations: nothing to slice
        kin, kout = ctx.kept(node.inputs[0]), ctx.kept(node.outputs[0])
        if kin is not None:
            b = b[kin]
        if kout is not None:
            b = b[:, kout]
        if kin is not None or kout is not None:
            ctx.set_input(node, 1, b)
