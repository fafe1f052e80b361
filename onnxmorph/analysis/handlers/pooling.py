"""Pooling and reductions over non-channel axes: channels pass through (shifted if axes drop)."""

from __future__ import annotations

from ..memory_cost import declare_memory_cost
from ..channels import ChannelMap
from .base import OpHandler, input_or_attr, norm_axis, register
from .reductions import EXACT_OVER_ZEROS, emit_rescaled_mean, stream_statistics, tie_reduced

REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@register
class PoolHandler(OpHandler):
    """Max/Avg/Lp pooling and their global forms pool spatial axes (2...) per channel."""

    op_types = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
                "MaxRoiPool")

    def propagate(self, node, ctx) -> None:
        cmap = ctx.map(node.inputs[0])
        if cmap is None:
            return
        if node.op == "MaxRoiPool" or cmap.axes != (1,):
            raise ValueError("channels are not on axis 1")
        if len(node.outputs) > 1 and node.outputs[1].name:
            raise ValueError("MaxPool indices encode the channel count")
        ctx.set_map(node.outputs[0], cmap)
        declare_memory_cost(ctx, node, "pool")


def drop_axes(cmap: ChannelMap, dropped: set[int]) -> ChannelMap:
    """The map after removing `dropped` (non-channel) axes from the tensor."""
    return ChannelMap(tuple(a - sum(d < a for d in dropped) for a in cmap.axes), cmap.ids)


@register
class ReduceHandler(OpHandler):
    op_types = REDUCE + ("ArgMax", "ArgMin")

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        axes = reduced_axes(node, ctx.rank(x))
        if not axes:
            ctx.set_map(node.outputs[0], cmap)
            return
        keepdims = int(node.attrs.get("keepdims", 1))
        if axes & set(cmap.axes):
            rest = tie_reduced(ctx, cmap, axes)  # e.g. a norm over the head dim of whole heads
            if rest is not None:
                ctx.set_map(node.outputs[0], rest if keepdims else drop_axes(rest, axes))
            elif not (node.op in EXACT_OVER_ZEROS and stream_statistics(ctx, node, cmap, axes)):
                ctx.freeze(cmap, f"{node.op} '{node.name}' reduces over the channel axis")
            return
        ctx.set_map(node.outputs[0], cmap if keepdims else drop_axes(cmap, axes))

    def emit(self, node, ctx) -> None:
        cmap = ctx.map(node.inputs[0])
        if node.op == "ReduceMean" and cmap is not None and cmap.is_1d:
            axes = reduced_axes(node, len(ctx.shape(node.inputs[0])))
            if axes and cmap.axis in axes:
                emit_rescaled_mean(node, ctx, axes)


def reduced_axes(node, rank: int) -> set[int]:
    """The axes a reduction reduces (empty for a no-op reduction)."""
    if node.op in ("ArgMax", "ArgMin"):
        return {norm_axis(int(node.attrs.get("axis", 0)), rank)}
    raw = input_or_attr(node, "axes", 1, default=None)
    if raw is None or len(raw) == 0:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return set()
        raw = list(range(rank))
    return {norm_axis(int(a), rank) for a in raw}
