"""Reverse-mode differentiation of an ONNX graph into standard ONNX backward nodes.

`differentiate(model, loss, wrt)` returns one ModelProto computing the forward outputs and
`grad__<param>` for every name in `wrt`. Each op family's rule lives in its own module of this
package and registers itself with `@gradient("Op", ...)`; a rule receives the node and the
gradients of its outputs and returns one gradient (or None) per input. Only nodes on a path from
a trainable tensor to the loss are differentiated, and only inputs on such a path get a gradient,
so a rule never builds a gradient nobody reads (e.g. the input gradient of the first conv).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import OnnxMorphError

GRAD_PREFIX = "grad__"
_RULES: dict[str, Callable] = {}
_BOOL_OPS = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


def gradient(*ops: str):
    """Register a gradient rule `fn(ctx, node, dys) -> list[grad name | None]` for `ops`."""
    def deco(fn):
        for op in ops:
            _RULES[op] = fn
        return fn
    return deco


def registered_gradients() -> list[str]:
    return sorted(_RULES)


class Node:
    """A read-only view of a NodeProto: op, name, inputs/outputs (names, '' = absent), attrs."""

    def __init__(self, proto: onnx.NodeProto):
        self.proto = proto
        self.op, self.name = proto.op_type, proto.name or proto.output[0]
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}

    def attr(self, key, default=None):
        v = self.attrs.get(key, default)
        return v.decode() if isinstance(v, bytes) else v

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""


class GradContext:
    """What a rule may ask: shapes, dtypes, constants, which inputs need a gradient; and `op` to emit."""

    def __init__(self, model: onnx.ModelProto, shapes: dict, types: dict, consts: dict, needs: set[str]):
        self.opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
        self.shapes, self.types, self.consts, self._needs = shapes, types, consts, needs
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._const_cache: dict = {}
        self.node: Node | None = None

    # queries
    def shape(self, name: str) -> list[int]:
        s = self.shapes.get(name)
        if s is None or any(not isinstance(d, int) or d < 0 for d in s):
            where = f" (node '{self.node.name}', {self.node.op})" if self.node else ""
            raise OnnxMorphError(f"cannot differentiate: tensor '{name}'{where} has no static shape")
        return list(s)

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def dtype(self, name: str) -> int:
        return self.types.get(name, onnx.TensorProto.FLOAT)

    def np_dtype(self, name: str):
        return helper.tensor_dtype_to_np_dtype(self.dtype(name))

    def needs(self, name: str) -> bool:
        """Whether tensor `name` needs a gradient (a trainable tensor feeds it)."""
        return bool(name) and name in self._needs

    def const_value(self, name: str) -> np.ndarray | None:
        """The value of an initializer / Constant output, or None for a computed tensor."""
        return self.consts.get(name)

    def const_ints(self, name: str, what: str) -> list[int]:
        v = self.const_value(name)
        if v is None:
            raise OnnxMorphError(f"cannot differentiate {self.node.op} '{self.node.name}': its {what} input "
                                 f"'{name}' is not a constant")
        return [int(x) for x in np.asarray(v).ravel()]

    def fail(self, why: str):
        raise OnnxMorphError(f"cannot differentiate {self.node.op} '{self.node.name}': {why}")

    # emitters
    def _name(self, hint: str) -> str:
        self._n += 1
        return f"grad/{self.node.name if self.node else 'g'}/{hint}{self._n}"

    def op(self, op_type: str, inputs, n_out: int = 1, **attrs):
        """Emit `op_type(inputs)`; returns the output name (a list for n_out > 1)."""
        outs = [self._name(op_type) for _ in range(n_out)]
        # element types of emitted tensors, so constants built `like` them match
        if op_type == "Cast":
            self.types[outs[0]] = attrs["to"]
        elif op_type in _BOOL_OPS:
            self.types[outs[0]] = onnx.TensorProto.BOOL
        elif op_type == "Shape":
            self.types[outs[0]] = onnx.TensorProto.INT64
        else:
            src = next((self.types[i] for i in inputs if self.types.get(i) in FLOAT_TYPES), None)
            if src is not None:
                self.types[outs[0]] = src
            if n_out == 2 and op_type == "MaxPool":
                self.types[outs[1]] = onnx.TensorProto.INT64
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._name(op_type + "_n"), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, value, like: str | None = None, dtype=None) -> str:
        """A constant initializer of `like`'s float type (or `dtype`); equal constants are shared."""
        dt = dtype or (self.np_dtype(like) if like else np.float32)
        arr = np.asarray(value, dtype=dt)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = f"grad/const{len(self._const_cache)}"
            self.inits.append(numpy_helper.from_array(arr, name))
            self.types[name] = helper.np_dtype_to_tensor_dtype(arr.dtype)
            self._const_cache[key] = name
        return self._const_cache[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64), dtype=np.int64)

    # version-aware helpers (axes moved from attributes to inputs in opsets 13 and 18)
    def reduce(self, op: str, x: str, axes, keepdims: int = 1) -> str:
        axes = [int(a) for a in axes]
        if not axes:
            return x if keepdims else self.op("Identity", [x])
        input_axes = self.opset >= (13 if op == "ReduceSum" else 18)
        if input_axes:
            return self.op(op, [x, self.ints(axes)], keepdims=keepdims)
        return self.op(op, [x], axes=axes, keepdims=keepdims)

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", [x, self.ints(list(shape))])

    def expand(self, x: str, shape) -> str:
        return self.op("Expand", [x, self.ints(list(shape))])

    def transpose(self, x: str, perm) -> str:
        perm = list(perm)
        if perm == sorted(perm):
            return x
        return self.op("Transpose", [x], perm=perm)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", [a, b])

    def scale(self, x: str, k: float) -> str:
        return x if k == 1.0 else self.op("Mul", [x, self.const(k, like=x)])

    def zeros(self, shape, like: str) -> str:
        return self.const(np.zeros(shape), like=like)

    def unbroadcast(self, g: str, g_shape, to_shape) -> str:
        """Sum `g` (of the broadcast result's shape) back to an operand of shape `to_shape`."""
        g_shape, to_shape = list(g_shape), list(to_shape)
        if g_shape == to_shape:
            return g
        lead = len(g_shape) - len(to_shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(to_shape) if d == 1 and g_shape[lead + i] != 1]
        out = self.reduce("ReduceSum", g, axes, keepdims=1) if axes else g
        return self.reshape(out, to_shape)

    def where_positive(self, x: str, a: str, b: str) -> str:
        """a where x > 0 else b."""
        return self.op("Where", [self.op("Greater", [x, self.zeros([], like=x)]), a, b])

    def masked(self, g: str, cond: str, like: str) -> str:
        """g where `cond` else 0, as g * float(cond): onnxruntime's Where is ~10x slower than Cast + Mul."""
        return self.mul(g, self.op("Cast", [cond], to=self.dtype(like)))


_SAME_SHAPE = {"GroupNormalization", "LayerNormalization", "InstanceNormalization", "BatchNormalization",
               "Gelu", "Mish", "HardSwish", "Softplus", "Softsign", "Celu", "Elu", "Selu", "Dropout"}


def _static_shapes(model: onnx.ModelProto):
    """Shapes and element types of every tensor. Ops without an onnx shape function (function ops
    such as GroupNormalization) get their input's shape, and inference runs again from there."""
    for _ in range(3):
        shapes, types = _inferred(model)
        missing = [n for n in model.graph.node if n.op_type in _SAME_SHAPE and n.output[0] not in shapes
                   and shapes.get(n.input[0]) is not None]
        if not missing:
            return shapes, types
        model = _with_value_info(model, [(n.output[0], types.get(n.input[0], 1), shapes[n.input[0]])
                                         for n in missing])
    return shapes, types


def _with_value_info(model, infos):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.value_info.extend(helper.make_tensor_value_info(n, t, s) for n, t, s in infos)
    return out


def _inferred(model: onnx.ModelProto):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes, types = {}, {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        types[vi.name] = t.elem_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if all(d is not None for d in dims):
                shapes[vi.name] = dims
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and not n.input:
            a = n.attribute[0]
            if a.name == "value":
                consts[n.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_ints", "value_floats", "value_int", "value_float"):
                consts[n.output[0]] = np.asarray(helper.get_attribute_value(a))
    return consts


def differentiate(model: onnx.ModelProto, loss: str, wrt: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """`model` plus backward nodes; outputs: `model`'s outputs then `grad__<w>` for each w in `wrt`.

    `loss` must be a scalar (or one-element) float tensor. Returns the model and the gradient names."""
    from . import rules  # noqa: F401  (registers every rule)

    shapes, types = _static_shapes(model)
    consts = _constants(model)
    nodes = list(model.graph.node)
    # forward: which tensors a trainable tensor feeds (integer and boolean tensors carry no gradient)
    needs = set(wrt)
    for n in nodes:
        if any(i in needs for i in n.input):
            needs.update(o for o in n.output if o and types.get(o, onnx.TensorProto.FLOAT) in FLOAT_TYPES)
    if loss not in needs:
        raise OnnxMorphError(f"the loss '{loss}' does not depend on any trainable parameter")
    # backward: only what reaches the loss
    reaches = {loss}
    for n in reversed(nodes):
        if any(o in reaches for o in n.output):
            reaches.update(i for i in n.input if i)
    needs &= reaches | {loss}

    ctx = GradContext(model, shapes, types, consts, needs)
    grads: dict[str, list[str]] = {loss: [ctx.op("Identity", [ctx.const(np.ones(shapes.get(loss) or []),
                                                                      like=loss)])]}

    def total(name: str) -> str | None:
        parts = grads.get(name)
        if not parts:
            return None
        if len(parts) > 1:
            grads[name] = [ctx.op("Sum", parts)]
        return grads[name][0]

    for proto in reversed(nodes):
        if not any(o in grads for o in proto.output):
            continue
        if not any(ctx.needs(i) for i in proto.input):
            continue
        node = Node(proto)
        ctx.node = node
        rule = _RULES.get(node.op)
        if rule is None or proto.domain not in ("", "ai.onnx"):
            raise OnnxMorphError(f"no gradient rule for op {node.op} (node '{node.name}'), which a trainable "
                                 f"parameter feeds")
        dys = [total(o) if o else None for o in node.outputs]
        result = rule(ctx, node, dys)
        for i, g in enumerate(result):
            if g is not None and i < len(node.inputs) and ctx.needs(node.inputs[i]):
                grads.setdefault(node.inputs[i], []).append(g)
    ctx.node = None
    names, copies, outputs = [], [], []
    srcs = [total(w) or ctx.const(np.zeros(shapes[w]), like=w) for w in wrt]
    for w, src in zip(wrt, srcs):
        gname = GRAD_PREFIX + w
        producer = next((n for n in ctx.nodes if src in n.output), None)
        if producer is not None and srcs.count(src) == 1 and not any(src in n.input for n in ctx.nodes):
            producer.output[list(producer.output).index(src)] = gname  # no copy: rename the last node's output
        else:
            copies.append(helper.make_node("Identity", [src], [gname], name=f"grad/out/{w}"))
        outputs.append(helper.make_tensor_value_info(gname, types.get(w, onnx.TensorProto.FLOAT), shapes[w]))
        names.append(gname)
    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    g = out_model.graph
    g.node.extend(ctx.nodes + copies)
    g.initializer.extend(ctx.inits)
    g.output.extend(outputs)
    return out_model, names
