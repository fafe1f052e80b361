"""ReduceMean/Sum/Max/Min/L1/L2/SumSquare/LogSumExp: broadcast dY back over the reduced axes."""

from __future__ import annotations

import numpy as np

from ..core import gradient


def _axes(ctx, node):
    rank = ctx.rank(node.inputs[0])
    if "axes" in node.attrs:
        axes = list(node.attr("axes"))
    elif node.input(1):
        axes = ctx.const_ints(node.inputs[1], "axes")
    else:
        axes = []
    if not axes:
        return [] if node.attr("noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


def _kept(ctx, node, t):
    """`t` (the output's shape) viewed with the reduced axes kept as size 1."""
    if node.attr("keepdims", 1):
        return t
    xs = ctx.shape(node.inputs[0])
    axes = _axes(ctx, node)
    return ctx.reshape(t, [1 if i in axes else v for i, v in enumerate(xs)])


@gradient("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
          "ReduceLogSumExp")
def _reduce(ctx, node, dys):
    x = node.inputs[0]
    xs = ctx.shape(x)
    axes = _axes(ctx, node)
    if not axes:
        return [dys[0]]
    dy = _kept(ctx, node, dys[0])
    y = _kept(ctx, node, node.outputs[0])
    op = node.op
    if op == "ReduceMean":
        dy = ctx.scale(dy, 1.0 / float(np.prod([xs[a] for a in axes])))
    if op in ("ReduceSum", "ReduceMean"):
        g = ctx.expand(dy, xs)
    elif op in ("ReduceMax", "ReduceMin"):
        g = ctx.masked(ctx.expand(dy, xs), ctx.op("Equal", [x, y]), x)
    elif op == "ReduceL1":
        g = ctx.mul(dy, ctx.op("Sign", [x]))
    elif op == "ReduceL2":
        g = ctx.mul(dy, ctx.op("Div", [x, y]))
    elif op == "ReduceSumSquare":
        g = ctx.mul(dy, ctx.scale(x, 2.0))
    else:  # ReduceLogSumExp
        g = ctx.mul(dy, ctx.op("Exp", [ctx.op("Sub", [x, y])]))
    return [g, None]
