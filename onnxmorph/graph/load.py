"""Read any ONNX model and bring it to the form the analysis needs.

The analysed graph has static shapes (a symbolic batch becomes 1), `Constant`
nodes and shape sub-graphs folded into initializers, unique node names, and an
opset in the range the handlers understand.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference, version_converter

from ..errors import ModelLoadError, ShapeError, UsageError

MIN_OPSET, MAX_OPSET = 11, 21
MAX_IR_VERSION = 10  # the ort-training engine's onnxruntime 1.19 refuses IR 11+; every later runtime reads 10


@dataclass
class TensorSpec:
    """Name, element type and declared shape (ints or symbolic strings) of a graph input/output."""

    name: str
    elem_type: int
    dims: list

    @property
    def dtype(self) -> np.dtype:
        return onnx.helper.tensor_dtype_to_np_dtype(self.elem_type)

    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.dims)


@dataclass
class LoadedModel:
    """The static, folded model plus what is needed to restore the original interface."""

    model: onnx.ModelProto
    inputs: list[TensorSpec]  # as declared by the original file
    outputs: list[TensorSpec]
    static_inputs: dict[str, tuple[int, ...]]  # the shapes the analysis uses
    opset: int
    source: str = "<model>"
    notes: list[str] = field(default_factory=list)
    original: onnx.ModelProto | None = field(default=None, repr=False)  # as read (opset-converted)

    def graph(self) -> gs.Graph:
        """A fresh graph-surgeon copy of the static model (callers may edit it)."""
        return gs.import_onnx(self.model)

    @property
    def dynamic(self) -> bool:
        return not all(s.is_static() for s in self.inputs + self.outputs)


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse `name=1x3x224x224` strings (the CLI's `--input-shape`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        m = re.fullmatch(r"\s*([^=]+?)\s*=\s*(\d+(?:\s*[xX,]\s*\d+)*)\s*", spec)
        if not m:
            raise UsageError(f"bad --input-shape '{spec}': expected NAME=D1xD2x..., e.g. input=1x3x224x224")
        dims = tuple(int(d) for d in re.split(r"\s*[xX,]\s*", m.group(2)))
        if any(d <= 0 for d in dims):
            raise UsageError(f"bad --input-shape '{spec}': dimensions must be positive")
        shapes[m.group(1)] = dims
    return shapes


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = vi.type.tensor_type
    dims: list = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or "?")
    return TensorSpec(vi.name, t.elem_type, dims)


def read_model(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read a model file (with external data) or copy a ModelProto; one clear error otherwise."""
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model), "<ModelProto>"
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path}: not a valid ONNX model ({type(exc).__name__})") from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise ModelLoadError(f"{path}: not a valid ONNX model (no graph nodes)")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot read its external data ({exc})") from None
    return proto, str(path)


def _default_opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelLoadError("model imports no default ONNX opset")


def _convert_opset(proto: onnx.ModelProto, source: str, notes: list[str]) -> onnx.ModelProto:
    opset = _default_opset(proto)
    if MIN_OPSET <= opset <= MAX_OPSET:
        return proto
    target = 13 if opset < MIN_OPSET else MAX_OPSET
    try:
        converted = version_converter.convert_version(proto, target)
    except Exception as exc:
        raise ModelLoadError(
            f"{source}: opset {opset} is outside {MIN_OPSET}-{MAX_OPSET} and could not be converted "
            f"to {target} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
    notes.append(f"converted opset {opset} -> {target}")
    return converted


def _fix_input_shapes(
    proto: onnx.ModelProto, specs: list[TensorSpec], user: dict[str, tuple[int, ...]], source: str
) -> dict[str, tuple[int, ...]]:
    names = {s.name for s in specs}
    unknown = set(user) - names
    if unknown:
        raise UsageError(
            f"--input-shape names {sorted(unknown)} but the model's inputs are {sorted(names)}"
        )
    static: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in user:
            dims = user[spec.name]
            if len(dims) != len(spec.dims) or any(
                isinstance(d, int) and d != u for d, u in zip(spec.dims, dims)
            ):
                raise ShapeError(
                    f"--input-shape {spec.name}={'x'.join(map(str, dims))} contradicts the model's "
                    f"shape {spec.dims}"
                )
        else:
            if not spec.dims:
                raise ShapeError(f"input '{spec.name}' has no declared shape: pass --input-shape")
            symbolic = [i for i, d in enumerate(spec.dims) if not isinstance(d, int)]
            if any(i != 0 for i in symbolic):
                raise ShapeError(
                    f"input '{spec.name}' has symbolic dims {spec.dims}; pass "
                    f"--input-shape {spec.name}=" + "x".join("1" if not isinstance(d, int) and i == 0 else
                                                             (str(d) if isinstance(d, int) else "N")
                                                             for i, d in enumerate(spec.dims))
                    + " with N replaced by the real sizes"
                )
            dims = tuple(1 if not isinstance(d, int) else d for d in spec.dims)
        static[spec.name] = dims
    for vi in proto.graph.input:
        if vi.name in static:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in static[vi.name]:
                shape.dim.add().dim_value = d
    return static


def _name_nodes(proto: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def _infer(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ShapeError(f"{source}: shape inference failed ({str(exc).splitlines()[0]})") from None


def _fill_missing_shapes(graph: gs.Graph, model: onnx.ModelProto, static: dict) -> None:
    """Ask onnxruntime for the shapes onnx's inference left symbolic (custom ops, data-dependent dims)."""
    missing = [
        t for t in graph.tensors().values()
        if isinstance(t, gs.Variable) and (t.shape is None or not all(isinstance(d, int) for d in t.shape))
    ]
    if not missing:
        return
    from ..runtime import run_model  # local import: only needed for unusual graphs

    probe = copy.deepcopy(model)
    have = {o.name for o in probe.graph.output}
    for t in missing:
        if t.name not in have:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(t.name))
    feeds = {
        name: np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(
            next(i.type.tensor_type.elem_type for i in model.graph.input if i.name == name)))
        for name, shape in static.items()
    }
    values = run_model(probe, feeds, outputs=[t.name for t in missing])
    for t, v in zip(missing, values):
        t.shape = list(v.shape)
        if t.dtype is None:
            t.dtype = v.dtype


def load_model(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> LoadedModel:
    """Load, convert the opset if needed, make shapes static, fold constants and infer shapes."""
    proto, source = read_model(model)
    notes: list[str] = []
    init_names = {i.name for i in proto.graph.initializer}
    # IR < 4 lists initializers as graph inputs; they are weights, not inputs.
    real_inputs = [vi for vi in proto.graph.input if vi.name not in init_names]
    del proto.graph.input[:]
    proto.graph.input.extend(real_inputs)
    if not real_inputs:
        raise ModelLoadError(f"{source}: the model has no inputs")
    specs_in = [_spec(vi) for vi in proto.graph.input]
    specs_out = [_spec(vi) for vi in proto.graph.output]
    proto = _convert_opset(proto, source, notes)
    used = {n.domain for n in proto.graph.node}  # (onnxruntime's quantizer imports domains it never uses)
    for imp in proto.opset_import:
        if imp.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft") and imp.domain in used:
            notes.append(f"custom domain '{imp.domain}': its ops are treated as opaque")
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    original = copy.deepcopy(proto)
    static = _fix_input_shapes(proto, specs_in, input_shapes or {}, source)
    _name_nodes(proto)
    # Old intermediate shapes may carry the symbolic batch; re-infer them from the static inputs.
    del proto.graph.value_info[:]
    for vi in proto.graph.output:
        vi.type.tensor_type.ClearField("shape")

    inferred = _infer(proto, source)
    # Folding one shape sub-graph can make the shapes behind the next one static (Swin pads every
    # stage to whole windows): fold and re-infer while the graph shrinks and Shape ops remain.
    for _ in range(16):
        graph = gs.import_onnx(inferred)
        before = len(graph.nodes)
        try:
            graph.fold_constants(fold_shapes=True, error_ok=True)
        except Exception as exc:  # folding is an optimisation; a failure must not stop the analysis
            notes.append(f"constant folding skipped ({type(exc).__name__})")
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        folded = gs.export_onnx(graph, do_type_check=False)
        folded.ir_version = min(proto.ir_version, MAX_IR_VERSION)
        del folded.opset_import[:]
        folded.opset_import.extend(proto.opset_import)
        del folded.graph.value_info[:]
        inferred = _infer(folded, source)
        if len(graph.nodes) >= before or not any(n.op in ("Shape", "Size") for n in graph.nodes):
            break
    graph = gs.import_onnx(inferred)
    _fill_missing_shapes(graph, inferred, static)
    final = gs.export_onnx(graph, do_type_check=False)
    final.ir_version = folded.ir_version
    del final.opset_import[:]
    final.opset_import.extend(proto.opset_import)
    return LoadedModel(final, specs_in, specs_out, static, _default_opset(final), source, notes, original)
