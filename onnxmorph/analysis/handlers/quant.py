"""Quantized models: QDQ (QuantizeLinear / DequantizeLinear around float ops) and QOperator
(QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger).

QDQ: a weight stored as `DequantizeLinear(int8 constant, scale, zero point)` reads as its float
value during the analysis (`base.const_value`), so Conv/Gemm/MatMul prune as usual; emit slices the
quantized constant and its per-axis scale and zero point with the same selection the float weight
would get (`QuantizedWeights`), keeping per-tensor ones and the DequantizeLinear itself. An activation
Quantize/Dequantize pair passes channels through (a per-axis one on the channel axis is sliced).

QOperator ops compute in the integer domain, where a channel's real 0 is its zero point: the masked model
gates such a tensor with `Where(keep, x, zero point)` instead of a `Mul`. QLinearConv prunes like Conv;
the other integer ops (ConvInteger, QLinearMatMul, MatMulInteger, grouped QLinearConv) have their MACs
counted and their channels frozen, with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..node_cost import Bilinear
from ...errors import OnnxMorphError
from ...ops import QDQ_OPS, QOPERATOR_OPS
from .base import OpHandler, const_value, is_present, norm_axis, register

# Ops whose handlers only *select* positions of their constant inputs on emit (no arithmetic on the
# values): their quantized weights can be sliced through an index view.
SELECTING_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "PRelu",
                 "BatchNormalization")
QOPERATOR_REASON = "{op} '{name}' computes in the integer domain (QOperator format; QDQ format prunes)"
# operand index -> zero-point index of the integer ops that read quantized activations
ZERO_POINT_OF = {"QLinearConv": {0: 2}, "QLinearMatMul": {0: 2, 3: 5}, "ConvInteger": {0: 2},
                 "MatMulInteger": {0: 2, 1: 3}, "DequantizeLinear": {0: 2}}


def _is_default_domain(node) -> bool:
    return node.domain in (None, "", "ai.onnx")


def _per_axis(scale: np.ndarray) -> bool:
    return scale.size > 1


def dequantized(node: gs.Node) -> np.ndarray | None:
    """The float value of `DequantizeLinear(constant, scale[, zero point])`, None when the quantized
    input is not a constant (an activation's DequantizeLinear)."""
    x = node.inputs[0]
    if not isinstance(x, gs.Constant):
        return None
    q = np.asarray(x.values)
    scale = const_value(node.inputs[1])
    zp = const_value(node.inputs[2]) if is_present(node, 2) else None
    if scale is None or (is_present(node, 2) and zp is None):
        return None
    if int(node.attrs.get("block_size", 0)) or scale.ndim > 1:
        return None  # blocked quantization: not read as a constant, so its consumer stays a leaf
    zp = np.zeros_like(scale, dtype=np.int64) if zp is None else zp
    axis = norm_axis(int(node.attrs.get("axis", 1)), q.ndim) if _per_axis(scale) else 0
    return dequantize(q, scale, zp, axis).astype(scale.dtype)


def axis_view(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-tensor (size 1) or per-axis quantization parameter shaped to broadcast over a rank-`ndim`
    tensor along `axis`."""
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    """(q - zero point) * scale in float64, per tensor or along `axis`."""
    return (q.astype(np.float64) - axis_view(zp, q.ndim, axis).astype(np.float64)) * axis_view(scale, q.ndim, axis)


def quantized_weight(t) -> gs.Node | None:
    """The DequantizeLinear that makes constant `t` from stored integers, if it is one."""
    if isinstance(t, gs.Variable) and len(t.inputs) == 1:
        node = t.inputs[0]
        if node.op == "DequantizeLinear" and _is_default_domain(node) and isinstance(node.inputs[0], gs.Constant):
            return node
    return None


def is_quantized_node(node: gs.Node) -> bool:
    """A QOperator op, or a float op whose data and weight (its first two inputs) both come out of a
    DequantizeLinear (QDQ): runtimes run it on the integers."""
    if node.op in QOPERATOR_OPS or node.op.startswith("QLinear") or node.op == "QGemm":
        return True
    operands = [t for t in node.inputs[:2] if t.name]
    return bool(operands) and all(isinstance(t, gs.Variable) and len(t.inputs) == 1
                                  and t.inputs[0].op == "DequantizeLinear" for t in operands)


@register
class QuantizeDequantizeHandler(OpHandler):
    """QuantizeLinear / DequantizeLinear on an activation: channels pass through (position by
    position); a per-axis scale and zero point on the channel axis are sliced on emit."""

    op_types = QDQ_OPS

    def propagate(self, node, ctx) -> None:
        x, y = node.inputs[0], node.outputs[0]
        cmap = ctx.map(x)
        if cmap is None:
            return  # a quantized weight (constant) or an untracked tensor
        scale = const_value(node.inputs[1])
        if scale is None or (is_present(node, 2) and const_value(node.inputs[2]) is None):
            raise ValueError("non-constant scale or zero point")
        if int(node.attrs.get("block_size", 0)) or scale.ndim > 1:
            raise ValueError("blocked quantization is not supported")
        if _per_axis(scale):
            axis = norm_axis(int(node.attrs.get("axis", 1)), ctx.rank(x))
            if not (cmap.is_1d and cmap.axis == axis):
                raise ValueError(f"per-axis scale on axis {axis}, not on the channel axis")
        ctx.set_map(y, cmap)

    def emit(self, node, ctx) -> None:
        kept = ctx.kept(node.outputs[0])
        if kept is None:
            return
        for i in (1, 2):
            if is_present(node, i):
                value = const_value(node.inputs[i])
                if _per_axis(value):
                    ctx.set_input(node, i, value[kept])


class QOperatorHandler(OpHandler):
    """Integer-domain ops: count MACs, freeze the channels they read and make."""

    def weight_index(self, node) -> int:
        """QLinearConv/QLinearMatMul: x, x_scale, x_zp, w, ...; ConvInteger/MatMulInteger: x, w, ..."""
        return 3 if node.op.startswith("QLinear") else 1

    def macs(self, node, ctx, x, w, y) -> tuple[Bilinear, int, int]:
        raise NotImplementedError

    def propagate(self, node, ctx) -> None:
        reason = QOPERATOR_REASON.format(op=node.op, name=node.name)
        x, y = node.inputs[0], node.outputs[0]
        ctx.freeze_inputs(node, reason)
        ctx.leaves.setdefault(node.name, reason)
        w = const_value(node.inputs[self.weight_index(node)])
        macs, in_axis, out_axis = self.macs(node, ctx, x, w, y)
        if w is not None:
            ctx.freeze(ctx.new_channels(y, out_axis, node.name), reason)
            ctx.cost(node, x, y, in_axis, out_axis, macs=macs, params=Bilinear(d=float(w.size)),
                     bytes=Bilinear(d=float(w.size + np.prod(ctx.shape(x)) + np.prod(ctx.shape(y)))))
        else:
            ctx.cost(node, None, None, 0, 0, macs=macs)


def _prod(xs) -> int:
    return int(np.prod(xs)) if len(xs) else 1


@register
class QuantizedConvHandler(QOperatorHandler):
    """QLinearConv (dense, per-tensor activations) prunes like Conv: its int8 weight, per-channel weight
    scale and zero point and int32 bias are sliced, and its masked model gates the input with a `Where`
    to the input's zero point. Grouped QLinearConv and ConvInteger stay frozen."""

    op_types = ("QLinearConv", "ConvInteger")

    def propagate(self, node, ctx) -> None:
        if not self._prunable(node):
            return super().propagate(node, ctx)
        from .conv import channel_map

        x, w_t, y = node.inputs[0], node.inputs[3], node.outputs[0]
        w = const_value(w_t)
        channel_map(ctx, x, f"QLinearConv '{node.name}' input channels are not on axis 1")
        ctx.new_channels(y, 1, node.name)
        ctx.gate(node, x)
        dequant = gs.Constant(w_t.name, self._dequantized_weight(node, w))  # importance by real value
        ctx.weight(node, dequant, 0, y)
        ctx.weight(node, dequant, 1, x)
        k = _prod(w.shape[2:])
        sp_in, sp_out = _prod(ctx.shape(x)[2:]), _prod(ctx.shape(y)[2:])
        params = Bilinear(a=k, c=1 if is_present(node, 8) else 0)
        ctx.cost(node, x, y, 1, 1, macs=Bilinear(a=sp_out * k), params=params,
                 bytes=params + Bilinear(b=sp_in, c=sp_out),  # one byte per element
                 extra={"kind": "conv1x1" if k == 1 else "conv", "size": float(sp_out), "kernel": k, "groups": 1,
                        "width": w.shape[1]})

    @staticmethod
    def _prunable(node) -> bool:
        return node.op == "QLinearConv" and int(node.attrs.get("group", 1)) == 1 and all(
            const_value(node.inputs[i]) is not None for i in (1, 2, 3, 4, 5, 6, 7)) and \
            const_value(node.inputs[1]).size == 1 and const_value(node.inputs[6]).size == 1

    @staticmethod
    def _dequantized_weight(node, w):
        scale, zp = const_value(node.inputs[4]), const_value(node.inputs[5])
        view = (-1,) + (1,) * (w.ndim - 1) if scale.size > 1 else ()
        return (w.astype(np.float64) - zp.astype(np.float64).reshape(view)) * scale.reshape(view)

    def emit(self, node, ctx) -> None:
        if not self._prunable(node):
            return
        w = const_value(node.inputs[3])
        kin, kout = ctx.kept(node.inputs[0]), ctx.kept(node.outputs[0])
        if kout is not None:
            w = w[kout]
            for i in (4, 5, 8):  # per-channel weight scale and zero point, int32 bias
                if is_present(node, i) and const_value(node.inputs[i]).size > 1:
                    ctx.set_input(node, i, const_value(node.inputs[i])[kout])
        if kin is not None:
            w = w[:, kin]
        if kin is not None or kout is not None:
            ctx.set_input(node, 3, w)

    def macs(self, node, ctx, x, w, y):
        if w is None:
            raise ValueError("weights are not constant")
        group = int(node.attrs.get("group", 1))
        k = _prod(w.shape[2:])
        sp_out = _prod(ctx.shape(y)[2:])
        # frozen channels: the count is fixed, a·i·o at the full widths
        return Bilinear(a=sp_out * k / group), 1, 1


@register
class QuantizedMatMulHandler(QOperatorHandler):
    op_types = ("QLinearMatMul", "MatMulInteger")

    def macs(self, node, ctx, x, w, y):
        rows = _prod(ctx.shape(x)[:-1])
        if w is None:  # between two activations: a fixed count
            return Bilinear(d=float(_prod(ctx.shape(y)) * ctx.shape(x)[-1])), 0, 0
        return Bilinear(a=rows), ctx.rank(x) - 1, ctx.rank(y) - 1


class QuantizedWeights:
    """Emit through quantized weights: before the handlers run, every selecting consumer of a
    `DequantizeLinear(constant)` reads an index array of the quantized constant's shape instead; the
    handlers slice it as they would slice the float weight; afterwards each sliced index array becomes
    a new DequantizeLinear of the selected integers, with per-axis scales and zero points selected
    along their axis (per-tensor ones are kept). Untouched views get the original tensor back."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.views: list[tuple[gs.Node, int, gs.Node, gs.Variable, gs.Constant]] = []

    @classmethod
    def install(cls, graph: gs.Graph, ctx) -> "QuantizedWeights":
        self = cls(ctx)
        for node in graph.nodes:
            if node.op not in SELECTING_OPS or not _is_default_domain(node):
                continue
            for i, t in enumerate(node.inputs):
                dq = quantized_weight(t)
                if dq is None or dequantized(dq) is None:
                    continue
                shape = np.asarray(dq.inputs[0].values).shape
                index = ctx.constant(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape),
                                     f"{t.name}__index")
                node.inputs[i] = index
                self.views.append((node, i, dq, t, index))
        return self

    def restore(self) -> None:
        for node, i, dq, original, index in self.views:
            current = node.inputs[i]
            if not isinstance(current, gs.Constant):
                raise OnnxMorphError(f"internal error: the quantized weight of '{node.name}' was rewritten")
            idx = np.asarray(current.values)
            q = np.asarray(dq.inputs[0].values)
            if idx.shape == q.shape and np.array_equal(idx.ravel(), np.arange(q.size)):
                node.inputs[i] = original
                continue
            if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != q.ndim:
                raise OnnxMorphError(f"internal error: the quantized weight of '{node.name}' was not a selection")
            node.inputs[i] = self._requantized(dq, original, q, idx)

    def _requantized(self, dq: gs.Node, original: gs.Variable, q: np.ndarray, idx: np.ndarray) -> gs.Variable:
        ctx = self.ctx
        inputs = [ctx.constant(q.ravel()[idx], f"{dq.inputs[0].name}__pruned")]
        scale = np.asarray(dq.inputs[1].values)
        if _per_axis(scale):
            axis = norm_axis(int(dq.attrs.get("axis", 1)), q.ndim)
            coords = np.moveaxis(np.unravel_index(idx, q.shape)[axis], axis, 0).reshape(idx.shape[axis], -1)
            if not (coords == coords[:, :1]).all():
                raise OnnxMorphError(f"internal error: '{original.name}' was not sliced along its quantization axis")
            picked = coords[:, 0]
            for k in (1, 2):
                if is_present(dq, k):
                    inputs.append(ctx.constant(np.asarray(dq.inputs[k].values)[picked], f"{dq.inputs[k].name}__pruned"))
        else:
            inputs += [dq.inputs[k] for k in (1, 2) if is_present(dq, k)]
        out = gs.Variable(ctx._fresh_name(f"{original.name}__pruned"), dtype=original.dtype)
        ctx.graph.nodes.append(gs.Node("DequantizeLinear", name=ctx._fresh_name(f"{dq.name}__pruned"),
                                       inputs=inputs, outputs=[out], attrs=dict(dq.attrs)))
        return out



def integer_zero_point(tensor: gs.Variable) -> np.ndarray:
    """The zero point the integer ops consuming `tensor` read it with: the value a removed channel must
    take in the masked model (0 when no consumer names one)."""
    for node in tensor.outputs:
        for i, t in enumerate(node.inputs):
            k = ZERO_POINT_OF.get(node.op, {}).get(i)
            if t is tensor and k is not None and is_present(node, k) and const_value(node.inputs[k]) is not None:
                return np.asarray(const_value(node.inputs[k])).reshape(())
    return np.zeros((), dtype=tensor.dtype)
