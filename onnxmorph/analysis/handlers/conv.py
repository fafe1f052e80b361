"""Conv (dense, grouped, depthwise with any multiplier) and ConvTranspose."""

from __future__ import annotations

import numpy as np

from ..node_cost import Bilinear
from .base import OpHandler, const_value, is_present, register

F32 = 4  # bytes per element used for the memory-traffic term


def _prod(xs) -> int:
    return int(np.prod(xs)) if len(xs) else 1


def channel_map(ctx, t, reason):
    """The input's channel map if it lies on axis 1 alone; otherwise freeze it and return None."""
    cmap = ctx.map(t)
    if cmap is not None and not (cmap.is_1d and cmap.axis == 1):
        ctx.freeze(cmap, reason)
        return None
    return cmap


@register
class ConvHandler(OpHandler):
    op_types = ("Conv",)

    def propagate(self, node, ctx) -> None:
        x, w_t = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        w = const_value(w_t)
        if w is None:
            raise ValueError("weights are not constant")
        group = int(node.attrs.get("group", 1))
        has_bias = is_present(node, 2)
        xmap = channel_map(ctx, x, f"Conv '{node.name}' input channels are not on axis 1")
        ymap = ctx.new_channels(y, 1, node.name)
        k = _prod(w.shape[2:])
        sp_in, sp_out = _prod(ctx.shape(x)[2:]), _prod(ctx.shape(y)[2:])
        cin_g, cout_g = w.shape[1], w.shape[0] // group
        if group == 1:
            ctx.gate(node, x)
            ctx.weight(node, w_t, 0, y)
            ctx.weight(node, w_t, 1, x)
            macs = Bilinear(a=sp_out * k)
            params = Bilinear(a=k, c=1 if has_bias else 0)
        else:
            # Whole conv groups go together (in and out channels), so group sizes stay uniform.
            if xmap is None:
                ctx.freeze(ymap, f"grouped Conv '{node.name}' has no prunable input channels")
            else:
                for gi in range(group):
                    ctx.table.union_all(np.concatenate([xmap.ids[gi * cin_g:(gi + 1) * cin_g],
                                                        ymap.ids[gi * cout_g:(gi + 1) * cout_g]]))
                ctx.gate(node, x)
            ctx.weight(node, w_t, 0, y)
            macs = Bilinear(c=sp_out * k * cin_g)
            params = Bilinear(c=k * cin_g + (1 if has_bias else 0))
        nbytes = (params + Bilinear(b=sp_in, c=sp_out)).scaled(F32)
        kind = ("conv1x1" if k == 1 else "conv") if group == 1 else ("depthwise" if cin_g == 1 else "grouped")
        ctx.cost(node, x, y, 1, 1, macs=macs, params=params, bytes=nbytes,
                 extra={"kind": kind, "size": float(sp_out), "kernel": k, "groups": group, "width": cin_g})

    def emit(self, node, ctx) -> None:
        w = const_value(node.inputs[1])
        group = int(node.attrs.get("group", 1))
        kin, kout = ctx.kept(node.inputs[0]), ctx.kept(node.outputs[0])
        if kout is not None:
            w = w[kout]
            if group > 1:
                node.attrs["group"] = group * len(kout) // ctx.shape(node.outputs[0])[1]
            if is_present(node, 2):
                ctx.set_input(node, 2, const_value(node.inputs[2])[kout])
        if group == 1 and kin is not None:
            w = w[:, kin]
        if kin is not None or kout is not None:
            ctx.set_input(node, 1, w)


@register
class ConvTransposeHandler(OpHandler):
    op_types = ("ConvTranspose",)

    def propagate(self, node, ctx) -> None:
        x, w_t = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        w = const_value(w_t)
        if w is None:
            raise ValueError("weights are not constant")
        if int(node.attrs.get("group", 1)) != 1:
            raise ValueError("grouped ConvTranspose is not supported")
        has_bias = is_present(node, 2)
        channel_map(ctx, x, f"ConvTranspose '{node.name}' input channels are not on axis 1")
        ctx.new_channels(y, 1, node.name)
        ctx.gate(node, x)
        ctx.weight(node, w_t, 0, x)
        ctx.weight(node, w_t, 1, y)
        k = _prod(w.shape[2:])
        sp_in, sp_out = _prod(ctx.shape(x)[2:]), _prod(ctx.shape(y)[2:])
        params = Bilinear(a=k, c=1 if has_bias else 0)
        ctx.cost(node, x, y, 1, 1, macs=Bilinear(a=sp_in * k), params=params,
                 bytes=(params + Bilinear(b=sp_in, c=sp_out)).scaled(F32),
                 extra={"kind": "convtranspose", "size": float(sp_out), "kernel": k})

    def emit(self, node, ctx) -> None:
        w = const_value(node.inputs[1])
        kin, kout = ctx.kept(node.inputs[0]), ctx.kept(node.outputs[0])
        if kin is not None:
            w = w[kin]
        if kout is not None:
            w = w[:, kout]
            if is_present(node, 2):
                ctx.set_input(node, 2, const_value(node.inputs[2])[kout])
        if kin is not None or kout is not None:
            ctx.set_input(node, 1, w)
