"""Every gradient rule against central finite differences in float64.

Each case is one op (or a short chain) on small random shapes that exercise broadcasting, groups,
strides, dilations and pads. The loss is sum(y * R) for a fixed random R, so every output element
carries a distinct weight. The forward+backward model runs in float64 in ONNX's reference evaluator
(ONNX Runtime has no float64 kernels for Conv and many activations); for every input with a
gradient, the analytic gradient must match central differences along random directions and, for
small tensors, element by element. The same model is also run in float32 by ONNX Runtime, the
engine that trains with it, and must agree with the float64 gradient.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator as _Reference
from onnx.reference.op_run import OpRun
from onnx.reference.ops._op import OpRunUnaryNum
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _RefConvTranspose

from onnxmorph.errors import OnnxMorphError
from onnxmorph.train.autodiff import GRAD_PREFIX, differentiate, registered_gradients

RNG = np.random.default_rng(0)


class _GroupedConvTranspose(_RefConvTranspose):
    """onnx 1.23's reference slices a grouped ConvTranspose's weight by output channels; the weight's
    first axis is the input channels (wrong whenever they differ). Split the groups correctly."""

    def _run(self, X, W, B=None, group=None, **kw):
        group = group or 1
        if group == 1:
            return super()._run(X, W, B, group=1, **kw)
        cg = X.shape[1] // group
        outs = [super(_GroupedConvTranspose, self)._run(
            X[:, i * cg:(i + 1) * cg], W[i * cg:(i + 1) * cg], None, group=1, **kw)[0] for i in range(group)]
        y = np.concatenate(outs, axis=1)
        if B is not None:
            y = y + B.reshape(1, -1, *([1] * (y.ndim - 2)))
        return (y.astype(X.dtype),)


_GroupedConvTranspose.__name__ = "ConvTranspose"


class Erf(OpRunUnaryNum):
    """onnx's reference Erf rounds to float32; finite differences in float64 need it exact."""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class Gelu(OpRun):
    def _run(self, x, approximate="none"):
        if approximate == "tanh":
            return (0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),)
        return (0.5 * x * (1 + np.vectorize(math.erf, otypes=[x.dtype])(x / math.sqrt(2))),)


class _FlatSoftmax(OpRun):
    """Opset < 13 Softmax: over the 2-D view [prod(:axis), prod(axis:)] (the reference implements only 13's)."""

    log = False

    def _run(self, x, axis=1):
        z = x.reshape(int(np.prod(x.shape[:axis])), -1)
        z = z - z.max(1, keepdims=True)
        out = z - np.log(np.exp(z).sum(1, keepdims=True)) if self.log else np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return (out.reshape(x.shape),)


class Softmax(_FlatSoftmax):
    pass


class LogSoftmax(_FlatSoftmax):
    log = True


def ReferenceEvaluator(model):  # noqa: N802
    ops = [_GroupedConvTranspose, Erf, Gelu]
    if model.opset_import[0].version < 13:
        ops += [Softmax, LogSoftmax]
    return _Reference(model, new_ops=ops)


def rnd(*shape, scale=1.0, positive=False):
    v = RNG.standard_normal(shape) * scale
    return np.abs(v) + 0.5 if positive else v


def _model(nodes, inputs: dict, consts: dict, opset: int, dtype=TensorProto.DOUBLE):
    """Graph: `nodes` produce 'y'; loss = ReduceSum(y * R)."""
    np_dt = helper.tensor_dtype_to_np_dtype(dtype)
    nodes = list(nodes)
    nodes.append(helper.make_node("Mul", ["y", "R"], ["yr"]))
    nodes.append(helper.make_node("ReduceSum", ["yr"], ["loss"], keepdims=0))
    ins = [helper.make_tensor_value_info(k, dtype, list(v.shape)) for k, v in inputs.items()]
    inits = [numpy_helper.from_array(v.astype(np_dt) if v.dtype == np.float64 else v, k) for k, v in consts.items()]
    g = helper.make_graph(nodes, "case", ins, [helper.make_tensor_value_info("loss", dtype, [])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _output_shape(nodes, inputs, consts, opset):
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info(k, TensorProto.DOUBLE, list(v.shape))
                                           for k, v in inputs.items()],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return ReferenceEvaluator(m).run(None, {k: v for k, v in inputs.items()})[0].shape


def check(nodes, inputs: dict, consts: dict | None = None, opset: int = 17, wrt=None, eps=1e-6,
          rtol=1e-5, ort32=True):
    """Analytic vs central-difference gradients for every name in `wrt` (default: all inputs)."""
    consts = dict(consts or {})
    inputs = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    wrt = list(wrt or inputs)
    consts["R"] = RNG.standard_normal(_output_shape(nodes, inputs, consts, opset))
    model = _model(nodes, inputs, consts, opset)
    full, names = differentiate(model, "loss", wrt)
    onnx.checker.check_model(full)
    ref = ReferenceEvaluator(full)
    got = dict(zip(["loss"] + names, ref.run(["loss"] + names, inputs)))
    fwd = ReferenceEvaluator(model)

    def f(feeds):
        return float(fwd.run(["loss"], feeds)[0])

    for w in wrt:
        g = got[GRAD_PREFIX + w]
        assert g.shape == inputs[w].shape, w
        directions = [RNG.standard_normal(inputs[w].shape) for _ in range(2)]
        if inputs[w].size <= 24:
            directions += [np.eye(inputs[w].size)[i].reshape(inputs[w].shape) for i in range(inputs[w].size)]
        for v in directions:
            plus = dict(inputs, **{w: inputs[w] + eps * v})
            minus = dict(inputs, **{w: inputs[w] - eps * v})
            fd = (f(plus) - f(minus)) / (2 * eps)
            an = float((g * v).sum())
            assert abs(fd - an) <= rtol * max(1.0, abs(fd), np.abs(g).sum()) + 1e-7, (w, fd, an)
    assert any(np.abs(got[GRAD_PREFIX + w]).sum() > 0 for w in wrt)  # the case tests something
    if ort32:
        _check_onnxruntime(full, names, inputs, got)
    return got


def _check_onnxruntime(full: onnx.ModelProto, names, inputs, ref):
    """The float32 copy of the gradient model runs in ONNX Runtime and agrees with float64."""
    from onnxmorph.runtime import make_session

    m32 = onnx.ModelProto()
    m32.CopyFrom(full)
    g = m32.graph
    for t in list(g.input) + list(g.output) + list(g.value_info):
        if t.type.tensor_type.elem_type == TensorProto.DOUBLE:
            t.type.tensor_type.elem_type = TensorProto.FLOAT
    for i, init in enumerate(g.initializer):
        if init.data_type == TensorProto.DOUBLE:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                                             init.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.DOUBLE:
                a.i = TensorProto.FLOAT
    del g.value_info[:]
    out = make_session(m32).run(names, {k: v.astype(np.float32) for k, v in inputs.items()})
    for name, o in zip(names, out):
        np.testing.assert_allclose(o, ref[name], rtol=2e-3, atol=2e-3 * max(1.0, np.abs(ref[name]).max()))


def node(op, ins, out="y", **attrs):
    return helper.make_node(op, ins, [out] if isinstance(out, str) else out, **attrs)


# ---------------------------------------------------------------- conv family
CONV_CASES = {
    "plain": dict(x=(2, 3, 6, 6), w=(4, 3, 3, 3), attrs=dict(pads=[1, 1, 1, 1])),
    "strided_asym_pads": dict(x=(2, 3, 7, 6), w=(4, 3, 3, 2), attrs=dict(strides=[2, 2], pads=[1, 0, 0, 1])),
    "dilated": dict(x=(1, 2, 8, 7), w=(3, 2, 3, 3), attrs=dict(dilations=[2, 1], pads=[2, 1, 1, 1])),
    "grouped": dict(x=(2, 4, 5, 5), w=(6, 2, 3, 3), attrs=dict(group=2, strides=[2, 1], pads=[1, 1, 1, 1])),
    "depthwise": dict(x=(2, 4, 6, 6), w=(4, 1, 3, 3), attrs=dict(group=4, strides=[2, 2], pads=[1, 1, 1, 1])),
    "depth_multiplier": dict(x=(1, 2, 5, 5), w=(4, 1, 3, 3), attrs=dict(group=2, pads=[0, 1, 1, 0])),
    "pointwise": dict(x=(2, 5, 4, 4), w=(3, 5, 1, 1), attrs={}),
    "strided_dilated_batch1": dict(x=(1, 3, 9, 9), w=(2, 3, 3, 3), attrs=dict(strides=[2, 3], dilations=[2, 2])),
    "same_upper": dict(x=(1, 2, 5, 6), w=(3, 2, 3, 3), attrs=dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "conv1d": dict(x=(2, 3, 9), w=(4, 3, 3), attrs=dict(strides=[2], pads=[1, 0])),
    # more than MAX_UNFOLD_TAPS taps: the weight gradient is a batch/channel-swapped conv, not im2col
    "big_kernel": dict(x=(2, 2, 10, 9), w=(2, 2, 8, 7), attrs=dict(strides=[2, 1], pads=[1, 2, 0, 1])),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(case):
    c = CONV_CASES[case]
    b = (c["w"][0],)
    check([node("Conv", ["x", "w", "b"], **c["attrs"])], {"x": rnd(*c["x"]), "w": rnd(*c["w"]), "b": rnd(*b)})


CONVT_CASES = {
    "strided": dict(x=(2, 3, 4, 4), w=(3, 2, 3, 3), attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                                                  output_padding=[1, 0])),
    "grouped_dilated": dict(x=(1, 4, 3, 4), w=(4, 3, 2, 3), attrs=dict(group=2, dilations=[2, 1], pads=[0, 1, 1, 0])),
    "depthwise": dict(x=(2, 3, 4, 4), w=(3, 1, 2, 2), attrs=dict(group=3, strides=[2, 2])),
}


@pytest.mark.parametrize("case", sorted(CONVT_CASES))
def test_conv_transpose(case):
    c = CONVT_CASES[case]
    b = (c["w"][1] * c["attrs"].get("group", 1),)
    check([node("ConvTranspose", ["x", "w", "b"], **c["attrs"])],
          {"x": rnd(*c["x"]), "w": rnd(*c["w"]), "b": rnd(*b)})


# ---------------------------------------------------------------- linear
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm(ta, tb):
    m, k, n = 3, 4, 5
    a = rnd(k, m) if ta else rnd(m, k)
    b = rnd(n, k) if tb else rnd(k, n)
    check([node("Gemm", ["a", "b", "c"], transA=ta, transB=tb, alpha=0.7, beta=1.3)],
          {"a": a, "b": b, "c": rnd(1, n)})


MATMUL_CASES = {
    "2d": ((3, 4), (4, 5)),
    "batched_weight": ((2, 3, 4), (4, 5)),
    "batched_both": ((2, 3, 4), (2, 4, 5)),
    "broadcast_batch": ((2, 1, 3, 4), (3, 4, 2)),
    "vector_left": ((4,), (2, 4, 3)),
    "vector_right": ((2, 3, 4), (4,)),
}


@pytest.mark.parametrize("case", sorted(MATMUL_CASES))
def test_matmul(case):
    sa, sb = MATMUL_CASES[case]
    check([node("MatMul", ["a", "b"])], {"a": rnd(*sa), "b": rnd(*sb)})


@pytest.mark.parametrize("eq,sa,sb", [("bhqd,bhkd->bhqk", (2, 2, 3, 4), (2, 2, 5, 4)),
                                      ("ij,jk", (3, 4), (4, 2)),
                                      ("...ij,...jk->...ik", (2, 3, 4), (2, 4, 2)),
                                      ("bij,jk->bk", (2, 3, 4), (4, 5))])
def test_einsum(eq, sa, sb):
    check([node("Einsum", ["a", "b"], equation=eq)], {"a": rnd(*sa), "b": rnd(*sb)})


# ---------------------------------------------------------------- element-wise
UNARY = {
    "Relu": {}, "LeakyRelu": dict(alpha=0.1), "Elu": dict(alpha=0.7), "Selu": {}, "Celu": dict(alpha=1.3),
    "Sigmoid": {}, "HardSigmoid": dict(alpha=0.3, beta=0.4), "HardSwish": {}, "Tanh": {}, "Erf": {},
    "Exp": {}, "Neg": {}, "Abs": {}, "Softplus": {}, "Softsign": {}, "Mish": {}, "Identity": {},
    "Gelu": {}, "Gelu_tanh": dict(approximate="tanh"), "Sin": {}, "Cos": {},
}


def _away_from_kinks(x, op):
    """Keep inputs off the points where the op is not differentiable (0, +-3, HardSigmoid's ends)."""
    x = np.where(np.abs(x) < 0.05, 0.3, x)
    if op in ("HardSwish", "HardSigmoid"):
        for kink in (-3.0, 3.0, -4 / 3, 2.0):
            x = np.where(np.abs(x - kink) < 0.05, kink + 0.2, x)
    return x


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    real = op.split("_")[0]
    x = _away_from_kinks(rnd(2, 3, 4, scale=2.5), real)
    check([node(real, ["x"], **UNARY[op])], {"x": x}, opset={"Gelu": 20, "Mish": 18}.get(real, 17))


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_unary_positive(op):
    check([node(op, ["x"])], {"x": rnd(3, 4, positive=True)})


def test_clip_with_trainable_bounds():
    x = _away_from_kinks(rnd(3, 4, scale=2), "Clip")
    x = np.where(np.abs(x - 0.5) < 0.05, 0.7, np.where(np.abs(x + 0.8) < 0.05, -1.0, x))
    check([node("Clip", ["x", "lo", "hi"])], {"x": x, "lo": np.array(-0.8), "hi": np.array(0.5)})


def test_clip_opset11_constant_bounds():
    x = _away_from_kinks(rnd(3, 4, scale=2), "Clip")
    check([node("Clip", ["x", "lo", "hi"])], {"x": x}, consts={"lo": np.array(-0.8), "hi": np.array(0.9)},
          opset=11)


def test_prelu_broadcast_slope():
    x = _away_from_kinks(rnd(2, 3, 4, 4), "PRelu")
    check([node("PRelu", ["x", "s"])], {"x": x, "s": rnd(3, 1, 1)})


BINARY = {"Add": ((2, 3, 4), (3, 1)), "Sub": ((2, 1, 4), (3, 4)), "Mul": ((2, 3, 4), (1, 3, 1)),
          "Div": ((2, 3, 4), (4,)), "Max": ((3, 4), (2, 1, 4)), "Min": ((3, 4), (3, 1))}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_broadcasting_binary(op):
    sa, sb = BINARY[op]
    b = rnd(*sb, positive=op == "Div")
    check([node(op, ["a", "b"])], {"a": rnd(*sa), "b": b})


def test_pow_both_operands():
    check([node("Pow", ["a", "b"])], {"a": rnd(2, 3, positive=True), "b": rnd(3)})


def test_pow_square_constant_exponent():
    check([node("Pow", ["a", "two"])], {"a": rnd(2, 3)}, consts={"two": np.array(2.0)})


@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_variadic(op):
    check([node(op, ["a", "b", "c"])], {"a": rnd(2, 3), "b": rnd(3), "c": rnd(2, 1)})


def test_where():
    cond = RNG.random((3, 4)) > 0.5
    check([node("Where", ["c", "a", "b"])], {"a": rnd(3, 4), "b": rnd(4)}, consts={"c": cond})


# ---------------------------------------------------------------- normalization
def test_batch_norm_stored_statistics():
    check([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
          {"x": rnd(2, 3, 4, 4), "s": rnd(3), "b": rnd(3), "m": rnd(3)}, consts={"v": rnd(3, positive=True)})


def test_instance_norm():
    check([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3)],
          {"x": rnd(2, 3, 3, 4), "s": rnd(3), "b": rnd(3)})


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_norm(axis):
    check([node("LayerNormalization", ["x", "s", "b"], axis=axis, epsilon=1e-3)],
          {"x": rnd(2, 3, 4), "s": rnd(3, 4) if axis == 1 else rnd(4), "b": rnd(4)})


def test_group_norm():
    # stash_type=double: the reference computes the statistics in float32 by default
    check([node("GroupNormalization", ["x", "s", "b"], num_groups=2, epsilon=1e-3, stash_type=TensorProto.DOUBLE)],
          {"x": rnd(2, 4, 3, 3), "s": rnd(4), "b": rnd(4)}, opset=21, ort32=False)


def test_decomposed_layer_norm():
    nodes = [node("ReduceMean", ["x", "ax"], "mu"), node("Sub", ["x", "mu"], "d"),
             node("Pow", ["d", "two"], "d2"), node("ReduceMean", ["d2", "ax"], "var"),
             node("Add", ["var", "eps"], "ve"), node("Sqrt", ["ve"], "sd"), node("Div", ["d", "sd"], "n"),
             node("Mul", ["n", "s"], "ns"), node("Add", ["ns", "b"])]
    check(nodes, {"x": rnd(2, 3, 5), "s": rnd(5), "b": rnd(5)},
          consts={"ax": np.array([-1]), "two": np.array(2.0), "eps": np.array(1e-3)}, opset=18)


# ---------------------------------------------------------------- softmax
@pytest.mark.parametrize("op,axis,opset", [("Softmax", 1, 13), ("Softmax", -1, 17), ("LogSoftmax", 1, 17),
                                           ("Softmax", 1, 11), ("LogSoftmax", 1, 11)])
def test_softmax(op, axis, opset):
    check([node(op, ["x"], axis=axis)], {"x": rnd(2, 3, 4)}, opset=opset)


# ---------------------------------------------------------------- pooling
POOL_CASES = {
    "max_2x2": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2]), 17),
    "max_3x3_s2_padded": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 17),
    "max_overlap_opset13": ("MaxPool", dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 0]), 13),
    "max_dilated_ceil": ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1], ceil_mode=1), 17),
    "avg_3x3_pad_excluded": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 17),
    "avg_pad_included": ("AveragePool", dict(kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1],
                                             count_include_pad=1), 17),
    "avg_ceil": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), 17),
    "global_avg": ("GlobalAveragePool", {}, 17),
    "global_max": ("GlobalMaxPool", {}, 17),
}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pooling(case):
    op, attrs, opset = POOL_CASES[case]
    # distinct values keep the arg-max unique (finite differences break at ties)
    x = RNG.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) * 0.1
    check([node(op, ["x"], **attrs)], {"x": x}, opset=opset, eps=1e-4)


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1",
                                "ReduceSumSquare", "ReduceLogSumExp"])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reductions(op, keepdims):
    x = RNG.permutation(24).reshape(2, 3, 4) * 0.3 - 3.5  # distinct, non-zero
    check([node(op, ["x", "axes"], keepdims=keepdims)], {"x": x}, consts={"axes": np.array([0, 2])}, opset=18)


def test_reduce_all_axes_opset13_attribute():
    check([node("ReduceMean", ["x"], axes=[1], keepdims=0)], {"x": rnd(2, 3, 4)}, opset=13)


# ---------------------------------------------------------------- data movement
def test_reshape_flatten_squeeze_unsqueeze_transpose():
    nodes = [node("Reshape", ["x", "shape"], "r"), node("Transpose", ["r"], "t", perm=[2, 0, 1]),
             node("Unsqueeze", ["t", "ax0"], "u"), node("Flatten", ["u"], "f", axis=1),
             node("Squeeze", ["f", "ax0"], "y")]
    check(nodes, {"x": rnd(2, 3, 4)}, consts={"shape": np.array([6, 2, 2]), "ax0": np.array([0])})


def test_concat_split_slice():
    nodes = [node("Concat", ["a", "b"], "c", axis=1),
             node("Split", ["c", "sizes"], ["s1", "s2", "s3"], axis=1),
             node("Slice", ["s2", "st", "en", "axs", "stp"], "sl"),
             node("Mul", ["s1", "s3"], "m"), node("Concat", ["m", "sl"], "y", axis=2)]
    check(nodes, {"a": rnd(2, 3, 4), "b": rnd(2, 5, 4)},
          consts={"sizes": np.array([2, 4, 2]), "st": np.array([3, 1]), "en": np.array([0, 3]),
                  "axs": np.array([2, 1]), "stp": np.array([-2, 1])})


def test_slice_step_one_and_negative_bounds():
    check([node("Slice", ["x", "st", "en", "axs"])], {"x": rnd(3, 6, 5)},
          consts={"st": np.array([1, -4]), "en": np.array([3, 1000]), "axs": np.array([0, 1])})


@pytest.mark.parametrize("indices,opset", [(np.array([[0, 2], [2, -1]]), 17), (np.array([1, 1, 0]), 13),
                                           (np.array([3, 0]), 13)])
def test_gather_duplicates_add(indices, opset):
    check([node("Gather", ["x", "i"], axis=1)], {"x": rnd(2, 4, 3)}, consts={"i": indices}, opset=opset)


def test_gather_elements():
    idx = RNG.integers(0, 4, (2, 3, 3))
    check([node("GatherElements", ["x", "i"], axis=1)], {"x": rnd(2, 4, 3)}, consts={"i": idx})


def test_pad():
    check([node("Pad", ["x", "p"])], {"x": rnd(2, 3, 4)}, consts={"p": np.array([0, 1, 2, 0, 2, 1])})


def test_pad_opset18_axes():
    check([node("Pad", ["x", "p", "", "ax"])], {"x": rnd(2, 3, 4)},
          consts={"p": np.array([2, 1, 0, 3]), "ax": np.array([2, 0])}, opset=18)


@pytest.mark.parametrize("mode,ctm,scales", [("nearest", "asymmetric", [1, 1, 2, 3]),
                                             ("nearest", "half_pixel", [1, 1, 1.5, 2]),
                                             ("linear", "half_pixel", [1, 1, 2, 2]),
                                             ("linear", "align_corners", [1, 1, 1.6, 0.5])])
def test_resize(mode, ctm, scales):
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    check([node("Resize", ["x", "", "sc"], **attrs)], {"x": rnd(2, 2, 4, 6)},
          consts={"sc": np.array(scales, np.float32)}, opset=13)


def test_expand_tile_cast():
    nodes = [node("Expand", ["x", "shape"], "e"), node("Tile", ["e", "reps"], "t"),
             node("Cast", ["t"], "c", to=TensorProto.FLOAT), node("Cast", ["c"], "y", to=TensorProto.DOUBLE)]
    check(nodes, {"x": rnd(3, 1)}, consts={"shape": np.array([2, 3, 4]), "reps": np.array([1, 2, 1])}, eps=1e-3,
          rtol=1e-4)


@pytest.mark.parametrize("op,mode", [("DepthToSpace", "DCR"), ("DepthToSpace", "CRD"), ("SpaceToDepth", "")])
def test_depth_space(op, mode):
    attrs = dict(blocksize=2) if op == "SpaceToDepth" else dict(blocksize=2, mode=mode)
    shape = (1, 2, 4, 6) if op == "SpaceToDepth" else (1, 8, 2, 3)
    check([node(op, ["x"], **attrs)], {"x": rnd(*shape)})


def test_integer_tensors_and_unused_paths_need_no_rule():
    """Shape arithmetic on an integer branch and a node no parameter feeds: no rule is asked for."""
    nodes = [node("Shape", ["x"], "sh"), node("NonZero", ["c"], "nz"),  # NonZero has no rule
             node("Reshape", ["x", "sh"], "r"), node("Relu", ["r"], "y")]
    check(nodes, {"x": _away_from_kinks(rnd(2, 3), "Relu")}, consts={"c": np.array([1.0, 0.0])})


def test_missing_rule_is_one_clear_line():
    nodes = [node("Relu", ["x"], "r"), node("LpNormalization", ["r"], "y", name="my_lp")]
    model = _model(nodes, {"x": rnd(2, 3)}, {"R": rnd(2, 3)}, 17)
    with pytest.raises(OnnxMorphError, match=r"no gradient rule for op LpNormalization \(node 'my_lp'\)"):
        differentiate(model, "loss", ["x"])


def test_registry_covers_the_issue_op_list():
    required = """Conv ConvTranspose Gemm MatMul Einsum Relu LeakyRelu PRelu Elu Selu Sigmoid HardSigmoid HardSwish
        Tanh Erf Gelu Clip Exp Log Sqrt Pow Reciprocal Neg Abs Softplus Mish Add Sub Mul Div BatchNormalization
        InstanceNormalization LayerNormalization GroupNormalization ReduceMean Softmax LogSoftmax MaxPool
        AveragePool GlobalAveragePool GlobalMaxPool ReduceSum ReduceMax ReduceL2 Concat Split Slice Gather Pad
        Resize Reshape Flatten Squeeze Unsqueeze Transpose Expand Tile Where Cast Identity Dropout""".split()
    assert not set(required) - set(registered_gradients())
