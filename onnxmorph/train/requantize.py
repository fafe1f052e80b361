"""Least-squares reconstruction for QDQ models: refit in float, store the refit as quantized integers.

Gradient steps cannot move int8 weights, but the closed-form refit (`reconstruct`) needs no gradients: the
weights are read as their dequantized float values (each weight `DequantizeLinear` of constants becomes a
float initializer of the same name; activation Quantize/Dequantize pairs stay, so the refit sees the
quantized activations the deployed model computes), refit against the unpruned model's pre-activations,
and quantized again with the original zero points and scales, a channel's scale growing only where the
refit leaves its range. An int32 bias keeps its scale at s_x·s_w with the new s_w.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper

from ..analysis.handlers.quant import axis_view, dequantize
from .reconstruct import reconstruct_cut


@dataclass
class QuantizedWeight:
    """One `DequantizeLinear(q, scale, zero point)` of constants."""

    output: str
    q: str
    scale: str
    zero_point: str | None
    axis: int


def dequantized_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, QuantizedWeight]]:
    """A copy of `model` whose constant DequantizeLinear nodes are float initializers (named after their
    outputs), and what each was."""
    inits = {t.name: t for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    quants: dict[str, QuantizedWeight] = {}
    keep_nodes = []
    for node in out.graph.node:
        ins = [i for i in node.input if i]
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or \
                not all(i in inits for i in ins):
            keep_nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("block_size", 0):
            keep_nodes.append(node)
            continue
        q = numpy_helper.to_array(inits[ins[0]])
        scale = numpy_helper.to_array(inits[ins[1]])
        zp = numpy_helper.to_array(inits[ins[2]]) if len(ins) > 2 else np.zeros_like(scale, dtype=np.int64)
        axis = int(attrs.get("axis", 1)) % max(q.ndim, 1)
        out.graph.initializer.append(numpy_helper.from_array(
            dequantize(q, scale, zp, axis).astype(scale.dtype), node.output[0]))
        quants[node.output[0]] = QuantizedWeight(node.output[0], ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                                                 axis)
    del out.graph.node[:]
    out.graph.node.extend(keep_nodes)
    return out, quants


def quantize(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, dtype, grow: bool):
    """(q, scale): `w` in integers of `dtype` with zero point `zp`; the scale grows (per channel, never
    shrinks) where `w` would leave the range, unless `grow` is False (then it clips)."""
    info = np.iinfo(dtype)
    lo, hi = (-127, 127) if dtype == np.int8 else (info.min, info.max)  # symmetric int8 as quantizers write it
    zpv = axis_view(zp, w.ndim, axis).astype(np.float64)
    if grow:
        other = tuple(a for a in range(w.ndim) if a != axis) if scale.size > 1 else None
        need_hi = np.max(w, axis=other, keepdims=True) / np.maximum(hi - zpv, 1e-12)
        need_lo = np.min(w, axis=other, keepdims=True) / np.minimum(lo - zpv, -1e-12)
        need = np.maximum(np.maximum(need_hi, need_lo), 0).reshape(scale.shape)
        scale = np.maximum(scale, need.astype(scale.dtype))
    q = np.clip(np.round(w / axis_view(scale, w.ndim, axis) + zpv), lo, hi).astype(dtype)
    return q, scale


def requantize(params: dict[str, np.ndarray], quants: dict[str, QuantizedWeight],
               model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The initializer values that store the refit `params` (keyed by dequantized-weight name) in `model`."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    out: dict[str, np.ndarray] = {}
    grown: dict[str, np.ndarray] = {}  # weight output -> new scale / old scale, per channel
    for node in model.graph.node:  # weights first, then the int32 biases that depend on their scales
        if node.op_type not in ("Conv", "Gemm", "ConvTranspose", "MatMul") or len(node.input) < 2:
            continue
        wq = quants.get(node.input[1])
        if wq is None or wq.output not in params:
            continue
        scale0 = inits[wq.scale]
        zp = inits[wq.zero_point] if wq.zero_point else np.zeros_like(scale0, dtype=np.int64)
        q, scale = quantize(params[wq.output], scale0, zp, wq.axis, inits[wq.q].dtype,
                             grow=uses.get(wq.scale, 0) <= 1)
        out[wq.q], out[wq.scale] = q, scale
        grown[wq.output] = scale / scale0
        bq = quants.get(node.input[2]) if len(node.input) > 2 else None
        if bq is not None and inits[bq.q].dtype == np.int32:
            value = params.get(bq.output)
            if value is None:
                value = dequantize(inits[bq.q], inits[bq.scale], inits[bq.zero_point] if bq.zero_point else
                                    np.zeros(1, np.int64), bq.axis)
            bscale = (inits[bq.scale] * (grown[wq.output] if grown[wq.output].size == inits[bq.scale].size
                                         else np.max(grown[wq.output]))).astype(inits[bq.scale].dtype)
            if uses.get(bq.scale, 0) > 1:
                bscale = inits[bq.scale]
            bzp = inits[bq.zero_point] if bq.zero_point else np.zeros_like(bscale, dtype=np.int64)
            out[bq.q], out[bq.scale] = quantize(value, bscale, bzp, bq.axis, np.int32, grow=False)
    handled = {q.q for q in quants.values() if q.q in out}
    for name, value in params.items():
        wq = quants.get(name)
        if wq is None:  # float parameters (a BatchNormalization mean) stay as they are
            out[name] = value
        elif wq.q not in handled:  # another quantized constant the refit changed (a MatMul's bias)
            scale0 = inits[wq.scale]
            zp = inits[wq.zero_point] if wq.zero_point else np.zeros_like(scale0, dtype=np.int64)
            out[wq.q], out[wq.scale] = quantize(value, scale0, zp, wq.axis, inits[wq.q].dtype,
                                                 grow=uses.get(wq.scale, 0) <= 1)
    return out


def reconstruct_quantized(analysis, keep_units: np.ndarray, inputs: dict[str, np.ndarray], *, teacher, seed: int = 0,
                          progress=None):
    """`reconstruct_cut` for a QDQ model: refit on its dequantized weights, return the quantized values."""
    work, quants = dequantized_weights(analysis.loaded.model)
    float_teacher, _ = dequantized_weights(teacher)
    rebuilt = reconstruct_cut(replace(analysis, loaded=replace(analysis.loaded, model=work)), keep_units, inputs,
                              teacher=float_teacher, seed=seed, progress=progress)
    return replace(rebuilt, params=requantize(rebuilt.params, quants, analysis.loaded.model))
