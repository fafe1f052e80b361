"""The test model zoo: small ONNX graphs built with onnx.helper, one per channel pattern.

Every builder returns a ModelProto with random weights (seeded). `ZOO` maps a
pattern name to its builder; tests run each through analyze → prune → verify.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    def __init__(self, name: str, opset: int = 17, seed: int = 0):
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.inputs, self.outputs = [], [], [], []
        self.count = 0

    def _n(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def input(self, shape, name="input", dtype=TensorProto.FLOAT):
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, arr, name=None):
        name = name or self._n("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def rand(self, *shape, scale=0.5):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def op(self, op, inputs, n_out=1, **attrs):
        outs = [self._n(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self._n(op + "_"), **attrs))
        return outs[0] if n_out == 1 else outs

    def output(self, name, dtype=TensorProto.FLOAT):
        self.outputs.append(helper.make_tensor_value_info(name, dtype, None))

    # layers
    def conv(self, x, cin, cout, k=3, stride=1, group=1, bias=True, pad=None):
        pad = k // 2 if pad is None else pad
        w = self.const(self.rand(cout, cin // group, k, k, scale=1.0 / np.sqrt(cin // group * k * k)))
        ins = [x, w] + ([self.const(self.rand(cout, scale=0.1))] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)

    def bn(self, x, c):
        return self.op("BatchNormalization", [
            x, self.const(1 + self.rand(c, scale=0.2)), self.const(self.rand(c, scale=0.1)),
            self.const(self.rand(c, scale=0.1)), self.const(1 + np.abs(self.rand(c, scale=0.2)))])

    def cbr(self, x, cin, cout, k=3, stride=1, group=1, act="Relu", pad=None):
        y = self.bn(self.conv(x, cin, cout, k, stride, group, bias=False, pad=pad), cout)
        return self.op(act, [y]) if act else y

    def gemm(self, x, k, n, trans_b=1):
        w = self.rand(n, k, scale=1 / np.sqrt(k)) if trans_b else self.rand(k, n, scale=1 / np.sqrt(k))
        return self.op("Gemm", [x, self.const(w), self.const(self.rand(n, scale=0.1))], transB=trans_b)

    def matmul(self, x, k, n):
        return self.op("MatMul", [x, self.const(self.rand(k, n, scale=1 / np.sqrt(k)))])

    def head(self, x, c, classes=5):
        p = self.op("GlobalAveragePool", [x])
        f = self.op("Flatten", [p], axis=1)
        return self.gemm(f, c, classes)

    def build(self, *outs):
        for o in outs:
            self.output(o)
        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="zoo")
        m.ir_version = 8
        m = onnx.shape_inference.infer_shapes(m)
        onnx.checker.check_model(m, full_check=True)
        return m


def conv_chain():
    b = GraphBuilder("conv_chain")
    x = b.input([1, 3, 16, 16])
    y = b.cbr(x, 3, 16)
    y = b.cbr(y, 16, 24, stride=2)
    y = b.conv(y, 24, 8, k=1)
    return b.build(b.head(y, 8))


def grouped_and_depthwise():
    b = GraphBuilder("grouped_and_depthwise")
    x = b.input([1, 3, 12, 12])
    y = b.cbr(x, 3, 16)
    y = b.cbr(y, 16, 16, group=4)            # grouped
    y = b.cbr(y, 16, 16, group=16)           # depthwise
    y = b.cbr(y, 16, 32, group=16)           # depth multiplier 2
    y = b.cbr(y, 32, 12, k=1)
    return b.build(b.head(y, 12))


def conv_transpose():
    b = GraphBuilder("conv_transpose")
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 12)
    w = b.const(b.rand(12, 10, 2, 2, scale=0.3))
    y = b.op("ConvTranspose", [y, w, b.const(b.rand(10, scale=0.1))], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Relu", [y])
    y = b.conv(y, 10, 4, k=1)
    return b.build(y)


def linear_layers():
    b = GraphBuilder("linear_layers")
    x = b.input([2, 10])
    y = b.op("Relu", [b.gemm(x, 10, 16, trans_b=0)])
    y = b.op("Tanh", [b.gemm(y, 16, 12, trans_b=1)])
    y = b.op("Sigmoid", [b.matmul(y, 12, 8)])
    y = b.op("Add", [y, b.const(b.rand(8))])
    return b.build(b.matmul(y, 8, 3))


def activations():
    """Unary activations, PRelu with a per-channel slope, Erf-GELU, per-channel constants."""
    b = GraphBuilder("activations")
    x = b.input([1, 3, 8, 8])
    y = b.conv(x, 3, 16)
    y = b.op("Clip", [y, b.const(np.float32(-1)), b.const(np.float32(2))])
    y = b.op("PRelu", [b.conv(y, 16, 16), b.const(b.rand(16, 1, 1))])
    y = b.op("HardSigmoid", [b.conv(y, 16, 16)], alpha=0.2, beta=0.5)
    y = b.op("HardSwish", [b.conv(y, 16, 16)])
    y = b.op("LeakyRelu", [b.conv(y, 16, 16)], alpha=0.1)
    z = b.conv(y, 16, 16)  # GELU as exported by torch: x * 0.5 * (1 + erf(x / sqrt(2)))
    e = b.op("Erf", [b.op("Div", [z, b.const(np.float32(np.sqrt(2)))])])
    y = b.op("Mul", [b.op("Mul", [z, b.op("Add", [e, b.const(np.float32(1))])]), b.const(np.float32(0.5))])
    y = b.op("Mul", [y, b.const(b.rand(1, 16, 1, 1))])    # per-channel scale
    y = b.op("Add", [y, b.const(b.rand(16, 1, 1))])       # per-channel bias, broadcast rank 3
    y = b.op("Tanh", [y])
    return b.build(b.conv(y, 16, 4, k=1))


def class_map(class_last=False, batch=1):
    """A per-pixel classifier: probabilities over 3 classes at every position, [N, 3, H, W] (Softmax
    over axis 1), or class-last [N, H, W, 3] after a Transpose as keras exports write it (MTCNN P-Net)."""
    b = GraphBuilder("class_map")
    x = b.input([batch, 3, 12, 12])
    y = b.cbr(b.cbr(x, 3, 16), 16, 24)
    y = b.conv(y, 24, 3, k=1)
    if class_last:
        y = b.op("Transpose", [y], perm=[0, 2, 3, 1])
    return b.build(b.op("Softmax", [y], axis=-1 if class_last else 1))


def residual(batch=1):
    b = GraphBuilder("residual")
    x = b.input([batch, 3, 12, 12])
    s = b.cbr(x, 3, 16)
    y = b.cbr(s, 16, 16)
    y = b.cbr(y, 16, 16, act=None)
    r = b.op("Relu", [b.op("Add", [s, y])])
    y = b.cbr(r, 16, 16)
    y = b.cbr(y, 16, 16, act=None)
    r = b.op("Relu", [b.op("Add", [y, r])])
    down = b.cbr(r, 16, 24, k=1, stride=2, act=None)
    y = b.cbr(b.cbr(r, 16, 24, stride=2), 24, 24, act=None)
    r = b.op("Relu", [b.op("Add", [y, down])])
    return b.build(b.head(r, 24))


def squeeze_excite():
    b = GraphBuilder("squeeze_excite")
    x = b.input([1, 3, 12, 12])
    y = b.cbr(x, 3, 16)
    p = b.op("GlobalAveragePool", [y])
    s = b.op("Relu", [b.conv(p, 16, 4, k=1)])
    s = b.op("Sigmoid", [b.conv(s, 4, 16, k=1)])
    y = b.op("Mul", [y, s])
    y2 = b.cbr(y, 16, 16)
    m = b.op("ReduceMean", [y2], axes=[2, 3], keepdims=1)  # SE with ReduceMean (opset 17 attr form)
    s = b.op("HardSigmoid", [b.conv(b.op("Relu", [b.conv(m, 16, 8, k=1)]), 8, 16, k=1)])
    y = b.op("Mul", [s, y2])
    return b.build(b.head(y, 16))


def mobile_block(batch=1):
    """Inverted residual: expand, depthwise, SE, project, residual (MobileNetV2/V3 style)."""
    b = GraphBuilder("mobile_block")
    x = b.input([batch, 3, 16, 16])
    s = b.cbr(x, 3, 16, stride=2, act="HardSwish")
    e = b.cbr(s, 16, 48, k=1, act="Relu")
    d = b.cbr(e, 48, 48, group=48, act="HardSwish")
    p = b.op("GlobalAveragePool", [d])
    g = b.op("HardSigmoid", [b.conv(b.op("Relu", [b.conv(p, 48, 12, k=1)]), 12, 48, k=1)], alpha=1 / 6, beta=0.5)
    d = b.op("Mul", [d, g])
    pr = b.cbr(d, 48, 16, k=1, act=None)
    y = b.op("Add", [s, pr])
    y = b.cbr(y, 16, 32, k=1, act="HardSwish")
    return b.build(b.head(y, 32))


def concat_branches():
    """Inception-style concat of branches, then a split and a channel slice."""
    b = GraphBuilder("concat_branches")
    x = b.input([1, 3, 12, 12])
    s = b.cbr(x, 3, 12)
    a = b.cbr(s, 12, 8, k=1)
    c = b.cbr(b.cbr(s, 12, 6, k=1), 6, 10)
    m = b.cbr(b.op("MaxPool", [s], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]), 12, 6, k=1)
    cat = b.op("Concat", [a, c, m], axis=1)                 # 24 channels
    y = b.cbr(cat, 24, 24, k=1)
    p1, p2 = b.op("Split", [y, b.const(np.array([10, 14], np.int64))], n_out=2, axis=1)
    p1 = b.cbr(p1, 10, 10)
    sl = b.op("Slice", [p2, b.const(np.array([2], np.int64)), b.const(np.array([12], np.int64)),
                        b.const(np.array([1], np.int64))])
    y = b.op("Concat", [p1, sl, s], axis=1)                  # 10 + 10 + 12
    return b.build(b.head(y, 32))


def pool_resize_pad():
    b = GraphBuilder("pool_resize_pad")
    x = b.input([1, 3, 16, 16])
    y = b.cbr(x, 3, 12)
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("AveragePool", [b.cbr(y, 12, 12)], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    y = b.op("Resize", [b.cbr(y, 12, 12), "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = b.op("Pad", [y, b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], mode="reflect")
    y = b.cbr(y, 12, 8, pad=0)
    g = b.op("GlobalMaxPool", [y])
    m = b.op("ReduceMean", [y], axes=[2, 3], keepdims=0)     # [1, 8]
    f = b.op("Add", [b.op("Flatten", [g]), m])
    return b.build(b.gemm(f, 8, 4))


def flatten_gemm():
    """Flatten of a spatial map into a Gemm: each channel owns a block of H·W weight columns."""
    b = GraphBuilder("flatten_gemm")
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 8, stride=2)        # [1,8,4,4]
    f = b.op("Flatten", [y], axis=1)     # [1,128]
    h = b.op("Relu", [b.gemm(f, 128, 16)])
    y2 = b.cbr(x, 3, 6, stride=2)
    r = b.op("Reshape", [y2, b.const(np.array([1, -1], np.int64))])  # [1, 96]
    h2 = b.op("Relu", [b.gemm(r, 96, 16, trans_b=0)])
    return b.build(b.gemm(b.op("Add", [h, h2]), 16, 3))


def channel_shuffle():
    """ShuffleNetV2 unit: split, branch, concat, Reshape-Transpose-Reshape shuffle."""
    b = GraphBuilder("channel_shuffle")
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 16)
    for _ in range(2):
        left, right = b.op("Split", [y, b.const(np.array([8, 8], np.int64))], n_out=2, axis=1)
        r = b.cbr(right, 8, 8, k=1)
        r = b.cbr(r, 8, 8, group=8, act=None)
        r = b.cbr(r, 8, 8, k=1)
        cat = b.op("Concat", [left, r], axis=1)
        t = b.op("Reshape", [cat, b.const(np.array([1, 2, 8, 8, 8], np.int64))])
        t = b.op("Transpose", [t], perm=[0, 2, 1, 3, 4])
        y = b.op("Reshape", [t, b.const(np.array([1, 16, 8, 8], np.int64))])
    return b.build(b.head(y, 16))


def extra_output():
    """An intermediate tensor that is also a graph output: its channels are fixed."""
    b = GraphBuilder("extra_output")
    x = b.input([1, 3, 8, 8])
    feat = b.cbr(x, 3, 8)
    y = b.cbr(feat, 8, 12)
    return b.build(b.head(y, 12), feat)


def unsupported_op():
    """LRN mixes neighbouring channels: the channels reaching it must be frozen."""
    b = GraphBuilder("unsupported_op")
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 8)
    y = b.op("LRN", [y], size=3)
    y = b.cbr(y, 8, 12)
    return b.build(b.head(y, 12))


def dynamic_batch():
    b = GraphBuilder("dynamic_batch")
    x = b.input(["N", 3, 8, 8])
    y = b.cbr(x, 3, 8)
    y = b.cbr(y, 8, 8)
    return b.build(b.head(y, 8))


def old_opset():
    """Opset 11: Split sizes and ReduceMean axes as attributes, Softmax over a flattened axis."""
    b = GraphBuilder("old_opset", opset=11)
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 12)
    p1, p2 = b.op("Split", [y], n_out=2, axis=1, split=[4, 8])
    y = b.op("Concat", [b.cbr(p1, 4, 4), b.cbr(p2, 8, 8)], axis=1)
    y = b.op("ReduceMean", [y], axes=[2, 3], keepdims=0)
    return b.build(b.op("Softmax", [b.gemm(y, 12, 5)], axis=1))


ZOO = {f.__name__: f for f in [
    conv_chain, grouped_and_depthwise, conv_transpose, linear_layers, activations, residual,
    squeeze_excite, mobile_block, concat_branches, pool_resize_pad, flatten_gemm, channel_shuffle,
    extra_output, unsupported_op, dynamic_batch, old_opset,
]}


# --- transformers (issue #6): attention heads, MLP hidden dims, embedding width -----------------------


def _layernorm(b, x, c):
    return b.op("LayerNormalization", [x, b.const(1 + b.rand(c, scale=0.2)), b.const(b.rand(c, scale=0.1))],
                axis=-1, epsilon=1e-5)


def _decomposed_layernorm(b, x, c):
    """LayerNorm as older exporters write it: ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add."""
    mean = b.op("ReduceMean", [x], axes=[-1], keepdims=1)
    d = b.op("Sub", [x, mean])
    var = b.op("ReduceMean", [b.op("Pow", [d, b.const(np.float32(2))])], axes=[-1], keepdims=1)
    std = b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(1e-5))])])
    y = b.op("Mul", [b.op("Div", [d, std]), b.const(1 + b.rand(c, scale=0.2))])
    return b.op("Add", [y, b.const(b.rand(c, scale=0.1))])


def _linear(b, x, k, n):
    return b.op("Add", [b.matmul(x, k, n), b.const(b.rand(n, scale=0.1))])


def _gelu_erf(b, x):
    e = b.op("Erf", [b.op("Div", [x, b.const(np.float32(np.sqrt(2)))])])
    return b.op("Mul", [b.op("Mul", [x, b.op("Add", [e, b.const(np.float32(1))])]), b.const(np.float32(0.5))])


def _mlp(b, x, c, hidden, act="erf"):
    h = _linear(b, x, c, hidden)
    if act == "erf":
        h = _gelu_erf(b, h)
    elif act == "sigmoid":  # x·sigmoid(1.702x)
        h = b.op("Mul", [h, b.op("Sigmoid", [b.op("Mul", [h, b.const(np.float32(1.702))])])])
    else:
        h = b.op(act, [h])
    return _linear(b, h, hidden, c)


def _sdpa(b, q, kt, v, scale, bias=None, mask=None):
    """softmax(q·kᵀ·scale + bias + mask)·v on [.., heads, tokens, dim] tensors."""
    s = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(np.float32(scale))])
    if bias is not None:
        s = b.op("Add", [s, bias])
    if mask is not None:
        s = b.op("Add", [s, mask])
    return b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])


def vit_encoder():
    """ViT as torchvision exports it: patch-embedding Conv, class token Concat, position embedding Add,
    pre-norm blocks; block 1 uses nn.MultiheadAttention's fused QKV (Reshape to (3, C), Gather), block 2
    timm's (Reshape to (3, heads, dim), Transpose, Split, Squeeze), with a sigmoid-GELU MLP."""
    b = GraphBuilder("vit_encoder")
    C, H, D, T = 32, 4, 8, 17
    x = b.input([1, 3, 16, 16])
    p = b.conv(x, 3, C, k=4, stride=4, pad=0)                                       # [1,C,4,4]
    t = b.op("Transpose", [b.op("Reshape", [p, b.const(np.array([1, C, 16], np.int64))])], perm=[0, 2, 1])
    t = b.op("Concat", [b.const(b.rand(1, 1, C, scale=0.1)), t], axis=1)            # class token
    r = b.op("Add", [t, b.const(b.rand(1, T, C, scale=0.1))])                       # position embedding
    # block 1: torch nn.MultiheadAttention
    y = b.op("Transpose", [_layernorm(b, r, C)], perm=[1, 0, 2])                    # [T,1,C]
    qkv = b.op("Reshape", [_linear(b, y, C, 3 * C), b.const(np.array([T, 1, 3, C], np.int64))])
    qkv = b.op("Unsqueeze", [qkv, b.const(np.array([0], np.int64))])
    qkv = b.op("Transpose", [qkv], perm=[3, 1, 2, 0, 4])
    qkv = b.op("Squeeze", [qkv, b.const(np.array([3], np.int64))])                  # [3,T,1,C]
    heads = []
    for i in range(3):
        g = b.op("Gather", [qkv, b.const(np.array(i, np.int64))], axis=0)           # [T,1,C]
        g = b.op("Transpose", [b.op("Reshape", [g, b.const(np.array([T, H, D], np.int64))])], perm=[1, 0, 2])
        heads.append(b.op("Reshape", [g, b.const(np.array([1, H, T, D], np.int64))]))
    q, k, v = heads
    o = _sdpa(b, q, b.op("Transpose", [k], perm=[0, 1, 3, 2]), v, D ** -0.5)        # [1,H,T,D]
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[2, 0, 1, 3]), b.const(np.array([T, C], np.int64))])
    o = b.gemm(o, C, C, trans_b=1)                                                  # out_proj as Gemm
    o = b.op("Transpose", [b.op("Reshape", [o, b.const(np.array([T, 1, C], np.int64))])], perm=[1, 0, 2])
    r = b.op("Add", [o, r])
    r = b.op("Add", [_mlp(b, _layernorm(b, r, C), C, 48), r])
    # block 2: timm
    qkv = b.op("Reshape", [_linear(b, _layernorm(b, r, C), C, 3 * C), b.const(np.array([1, T, 3, H, D], np.int64))])
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])                            # [3,1,H,T,D]
    parts = b.op("Split", [qkv, b.const(np.array([1, 1, 1], np.int64))], n_out=3, axis=0)
    q, k, v = (b.op("Squeeze", [s, b.const(np.array([0], np.int64))]) for s in parts)
    o = _sdpa(b, q, b.op("Transpose", [k], perm=[0, 1, 3, 2]), v, D ** -0.5)
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.const(np.array([1, T, C], np.int64))])
    r = b.op("Add", [r, _linear(b, o, C, C)])
    r = b.op("Add", [r, _mlp(b, _layernorm(b, r, C), C, 40, act="sigmoid")])
    cls = b.op("Gather", [_layernorm(b, r, C), b.const(np.array(0, np.int64))], axis=1)
    return b.build(b.gemm(cls, C, 5))


def bert_encoder():
    """BERT-style post-norm encoder: token embedding lookup, position embedding, an additive attention
    mask from a second input, separate Q/K/V projections, Erf-GELU MLP, pooler (Gemm + Tanh)."""
    b = GraphBuilder("bert_encoder")
    C, H, D, T, V = 32, 4, 8, 12, 16
    ids = b.input([1, T], name="input_ids", dtype=TensorProto.INT64)
    mask = b.input([1, T], name="attention_mask")
    e = b.op("Gather", [b.const(b.rand(V, C, scale=0.5)), ids], axis=0)              # [1,T,C]
    e = b.op("Add", [e, b.const(b.rand(1, T, C, scale=0.1))])
    r = _layernorm(b, e, C)
    m = b.op("Mul", [b.op("Sub", [b.const(np.float32(1)), mask]), b.const(np.float32(-10000))])
    m = b.op("Unsqueeze", [m, b.const(np.array([1, 2], np.int64))])                  # [1,1,1,T]
    shape = b.const(np.array([1, T, H, D], np.int64))
    for _ in range(2):
        q = b.op("Transpose", [b.op("Reshape", [_linear(b, r, C, C), shape])], perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [b.op("Reshape", [_linear(b, r, C, C), shape])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [_linear(b, r, C, C), shape])], perm=[0, 2, 1, 3])
        o = _sdpa(b, q, kt, v, D ** -0.5, mask=m)
        o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.const(np.array([1, T, C], np.int64))])
        r = _layernorm(b, b.op("Add", [_linear(b, o, C, C), r]), C)
        r = _layernorm(b, b.op("Add", [_mlp(b, r, C, 64), r]), C)
    pooled = b.op("Tanh", [b.gemm(b.op("Gather", [r, b.const(np.array(0, np.int64))], axis=1), C, C)])
    return b.build(b.gemm(pooled, C, 3))


def decomposed_ln_encoder():
    """Pre-norm encoder with the decomposed LayerNorm, heads folded into the batch axis ([heads, T, D]
    MatMuls), a fused QKV split by Split (block 1) and by Slice (block 2), and a ReLU MLP."""
    b = GraphBuilder("decomposed_ln_encoder", opset=13)
    C, H, D, T = 24, 3, 8, 10
    r = _linear(b, b.input([1, T, 20]), 20, C)  # input projection: the stream has a producer
    to_heads = b.const(np.array([T, H, D], np.int64))
    for block in range(2):
        qkv = _linear(b, _decomposed_layernorm(b, r, C), C, 3 * C)
        if block == 0:
            q, k, v = b.op("Split", [qkv, b.const(np.array([C, C, C], np.int64))], n_out=3, axis=-1)
        else:
            q, k, v = (b.op("Slice", [qkv, b.const(np.array([i * C], np.int64)),
                                      b.const(np.array([(i + 1) * C], np.int64)), b.const(np.array([-1], np.int64))])
                       for i in range(3))
        q = b.op("Transpose", [b.op("Reshape", [q, to_heads])], perm=[1, 0, 2])       # [H,T,D]
        kt = b.op("Transpose", [b.op("Reshape", [k, to_heads])], perm=[1, 2, 0])      # [H,D,T]
        v = b.op("Transpose", [b.op("Reshape", [v, to_heads])], perm=[1, 0, 2])
        o = _sdpa(b, q, kt, v, D ** -0.5)
        o = b.op("Reshape", [b.op("Transpose", [o], perm=[1, 0, 2]), b.const(np.array([1, T, C], np.int64))])
        r = b.op("Add", [r, _linear(b, o, C, C)])
        r = b.op("Add", [r, _mlp(b, _decomposed_layernorm(b, r, C), C, 36, act="Relu")])
    return b.build(_linear(b, _decomposed_layernorm(b, r, C), C, 4))


def swin_block():
    """A Swin stage: patch embedding, cyclic shift (Slice + Concat), window partition/merge reshapes,
    relative position bias, shifted-window mask through a [1, windows, heads, N, N] reshape, then
    patch merging (strided Slices, Concat, LayerNorm, Linear) and a pooled head."""
    b = GraphBuilder("swin_block")
    C, H, D, W = 16, 2, 8, 4
    x = b.input([1, 3, 16, 16])
    t = b.op("Transpose", [b.conv(x, 3, C, k=2, stride=2, pad=0)], perm=[0, 2, 3, 1])  # [1,8,8,C]
    r = _layernorm(b, t, C)
    y = _layernorm(b, r, C)
    shifted = b.op("Concat", [
        b.op("Slice", [y, b.const(np.array([2], np.int64)), b.const(np.array([8], np.int64)), b.const(np.array([1], np.int64))]),
        b.op("Slice", [y, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64)), b.const(np.array([1], np.int64))]),
    ], axis=1)
    win = b.op("Reshape", [shifted, b.const(np.array([1, 2, W, 2, W, C], np.int64))])
    win = b.op("Reshape", [b.op("Transpose", [win], perm=[0, 1, 3, 2, 4, 5]), b.const(np.array([4, W * W, C], np.int64))])
    qkv = b.op("Reshape", [_linear(b, win, C, 3 * C), b.const(np.array([4, W * W, 3, H, D], np.int64))])
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])                            # [3,4,H,N,D]
    q, k, v = (b.op("Gather", [qkv, b.const(np.array(i, np.int64))], axis=0) for i in range(3))
    s = b.op("MatMul", [b.op("Mul", [q, b.const(np.float32(D ** -0.5))]), b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    s = b.op("Add", [s, b.const(b.rand(1, H, W * W, W * W, scale=0.5))])            # relative position bias
    s = b.op("Reshape", [s, b.const(np.array([1, 4, H, W * W, W * W], np.int64))])
    s = b.op("Add", [s, b.const(np.where(b.rng.random((1, 4, 1, W * W, W * W)) < 0.2, -100, 0).astype(np.float32))])
    s = b.op("Reshape", [s, b.const(np.array([-1, H, W * W, W * W], np.int64))])
    o = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])                          # [4,H,N,D]
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.const(np.array([4, W * W, C], np.int64))])
    o = b.op("Reshape", [_linear(b, o, C, C), b.const(np.array([1, 2, 2, W, W, C], np.int64))])
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 1, 3, 2, 4, 5]), b.const(np.array([1, 8, 8, C], np.int64))])
    r = b.op("Add", [r, o])
    r = b.op("Add", [r, _mlp(b, _layernorm(b, r, C), C, 2 * C)])
    quads = [b.op("Slice", [r, b.const(np.array([i, j], np.int64)), b.const(np.array([8, 8], np.int64)),
                            b.const(np.array([1, 2], np.int64)), b.const(np.array([2, 2], np.int64))])
             for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))]
    m = b.matmul(_layernorm(b, b.op("Concat", quads, axis=-1), 4 * C), 4 * C, 2 * C)  # patch merging
    m = b.op("Transpose", [_layernorm(b, m, 2 * C)], perm=[0, 3, 1, 2])
    return b.build(b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [m])]), 2 * C, 5))


def einsum_attention():
    """MaxViT-style grid attention written with Einsum ('BGHID,BGHJD->BGHIJ', 'BGHIJ,BGHJD->BGHID')
    after a BatchNorm'd conv stem, with a fused QKV Linear and Split on a channels-last map."""
    b = GraphBuilder("einsum_attention")
    C, H, D, G, N = 24, 3, 8, 4, 16
    x = b.input([1, 3, 16, 16])
    y = b.cbr(x, 3, C, stride=2, act="Sigmoid")                                     # [1,C,8,8]
    t = b.op("Transpose", [y], perm=[0, 2, 3, 1])                                   # [1,8,8,C]
    t = b.op("Reshape", [t, b.const(np.array([1, G, N, C], np.int64))])             # 4 windows of 16
    q, k, v = b.op("Split", [_linear(b, t, C, 3 * C), b.const(np.array([C, C, C], np.int64))], n_out=3, axis=-1)
    heads = [b.op("Transpose", [b.op("Reshape", [z, b.const(np.array([1, G, N, H, D], np.int64))])],
                  perm=[0, 1, 3, 2, 4]) for z in (q, k, v)]                         # [1,G,H,N,D]
    s = b.op("Einsum", [heads[0], heads[1]], equation="BGHID,BGHJD->BGHIJ")
    s = b.op("Softmax", [b.op("Mul", [s, b.const(np.float32(D ** -0.5))])], axis=-1)
    o = b.op("Einsum", [s, heads[2]], equation="BGHIJ,BGHJD->BGHID")
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 1, 3, 2, 4]), b.const(np.array([1, G, N, C], np.int64))])
    o = b.op("Add", [t, _linear(b, o, C, C)])
    o = b.op("Reshape", [o, b.const(np.array([1, 8, 8, C], np.int64))])
    y = b.op("Add", [y, b.op("Transpose", [o], perm=[0, 3, 1, 2])])
    return b.build(b.head(y, C))


def cosine_attention():
    """Swin-V2 cosine attention: q and k L2-normalized over the head dim (ReduceL2, Clip, Expand, Div),
    a per-head logit scale, then a LayerNorm over the head dim of v (per-head normalization)."""
    b = GraphBuilder("cosine_attention")
    C, H, D, T = 24, 3, 8, 10
    r = _linear(b, b.input([1, T, 12]), 12, C)
    qkv = b.op("Reshape", [_linear(b, r, C, 3 * C), b.const(np.array([1, T, 3, H, D], np.int64))])
    qkv = b.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])                            # [3,1,H,T,D]
    q, k, v = (b.op("Gather", [qkv, b.const(np.array(i, np.int64))], axis=0) for i in range(3))

    def normalize(z):
        n = b.op("Clip", [b.op("ReduceL2", [z], axes=[-1], keepdims=1), b.const(np.float32(1e-12))])
        return b.op("Div", [z, b.op("Expand", [n, b.const(np.array([1, H, T, D], np.int64))])])

    s = b.op("MatMul", [normalize(q), b.op("Transpose", [normalize(k)], perm=[0, 1, 3, 2])])
    s = b.op("Mul", [s, b.const(np.exp(b.rand(1, H, 1, 1)).astype(np.float32))])   # logit scale per head
    v = b.op("LayerNormalization", [v, b.const(1 + b.rand(D, scale=0.2)), b.const(b.rand(D, scale=0.1))], axis=-1)
    o = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])
    o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.const(np.array([1, T, C], np.int64))])
    r = b.op("Add", [r, _linear(b, o, C, C)])
    return b.build(_linear(b, b.op("ReduceMean", [r], axes=[1], keepdims=0), C, 4))


TRANSFORMERS = [vit_encoder, bert_encoder, decomposed_ln_encoder, swin_block, einsum_attention, cosine_attention]
ZOO.update({f.__name__: f for f in TRANSFORMERS})


# --- small graphs the cost, latency, loading and measurement tests price or load -------------------


def broadcast_scale(c=32, side=4):
    """x * Sigmoid(conv(GAP(x))) without BN: the scale multiplies [1,C,H,W] by [1,C,1,1], i.e. C spans."""
    b = GraphBuilder("se")
    x = b.conv(b.input([1, 8, side, side]), 8, c, k=1)
    g = b.conv(b.op("GlobalAveragePool", [x]), c, c, k=1)
    return b.build(b.op("Mul", [x, b.op("Sigmoid", [g])]))


def row_bias_add():
    """[1, 6, 24] + [1, 1, 24]: a bias broadcast over the rows of a sequence."""
    b = GraphBuilder("bias")
    x = b.matmul(b.input([1, 6, 16]), 16, 24)
    return b.build(b.op("Add", [x, b.matmul(b.input([1, 1, 16], name="t"), 16, 24)]))


def same_shape_add():
    """Two 1x1 convs of one input added: an element-wise op without broadcasting."""
    b = GraphBuilder("add")
    x = b.input([1, 8, 4, 4])
    return b.build(b.op("Add", [b.conv(x, 8, 8, k=1), b.conv(x, 8, 8, k=1)]))


def softmax_rows_and_transposes():
    """A softmax over rows of 48, then two Transposes of its [1, 10, 4, 12] view: one moves rows of
    12, the other single elements."""
    b = GraphBuilder("rows")
    x = b.matmul(b.input([1, 10, 16]), 16, 48)
    s = b.op("Softmax", [x], axis=-1)
    y = b.op("Reshape", [s, b.const(np.array([1, 10, 4, 12], dtype=np.int64))])
    t1 = b.op("Transpose", [y], perm=[0, 2, 1, 3])  # moves rows of 12
    t2 = b.op("Transpose", [y], perm=[0, 1, 3, 2])  # moves single elements
    return b.build(t1, t2)


def nhwc_and_window_transposes():
    """NCHW -> NHWC (one axis moves) and a MaxViT-style window partition (element by element)."""
    b = GraphBuilder("transposes")
    x = b.op("Sigmoid", [b.input([1, 16, 8, 8])])  # not a conv: ONNX Runtime folds NHWC into its reorder
    nhwc = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    part = b.op("Reshape", [x, b.const(np.array([1, 16, 2, 4, 2, 4], np.int64))])
    windows = b.op("Transpose", [part], perm=[0, 2, 4, 3, 5, 1])
    return b.build(nhwc, windows)


def view_between_activations():
    """conv -> Erf -> Reshape -> Tanh: a Reshape ONNX Runtime runs as a view kernel."""
    b = GraphBuilder("views")
    x = b.conv(b.input([1, 8, 4, 4]), 8, 16, k=1)
    y = b.op("Reshape", [b.op("Erf", [x]), b.const(np.array([1, 16, 16], dtype=np.int64))])
    return b.build(b.op("Tanh", [y]))


def qkv_gathers():
    """A fused QKV projection split by three Gathers (ONNX Runtime: one Split and three Squeezes),
    ending in a HardSwish (HardSigmoid + Mul)."""
    b = GraphBuilder("qkv")
    y = b.matmul(b.input([1, 8, 16]), 16, 48)
    y = b.op("Reshape", [y, b.const(np.array([1, 8, 3, 16], dtype=np.int64))])
    y = b.op("Transpose", [y], perm=[2, 0, 1, 3])
    q, k, v = (b.op("Gather", [y, b.const(np.array(j, dtype=np.int64))], axis=0) for j in range(3))
    return b.build(b.op("HardSwish", [b.op("Mul", [b.op("Add", [q, k]), v])]))


def grouped_between_pointwise():
    """1x1 conv -> 3x3 conv in 4 groups of 8 -> 1x1 conv (ResNeXt's pattern)."""
    b = GraphBuilder("grouped")
    x = b.conv(b.input([1, 8, 8, 8]), 8, 32, k=1)
    return b.build(b.conv(b.conv(x, 32, 32, k=3, group=4), 32, 16, k=1))


def memory_vs_compute():
    """G1: 16 channels on a 96x96 map (few MACs, lots of bytes); G2/G3: 64 channels on 8x8 (the MACs)."""
    b = GraphBuilder("memory_vs_compute", seed=1)
    x = b.input([1, 1, 96, 96])
    y = b.op("Relu", [b.conv(x, 1, 16, k=1)])                 # G1: wide map, cheap in MACs
    y = b.op("Relu", [b.conv(y, 16, 64, k=1, stride=12)])     # G2: 8x8
    y = b.op("Relu", [b.conv(y, 64, 64, k=3)])                # G3: 8x8, most of the MACs
    return b.build(b.head(y, 64, classes=10))


def single_conv(cin, cout, side, k):
    b = GraphBuilder("single_conv")
    x = b.input([1, cin, side, side])
    return b.build(b.conv(x, cin, cout, k=k, bias=False))


def mixed_block():
    """conv+BN+Relu (all folded), conv+Clip (Clip runs as a pass), SiLU (ONNX Runtime: QuickGelu),
    HardSwish (expanded into two kernels) and an Erf between convs (layout reorders around it)."""
    b = GraphBuilder("mixed")
    x = b.input([1, 16, 8, 8])
    y = b.cbr(x, 16, 32, k=3)
    c = b.conv(y, 32, 32, k=1)
    y = b.op("Clip", [c, b.const(np.float32(0)), b.const(np.float32(6))])
    s = b.op("Sigmoid", [y])
    y = b.op("Mul", [y, s])
    y = b.op("HardSwish", [b.conv(y, 32, 32, k=1)])
    y = b.op("Erf", [b.conv(y, 32, 32, k=1)])
    return b.build(b.conv(y, 32, 16, k=1))


def two_pointwise():
    """Two 1x1 convs without bias on a 32x32 map: memory-bound on a 10:1 roofline."""
    b = GraphBuilder("two_1x1")
    x = b.input([1, 16, 32, 32])
    return b.build(b.conv(b.conv(x, 16, 16, k=1, bias=False), 16, 16, k=1, bias=False))


def symbolic_spatial():
    """Input [N, 3, H, W]: the spatial dims need --input-shape."""
    b = GraphBuilder("spatial")
    x = b.input(["N", 3, "H", "W"])
    return b.build(b.op("Relu", [b.conv(x, 3, 4)]))


def constant_node_scale():
    """A per-channel scale given by a Constant node (not an initializer) between two convs."""
    b = GraphBuilder("const_nodes")
    x = b.input([1, 3, 8, 8])
    y = b.conv(x, 3, 8)
    b.nodes.append(helper.make_node("Constant", [], ["scale"], value=helper.make_tensor(
        "v", TensorProto.FLOAT, [1, 8, 1, 1], np.linspace(0.5, 1.5, 8).tolist())))
    y = b.op("Mul", [y, "scale"])
    return b.build(b.conv(y, 8, 4, k=1))


def opset9_convs():
    """Two convs at opset 9: the loader converts the opset."""
    b = GraphBuilder("opset9", opset=9)
    x = b.input([1, 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8)])
    return b.build(b.conv(y, 8, 4, k=1))


def empty_graph():
    """A model without nodes, inputs or outputs (invalid on purpose)."""
    return helper.make_model(helper.make_graph([], "empty", [], []))


def embedding_lookup():
    """Gather of a [10, 8] table by int64 ids [1, 4]: a model whose input is integer."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(np.ones((10, 8), np.float32), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# --- graphs of the training tests ---------------------------------------------------------------


def tiny_mlp():
    """x[N, 4] -> MatMul(w1 [4, 6]) -> Relu -> MatMul(w2 [6, 3]): (model, w1, w2), weights seeded, for
    checking per-example signals against numpy."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 6)).astype(np.float32)
    w2 = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["logits"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", 1, ["N", 4])],
                          [helper.make_tensor_value_info("logits", 1, ["N", 3])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w1, w2


def cheap_and_expensive():
    """Two branches of 8 channels: a 1x1 conv on a 6x6 map (cheap channels) and a 3x3 on 12x12
    (expensive ones), pooled, concatenated and classified."""
    b = GraphBuilder("cheap_and_expensive")
    x = b.input(["N", 3, 12, 12])
    cheap = b.op("Relu", [b.conv(x, 3, 8, k=1, stride=2)])        # 6x6 map, 1x1 conv: cheap channels
    big = b.op("Relu", [b.conv(x, 3, 8, k=3)])                      # 12x12 map, 3x3: expensive channels
    pooled = b.op("Concat", [b.op("GlobalAveragePool", [cheap]), b.op("GlobalAveragePool", [big])], axis=1)
    return b.build(b.gemm(b.op("Flatten", [pooled]), 16, 4))


def few_expensive_many_cheap():
    """8 expensive channels (3x3 on 12x12: 3888 MACs each) beside 256 cheap ones (1x1 on 6x6: 108)."""
    b = GraphBuilder("few_expensive_many_cheap")
    x = b.input(["N", 3, 12, 12])
    big = b.op("Relu", [b.conv(x, 3, 8, k=3)])  # 3x3 on 12x12: 3888 MACs a channel
    cheap = b.op("Relu", [b.conv(x, 3, 256, k=1, stride=2)])  # 1x1 on 6x6: 108 MACs a channel
    pooled = b.op("Concat", [b.op("GlobalAveragePool", [big]), b.op("GlobalAveragePool", [cheap])], axis=1)
    return b.build(b.gemm(b.op("Flatten", [pooled]), 264, 4))

# --- issue 14: recurrent layers, control flow, unusual inputs and old/new opsets -------------------------


def _recurrent(b, op, x, feat, hidden, directions=1, **attrs):
    """An LSTM/GRU/RNN node with seeded weights and a bias; returns its output names (Y, Y_h[, Y_c])."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    w = b.const(b.rand(directions, gates * hidden, feat, scale=1 / np.sqrt(feat)))
    r = b.const(b.rand(directions, gates * hidden, hidden, scale=1 / np.sqrt(hidden)))
    bias = b.const(b.rand(directions, 2 * gates * hidden, scale=0.1))
    extra = attrs.pop("inputs", [])
    return b.op(op, [x, w, r, bias, *extra], n_out=3 if op == "LSTM" else 2, hidden_size=hidden, **attrs)


def lstm_stack():
    """Two stacked LSTMs (peepholes, a constant initial_c, initial_h as a graph input) fed by a MatMul;
    Y of the second and Y_h of the first feed MatMul heads."""
    b = GraphBuilder("lstm_stack")
    T, H1, H2 = 6, 10, 7
    x = b.matmul(b.input([T, 1, 5]), 5, 8)
    h0 = b.input([1, 1, H1], name="h0")
    c0 = b.const(b.rand(1, 1, H1))
    p = b.const(b.rand(1, 3 * H1, scale=0.3))
    y1, yh1, _ = _recurrent(b, "LSTM", x, 8, H1, inputs=["", h0, c0, p])
    y1 = b.op("Squeeze", [y1, b.const(np.array([1], np.int64))])                       # [T, 1, H1]
    y2, _, yc2 = _recurrent(b, "LSTM", y1, H1, H2)
    out = b.matmul(b.op("Squeeze", [y2, b.const(np.array([1], np.int64))]), H2, 3)
    state = b.matmul(b.op("Reshape", [yh1, b.const(np.array([1, H1], np.int64))]), H1, 2)
    cell = b.matmul(b.op("Reshape", [yc2, b.const(np.array([1, H2], np.int64))]), H2, 2)
    return b.build(out, state, cell)


def gru_bidirectional():
    """As PyTorch exports a batch-first bidirectional GRU (linear_before_reset=1): the input [1, T, F] is
    transposed to time-major, and Y [T, 2, 1, H] back to [1, T, 2H] for a MatMul head."""
    b = GraphBuilder("gru_bidirectional")
    T, H = 5, 6
    x = b.op("Transpose", [b.matmul(b.input([1, T, 4]), 4, 8)], perm=[1, 0, 2])
    y, _ = _recurrent(b, "GRU", x, 8, H, directions=2, direction="bidirectional", linear_before_reset=1)
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[2, 0, 1, 3]), b.const(np.array([1, T, 2 * H], np.int64))])
    return b.build(b.matmul(y, 2 * H, 3))


def rnn_reverse():
    """A reverse-direction RNN whose final state Y_h feeds a Gemm."""
    b = GraphBuilder("rnn_reverse")
    x = b.matmul(b.input([4, 1, 3]), 3, 5)
    _, yh = _recurrent(b, "RNN", x, 5, 8, direction="reverse")
    return b.build(b.gemm(b.op("Reshape", [yh, b.const(np.array([1, 8], np.int64))]), 8, 4))


def _branch(name, nodes, out, inits=()):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                             list(inits))


def if_outer_read():
    """An If (on a rank-0 bool input) whose branches read outer-scope activations: a Conv in the then
    branch reads `a` (with an outer weight), the else branch reads `c`. Those channels are consumed by
    the If; a separate conv path stays prunable."""
    b = GraphBuilder("if_outer_read")
    x = b.input([1, 3, 8, 8])
    flag = b.input([], name="flag", dtype=TensorProto.BOOL)
    a = b.cbr(x, 3, 8)
    c = b.cbr(a, 8, 8)
    w = b.const(b.rand(8, 8, 1, 1, scale=0.3), name="then_w")
    then_g = _branch("then", [helper.make_node("Conv", [a, w], ["then_out"], name="then_conv")], "then_out")
    else_g = _branch("else", [helper.make_node("Relu", [c], ["else_out"], name="else_relu")], "else_out")
    y = b.op("If", [flag], then_branch=then_g, else_branch=else_g)
    e = b.cbr(b.cbr(x, 3, 10), 10, 6)
    return b.build(b.head(y, 8), b.head(e, 6))


def if_constant_condition():
    """An If with a constant condition and two outputs (one a graph output): loading inlines the branch
    it takes; every output keeps its producer. The branch reads an outer activation."""
    b = GraphBuilder("if_constant_condition")
    x = b.input([1, 3, 8, 8])
    a = b.cbr(x, 3, 8)
    cond = b.const(np.array(True), name="cond")

    def branch(name, first, second):
        return helper.make_graph(
            [helper.make_node(first, [a], [f"{name}1"]), helper.make_node(second, [a], [f"{name}2"])], name, [],
            [helper.make_tensor_value_info(f"{name}1", TensorProto.FLOAT, None),
             helper.make_tensor_value_info(f"{name}2", TensorProto.FLOAT, None)])

    y, y2 = b.op("If", [cond], n_out=2, then_branch=branch("then", "Relu", "Neg"),
                 else_branch=branch("else", "Neg", "Relu"))
    return b.build(b.head(b.cbr(y, 8, 6), 6), y2)


def loop_accumulate():
    """A Loop (3 iterations) whose body adds an outer activation to the carried value."""
    b = GraphBuilder("loop_accumulate")
    x = b.input([1, 3, 8, 8])
    a = b.cbr(x, 3, 8)
    t = b.cbr(a, 8, 8)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Add", ["v_in", t], ["v_out"], name="body_add")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    y = b.op("Loop", [b.const(np.array(3, np.int64)), b.const(np.array(True)), a], body=body)
    return b.build(b.head(b.cbr(y, 8, 6), 6))


def scan_outer_read():
    """A Scan over the 64 positions of a conv output (as [64, 8]) accumulating x_i * c into a state, where c
    (a pooled conv output) is read by name inside the body; a separate conv path stays prunable."""
    b = GraphBuilder("scan_outer_read", opset=16)
    x = b.input([1, 3, 8, 8])
    a = b.cbr(x, 3, 8)
    t = b.op("Reshape", [b.op("Transpose", [a], perm=[0, 2, 3, 1]), b.const(np.array([64, 8], np.int64))])
    c = b.op("Flatten", [b.op("GlobalAveragePool", [b.cbr(a, 8, 8)])], axis=1)              # [1, 8]
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_i", c], ["xc"], name="body_mul"),
         helper.make_node("Add", ["s_in", "xc"], ["s_out"], name="body_add"),
         helper.make_node("Relu", ["s_out"], ["y_i"], name="body_relu")],
        "body",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("x_i", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("y_i", TensorProto.FLOAT, [1, 8])])
    state, _ = b.op("Scan", [b.const(np.zeros((1, 8), np.float32)), t], n_out=2, body=body, num_scan_inputs=1)
    e = b.cbr(b.cbr(x, 3, 10), 10, 6)
    return b.build(b.gemm(state, 8, 5), b.head(e, 6))


def scalar_input():
    """A rank-0 float input (a gain, like a sample rate) scales the features."""
    b = GraphBuilder("scalar_input")
    x = b.input([1, 3, 8, 8])
    gain = b.input([], name="gain")
    y = b.op("Mul", [b.cbr(x, 3, 8), gain])
    return b.build(b.head(b.cbr(y, 8, 6), 6))


def old_ir3_opset7():
    """A classic-zoo style model: opset 7, IR 3, every initializer also listed as a graph input."""
    b = GraphBuilder("old_ir3_opset7", opset=7)
    x = b.input([1, 3, 8, 8])
    y = b.op("Relu", [b.conv(x, 3, 8)])
    y = b.op("Relu", [b.conv(y, 8, 12)])
    y = b.op("GlobalAveragePool", [y])
    y = b.op("Flatten", [y], axis=1)
    out = b.gemm(y, 12, 5)
    b.outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 5]))
    inputs = b.inputs + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.inits]
    g = helper.make_graph(b.nodes, b.name, inputs, b.outputs, b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)], producer_name="zoo")
    m.ir_version = 3
    onnx.checker.check_model(m)
    return m


def slice_int32():
    """tf2onnx style: Slice with int32 starts/ends/axes/steps takes channel ranges of a conv output."""
    b = GraphBuilder("slice_int32", opset=13)
    x = b.input([1, 3, 8, 8])
    y = b.cbr(x, 3, 12)
    i32 = lambda *v: b.const(np.array(v, np.int32))  # noqa: E731
    lo = b.op("Slice", [y, i32(0), i32(8), i32(1), i32(1)])
    hi = b.op("Slice", [y, i32(4), i32(12), i32(1), i32(1)])
    y = b.op("Add", [b.cbr(lo, 8, 8), b.cbr(hi, 8, 8)])
    return b.build(b.head(y, 8))


def new_opset_ir11():
    """A conv chain at opset 22 / IR 11 (onnx >= 1.18 writes these)."""
    b = GraphBuilder("new_opset_ir11", opset=22)
    x = b.input([1, 3, 8, 8])
    y = b.cbr(b.cbr(x, 3, 8), 8, 12)
    m = b.build(b.head(y, 12))
    m.ir_version = 11
    onnx.checker.check_model(m, full_check=True)
    return m

# --- quantized and reduced-precision models ------------------------------------------------------
#
# QDQ as onnxruntime's quantizer writes it: activations pass a QuantizeLinear/DequantizeLinear pair
# (uint8, per-tensor), weights are DequantizeLinear(int8 constant, scale[, zero point]) with one scale
# per output channel (`per_channel`) or one for the whole tensor, biases int32 with scale s_x·s_w.
# QOperator: the same layers as QLinearConv / ConvInteger / MatMulInteger in the integer domain.

ACT_SCALE, ACT_ZP = np.float32(0.04), np.uint8(128)


def _quantize(w, axis, per_channel):
    """Symmetric int8 quantization of `w`: (q, scale) with one scale per index of `axis` or one in all."""
    if per_channel:
        other = tuple(a for a in range(w.ndim) if a != axis)
        scale = (np.abs(w).max(axis=other) / 127).astype(np.float32)
        view = [1] * w.ndim
        view[axis] = -1
        q = np.clip(np.round(w / scale.reshape(view)), -127, 127).astype(np.int8)
    else:
        scale = np.float32(np.abs(w).max() / 127)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


class QDQBuilder(GraphBuilder):
    """GraphBuilder with QDQ layers: `fake_quant` activations, quantized-weight conv/matmul/gemm."""

    per_channel = True

    def fake_quant(self, x):
        s, z = self.const(ACT_SCALE), self.const(ACT_ZP)
        return self.op("DequantizeLinear", [self.op("QuantizeLinear", [x, s, z]), s, z])

    def qweight(self, w, axis):
        q, scale = _quantize(w, axis, self.per_channel)
        zp = np.zeros(np.shape(scale), np.int8)
        return self.op("DequantizeLinear", [self.const(q), self.const(scale), self.const(zp)], axis=axis), scale

    def qbias(self, b, w_scale):
        s = (ACT_SCALE * np.asarray(w_scale, np.float32) * np.ones_like(b)).astype(np.float32)
        q = np.round(b / s).astype(np.int32)
        return self.op("DequantizeLinear", [self.const(q), self.const(s), self.const(np.zeros_like(q))], axis=0)

    def qconv(self, x, cin, cout, k=3, group=1):
        w, scale = self.qweight(self.rand(cout, cin // group, k, k, scale=1.0 / np.sqrt(cin // group * k * k)), 0)
        y = self.op("Conv", [x, w, self.qbias(self.rand(cout, scale=0.1), scale)], kernel_shape=[k, k],
                    pads=[k // 2] * 4, group=group)
        return self.fake_quant(self.op("Relu", [y]))

    def qmatmul(self, x, k, n, act="Relu"):
        w, _ = self.qweight(self.rand(k, n, scale=1 / np.sqrt(k)), 1)  # per output column: axis 1
        y = self.op("Add", [self.op("MatMul", [x, w]), self.const(self.rand(n, scale=0.1))])
        return self.fake_quant(self.op(act, [y]) if act else y)

    def qgemm(self, x, k, n):
        w, scale = self.qweight(self.rand(n, k, scale=1 / np.sqrt(k)), 0)
        return self.fake_quant(self.op("Gemm", [x, w, self.qbias(self.rand(n, scale=0.1), scale)], transB=1))


def _qdq_conv_chain(per_channel):
    b = QDQBuilder(f"qdq_conv_chain_{'per_channel' if per_channel else 'per_tensor'}", opset=13)
    b.per_channel = per_channel
    x = b.fake_quant(b.input([1, 3, 12, 12]))
    y = b.qconv(x, 3, 16)
    r = b.qconv(y, 16, 16)
    y = b.fake_quant(b.op("Add", [y, r]))            # residual on quantized activations
    y = b.qconv(y, 16, 16, group=16)                 # depthwise
    y = b.qconv(y, 16, 24, k=1)
    p = b.fake_quant(b.op("Flatten", [b.fake_quant(b.op("GlobalAveragePool", [y]))], axis=1))
    return b.build(b.qgemm(p, 24, 5))


def qdq_conv_chain_per_channel():
    return _qdq_conv_chain(True)


def qdq_conv_chain_per_tensor():
    return _qdq_conv_chain(False)


def _qdq_matmul_chain(per_channel):
    b = QDQBuilder(f"qdq_matmul_chain_{'per_channel' if per_channel else 'per_tensor'}", opset=13)
    b.per_channel = per_channel
    x = b.fake_quant(b.input([2, 4, 10]))
    y = b.qmatmul(x, 10, 16)
    y = b.qmatmul(y, 16, 12, act="Sigmoid")
    return b.build(b.qmatmul(y, 12, 6, act=None))


def qdq_matmul_chain_per_channel():
    return _qdq_matmul_chain(True)


def qdq_matmul_chain_per_tensor():
    return _qdq_matmul_chain(False)


QDQ = [qdq_conv_chain_per_channel, qdq_conv_chain_per_tensor, qdq_matmul_chain_per_channel,
       qdq_matmul_chain_per_tensor]
ZOO.update({f.__name__: f for f in QDQ})


def qlinear_conv():
    """QOperator: QuantizeLinear, two QLinearConv (per-channel int8 weights, int32 bias, uint8 activations
    with zero point 128), DequantizeLinear (onnxruntime's QOperator format)."""
    b = GraphBuilder("qlinear_conv", opset=13)
    s, z = b.const(ACT_SCALE), b.const(ACT_ZP)
    y = b.op("QuantizeLinear", [b.input([1, 3, 10, 10]), s, z])
    for cin, cout in ((3, 16), (16, 8)):
        q, scale = _quantize(b.rand(cout, cin, 3, 3, scale=0.3), 0, True)
        bias = np.round(b.rand(cout, scale=0.1) / (ACT_SCALE * scale)).astype(np.int32)
        y = b.op("QLinearConv", [y, s, z, b.const(q), b.const(scale), b.const(np.zeros(cout, np.int8)), s, z,
                                 b.const(bias)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return b.build(b.op("DequantizeLinear", [y, s, z]))


def integer_conv_matmul():
    """Dynamic quantization as onnxruntime writes it: DynamicQuantizeLinear, ConvInteger / MatMulInteger
    to int32, Cast and rescale in float."""
    b = GraphBuilder("integer_conv_matmul", opset=13)
    x = b.input([1, 3, 8, 8])

    def dequant(acc, x_scale, w_scale):
        return b.op("Mul", [b.op("Cast", [acc], to=TensorProto.FLOAT), b.op("Mul", [x_scale, b.const(w_scale)])])

    xq, xs, xz = b.op("DynamicQuantizeLinear", [x], n_out=3)
    q, scale = _quantize(b.rand(12, 3, 3, 3, scale=0.3), 0, False)
    y = b.op("Relu", [dequant(b.op("ConvInteger", [xq, b.const(q), xz], pads=[1, 1, 1, 1]), xs, scale)])
    f = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    fq, fs, fz = b.op("DynamicQuantizeLinear", [f], n_out=3)
    q, scale = _quantize(b.rand(12, 4, scale=0.3), 0, False)
    return b.build(dequant(b.op("MatMulInteger", [fq, b.const(q), fz]), fs, scale))


ZOO["qlinear_conv"] = qlinear_conv  # prunes: its masked model gates with Where(keep, x, zero point)
# Integer-domain models whose channels are frozen with a reason, their MACs counted.
QOPERATOR = {f.__name__: f for f in [integer_conv_matmul]}


def _as_half(model, elem_type):
    """`model` with every float32 weight, input and output in float16 or bfloat16 (bfloat16 Conv needs
    opset 22)."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    g = m.graph
    for i, t in enumerate(g.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            g.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16), t.name)
                                      if elem_type == TensorProto.FLOAT16
                                      else helper.make_tensor(t.name, elem_type, a.shape, a.ravel().tolist()))
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.elem_type = elem_type
    del g.value_info[:]
    if elem_type == TensorProto.BFLOAT16:
        m.opset_import[0].version = 22
        m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m


RECURRENT = [lstm_stack, gru_bidirectional, rnn_reverse]
CONTROL_FLOW = [if_outer_read, if_constant_condition, loop_accumulate, scan_outer_read]
INPUTS = [scalar_input, old_ir3_opset7, slice_int32, new_opset_ir11]
ZOO.update({f.__name__: f for f in RECURRENT + CONTROL_FLOW + INPUTS})


def fp16_conv():
    """conv_chain (Conv, BatchNormalization, Relu, Gemm head) in float16."""
    return _as_half(conv_chain(), TensorProto.FLOAT16)


def bf16_conv():
    """conv_chain in bfloat16 (opset 22): ONNX Runtime's CPU provider has no kernel for its Conv."""
    return _as_half(conv_chain(), TensorProto.BFLOAT16)


HALF = {f.__name__: f for f in [fp16_conv, bf16_conv]}
