"""Data movement: Reshape-likes, Transpose, Concat/Split/Slice, Gather, Pad, Resize, Expand, Tile, Cast,
DepthToSpace/SpaceToDepth."""

from __future__ import annotations

import numpy as np

from ..core import gradient


@gradient("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx, node, dys):
    return [ctx.reshape(dys[0], ctx.shape(node.inputs[0]))] + [None] * (len(node.inputs) - 1)


@gradient("Transpose")
def _transpose(ctx, node, dys):
    rank = ctx.rank(node.inputs[0])
    perm = list(node.attr("perm", list(range(rank))[::-1]))
    return [ctx.transpose(dys[0], list(np.argsort(perm)))]


@gradient("Cast")
def _cast(ctx, node, dys):
    x = node.inputs[0]
    return [ctx.op("Cast", [dys[0]], to=ctx.dtype(x))]


@gradient("Expand")
def _expand(ctx, node, dys):
    return [ctx.unbroadcast(dys[0], ctx.shape(node.outputs[0]), ctx.shape(node.inputs[0])), None]


@gradient("Tile")
def _tile(ctx, node, dys):
    xs = ctx.shape(node.inputs[0])
    reps = ctx.const_ints(node.inputs[1], "repeats")
    split = []
    for r, d in zip(reps, xs):
        split += [r, d]
    g = ctx.reduce("ReduceSum", ctx.reshape(dys[0], split), list(range(0, 2 * len(xs), 2)), keepdims=0)
    return [g, None]


@gradient("Concat")
def _concat(ctx, node, dys):
    rank = ctx.rank(node.outputs[0])
    axis = node.attr("axis") % rank
    out, start = [], 0
    for x in node.inputs:
        size = ctx.shape(x)[axis]
        if ctx.needs(x):
            out.append(ctx.op("Slice", [dys[0], ctx.ints([start]), ctx.ints([start + size]), ctx.ints([axis])]))
        else:
            out.append(None)
        start += size
    return out


@gradient("Split")
def _split(ctx, node, dys):
    rank = ctx.rank(node.inputs[0])
    axis = node.attr("axis", 0) % rank
    parts = [dy if dy is not None else ctx.zeros(ctx.shape(o), like=node.inputs[0])
             for dy, o in zip(dys, node.outputs)]
    return [ctx.op("Concat", parts, axis=axis), None]


@gradient("Slice")
def _slice(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    xs = ctx.shape(x)
    rank = len(xs)
    if ctx.opset < 10 or "starts" in node.attrs:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes", list(range(len(starts)))))
        steps = [1] * len(starts)
    else:
        starts = ctx.const_ints(node.inputs[1], "starts")
        ends = ctx.const_ints(node.inputs[2], "ends")
        axes = ctx.const_ints(node.inputs[3], "axes") if node.input(3) else list(range(len(starts)))
        steps = ctx.const_ints(node.inputs[4], "steps") if node.input(4) else [1] * len(starts)
    index = [np.arange(d) for d in xs]
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax %= rank
        index[ax] = np.arange(xs[ax])[slice(st, en, sp)] if sp != 0 else index[ax]
    if all(sp == 1 for sp in steps):
        pads = [int(ix[0]) if len(ix) else 0 for ix in index] + \
               [int(xs[i] - ix[-1] - 1) if len(ix) else 0 for i, ix in enumerate(index)]
        return [ctx.op("Pad", [dy, ctx.ints(pads)])] + [None] * (len(node.inputs) - 1)
    # strided or reversed: scatter into the flat input at the positions read
    flat = np.ravel_multi_index(np.meshgrid(*index, indexing="ij"), xs).ravel()
    g = ctx.op("ScatterElements", [ctx.zeros([int(np.prod(xs))], like=x), ctx.ints(flat), ctx.reshape(dy, [-1])],
               axis=0)
    return [ctx.reshape(g, xs)] + [None] * (len(node.inputs) - 1)


@gradient("Gather")
def _gather(ctx, node, dys):
    """Scatter-add dY back along `axis` (duplicate indices add up)."""
    x, ind = node.inputs
    xs = ctx.shape(x)
    axis = node.attr("axis", 0) % len(xs)
    n_idx = int(np.prod(ctx.shape(ind)))
    dy = ctx.reshape(dys[0], xs[:axis] + [n_idx] + xs[axis + 1:])
    const = ctx.const_value(ind)
    if const is not None:
        flat = np.where(const < 0, const + xs[axis], const).astype(np.int64).ravel()
        unique = len(np.unique(flat)) == len(flat)
        idx = ctx.ints(flat)
    else:
        unique = False
        idx = ctx.reshape(ind, [-1])
        if ctx.dtype(ind) != 7:
            idx = ctx.op("Cast", [idx], to=7)
        dim = ctx.ints(xs[axis])
        idx = ctx.op("Where", [ctx.op("Less", [idx, ctx.ints(0)]), ctx.op("Add", [idx, dim]), idx])
    if unique or ctx.opset >= 16:
        view = [1] * len(xs)
        view[axis] = n_idx
        full = xs[:axis] + [n_idx] + xs[axis + 1:]
        idx_full = ctx.expand(ctx.reshape(idx, view), full)
        attrs = {} if unique else {"reduction": "add"}
        g = ctx.op("ScatterElements", [ctx.zeros(xs, like=x), idx_full, dy], axis=axis, **attrs)
        return [g, None]
    # older opsets: a one-hot product sums duplicates, [pre, n_idx, post] -> [pre, dim, post]
    pre, post = int(np.prod(xs[:axis])), int(np.prod(xs[axis + 1:]))
    onehot = ctx.op("OneHot", [idx, ctx.ints(xs[axis]), ctx.const([0.0, 1.0], like=x)], axis=-1)
    g = ctx.op("MatMul", [ctx.transpose(onehot, [1, 0]), ctx.reshape(dy, [pre, n_idx, post])])
    return [ctx.reshape(g, xs), None]


@gradient("GatherElements")
def _gather_elements(ctx, node, dys):
    x, ind = node.inputs
    axis = node.attr("axis", 0) % ctx.rank(x)
    if ctx.opset < 16:
        ctx.fail("needs opset 16 (ScatterElements with reduction) for its gradient")
    g = ctx.op("ScatterElements", [ctx.zeros(ctx.shape(x), like=x), ind, dys[0]], axis=axis, reduction="add")
    return [g, None]


@gradient("Pad")
def _pad(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    xs = ctx.shape(x)
    rank = len(xs)
    if node.attr("mode", "constant") != "constant":
        ctx.fail(f"only constant padding has a gradient rule (mode {node.attr('mode')})")
    pads = list(node.attr("pads")) if "pads" in node.attrs else ctx.const_ints(node.inputs[1], "pads")
    if node.input(3):  # opset 18 axes
        axes = [a % rank for a in ctx.const_ints(node.inputs[3], "axes")]
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = pads[i], pads[len(axes) + i]
        pads = full
    starts = [max(0, p) for p in pads[:rank]]
    ends = [starts[i] + xs[i] + min(0, pads[i]) + min(0, pads[rank + i]) for i in range(rank)]
    g = ctx.op("Slice", [dy, ctx.ints(starts), ctx.ints(ends), ctx.ints(list(range(rank)))])
    if any(p < 0 for p in pads):  # cropped parts of x get no gradient
        back = [max(0, -p) for p in pads]
        g = ctx.op("Pad", [g, ctx.ints(back)])
    return [g] + [None] * (len(node.inputs) - 1)


@gradient("DepthToSpace", "SpaceToDepth")
def _depth_space(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    xs, ys = ctx.shape(x), ctx.shape(node.outputs[0])
    b = node.attr("blocksize")
    crd = node.attr("mode", "DCR") == "CRD"
    if node.op == "SpaceToDepth":  # its inverse is DepthToSpace in DCR mode
        return [ctx.op("DepthToSpace", [dy], blocksize=b, mode="DCR")]
    if not crd:
        return [ctx.op("SpaceToDepth", [dy], blocksize=b)]
    n, c, h, w = ys
    t = ctx.reshape(dy, [n, c, h // b, b, w // b, b])
    t = ctx.transpose(t, [0, 1, 3, 5, 2, 4])
    return [ctx.reshape(t, xs)]


@gradient("Resize", "Upsample")
def _resize(ctx, node, dys):
    """Resize is linear and separable per axis: dX = dY times each axis' interpolation matrix,
    transposed (a Reshape + ReduceSum for nearest resizing by integer factors)."""
    from .resize import axis_matrix

    x, dy = node.inputs[0], dys[0]
    xs, ys = ctx.shape(x), ctx.shape(node.outputs[0])
    g = dy
    factors = [o // i if i and o % i == 0 else 0 for i, o in zip(xs, ys)]
    changed = [a for a in range(len(xs)) if xs[a] != ys[a]]
    if node.attr("coordinate_transformation_mode", "") == "tf_crop_and_resize":
        ctx.fail("tf_crop_and_resize has no gradient rule")
    scales = None
    if node.op == "Resize" and node.input(2) and ctx.const_value(node.inputs[2]) is not None \
            and ctx.const_value(node.inputs[2]).size == len(xs):
        scales = [float(v) for v in ctx.const_value(node.inputs[2]).ravel()]
    elif node.op == "Upsample" and node.input(1) and ctx.const_value(node.inputs[1]) is not None:
        scales = [float(v) for v in ctx.const_value(node.inputs[1]).ravel()]
    try:
        mats = {a: axis_matrix(node, xs, ys, a, scales[a] if scales else ys[a] / xs[a]) for a in changed}
    except Exception as exc:  # an attribute combination the reference cannot run
        ctx.fail(f"cannot derive its interpolation ({str(exc).splitlines()[0] if str(exc) else exc})")
    blocky = all(factors[a] > 1 and np.array_equal(
        mats[a], np.kron(np.eye(xs[a]), np.ones((factors[a], 1)))) for a in changed)
    if blocky and changed:
        split = []
        for a, d in enumerate(xs):
            split += [d, factors[a] if a in changed else 1]
        g = ctx.reduce("ReduceSum", ctx.reshape(g, split), [2 * a + 1 for a in range(len(xs))], keepdims=0)
        return [g] + [None] * (len(node.inputs) - 1)
    rank = len(xs)
    for a in changed:
        m = mats[a]  # [out, in]
        if a == rank - 1:
            g = ctx.op("MatMul", [g, ctx.const(m, like=x)])
        else:
            perm = list(range(rank))
            perm[a], perm[-1] = perm[-1], perm[a]
            g = ctx.transpose(ctx.op("MatMul", [ctx.transpose(g, perm), ctx.const(m, like=x)]), perm)
    return [g] + [None] * (len(node.inputs) - 1)
