"""Per-op facts, in one place: the op families, which ops only re-label a buffer, which constant
inputs hold learnable weights, how the runtime copies a Transpose.

Every stage reads op knowledge from here (analysis handlers, cost declarations, the latency
model, ONNX Runtime's plan, training), so a new op is described once. What one op *does* to
channels lives in its handler (analysis/handlers/), its gradient in train/autodiff/rules/.
"""

from __future__ import annotations

import numpy as np

# --- element-wise families (the element-wise handler's ops) -------------------------------------

UNARY = (
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Elu", "Erf",
    "Exp", "Floor", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log",
    "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Celu", "Sigmoid", "Sign", "Sin",
    "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu", "Gelu", "Cast",
    "CastLike", "Clip", "Dropout", "Shrink",
)
BROADCASTING = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Mod", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Where", "PRelu", "BitwiseAnd",
    "BitwiseOr", "BitwiseXor",
)
ELEMENTWISE = frozenset(UNARY) | frozenset(BROADCASTING)

# --- views: ops that move no data ---------------------------------------------------------------

# kernels ONNX Runtime runs by re-labelling their input buffer (a fixed cost when it runs them)
VIEW_KERNELS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"})
# the latency kind "view": the view kernels plus shape queries and constants
VIEW_OPS = VIEW_KERNELS | frozenset({"Shape", "Size", "Constant", "ConstantOfShape"})
# ops whose output holds the same values as their input (what a constant mask is traced through)
VALUE_VIEWS = (VIEW_KERNELS - {"Dropout"}) | frozenset({"Transpose"})

# --- latency families ---------------------------------------------------------------------------

POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
NORM_OPS = frozenset({"BatchNormalization", "InstanceNormalization"})
# activations runtimes fold into the Conv/Gemm before them
FUSABLE_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid"})
# ONNX Runtime's CPU provider (x86) runs convolutions in a blocked NCHWc layout; these ops keep a
# tensor in that layout, any other consumer gets a ReorderOutput and a conv fed by any other
# producer a ReorderInput (onnxruntime/core/optimizer/nchwc_transformer.cc).
NCHWC_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Sigmoid",
                       "Tanh", "Add", "Sum", "Mul", "Concat", "BatchNormalization", "Resize", "Upsample"})

# --- weights ------------------------------------------------------------------------------------

# constant operand slots holding learnable weights, per op type
WEIGHT_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "BatchNormalization": (1, 2),
    "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2), "PRelu": (1,),
}
# ops whose weight is a linear map of their activation input (least-squares refit, training graphs)
LINEAR_OPS = ("MatMul", "Gemm", "Conv")


# --- how the runtime copies ---------------------------------------------------------------------


# --- quantization ---------------------------------------------------------------------------------

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")  # QDQ format: float ops between (de)quantize pairs
QOPERATOR_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger")  # integer-domain ops

def transpose_class(shape: list[int], perm: list[int]) -> tuple[str, float | None]:
    """How ONNX Runtime copies a Transpose of `shape` by `perm`: ("rows", row length) when the last
    axis stays in place (rows of the trailing kept axes are copied), else "single_axis" (one axis
    moves, the rest keep their order) or "elementwise". Size-1 axes are dropped and axes that stay
    adjacent are merged first, as they move together."""
    keep = [a for a in range(len(shape)) if shape[a] != 1]
    order = [a for a in perm if shape[a] != 1]
    rank = {a: i for i, a in enumerate(keep)}
    order = [rank[a] for a in order]
    sizes = [shape[a] for a in keep]
    groups: list[list[int]] = []  # runs of input axes that stay adjacent and in order
    for a in order:
        if groups and groups[-1][-1] + 1 == a:
            groups[-1].append(a)
        else:
            groups.append([a])
    merged = sorted(range(len(groups)), key=lambda g: groups[g][0])  # merged axes in input order
    out = [merged.index(g) for g in range(len(groups))]  # output order of the merged input axes
    n = len(out)
    if n <= 1 or out[-1] == n - 1:
        last = groups[out.index(n - 1)] if n else []
        return "rows", float(np.prod([sizes[a] for a in last])) if last else 1.0
    for moved in range(n):
        rest = [a for a in out if a != moved]
        if rest == sorted(rest):
            return "single_axis", None
    return "elementwise", None


def conv_pads(attrs: dict, in_spatial, kernel) -> tuple[list[int], list[int]]:
    """(pads at the beginning, pads at the end) of a Conv or pool window over `in_spatial`, with
    `auto_pad` resolved as ONNX defines it (SAME_*: output ceil(in / stride), the odd pixel at the
    end for SAME_UPPER, at the beginning for SAME_LOWER). Attribute strings may be bytes."""
    nd = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * 2 * nd))
        return pads[:nd], pads[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    begin, end = [], []
    for i in range(nd):
        out = -(-int(in_spatial[i]) // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - int(in_spatial[i]))
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin, end
