"""Ops that move data without computing: Reshape, Flatten, Squeeze, Unsqueeze, Expand, Tile, Transpose.

Reshape-like ops are analysed exactly on the element ids themselves: broadcast the
input's ids to the full tensor, apply the op with numpy, and read off which output
axes carry channels. A split of the channel axis (channel shuffle, heads) gives a
multi-axis map whose positions must stay a rectangle: a consumer that knows what
the axes mean ties them (attention: whole heads or head dims), otherwise elements
sharing an index on the last channel axis are coupled when the analysis ends.
"""

from __future__ import annotations

import numpy as np

from ..channels import ChannelMap
from .base import OpHandler, const_value, norm_axis, register


def map_from_full(ctx, node, full: np.ndarray) -> ChannelMap:
    """The channel map of a tensor whose every position holds the element id `full[...]`."""
    shape = full.shape
    varying = tuple(
        a for a in range(full.ndim)
        if shape[a] > 1 and not (np.take(full, [0], axis=a) == full).all()
    )
    if not varying:
        raise ValueError("a single channel is left after the reshape")
    index = tuple(slice(None) if a in varying else 0 for a in range(full.ndim))
    grid = full[index]
    view = [shape[a] if a in varying else 1 for a in range(full.ndim)]
    if not np.array_equal(np.broadcast_to(grid.reshape(view), shape), full):
        raise ValueError("the reshape mixes channels with other axes")
    grid = np.ascontiguousarray(grid)
    if grid.ndim > 1:
        # The kept positions must stay a rectangle. Consumers that know what the axes mean decide how
        # (attention ties whole heads or head dims); otherwise positions with the same index on the
        # last channel axis go together when the analysis ends (channel-shuffle pairs, head dims).
        ctx.require_rectangle(grid)
    return ChannelMap(varying, grid)


@register
class ReshapeLikeHandler(OpHandler):
    op_types = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Tile")

    def propagate(self, node, ctx) -> None:
        x, y = node.inputs[0], node.outputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        if node.op in ("Reshape", "Expand") and const_value(node.inputs[1]) is None:
            raise ValueError("the target shape is not constant")
        full = cmap.full(ctx.shape(x))
        out_shape = ctx.shape(y)
        if node.op == "Expand":
            full = np.broadcast_to(full.reshape((1,) * (len(out_shape) - full.ndim) + full.shape), out_shape)
        elif node.op == "Tile":
            repeats = const_value(node.inputs[1])
            if repeats is None:
                raise ValueError("non-constant repeats")
            full = np.tile(full, repeats.astype(np.int64))
        else:
            full = full.reshape(out_shape)
        ctx.set_map(y, map_from_full(ctx, node, full))

    def emit(self, node, ctx) -> None:
        if node.op not in ("Reshape", "Expand"):
            return
        kept = ctx.kept_axes(node.outputs[0])
        if not kept:
            return
        value = const_value(node.inputs[1])
        if value is None:
            raise ValueError(f"{node.op} '{node.name}' has a non-constant shape")
        shape = value.astype(np.int64)
        new = shape.copy()
        offset = len(ctx.shape(node.outputs[0])) - len(shape)  # Expand's shape may be shorter
        for axis, idx in kept.items():
            a = axis - offset
            if a >= 0 and shape[a] not in (-1, 1):
                new[a] = len(idx)
        if not np.array_equal(new, shape):
            ctx.set_input(node, 1, new)


@register
class TransposeHandler(OpHandler):
    op_types = ("Transpose",)

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        rank = ctx.rank(x)
        perm = [norm_axis(int(p), rank) for p in node.attrs.get("perm", list(range(rank))[::-1])]
        new_axes = [perm.index(a) for a in cmap.axes]
        order = np.argsort(new_axes)
        ctx.set_map(node.outputs[0], ChannelMap(tuple(sorted(new_axes)), np.transpose(cmap.ids, order)))


@register
class DepthSpaceHandler(OpHandler):
    """DepthToSpace/SpaceToDepth regroup channels with spatial blocks: frozen (with the reason)."""

    op_types = ("DepthToSpace", "SpaceToDepth")

    def propagate(self, node, ctx) -> None:
        ctx.freeze_inputs(node, f"{node.op} '{node.name}' moves channels into space")

