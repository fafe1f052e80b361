"""Resize and Pad: they change spatial axes only, so channels pass through."""

from __future__ import annotations

import numpy as np

from .base import OpHandler, const_value, is_present, norm_axis, register


@register
class ResizeHandler(OpHandler):
    op_types = ("Resize", "Upsample")

    def propagate(self, node, ctx) -> None:
        x, y = node.inputs[0], node.outputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        in_shape, out_shape = ctx.shape(x), ctx.shape(y)
        if any(in_shape[a] != out_shape[a] for a in cmap.axes):
            raise ValueError("resizes the channel axis")
        if node.op == "Resize" and len(node.inputs) > 3 and is_present(node, 3) \
                and const_value(node.inputs[3]) is None:
            raise ValueError("non-constant sizes")
        ctx.set_map(y, cmap)

    def emit(self, node, ctx) -> None:
        if node.op != "Resize" or not is_present(node, 3):
            return
        kept = ctx.kept_axes(node.outputs[0])
        if not kept:
            return
        sizes = const_value(node.inputs[3]).astype(np.int64).copy()
        axes = node.attrs.get("axes")
        rank = len(ctx.shape(node.outputs[0]))
        positions = [norm_axis(int(a), rank) for a in axes] if axes else list(range(rank))
        for i, a in enumerate(positions):
            if a in kept:
                sizes[i] = len(kept[a])
        ctx.set_input(node, 3, sizes)


@register
class PadHandler(OpHandler):
    op_types = ("Pad",)

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        rank = ctx.rank(x)
        pads = node.attrs.get("pads")
        if pads is None:
            pads = const_value(node.inputs[1]) if is_present(node, 1) else None
            if pads is None:
                raise ValueError("non-constant pads")
        axes = const_value(node.inputs[3]) if is_present(node, 3) else None
        axes = [norm_axis(int(a), rank) for a in axes] if axes is not None else list(range(rank))
        pads = np.asarray(pads).reshape(2, -1)
        if any(pads[:, i].any() for i, a in enumerate(axes) if a in cmap.axes):
            raise ValueError("pads the channel axis")
        ctx.set_map(node.outputs[0], cmap)
