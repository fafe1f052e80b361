"""BatchNormalization (stored statistics), Instance-, Layer- and GroupNormalization.

Normalizations over the example's own statistics share one backward: with xhat = (x - mean) * rstd
over the normalized axes and g = dy * scale, dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
Mean and rstd are recomputed from x (the forward graph does not keep them).
"""

from __future__ import annotations

import numpy as np

from ..core import gradient


def _normalized_grad(ctx, x, g, axes, eps):
    """(dx, xhat) for xhat normalized over `axes` of x, given g = dL/dxhat."""
    mean = ctx.reduce("ReduceMean", x, axes)
    centered = ctx.op("Sub", [x, mean])
    var = ctx.reduce("ReduceMean", ctx.mul(centered, centered), axes)
    rstd = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const(eps, like=x)])])])
    xhat = ctx.mul(centered, rstd)
    mg = ctx.reduce("ReduceMean", g, axes)
    mgx = ctx.reduce("ReduceMean", ctx.mul(g, xhat), axes)
    inner = ctx.op("Sub", [ctx.op("Sub", [g, mg]), ctx.mul(xhat, mgx)])
    return ctx.mul(inner, rstd), xhat


def _channel_view(ctx, v, rank):
    return ctx.reshape(v, [-1] + [1] * (rank - 2))


@gradient("BatchNormalization")
def _batch_norm(ctx, node, dys):
    """Inference-mode BN: y = (x - mean) * scale / sqrt(var + eps) + bias, statistics held fixed."""
    if node.attr("training_mode", 0):
        ctx.fail("training-mode BatchNormalization (batch statistics) has no gradient rule")
    x, scale, bias, mean, var = node.inputs[:5]
    dy = dys[0]
    rank = ctx.rank(x)
    eps = node.attr("epsilon", 1e-5)
    axes = [0] + list(range(2, rank))
    rstd = ctx.op("Reciprocal", [ctx.op("Sqrt", [ctx.op("Add", [var, ctx.const(eps, like=x)])])])
    out = [None] * 5
    if ctx.needs(x):
        out[0] = ctx.mul(dy, _channel_view(ctx, ctx.mul(scale, rstd), rank))
    if ctx.needs(scale):
        xhat = ctx.mul(ctx.op("Sub", [x, _channel_view(ctx, mean, rank)]), _channel_view(ctx, rstd, rank))
        out[1] = ctx.reduce("ReduceSum", ctx.mul(dy, xhat), axes, keepdims=0)
    if ctx.needs(bias):
        out[2] = ctx.reduce("ReduceSum", dy, axes, keepdims=0)
    if ctx.needs(mean):
        out[3] = ctx.op("Neg", [ctx.mul(ctx.reduce("ReduceSum", dy, axes, keepdims=0), ctx.mul(scale, rstd))])
    if ctx.needs(var):
        ctx.fail("the variance of a BatchNormalization cannot be trained")
    return out


@gradient("InstanceNormalization")
def _instance_norm(ctx, node, dys):
    x, scale, bias = node.inputs
    dy = dys[0]
    rank = ctx.rank(x)
    spatial = list(range(2, rank))
    g = ctx.mul(dy, _channel_view(ctx, scale, rank))
    dx, xhat = _normalized_grad(ctx, x, g, spatial, node.attr("epsilon", 1e-5))
    axes = [0] + spatial
    ds = ctx.reduce("ReduceSum", ctx.mul(dy, xhat), axes, keepdims=0) if ctx.needs(scale) else None
    db = ctx.reduce("ReduceSum", dy, axes, keepdims=0) if ctx.needs(bias) else None
    return [dx if ctx.needs(x) else None, ds, db]


@gradient("LayerNormalization")
def _layer_norm(ctx, node, dys):
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.input(2)
    dy = dys[0]
    xs = ctx.shape(x)
    rank = len(xs)
    axis = node.attr("axis", -1) % rank
    axes = list(range(axis, rank))
    g = ctx.mul(dy, scale)
    dx, xhat = _normalized_grad(ctx, x, g, axes, node.attr("epsilon", 1e-5))
    ds = ctx.unbroadcast(ctx.mul(dy, xhat), xs, ctx.shape(scale)) if ctx.needs(scale) else None
    db = ctx.unbroadcast(dy, xs, ctx.shape(bias)) if bias and ctx.needs(bias) else None
    return [dx if ctx.needs(x) else None, ds, db]


@gradient("GroupNormalization")
def _group_norm(ctx, node, dys):
    """Opset 21 (scale/bias per channel) and 18 (per group) forms."""
    x, scale, bias = node.inputs
    dy = dys[0]
    xs = ctx.shape(x)
    n, c = xs[0], xs[1]
    groups = node.attr("num_groups")
    per_group = ctx.shape(scale)[0] == groups and groups != c
    if per_group:
        view = lambda v: ctx.reshape(v, [1, groups, 1])  # noqa: E731
        gshape = [n, groups, int(np.prod(xs[1:])) // groups]
    else:
        view = lambda v: ctx.reshape(v, [1, c] + [1] * (len(xs) - 2))  # noqa: E731
        gshape = [n, groups, -1]
    if per_group:
        g = ctx.mul(ctx.reshape(dy, gshape), view(scale))
    else:
        g = ctx.reshape(ctx.mul(dy, view(scale)), gshape)
    dx, xhat = _normalized_grad(ctx, ctx.reshape(x, gshape), g, [2], node.attr("epsilon", 1e-5))
    out = [ctx.reshape(dx, xs) if ctx.needs(x) else None, None, None]
    if per_group:
        if ctx.needs(scale):
            out[1] = ctx.reduce("ReduceSum", ctx.mul(ctx.reshape(dy, gshape), xhat), [0, 2], keepdims=0)
        if ctx.needs(bias):
            out[2] = ctx.reduce("ReduceSum", ctx.reshape(dy, gshape), [0, 2], keepdims=0)
    else:
        axes = [0] + list(range(2, len(xs)))
        if ctx.needs(scale):
            out[1] = ctx.reduce("ReduceSum", ctx.mul(dy, ctx.reshape(xhat, xs)), axes, keepdims=0)
        if ctx.needs(bias):
            out[2] = ctx.reduce("ReduceSum", dy, axes, keepdims=0)
    return out
