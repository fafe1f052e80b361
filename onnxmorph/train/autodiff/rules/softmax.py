"""Softmax and LogSoftmax (opset 13 single axis; older opsets' flattened [.., axis:] form)."""

from __future__ import annotations

from ..core import gradient


def _axis_form(ctx, node):
    """(reshape-to, axis): older opsets normalize over all axes from `axis` on, as a 2-D view."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    axis = node.attr("axis", -1 if ctx.opset >= 13 else 1) % rank
    if ctx.opset >= 13 or axis == rank - 1:
        return None, axis
    rows = 1
    for v in shape[:axis]:
        rows *= v
    return [rows, -1], 1


@gradient("Softmax")
def _softmax(ctx, node, dys):
    y, dy = node.outputs[0], dys[0]
    view, axis = _axis_form(ctx, node)
    if view:
        y2, dy2 = ctx.reshape(y, view), ctx.reshape(dy, view)
    else:
        y2, dy2 = y, dy
    dot = ctx.reduce("ReduceSum", ctx.mul(dy2, y2), [axis])
    dx = ctx.mul(y2, ctx.op("Sub", [dy2, dot]))
    return [ctx.reshape(dx, ctx.shape(y)) if view else dx]


@gradient("LogSoftmax")
def _log_softmax(ctx, node, dys):
    y, dy = node.outputs[0], dys[0]
    view, axis = _axis_form(ctx, node)
    if view:
        y2, dy2 = ctx.reshape(y, view), ctx.reshape(dy, view)
    else:
        y2, dy2 = y, dy
    total = ctx.reduce("ReduceSum", dy2, [axis])
    dx = ctx.op("Sub", [dy2, ctx.mul(ctx.op("Exp", [y2]), total)])
    return [ctx.reshape(dx, ctx.shape(y)) if view else dx]
