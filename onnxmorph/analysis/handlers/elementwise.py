"""Element-wise ops with numpy broadcasting: unary activations, binary arithmetic, Where, PRelu.

Channels pass through position by position. Two activations whose channel axes
meet are coupled (a residual `Add`, an SE `Mul` by [N,C,1,1]); a constant operand
that varies along a channel axis (per-channel scale, PRelu slope) is sliced on emit.
"""

from __future__ import annotations

import numpy as np

from ...ops import BROADCASTING, UNARY
from ..memory_cost import declare_memory_cost
from .base import OpHandler, const_value, register


@register
class ElementwiseHandler(OpHandler):
    op_types = UNARY + BROADCASTING

    def propagate(self, node, ctx) -> None:
        y = node.outputs[0]
        out_shape = ctx.shape(y)
        rank = len(out_shape)
        operands = [t for t in node.inputs if t.name != ""]
        if node.op == "CastLike":
            operands = operands[:1]  # the second input only supplies a dtype
        mapped, blockers = [], []
        for t in operands:
            cmap = ctx.map(t)
            if cmap is not None:
                mapped.append((t, cmap.shifted(rank - ctx.rank(t))))
            elif const_value(t) is None:
                blockers.append(t)
        if not mapped:
            return
        # The widest map carries the output's channels; others must match it or be broadcast.
        main = max(mapped, key=lambda tm: tm[1].ids.size)[1]
        for t, cmap in mapped:
            if cmap is main:
                continue
            if cmap.axes == main.axes and cmap.ids.shape == main.ids.shape:
                ctx.couple(main, cmap)
            elif cmap.ids.size == 1:
                ctx.freeze(cmap, f"{node.op} '{node.name}' broadcasts a single channel")
            elif set(cmap.axes) < set(main.axes) and all(
                    main.ids.shape[main.axes.index(a)] == n for a, n in zip(cmap.axes, cmap.ids.shape)):
                # One value per slice of `main` (q / ||q|| over the head dim, broadcast back): whole slices
                # go together with that value's channel.
                view = [cmap.ids.shape[cmap.axes.index(a)] if a in cmap.axes else 1 for a in main.axes]
                ctx.table.union(np.broadcast_to(cmap.ids.reshape(view), main.ids.shape), main.ids)
            else:
                ctx.freeze(cmap, f"{node.op} '{node.name}' mixes channel layouts")
                ctx.freeze(main, f"{node.op} '{node.name}' mixes channel layouts")
        for t in blockers:
            shape = (1,) * (rank - ctx.rank(t)) + ctx.shape(t)
            if any(shape[a] > 1 for a in main.axes):
                ctx.freeze(main, f"{node.op} '{node.name}' combines channels with an untracked tensor "
                                 f"'{t.name}'")
        for out in node.outputs:
            if out.name and ctx.shape(out) == out_shape:
                ctx.set_map(out, main)
        declare_memory_cost(ctx, node)

    def emit(self, node, ctx) -> None:
        y = node.outputs[0]
        kept = ctx.kept_axes(y)
        if not kept:
            return
        rank = len(ctx.shape(y))
        for i, t in enumerate(node.inputs):
            value = const_value(t)
            if value is None or (node.op == "CastLike" and i == 1):
                continue
            offset = rank - value.ndim
            sliced = value
            for axis, idx in kept.items():
                a = axis - offset
                if a >= 0 and sliced.shape[a] > 1:
                    sliced = np.take(sliced, idx, axis=a)
            if sliced is not value:
                ctx.set_input(node, i, sliced)
