"""The cost declarations handlers make during analysis: memory traffic of element-wise, pooling,
normalization and copy nodes, with what the latency model needs to price them later (op kind,
whether runtimes fuse the node into the conv before it, NCHWc layout reorders, row lengths,
broadcast spans, subnormal softmax outputs). Pricing them is `cost/latency.py`'s job.
"""

from __future__ import annotations

import numpy as np

from ..graph.walk import is_constant, producer
from ..ops import (BROADCASTING, FUSABLE_ACTIVATIONS, NCHWC_OPS, NORM_OPS, POOL_OPS, UNARY, VIEW_OPS,
                   transpose_class)
from .node_cost import Bilinear
from .subnormal import subnormal_fraction

F32 = 4  # the cost model counts bytes of float32 elements; profiles rescale to their dtype


def _activations(node):
    return [t for t in node.inputs if t.name and not is_constant(t)]


def op_kind(node) -> str:
    """The latency kind of a node that is not a Conv/Gemm/MatMul (those say their own kind)."""
    if node.op in VIEW_OPS:
        return "view"
    if node.op in POOL_OPS:
        return "pool"
    if node.op in NORM_OPS:
        return "bn"
    if node.op in UNARY:
        return "unary"
    if node.op in BROADCASTING:
        return "binary" if len(_activations(node)) >= 2 else "unary"
    return "other"


def _single_use(ctx, t) -> bool:
    return len(t.outputs) == 1 and not any(o is t for o in ctx.graph.outputs)


def fused_into_producer(ctx, node) -> bool:
    """True when inference runtimes fold `node` into the convolution that produces its input.

    The rules follow ONNX Runtime's CPU fusions (Conv+BatchNorm, Conv/Gemm+activation, and the
    NCHWc convolution that absorbs a residual Add and the activation after it); TensorRT and
    XNNPACK fold the same patterns.
    """
    op = node.op
    if op == "BatchNormalization" or op in FUSABLE_ACTIVATIONS:
        if not node.inputs:
            return False
        x = node.inputs[0]
        p = producer(x)
        if p is None or not _single_use(ctx, x):
            return False
        if p.op in ("Conv", "ConvTranspose"):
            return True
        if op in FUSABLE_ACTIVATIONS:
            if p.op == "Gemm":
                return True
            if p.op in ("BatchNormalization", "Add"):
                return fused_into_producer(ctx, p)
        return False
    if op == "Add":
        acts = _activations(node)
        if len(acts) != 2 or any(t.shape != acts[0].shape for t in acts):
            return False
        for t in acts:
            p = producer(t)
            if p is None or not _single_use(ctx, t):
                continue
            if p.op == "Conv" or (p.op == "BatchNormalization" and fused_into_producer(ctx, p)):
                return True
    return False


def _memo(ctx, name: str) -> dict:
    memo = getattr(ctx, "_latency_memo", None)
    if memo is None:
        memo = {}
        ctx._latency_memo = memo
    return memo.setdefault(name, {})


def _rank4(ctx, t) -> bool:
    try:
        return len(ctx.shape(t)) == 4
    except (ValueError, TypeError):
        return False


def _silu(node) -> bool:
    """Mul(x, Sigmoid(x)): ONNX Runtime fuses it into QuickGelu, which has no NCHWc kernel."""
    acts = _activations(node)
    if node.op != "Mul" or len(acts) != 2:
        return False
    for a, b in ((acts[0], acts[1]), (acts[1], acts[0])):
        p = producer(b)
        if p is not None and p.op == "Sigmoid" and p.inputs and p.inputs[0] is a:
            return True
    return False


def nchwc(ctx, node) -> bool:
    """Whether ONNX Runtime keeps `node`'s output in the NCHWc layout (an approximation of its rules)."""
    memo = _memo(ctx, "nchwc")
    if node.name in memo:
        return memo[node.name]
    memo[node.name] = False  # cycles cannot happen in a DAG; this guards recursion
    ok = False
    outs = [t for t in node.outputs if t.name]
    if node.op in NCHWC_OPS and outs and _rank4(ctx, outs[0]):
        acts = _activations(node)
        producers = [producer(t) for t in acts]
        from_nchwc = bool(acts) and all(p is not None and nchwc(ctx, p) for p in producers)
        if node.op == "Conv":
            ok = len(node.inputs) > 1 and is_constant(node.inputs[1])
        elif node.op in ("MaxPool", "AveragePool"):
            ok = len(outs) == 1
        elif node.op in ("Add", "Sum", "Mul"):
            shapes = {tuple(t.shape or ()) for t in acts}
            ok = from_nchwc and len(shapes) == 1 and not _silu(node)
        elif node.op == "Concat":
            ok = from_nchwc and int(node.attrs.get("axis", 0)) in (1, -3)
        else:  # activations, BatchNorm, Resize, global pooling follow their input
            ok = from_nchwc
    if not ok and node.op in FUSABLE_ACTIVATIONS and fused_into_producer(ctx, node):
        ok = True
    memo[node.name] = ok
    return ok


def _declare_reorders(ctx, node) -> None:
    """Declare a possible layout copy (kind `reorder`) for each rank-4 activation `node` reads or
    writes, once per tensor. Whether it is paid comes from the runtime's plan when one is made
    (`runtime_plan`), else from the rule here: a ReorderOutput for an NCHWc input of a node that
    cannot use it, a ReorderInput for an output of such a node that feeds a convolution. Only
    measured profiles (of ONNX Runtime's CPU provider) price reorders."""
    done = _memo(ctx, "reordered")
    inside = nchwc(ctx, node)
    inputs = [t for t in _activations(node) if producer(t) is not None]
    outputs = [t for t in node.outputs if t.name]
    for t in inputs + outputs:
        if t in inputs:
            rule = not inside and nchwc(ctx, producer(t))
        else:
            rule = not inside and any(c.op == "Conv" for c in t.outputs)
        if t.name in done:  # any reader or writer may be the one that needs the copy
            done[t.name]["rule"] |= bool(rule)
            continue
        if not _rank4(ctx, t):
            continue
        numel = int(np.prod(ctx.shape(t)))
        tmap = ctx.map(t)
        extra = {"kind": "reorder", "fused": False, "tensor": t.name, "rule": bool(rule),
                 "size": float(numel / tmap.ids.size) if tmap is not None and tmap.ids.size else float(numel)}
        done[t.name] = extra
        if tmap is None or tmap.ids.size == 0:
            ctx.cost(node, None, None, 0, 0, bytes=Bilinear(d=2 * F32 * numel), extra=extra)
        else:
            ctx.cost(node, None, t, 0, tmap.axes[0], bytes=Bilinear(c=2 * F32 * numel / tmap.ids.size),
                     extra=extra)


def declare_memory_cost(ctx, node, kind: str | None = None) -> None:
    """Declare the memory traffic of `node` (element-wise, pooling, normalization, copies): one
    bytes-only cost per activation it reads or writes, each scaling with the alive channel
    positions of that tensor (a constant for tensors without a channel map). Views are declared
    too but priced only when the runtime's plan shows they copy; any node may need a layout
    reorder (`_declare_reorders`)."""
    kind = kind or op_kind(node)
    try:
        _declare_reorders(ctx, node)
    except (ValueError, TypeError):
        pass
    tensors = _activations(node) + [t for t in node.outputs if t.name]
    try:
        numels = [int(np.prod(ctx.shape(t))) for t in tensors]
    except (ValueError, TypeError):
        return  # no static shapes: no memory cost
    if not tensors:
        return
    out = next((t for t in node.outputs if t.name), None)
    cmap = ctx.map(out) if out is not None else None
    largest = max(numels)
    extra = {"kind": kind, "fused": bool(fused_into_producer(ctx, node)),
             "size": float(largest / cmap.ids.size) if cmap is not None and cmap.ids.size else float(largest)}
    row, how = _row_length(ctx, node, tensors[int(np.argmax(numels))])
    if row:
        extra["row"] = row
    if node.op == "Softmax" and out is not None:
        share = subnormal_fraction(out)
        if share > 0:
            extra["subnormal_outputs"] = share * float(largest)
    if how and how != "rows":
        extra["transpose"] = how
    spans = _broadcast_spans(ctx, node) if kind == "binary" else None
    for t, numel in zip(tensors, numels):
        tmap = ctx.map(t)
        x = extra
        if spans is not None and t is out:
            n_spans, block_axes = spans
            if tmap is not None and tmap.ids.size and tmap.axes[0] not in block_axes:
                x = dict(extra, spans_c=n_spans / tmap.ids.size)  # fewer channels, fewer spans
            else:
                x = dict(extra, spans_d=float(n_spans))
        if tmap is None or tmap.ids.size == 0:
            ctx.cost(node, None, None, 0, 0, bytes=Bilinear(d=F32 * numel), extra=x)
        else:
            ctx.cost(node, None, t, 0, tmap.axes[0], bytes=Bilinear(c=F32 * numel / tmap.ids.size), extra=x)


def _row_length(ctx, node, largest) -> tuple[float | None, str | None]:
    """The rows a row-wise op works on (Softmax, LayerNorm, a bias Gelu: the last axis) or moves
    (Transpose: the trailing axes it keeps in place), and for a Transpose how the runtime copies it
    (`ops.transpose_class`: "rows", "single_axis" or "elementwise")."""
    try:
        shape = [int(d) for d in ctx.shape(largest)]
    except (ValueError, TypeError):
        return None, None
    if not shape:
        return None, None
    if node.op == "Transpose":
        src = [int(d) for d in ctx.shape(node.inputs[0])]
        perm = [int(a) for a in node.attrs.get("perm", range(len(src) - 1, -1, -1))]
        how, row = transpose_class(src, perm)
        return (row if row and row > 1 else None), how
    return float(shape[-1]), None


def _broadcast_spans(ctx, node) -> tuple[float, set[int]] | None:
    """How many contiguous spans an element-wise op with broadcasting runs as, and the output axes
    inside one span: x[1,C,H,W] * s[1,C,1,1] is C spans of H*W (ONNX Runtime's CPU broadcaster
    loops over spans with one vector kernel call each). None when no input is broadcast."""
    out = next((t for t in node.outputs if t.name), None)
    acts = _activations(node)
    try:
        shape = [int(d) for d in ctx.shape(out)]
        ins = [[int(d) for d in ctx.shape(t)] for t in acts]
    except (ValueError, TypeError):
        return None
    if all(s == shape for s in ins):
        return None
    rank = len(shape)
    ins = [[1] * (rank - len(s)) + s for s in ins]

    def pattern(axis):
        return tuple(s[axis] == shape[axis] for s in ins)

    block, axes, last = 1, set(), None
    for axis in range(rank - 1, -1, -1):
        if shape[axis] == 1:
            axes.add(axis)
            continue
        if last is None:
            last = pattern(axis)
        elif pattern(axis) != last:
            break
        block *= shape[axis]
        axes.add(axis)
    return float(np.prod(shape)) / max(block, 1), axes
