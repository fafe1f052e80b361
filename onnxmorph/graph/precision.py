"""Half-precision models (float16, bfloat16): a float32 working copy, and the way back.

Training needs float32 master weights (a float16 step of lr·grad underflows; the gradient graphs mix in
float32 constants), and ONNX Runtime's CPU provider has no bfloat16 kernels for Conv, Gemm or MatMul, nor
does any opset before 22 allow bfloat16 Conv. So such a model is analysed, trained and verified as a
float32 copy, and the results are written back in the model's own dtype: every half initializer, graph
input/output and Cast target returns to it; float32 tensors the file had (Resize scales, float32 islands)
stay float32. Raising bfloat16/float16 to float32 is exact, so the copy computes what the file computes up
to the arithmetic's own precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import OnnxMorphError

HALF_TYPES = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}


def half_type(model: onnx.ModelProto) -> int | None:
    """FLOAT16 or BFLOAT16 when the model's float graph inputs (or, without any, its float weights) are
    all of that type; None otherwise."""
    floats = (TensorProto.FLOAT, TensorProto.DOUBLE, *HALF_TYPES)
    inits = {t.name for t in model.graph.initializer}
    types = {vi.type.tensor_type.elem_type for vi in model.graph.input
             if vi.name not in inits and vi.type.tensor_type.elem_type in floats}
    if not types:
        types = {t.data_type for t in model.graph.initializer if t.data_type in floats}
    return next(iter(types)) if len(types) == 1 and next(iter(types)) in HALF_TYPES else None


def _to_float32(t: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def _to_half(t: TensorProto, elem_type: int) -> TensorProto:
    a = numpy_helper.to_array(t)
    if elem_type == TensorProto.FLOAT16:
        return numpy_helper.from_array(a.astype(np.float16), t.name)
    return helper.make_tensor(t.name, TensorProto.BFLOAT16, a.shape, a.astype(np.float32).ravel().tolist())


@dataclass
class HalfPrecision:
    """What `to_float32` changed, so that `restore` can write a model back in the original dtype."""

    elem_type: int
    float32_names: set[str] = field(default_factory=set)  # float32 tensors the file had: they stay float32
    raised_nodes: set[str] = field(default_factory=set)  # Cast / ConstantOfShape nodes retargeted to float32
    io_names: set[str] = field(default_factory=set)  # half graph inputs and outputs
    opset_import: list = field(default_factory=list)
    ir_version: int = 0

    @property
    def name(self) -> str:
        return HALF_TYPES[self.elem_type]

    def restore(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """`model` (a float32 working copy, pruned or masked) in the original half dtype."""
        out = onnx.ModelProto.FromString(model.SerializeToString())
        g = out.graph
        for i, t in enumerate(g.initializer):
            if t.data_type == TensorProto.FLOAT and t.name.split("__")[0] not in self.float32_names:
                g.initializer[i].CopyFrom(_to_half(t, self.elem_type))
        for vi in list(g.input) + list(g.output):
            if vi.name in self.io_names and vi.type.tensor_type.elem_type == TensorProto.FLOAT:
                vi.type.tensor_type.elem_type = self.elem_type
        for node in g.node:
            if node.name in self.raised_nodes:
                for a in node.attribute:
                    if node.op_type == "Cast" and a.name == "to":
                        a.i = self.elem_type
                    elif a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                        a.t.CopyFrom(_to_half(a.t, self.elem_type))
        del g.value_info[:]
        del out.opset_import[:]
        out.opset_import.extend(self.opset_import)
        out.ir_version = max(out.ir_version, self.ir_version)
        try:
            onnx.checker.check_model(out, full_check=True)
        except Exception as exc:
            raise OnnxMorphError(f"cannot write the result back in {self.name}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
        return out


def to_float32(model: onnx.ModelProto, elem_type: int) -> tuple[onnx.ModelProto, HalfPrecision]:
    """A float32 copy of a half-precision `model`, and what it takes to write results back."""
    work = onnx.ModelProto.FromString(model.SerializeToString())
    g = work.graph
    info = HalfPrecision(elem_type, opset_import=list(model.opset_import), ir_version=model.ir_version)
    for i, t in enumerate(g.initializer):
        if t.data_type == elem_type:
            g.initializer[i].CopyFrom(_to_float32(t))
        elif t.data_type == TensorProto.FLOAT:
            info.float32_names.add(t.name)
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == elem_type:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            info.io_names.add(vi.name)
    for k, node in enumerate(g.node):
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == elem_type:
                a.i = TensorProto.FLOAT
            elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == elem_type:
                a.t.CopyFrom(_to_float32(a.t))
            elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                info.float32_names.update(node.output)  # a float32 Constant: folded under its output's name
                continue
            else:
                continue
            node.name = node.name or f"{node.op_type}__half{k}"
            info.raised_nodes.add(node.name)
    del g.value_info[:]
    return work, info


def load_working_copy(model, input_shapes, train: bool):
    """Load `model`; a bfloat16 model (always) or a float16 one that will be trained as its float32 copy.
    Returns the LoadedModel and the HalfPrecision to write results back with (None for a plain load)."""
    from .load import load_model, read_model

    proto, source = read_model(model)
    elem_type = half_type(proto)
    if elem_type is None or (elem_type == TensorProto.FLOAT16 and not train):
        return load_model(proto, input_shapes, source), None
    work, info = to_float32(proto, elem_type)
    loaded = load_model(work, input_shapes, source)
    loaded.notes.append(f"{info.name} model: {'trained, ' if train else ''}analysed and verified as a float32 copy "
                        f"(float32 master weights), written back in {info.name}")
    return loaded, info
