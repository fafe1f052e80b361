"""Ops that compute statistics over channel axes (reductions, LayerNorm, Softmax): when they can
still be pruned exactly.

* Over some axes of a multi-axis map (a LayerNorm or Softmax over the head dim, an L2 norm of q per
  head): the positions along the reduced axes are tied, so a unit is a whole fiber (a whole head);
  removing it removes its statistics too and never changes a kept one.
* Over the whole channel axis of the residual stream (`prune_embedding`): the consumer is gated like
  a Conv, so in the masked model the removed channels are zeros; the emitted model reproduces those
  statistics exactly — ReduceMean is rescaled by kept/original, LayerNormalization normalizes over the
  original width with the removed channels as zeros (Pad → LayerNorm → Slice).
"""

from __future__ import annotations

import numpy as np

from ..channels import ChannelMap, tie_fibers
from .base import const_value, is_present, norm_axis

# reductions whose value over zeros-filled removed channels equals the value over the kept ones
# (ReduceMean up to the kept/original factor the emitter applies)
EXACT_OVER_ZEROS = frozenset({"ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare"})


def tie_reduced(ctx, cmap: ChannelMap, axes: set[int]) -> ChannelMap | None:
    """When `cmap` keeps channel axes outside `axes`: tie the fibers along the reduced channel axes and
    return the map of what is left (same axis positions, reduced axes dropped). Else None."""
    reduced = [j for j, a in enumerate(cmap.axes) if a in axes]
    rest = [j for j, a in enumerate(cmap.axes) if a not in axes]
    if not reduced or not rest:
        return None
    for j in reduced:
        tie_fibers(ctx.table, cmap.ids, j)
    index = tuple(slice(None) if j in rest else 0 for j in range(len(cmap.axes)))
    return ChannelMap(tuple(cmap.axes[j] for j in rest), np.ascontiguousarray(cmap.ids[index]))


def stream_statistics(ctx, node, cmap: ChannelMap, axes: set[int]) -> bool:
    """`prune_embedding`: accept a statistic over the whole (1-D) channel axis; gate its input."""
    if not (ctx.options.prune_embedding and cmap.is_1d and cmap.axis in axes):
        return False
    ctx.gate(node, node.inputs[0])
    ctx.label(cmap.ids, f"embedding width (residual stream at {node.name})", 0)
    return True


def emit_rescaled_mean(node, ctx, axes: set[int]) -> None:
    """ReduceMean over a pruned channel axis: the masked model averages over the original width."""
    x = node.inputs[0]
    kept = ctx.kept_axes(x)
    factor = 1.0
    for a in axes:
        if a in kept:
            factor *= len(kept[a]) / ctx.shape(x)[a]
    if factor != 1.0:
        dtype = node.outputs[0].dtype or np.float32
        ctx.wrap_output(node, 0, "Mul", [ctx.constant(np.asarray(factor, dtype=dtype), f"{node.name}__kept_fraction")],
                        "kept_fraction")


def emit_padded_layernorm(node, ctx) -> None:
    """LayerNormalization over a pruned channel axis: normalize over the original width with the
    removed channels as zeros (exactly what the gated masked model computes), then drop them."""
    x = node.inputs[0]
    kept_axes = ctx.kept_axes(x)
    if not kept_axes:
        return
    cmap = ctx.map(x)
    c = cmap.axis
    rank = len(ctx.shape(x))
    kept = kept_axes[c]
    full, k = ctx.shape(x)[c], len(kept)
    missing = full - k

    def padded(i: int, fill: float):
        value = const_value(node.inputs[i])
        if value is None:
            raise ValueError(f"LayerNormalization '{node.name}' has non-constant parameters")
        pa = c - (rank - value.ndim)
        if pa < 0 or value.shape[pa] == 1:
            return
        pad_shape = list(value.shape)
        pad_shape[pa] = missing
        ctx.set_input(node, i, np.concatenate([np.take(value, kept, axis=pa),
                                               np.full(pad_shape, fill, dtype=value.dtype)], axis=pa))

    padded(1, 1.0)
    if is_present(node, 2):
        padded(2, 0.0)
    pads = np.zeros(2 * rank, dtype=np.int64)
    pads[rank + c] = missing
    ctx.wrap_input(node, 0, "Pad", [ctx.constant(pads, f"{node.name}__pads")], "zeros_for_removed",
                   mode="constant")
    ctx.wrap_output(node, 0, "Slice", [ctx.constant(np.array([0], np.int64), f"{node.name}__starts"),
                                       ctx.constant(np.array([k], np.int64), f"{node.name}__ends"),
                                       ctx.constant(np.array([c], np.int64), f"{node.name}__axes")],
                    "kept")


def layernorm_axis(node, rank: int) -> int:
    return norm_axis(int(node.attrs.get("axis", -1)), rank)
