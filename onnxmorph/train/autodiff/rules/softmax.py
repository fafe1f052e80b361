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


def _along_axis(ctx, node, dys, grad):
    """`grad(y, dy, axis)` on the output and its gradient seen with the normalized axis (opset < 13
    flattens to 2-D first), shaped back like the output."""
    y, dy = node.outputs[0], dys[0]
    view, axis = _axis_form(ctx, node)
    if not view:
        return [grad(y, dy, axis)]
    dx = grad(ctx.reshape(y, view), ctx.reshape(dy, view), axis)
    return [ctx.reshape(dx, ctx.shape(y))]


@gradient("Softmax")
def _softmax(ctx, node, dys):
    def grad(y, dy, axis):
        dot = ctx.reduce("ReduceSum", ctx.mul(dy, y), [axis])
        return ctx.mul(y, ctx.op("Sub", [dy, dot]))
    return _along_axis(ctx, node, dys, grad)


@gradient("LogSoftmax")
def _log_softmax(ctx, node, dys):
    def grad(y, dy, axis):
        total = ctx.reduce("ReduceSum", dy, [axis])
        return ctx.op("Sub", [dy, ctx.mul(ctx.op("Exp", [y]), total)])
    return _along_axis(ctx, node, dys, grad)
