"""Broadcasting binary (and variadic) element-wise ops; each gradient is summed back to its operand's shape."""

from __future__ import annotations

from ..core import gradient


def _back(ctx, node, i, g):
    """`g` (shaped like the output) reduced to input i's shape, or None if input i needs no gradient."""
    name = node.inputs[i]
    if g is None or not ctx.needs(name):
        return None
    return ctx.unbroadcast(g, ctx.shape(node.outputs[0]), ctx.shape(name))


@gradient("Add", "Sum")
def _add(ctx, node, dys):
    return [_back(ctx, node, i, dys[0]) for i in range(len(node.inputs))]


@gradient("Mean")
def _mean(ctx, node, dys):
    g = ctx.scale(dys[0], 1.0 / len(node.inputs))
    return [_back(ctx, node, i, g) for i in range(len(node.inputs))]


@gradient("Sub")
def _sub(ctx, node, dys):
    dy = dys[0]
    neg = ctx.op("Neg", [dy]) if ctx.needs(node.inputs[1]) else None
    return [_back(ctx, node, 0, dy), _back(ctx, node, 1, neg)]


@gradient("Mul")
def _mul(ctx, node, dys):
    a, b = node.inputs
    dy = dys[0]
    return [_back(ctx, node, 0, ctx.mul(dy, b) if ctx.needs(a) else None),
            _back(ctx, node, 1, ctx.mul(dy, a) if ctx.needs(b) else None)]


@gradient("Div")
def _div(ctx, node, dys):
    a, b = node.inputs
    dy, y = dys[0], node.outputs[0]
    da = ctx.op("Div", [dy, b]) if ctx.needs(a) else None
    db = ctx.op("Neg", [ctx.op("Div", [ctx.mul(dy, y), b])]) if ctx.needs(b) else None  # -dy * a / b^2
    return [_back(ctx, node, 0, da), _back(ctx, node, 1, db)]


@gradient("Pow")
def _pow(ctx, node, dys):
    x, p = node.inputs
    dy, y = dys[0], node.outputs[0]
    dx = dp = None
    if ctx.needs(x):
        pv = ctx.const_value(p)
        if pv is not None and pv.size == 1 and float(pv) == 2.0:
            dx = ctx.mul(dy, ctx.scale(x, 2.0))
        else:
            p_x = ctx.op("Cast", [p], to=ctx.dtype(x)) if ctx.dtype(p) != ctx.dtype(x) else p
            pm1 = ctx.op("Sub", [p_x, ctx.const(1.0, like=x)])
            dx = ctx.mul(dy, ctx.mul(p_x, ctx.op("Pow", [x, pm1])))
    if ctx.needs(p):
        dp = ctx.mul(dy, ctx.mul(y, ctx.op("Log", [x])))
    return [_back(ctx, node, 0, dx), _back(ctx, node, 1, dp)]


@gradient("Max", "Min")
def _extreme(ctx, node, dys):
    """The gradient goes to the input equal to the result (the first one on ties)."""
    dy, y = dys[0], node.outputs[0]
    taken = None
    out = []
    for i, x in enumerate(node.inputs):
        hit = ctx.op("Equal", [x, y])
        if taken is not None:
            hit = ctx.op("And", [hit, ctx.op("Not", [taken])])
        taken = hit if taken is None else ctx.op("Or", [taken, hit])
        out.append(_back(ctx, node, i, ctx.masked(dy, hit, y) if ctx.needs(x) else None))
    return out


@gradient("Where")
def _where(ctx, node, dys):
    c, a, b = node.inputs
    dy, y = dys[0], node.outputs[0]
    return [None,
            _back(ctx, node, 1, ctx.masked(dy, c, y) if ctx.needs(a) else None),
            _back(ctx, node, 2, ctx.masked(dy, ctx.op("Not", [c]), y) if ctx.needs(b) else None)]
