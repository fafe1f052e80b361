"""Training-graph rewrites, applied to the training copy of the graph only (the emitted model keeps
the original ops).

For every engine, BatchNormalization becomes a per-channel Mul/Add with its stored statistics, so
fine-tuning keeps the deployed normalization while scale and bias train. The other rewrites exist
only for the ort-training engine: onnxruntime-training 1.19.2 has no gradient for those ops, while
onnxmorph's own autodiff (`train/autodiff`) differentiates them as they are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import OnnxMorphError
from ..graph.builder import NodeBuilder

_REWRITES: dict[str, Callable] = {}


def rewrite(*ops):
    def deco(fn):
        for op in ops:
            _REWRITES[op] = fn
        return fn
    return deco


def _hard_sigmoid(b: NodeBuilder, x, alpha: float, beta: float, out=None):
    lin = b.op("Add", [b.op("Mul", [x, b.const(alpha)]), b.const(beta)])
    return b.op("Clip", [lin, b.const(0.0), b.const(1.0)], out=out)


def _softplus(b: NodeBuilder, x, out=None):
    # log(1 + e^x) computed stably as relu(x) + log(1 + e^-|x|)
    tail = b.op("Log", [b.op("Add", [b.const(1.0), b.op("Exp", [b.op("Neg", [b.op("Abs", [x])])])])])
    return b.op("Add", [b.op("Relu", [x]), tail], out=out)


def _exp_linear_neg(b: NodeBuilder, x, alpha: float):
    """alpha * (exp(min(x, 0)) - 1): the negative branch of Elu/Selu."""
    neg = b.op("Min", [x, b.const(0.0)])
    return b.op("Mul", [b.op("Sub", [b.op("Exp", [neg]), b.const(1.0)]), b.const(alpha)])


@rewrite("HardSigmoid")
def _rw_hardsigmoid(b, node, x, out):
    _hard_sigmoid(b, x, node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5), out=out)


@rewrite("HardSwish")
def _rw_hardswish(b, node, x, out):
    b.op("Mul", [x, _hard_sigmoid(b, x, 1 / 6, 0.5)], out=out)


@rewrite("Elu")
def _rw_elu(b, node, x, out):
    b.op("Add", [b.op("Relu", [x]), _exp_linear_neg(b, x, node.attrs.get("alpha", 1.0))], out=out)


@rewrite("Selu")
def _rw_selu(b, node, x, out):
    alpha, gamma = node.attrs.get("alpha", 1.67326319217681884765625), node.attrs.get("gamma", 1.05070102214813232421875)
    inner = b.op("Add", [b.op("Relu", [x]), _exp_linear_neg(b, x, alpha)])
    b.op("Mul", [inner, b.const(gamma)], out=out)


@rewrite("Celu")
def _rw_celu(b, node, x, out):
    alpha = node.attrs.get("alpha", 1.0)
    neg = b.op("Mul", [b.op("Sub", [b.op("Exp", [b.op("Div", [b.op("Min", [x, b.const(0.0)]), b.const(alpha)])]),
                                    b.const(1.0)]), b.const(alpha)])
    b.op("Add", [b.op("Relu", [x]), neg], out=out)


@rewrite("Softplus")
def _rw_softplus(b, node, x, out):
    _softplus(b, x, out=out)


@rewrite("Softsign")
def _rw_softsign(b, node, x, out):
    b.op("Div", [x, b.op("Add", [b.op("Abs", [x]), b.const(1.0)])], out=out)


@rewrite("Mish")
def _rw_mish(b, node, x, out):
    b.op("Mul", [x, b.op("Tanh", [_softplus(b, x)])], out=out)


@rewrite("PRelu")
def _rw_prelu(b, node, x, out):
    slope = node.inputs[1]
    negative = b.op("Mul", [slope, b.op("Relu", [b.op("Neg", [x])])])
    b.op("Sub", [b.op("Relu", [x]), negative], out=out)


@rewrite("GlobalMaxPool")
def _rw_global_max_pool(b, node, x, out):
    spatial = [int(d) for d in x.shape[2:]]
    b.op("MaxPool", [x], {"kernel_shape": spatial}, out=out)


@rewrite("Sum", "Mean")
def _rw_variadic(b, node, x, out):
    inputs = list(node.inputs)
    acc = inputs[0]
    for t in inputs[1:-1]:
        acc = b.op("Add", [acc, t])
    if node.op == "Sum":
        b.op("Add", [acc, inputs[-1]], out=out)
    else:
        b.op("Div", [b.op("Add", [acc, inputs[-1]]), b.const(float(len(inputs)))], out=out)


@rewrite("Dropout")
def _rw_dropout(b, node, x, out):
    b.op("Identity", [x], out=out)


@rewrite("InstanceNormalization")
def _rw_instance_norm(b, node, x, out):
    eps = node.attrs.get("epsilon", 1e-5)
    rank = len(x.shape)
    axes = list(range(2, rank))
    view = [-1] + [1] * (rank - 2)
    scale = b.op("Reshape", [node.inputs[1], b.const(view, np.int64)])
    bias = b.op("Reshape", [node.inputs[2], b.const(view, np.int64)])
    mean = b.op("ReduceMean", [x], {"axes": axes, "keepdims": 1})
    centered = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Mul", [centered, centered])], {"axes": axes, "keepdims": 1})
    normed = b.op("Div", [centered, b.op("Sqrt", [b.op("Add", [var, b.const(eps)])])])
    b.op("Add", [b.op("Mul", [normed, scale]), bias], out=out)


@rewrite("BatchNormalization")
def _rw_batch_norm(b, node, x, out):
    """y = (x - mean) * scale / sqrt(var + eps) + bias with stored mean/var and trainable scale/bias."""
    scale, bias, mean, var = node.inputs[1:5]
    eps = node.attrs.get("epsilon", 1e-5)
    rank = len(x.shape)
    view = [-1] + [1] * (rank - 2)
    inv_std = 1.0 / np.sqrt(np.asarray(var.values, np.float64) + eps)
    k = b.op("Mul", [scale, b.const(inv_std)])
    shift = b.op("Sub", [bias, b.op("Mul", [k, b.const(np.asarray(mean.values))])])
    y = b.op("Mul", [x, b.op("Reshape", [k, b.const(view, np.int64)])])
    b.op("Add", [y, b.op("Reshape", [shift, b.const(view, np.int64)])], out=out)


@rewrite("Resize", "Upsample")
def _rw_resize(b, node, x, out):
    """Nearest resize by integer factors (floor, asymmetric) = repeat each pixel: Reshape/Expand/Reshape."""
    in_shape, out_shape = [int(d) for d in x.shape], [int(d) for d in out.shape]
    attr = lambda k, d: (lambda v: v.decode() if isinstance(v, bytes) else v)(node.attrs.get(k, d))  # noqa: E731
    factors = [o // i for i, o in zip(in_shape, out_shape)]
    exact = all(o == i * f for i, o, f in zip(in_shape, out_shape, factors))
    ctm, rounding = attr("coordinate_transformation_mode", "half_pixel"), attr("nearest_mode", "round_prefer_floor")
    # Output pixel k*f+j maps to input pixel k exactly for these coordinate conventions.
    repeats = node.op == "Upsample" or ctm in ("half_pixel", "pytorch_half_pixel") or (
        ctm == "asymmetric" and rounding == "floor")
    if attr("mode", "nearest") != "nearest" or not exact or not repeats:
        raise OnnxMorphError(f"cannot train through {node.op} '{node.name}': only nearest resizing by "
                             "integer factors has a training rewrite")
    expanded, split = [], []
    for d, f in zip(in_shape, factors):
        split += [d, 1]
        expanded += [d, f]
    y = b.op("Reshape", [x, b.const(split, np.int64)])
    y = b.op("Expand", [y, b.const(expanded, np.int64)])
    b.op("Reshape", [y, b.const(out_shape, np.int64)], out=out)


ALL_ENGINES = {"BatchNormalization"}


def lower_for_training(graph: gs.Graph, ort_training: bool = True) -> list[str]:
    """Rewrite in place (BatchNorm always; with `ort_training` every op it cannot differentiate);
    returns the ops rewritten."""
    done = []
    for node in list(graph.nodes):
        if not ort_training and node.op not in ALL_ENGINES:
            continue
        if node.op == "LayerNormalization":
            # its gradient needs the optional Mean / InvStdDev outputs to exist
            while len(node.outputs) < 3:
                node.outputs.append(gs.Variable(f"{node.name}__ln_out{len(node.outputs)}", dtype=np.float32))
            continue
        fn = _REWRITES.get(node.op)
        if fn is None:
            continue
        out = node.outputs[0]
        x = node.inputs[0]
        node.outputs.clear()
        fn(NodeBuilder(graph, node.name), node, x, out)
        node.inputs.clear()
        graph.nodes.remove(node)
        done.append(node.op)
    graph.toposort()
    return done
