"""Conv and ConvTranspose (grouped, depthwise, strided, dilated, asymmetric pads).

The input gradient of a Conv is a ConvTranspose of dY with the same weight; its weight gradient is
a Conv whose batch and channel roles are swapped (input channels as the batch, dY's channels as the
filters, stride and dilation exchanged). A ConvTranspose is the adjoint of a Conv, so its rules are
the same two pieces the other way round.
"""

from __future__ import annotations

import itertools

from ....ops import conv_pads
from ..core import gradient


def geometry(ctx, node, x_shape, k):
    """(strides, dilations, pads begin, pads end) with auto_pad resolved from the static shapes."""
    nd = len(k)
    pb, pe = conv_pads(node.attrs, x_shape[2:], k)
    return list(node.attr("strides", [1] * nd)), list(node.attr("dilations", [1] * nd)), pb, pe


def input_grad(ctx, dy, w, in_sp, out_sp, k, s, d, pb, pe, group):
    """dX of a conv (dY: [N, M, *out_sp], W: [M, C/g, *k]) = ConvTranspose(dY, W) cropped to in_sp."""
    pe, op = list(pe), []
    for i in range(len(k)):
        extra = in_sp[i] - (s[i] * (out_sp[i] - 1) + (k[i] - 1) * d[i] + 1 - pb[i] - pe[i])
        if extra < 0:  # windows reaching past the end padding (pooling's ceil_mode): crop instead
            pe[i] -= extra
            extra = 0
        op.append(extra)
    return ctx.op("ConvTranspose", [dy, w], strides=s, dilations=d, pads=list(pb) + pe, group=group,
                  kernel_shape=list(k), output_padding=op)


def weight_grad(ctx, x, dy, x_shape, y_shape, k, s, d, pb, pe, group):
    """dW [M, C/g, *k] of a conv from x [N, C, *in] to dy [N, M, *out]."""
    n, c, in_sp = x_shape[0], x_shape[1], x_shape[2:]
    m, out_sp = y_shape[1], y_shape[2:]
    nd = len(k)
    cg = c // group
    spatial = list(range(2, 2 + nd))
    if group == 1 and all(v == 1 for v in k) and all(v == 1 for v in s) and not any(pb) and not any(pe):
        # pointwise: dW = sum_n dY_n X_n^T, one batched product
        p = 1
        for v in in_sp:
            p *= v
        x3 = ctx.reshape(x, [n, c, p])
        dy3 = ctx.reshape(dy, [n, m, p])
        prod = ctx.op("MatMul", [dy3, ctx.transpose(x3, [0, 2, 1])])
        return ctx.reshape(ctx.reduce("ReduceSum", prod, [0], keepdims=0), [m, c] + [1] * nd)
    taps = 1
    for v in k:
        taps *= v
    if taps <= MAX_UNFOLD_TAPS and (group == 1 or (cg == 1 and m == c)):
        return _weight_grad_unfolded(ctx, x, dy, x_shape, y_shape, k, s, d, pb, group)
    # the conv's input channels (within a group) become the batch, (group, sample) the channels
    if group == 1:
        inp = ctx.reshape(x, [c, 1] + in_sp) if n == 1 else ctx.transpose(x, [1, 0] + spatial)
    else:
        inp = ctx.reshape(x, [n, group, cg] + in_sp)
        inp = ctx.transpose(inp, [2, 1, 0] + [3 + i for i in range(nd)])
        inp = ctx.reshape(inp, [cg, group * n] + in_sp)
    filt = ctx.reshape(dy, [m, 1] + out_sp) if n == 1 else ctx.transpose(dy, [1, 0] + spatial)
    pe_w, full = [], []
    for i in range(nd):
        span = (out_sp[i] - 1) * s[i] + 1
        pe_w.append(max(0, (k[i] - 1) * d[i] + span - in_sp[i] - pb[i]))
        full.append((in_sp[i] + pb[i] + pe_w[i] - span) // d[i] + 1)
    r = ctx.op("Conv", [inp, filt], strides=d, dilations=s, pads=list(pb) + pe_w, group=group,
               kernel_shape=out_sp)
    if full != list(k):
        r = ctx.op("Slice", [r, ctx.ints([0] * nd), ctx.ints(list(k)), ctx.ints(spatial)])
    if cg == 1:
        return ctx.reshape(r, [m, 1] + list(k))
    return ctx.transpose(r, [1, 0] + spatial)


MAX_UNFOLD_TAPS = 49  # kernels up to 7x7 unfold; larger ones use the batch/channel-swapped conv


def unfold(ctx, x, x_shape, out_sp, k, s, d, pb):
    """For each kernel tap, the input positions it meets ([N, C, *out_sp] strided Slices: im2col by parts)."""
    nd = len(k)
    in_sp = x_shape[2:]
    span = [(k[i] - 1) * d[i] + (out_sp[i] - 1) * s[i] + 1 for i in range(nd)]
    pe = [max(0, span[i] - in_sp[i] - pb[i]) for i in range(nd)]
    xp = x
    if any(pb) or any(pe):
        xp = ctx.op("Pad", [x, ctx.ints([0, 0] + list(pb) + [0, 0] + pe)])
    axes = ctx.ints(list(range(2, 2 + nd)))
    steps = ctx.ints(list(s))
    parts = []
    for tap in itertools.product(*[range(v) for v in k]):
        start = [tap[i] * d[i] for i in range(nd)]
        end = [start[i] + (out_sp[i] - 1) * s[i] + 1 for i in range(nd)]
        full = start == [0] * nd and end == list(in_sp) and list(s) == [1] * nd and xp is x
        parts.append(x if full else ctx.op("Slice", [xp, ctx.ints(start), ctx.ints(end), axes, steps]))
    return parts


def _weight_grad_unfolded(ctx, x, dy, x_shape, y_shape, k, s, d, pb, group):
    """Per tap: dense dW[:, :, tap] = sum_n dY_n X_tap,n^T (a batched product); depthwise
    dW[c, 0, tap] = sum over n, p of dY * X_tap. The taps' [M, C] results are concatenated."""
    n, c = x_shape[0], x_shape[1]
    m, out_sp = y_shape[1], y_shape[2:]
    p = 1
    for v in out_sp:
        p *= v
    dy3 = ctx.reshape(dy, [n, m, p])
    per_tap = []
    for col in unfold(ctx, x, x_shape, out_sp, k, s, d, pb):
        col3 = ctx.reshape(col, [n, c, p])
        if group == 1:
            prod = ctx.op("MatMul", [dy3, ctx.transpose(col3, [0, 2, 1])])
            g = ctx.reduce("ReduceSum", prod, [0], keepdims=0)  # [M, C]
        else:
            g = ctx.reduce("ReduceSum", ctx.mul(dy3, col3), [0, 2], keepdims=0)  # [C]
        per_tap.append(ctx.reshape(g, [m, c if group == 1 else 1, 1]))
    g = per_tap[0] if len(per_tap) == 1 else ctx.op("Concat", per_tap, axis=2)
    return ctx.reshape(g, [m, c if group == 1 else 1] + list(k))


def _bias_grad(ctx, dy, rank):
    return ctx.reduce("ReduceSum", dy, [0] + list(range(2, rank)), keepdims=0)


@gradient("Conv")
def _conv(ctx, node, dys):
    x, w = node.inputs[0], node.inputs[1]
    b = node.input(2)
    dy = dys[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(node.outputs[0])
    k = ws[2:]
    s, d, pb, pe = geometry(ctx, node, xs, k)
    group = node.attr("group", 1)
    dx = input_grad(ctx, dy, w, xs[2:], ys[2:], k, s, d, pb, pe, group) if ctx.needs(x) else None
    dw = weight_grad(ctx, x, dy, xs, ys, k, s, d, pb, pe, group) if ctx.needs(w) else None
    db = _bias_grad(ctx, dy, len(ys)) if b and ctx.needs(b) else None
    return [dx, dw, db]


@gradient("ConvTranspose")
def _conv_transpose(ctx, node, dys):
    x, w = node.inputs[0], node.inputs[1]
    b = node.input(2)
    dy = dys[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(node.outputs[0])
    k = ws[2:]
    nd = len(k)
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID") or "output_shape" in node.attrs:
        # pads implied by the shapes: total = s (in - 1) + output_padding + dilated kernel - out
        s = list(node.attr("strides", [1] * nd))
        d = list(node.attr("dilations", [1] * nd))
        opad = list(node.attr("output_padding", [0] * nd))
        total = [s[i] * (xs[2 + i] - 1) + opad[i] + (k[i] - 1) * d[i] + 1 - ys[2 + i] for i in range(nd)]
        upper = node.attr("auto_pad", "NOTSET") == "SAME_UPPER"
        pb = [t // 2 if upper else t - t // 2 for t in total]
        pe = [t - a for t, a in zip(total, pb)]
    else:
        s, d, pb, pe = geometry(ctx, node, xs, k)
    group = node.attr("group", 1)
    # the adjoint conv maps dY ([N, C_out, *out]) back to x's shape with the same weight layout
    dx = None
    if ctx.needs(x):
        dx = ctx.op("Conv", [dy, w], strides=s, dilations=d, pads=list(pb) + list(pe), group=group,
                    kernel_shape=list(k))
    dw = weight_grad(ctx, dy, x, ys, xs, k, s, d, pb, pe, group) if ctx.needs(w) else None
    db = _bias_grad(ctx, dy, len(ys)) if b and ctx.needs(b) else None
    return [dx, dw, db]
