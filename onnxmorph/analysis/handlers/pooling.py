"""Pooling and reductions over non-channel axes: channels pass through (shifted if axes drop)."""

from __future__ import annotations

from ..channels import ChannelMap
from .base import OpHandler, input_or_attr, norm_axis, register

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
        rank = ctx.rank(x)
        if node.op in ("ArgMax", "ArgMin"):
            axes = {norm_axis(int(node.attrs.get("axis", 0)), rank)}
        else:
            axes_input = 1
            raw = input_or_attr(node, "axes", axes_input, default=None)
            if not raw:
                if int(node.attrs.get("noop_with_empty_axes", 0)):
                    ctx.set_map(node.outputs[0], cmap)
                    return
                raw = list(range(rank))
            axes = {norm_axis(int(a), rank) for a in raw}
        if axes & set(cmap.axes):
            ctx.freeze(cmap, f"{node.op} '{node.name}' reduces over the channel axis")
            return
        keepdims = int(node.attrs.get("keepdims", 1))
        ctx.set_map(node.outputs[0], cmap if keepdims else drop_axes(cmap, axes))
