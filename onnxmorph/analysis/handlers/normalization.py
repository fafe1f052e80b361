"""Per-channel normalizations (BatchNorm, InstanceNorm) and ops that normalize over some axes
(LayerNorm, Softmax, MeanVarianceNormalization): channels pass through unless normalized over."""

from __future__ import annotations

from ..memory_cost import declare_memory_cost
from ..node_cost import Bilinear
from .base import OpHandler, const_value, norm_axis, register
from .reductions import emit_padded_layernorm, stream_statistics, tie_reduced


@register
class PerChannelNormHandler(OpHandler):
    """BatchNormalization / InstanceNormalization: parameters indexed by channel (axis 1)."""

    op_types = ("BatchNormalization", "InstanceNormalization")

    def propagate(self, node, ctx) -> None:
        x, y = node.inputs[0], node.outputs[0]
        params = [t for t in node.inputs[1:]]
        if any(const_value(p) is None for p in params):
            raise ValueError("normalization parameters are not constant")
        cmap = ctx.map(x)
        if cmap is None:
            return
        if not (cmap.is_1d and cmap.axis == 1):
            raise ValueError("channels are not on axis 1")
        ctx.set_map(y, cmap)
        for p in params[:1]:
            ctx.weight(node, p, 0, x)
        ctx.cost(node, x, y, 1, 1, params=Bilinear(b=len(params)))
        declare_memory_cost(ctx, node, "bn")

    def emit(self, node, ctx) -> None:
        kept = ctx.kept(node.inputs[0])
        if kept is None:
            return
        for i in range(1, len(node.inputs)):
            ctx.set_input(node, i, const_value(node.inputs[i])[kept])


@register
class AxisNormHandler(OpHandler):
    """Ops that mix values across `axis` (and, for LayerNorm / old Softmax, every later axis)."""

    op_types = ("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "MeanVarianceNormalization")

    def normalized_axes(self, node, ctx, rank: int) -> set[int]:
        if node.op == "MeanVarianceNormalization":
            return {norm_axis(a, rank) for a in node.attrs.get("axes", [0, 2, 3])}
        default = -1 if (node.op == "LayerNormalization" or ctx_opset(ctx) >= 13) else 1
        axis = norm_axis(int(node.attrs.get("axis", default)), rank)
        if node.op == "LayerNormalization" or ctx_opset(ctx) < 13:
            return set(range(axis, rank))  # normalized over axis and every axis after it
        return {axis}

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        axes = self.normalized_axes(node, ctx, ctx.rank(x))
        if set(cmap.axes) & axes:
            if tie_reduced(ctx, cmap, axes) is not None:
                pass  # over the head dim of whole heads: nothing kept changes
            elif node.op == "LayerNormalization" and stream_statistics(ctx, node, cmap, axes):
                scale = node.inputs[1]
                if const_value(scale) is not None and const_value(scale).ndim == ctx.rank(x) - cmap.axis:
                    ctx.weight(node, scale, 0, x)
            else:
                hint = ""
                if node.op == "LayerNormalization" and cmap.is_1d:  # the residual stream of a transformer
                    ctx.label(cmap.ids, f"embedding width (residual stream at {node.name})", 0)
                    hint = " (--prune-embedding prunes it)"
                ctx.freeze(cmap, f"{node.op} '{node.name}' normalizes over the channel axis{hint}")
        ctx.set_map(node.outputs[0], cmap)

    def emit(self, node, ctx) -> None:
        if node.op == "LayerNormalization":
            cmap = ctx.map(node.inputs[0])
            if cmap is not None and cmap.is_1d and \
                    cmap.axis in self.normalized_axes(node, ctx, len(ctx.shape(node.inputs[0]))):
                emit_padded_layernorm(node, ctx)


def ctx_opset(ctx) -> int:
    return int(ctx.graph.opset)
