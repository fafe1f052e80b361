"""MaxPool, AveragePool and the global pools.

AveragePool's gradient spreads dY / count over each window: a depthwise ConvTranspose with a
kernel of ones (counts computed once from the shapes when padding is excluded). MaxPool's goes to
each window's arg-max, read from a second MaxPool with its Indices output.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core import gradient
from .conv import geometry, input_grad


def _pool_geometry(ctx, node):
    xs, ys = ctx.shape(node.inputs[0]), ctx.shape(node.outputs[0])
    k = list(node.attr("kernel_shape"))
    s, d, pb, pe = geometry(ctx, node, xs, k)
    return xs, ys, k, s, d, pb, pe


def _counts(in_sp, out_sp, k, s, d, pb):
    """Per output position: how many window elements lie inside the (unpadded) input."""
    per_axis = []
    for i in range(len(k)):
        starts = np.arange(out_sp[i]) * s[i] - pb[i]
        taps = starts[:, None] + np.arange(k[i])[None, :] * d[i]
        per_axis.append(((taps >= 0) & (taps < in_sp[i])).sum(1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts


@gradient("AveragePool")
def _average_pool(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    xs, ys, k, s, d, pb, pe = _pool_geometry(ctx, node)
    c = xs[1]
    if node.attr("count_include_pad", 0):
        # windows are clipped to the padded input (ceil_mode can run past it)
        padded = [xs[2 + i] + pb[i] + pe[i] for i in range(len(k))]
        counts = _counts(padded, ys[2:], k, s, d, [0] * len(k))
    else:
        counts = _counts(xs[2:], ys[2:], k, s, d, pb)
    if np.all(counts == counts.flat[0]):
        g = ctx.scale(dy, 1.0 / float(counts.flat[0]))
    else:
        g = ctx.mul(dy, ctx.const((1.0 / counts)[None, None], like=x))
    ones = ctx.const(np.ones([c, 1] + k), like=x)
    return [input_grad(ctx, g, ones, xs[2:], ys[2:], k, s, d, pb, pe, c)]


@gradient("GlobalAveragePool")
def _global_average_pool(ctx, node, dys):
    xs = ctx.shape(node.inputs[0])
    area = int(np.prod(xs[2:]))
    return [ctx.expand(ctx.scale(dys[0], 1.0 / area), xs)]


@gradient("GlobalMaxPool")
def _global_max_pool(ctx, node, dys):
    x, y = node.inputs[0], node.outputs[0]
    hit = ctx.op("Equal", [x, y])
    return [ctx.masked(ctx.expand(dys[0], ctx.shape(x)), hit, x)]


@gradient("MaxPool")
def _max_pool(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    if node.attr("storage_order", 0):
        ctx.fail("column-major storage_order has no gradient rule")
    xs, ys, k, s, d, pb, pe = _pool_geometry(ctx, node)
    attrs = {key: v for key, v in node.attrs.items()}
    _, idx = ctx.op("MaxPool", [x], n_out=2, **attrs)
    size = int(np.prod(xs))
    flat_dy = ctx.reshape(dy, [-1])
    flat_idx = ctx.reshape(idx, [-1])
    zeros = ctx.zeros([size], like=x)
    overlap = any(k[i] * d[i] > s[i] for i in range(len(k)))
    if not overlap:
        g = ctx.op("ScatterElements", [zeros, flat_idx, flat_dy], axis=0)
    elif ctx.opset >= 16:
        g = ctx.op("ScatterElements", [zeros, flat_idx, flat_dy], axis=0, reduction="add")
    else:
        g = _scatter_add_by_offsets(ctx, x, dy, idx, xs, ys, k, s, d, pb, pe)
        return [g]
    return [ctx.reshape(g, xs)]


def _scatter_add_by_offsets(ctx, x, dy, idx, xs, ys, k, s, d, pb, pe):
    """Opsets before 16 have no scatter-add: one masked depthwise ConvTranspose per kernel offset."""
    c = xs[1]
    nd = len(k)
    # the flat index each kernel offset points at, for every output position of one (n, c) plane
    base = np.arange(xs[0] * c).reshape(xs[0], c, *([1] * nd)) * int(np.prod(xs[2:]))
    parts = []
    for offset in itertools.product(*[range(v) for v in k]):
        pos = [np.arange(ys[2 + i]) * s[i] - pb[i] + offset[i] * d[i] for i in range(nd)]
        grid = np.meshgrid(*pos, indexing="ij")
        flat = np.ravel_multi_index([np.clip(g, 0, xs[2 + i] - 1) for i, g in enumerate(grid)], xs[2:])
        want = ctx.ints(base + flat[None, None])
        hit = ctx.op("Equal", [idx, want])
        sel = ctx.op("Where", [hit, dy, ctx.const(0.0, like=x)])
        kern = np.zeros([c, 1] + k)
        kern[(slice(None), 0) + tuple(offset)] = 1.0
        parts.append(input_grad(ctx, sel, ctx.const(kern, like=x), xs[2:], ys[2:], k, s, d, pb, pe, c))
    return parts[0] if len(parts) == 1 else ctx.op("Sum", parts)
