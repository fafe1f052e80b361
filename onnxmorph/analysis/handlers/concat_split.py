"""Ops that assemble or select channel ranges: Concat, Split, Slice, Gather (offset maps)."""

from __future__ import annotations

import numpy as np

from ..channels import ChannelMap
from ..node_cost import Bilinear
from .base import OpHandler, const_value, input_or_attr, is_present, norm_axis, register
from .conv import F32


def _slice_constants(node, ctx, kept: dict[int, np.ndarray], rank: int) -> None:
    """Slice constant operands along the kept channel axes of the output (e.g. a class token)."""
    for i, t in enumerate(node.inputs):
        value = const_value(t)
        if value is None or value.ndim != rank:
            continue
        sliced = value
        for axis, idx in kept.items():
            if sliced.shape[axis] > 1:
                sliced = np.take(sliced, idx, axis=axis)
        if sliced is not value:
            ctx.set_input(node, i, sliced)


@register
class ConcatHandler(OpHandler):
    op_types = ("Concat",)

    def propagate(self, node, ctx) -> None:
        y = node.outputs[0]
        rank = ctx.rank(y)
        axis = norm_axis(int(node.attrs["axis"]), rank)
        maps = [ctx.map(t) for t in node.inputs]
        present = [m for m in maps if m is not None]
        if not present:
            return
        if all(m.axes == (axis,) for m in present):
            # Channel concat: the output's positions are the inputs' positions, in order.
            parts = []
            for t, m in zip(node.inputs, maps):
                if m is None:
                    fresh = ctx.table.new(ctx.shape(t)[axis], f"{node.name}:{t.name}")
                    ctx.table.freeze(fresh, f"Concat '{node.name}' input '{t.name}' is not prunable")
                    parts.append(fresh)
                else:
                    parts.append(m.ids)
            ctx.set_map(y, ChannelMap((axis,), np.concatenate(parts)))
            return
        if axis in present[0].axes or any(m.axes != present[0].axes or m.ids.shape != present[0].ids.shape
                                          for m in present):
            raise ValueError("inputs have different channel layouts")
        main = present[0]
        for m in present[1:]:
            ctx.couple(main, m)
        for t, m in zip(node.inputs, maps):
            if m is None and const_value(t) is None:
                ctx.freeze(main, f"Concat '{node.name}' input '{t.name}' is not tracked")
        ctx.set_map(y, main)

    def emit(self, node, ctx) -> None:
        y = node.outputs[0]
        kept = ctx.kept_axes(y)
        axis = norm_axis(int(node.attrs["axis"]), len(ctx.shape(y)))
        if kept and axis not in kept:
            _slice_constants(node, ctx, kept, len(ctx.shape(y)))


def _split_sizes(node, ctx, dim: int) -> list[int]:
    sizes = input_or_attr(node, "split", 1, default=None)
    if sizes is None:
        n = len(node.outputs)
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    return [int(s) for s in sizes]


@register
class SplitHandler(OpHandler):
    op_types = ("Split",)

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        rank = ctx.rank(x)
        axis = norm_axis(int(node.attrs.get("axis", 0)), rank)
        if axis not in cmap.axes:
            for out in node.outputs:
                ctx.set_map(out, cmap)
            return
        j = cmap.axes.index(axis)  # a multi-axis map (fused QKV as (3, heads, dim)) splits on one axis
        offset = 0
        for out, size in zip(node.outputs, _split_sizes(node, ctx, ctx.shape(x)[axis])):
            ctx.set_map(out, ChannelMap(cmap.axes, np.take(cmap.ids, np.arange(offset, offset + size), axis=j)))
            offset += size

    def emit(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if not ctx.kept_axes(x) or cmap is None:
            return
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(ctx.shape(x)))
        if axis not in cmap.axes:
            return
        sizes = np.array([len(ctx.kept_axes(out)[axis]) if axis in ctx.kept_axes(out) else ctx.shape(out)[axis]
                          for out in node.outputs], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if ctx.opset >= 13:
            if is_present(node, 1):
                ctx.set_input(node, 1, sizes)
            else:
                ctx.add_input(node, sizes, "split")
        else:
            node.attrs["split"] = sizes.tolist()


def _slice_params(node, rank):
    starts, ends = const_value(node.inputs[1]), const_value(node.inputs[2])
    axes = const_value(node.inputs[3]) if is_present(node, 3) else np.arange(len(starts))
    steps = const_value(node.inputs[4]) if is_present(node, 4) else np.ones(len(starts), np.int64)
    if any(v is None for v in (starts, ends, axes, steps)):
        raise ValueError("non-constant slice parameters")
    return starts, ends, [norm_axis(int(a), rank) for a in axes], steps


@register
class SliceHandler(OpHandler):
    op_types = ("Slice",)

    def propagate(self, node, ctx) -> None:
        x = node.inputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return
        shape = ctx.shape(x)
        starts, ends, axes, steps = _slice_params(node, len(shape))
        ids = cmap.ids
        for s, e, a, st in zip(starts, ends, axes, steps):
            if a not in cmap.axes:
                continue
            if int(st) != 1:
                raise ValueError("strided slice of channels")
            j = cmap.axes.index(a)
            ids = np.take(ids, np.arange(*slice(int(s), int(e), 1).indices(shape[a])), axis=j)
        ctx.set_map(node.outputs[0], ChannelMap(cmap.axes, np.ascontiguousarray(ids)))

    def emit(self, node, ctx) -> None:
        x = node.inputs[0]
        kept_axes = ctx.kept_axes(x)
        if not kept_axes:
            return
        shape = ctx.shape(x)
        starts, ends, axes, steps = _slice_params(node, len(shape))
        new_starts, new_ends = starts.astype(np.int64).copy(), ends.astype(np.int64).copy()
        for i, a in enumerate(axes):
            if a not in kept_axes:
                continue
            kept = kept_axes[a]
            lo, hi, _ = slice(int(starts[i]), int(ends[i]), 1).indices(shape[a])
            new_starts[i] = int((kept < lo).sum())
            new_ends[i] = new_starts[i] + int(((kept >= lo) & (kept < hi)).sum())
        # all index inputs of a Slice share one type (tf2onnx writes int32)
        dtype = np.asarray(const_value(node.inputs[1])).dtype
        ctx.set_input(node, 1, new_starts.astype(dtype))
        ctx.set_input(node, 2, new_ends.astype(dtype))


@register
class GatherHandler(OpHandler):
    op_types = ("Gather",)

    def propagate(self, node, ctx) -> None:
        x, idx_t = node.inputs
        cmap = ctx.map(x)
        rank = ctx.rank(x)
        axis = norm_axis(int(node.attrs.get("axis", 0)), rank)
        table = const_value(x)
        if table is not None and table.ndim == 2 and axis == 0 and const_value(idx_t) is None:
            # An embedding lookup (token ids -> rows of a table): its columns are new channels.
            y = node.outputs[0]
            ctx.new_channels(y, ctx.rank(y) - 1, node.name)
            ctx.weight(node, x, 1, y)
            ctx.cost(node, None, y, 0, ctx.rank(y) - 1, params=Bilinear(c=table.shape[0]),
                     bytes=Bilinear(c=F32 * 2 * int(np.prod(ctx.shape(idx_t)))))
            return
        if cmap is None:
            return
        indices = const_value(idx_t)
        if axis not in cmap.axes:
            if indices is None and ctx.rank(idx_t) != 1:
                raise ValueError("non-constant indices")
            r = ctx.rank(idx_t)
            ctx.set_map(node.outputs[0], ChannelMap(tuple(a if a < axis else a + r - 1 for a in cmap.axes),
                                                    cmap.ids))
            return
        if indices is None or indices.ndim > 1:
            raise ValueError("gather of channels needs constant scalar or 1-D indices")
        if not cmap.is_1d:
            # One slice of a multi-axis map: q = qkv[0] of a fused QKV laid out as (3, heads, dim).
            if indices.ndim != 0:
                raise ValueError("gather of several slices of a multi-axis channel layout")
            j = cmap.axes.index(axis)
            picked = np.take(cmap.ids, int(indices) % ctx.shape(x)[axis], axis=j)
            axes = tuple(a if a < axis else a - 1 for a in cmap.axes if a != axis)
            ctx.set_map(node.outputs[0], ChannelMap(axes, np.ascontiguousarray(picked)))
            return
        picked = cmap.ids[np.where(indices < 0, indices + ctx.shape(x)[axis], indices)]
        if indices.ndim == 0:
            ctx.table.freeze([picked], f"Gather '{node.name}' reads one channel by index")
            return
        ctx.set_map(node.outputs[0], ChannelMap((axis,), picked))

    def emit(self, node, ctx) -> None:
        x = node.inputs[0]
        table = const_value(x)
        if table is not None:
            kout = ctx.kept(node.outputs[0])
            if kout is not None and table.ndim == 2:
                ctx.set_input(node, 0, table[:, kout])
            return
        cmap = ctx.map(x)
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(ctx.shape(x)))
        kept = ctx.kept_axes(x).get(axis)
        if kept is None or cmap is None or axis not in cmap.axes:
            return
        indices = const_value(node.inputs[1])
        dim = ctx.shape(x)[axis]
        old = np.where(indices < 0, indices + dim, indices)
        new_pos = np.full(dim, -1, dtype=np.int64)
        new_pos[kept] = np.arange(len(kept))
        remapped = new_pos[old]
        if indices.ndim == 1:
            remapped = remapped[remapped >= 0]  # removed channels vanish from the output
        remapped = np.asarray(remapped, dtype=indices.dtype)
        if not np.array_equal(remapped, indices):
            ctx.set_input(node, 1, remapped)
