"""Read any ONNX model and bring it to the form the analysis needs.

The analysed graph has static shapes (a symbolic batch becomes 1), `Constant`
nodes and shape sub-graphs folded into initializers, unique node names, and an
opset in the range the handlers understand.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import shape_inference, version_converter

from ..errors import ModelLoadError, ShapeError, UsageError
from .memory import check_fits
from .walk import subgraphs

# Models up to the newest opset and IR version the installed onnx knows load as they are (older ones are
# converted up to 13). In the ort-training environment onnx < 1.18 caps them at IR 10, which its
# onnxruntime 1.19 reads.
MIN_OPSET, MAX_OPSET = 11, onnx.defs.onnx_opset_version()
MAX_IR_VERSION = onnx.IR_VERSION


@dataclass
class TensorSpec:
    """Name, element type and declared shape (ints or symbolic strings) of a graph input/output."""

    name: str
    elem_type: int
    dims: list  # [] for a scalar and for an input without a declared shape (see `has_shape`)
    has_shape: bool = True

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
    """Parse `name=1x3x224x224` strings (the CLI's `--input-shape`); `name=` is a scalar (rank 0)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or []:
        m = re.fullmatch(r"\s*([^=]+?)\s*=\s*((?:\d+(?:\s*[xX,]\s*\d+)*)?)\s*", spec)
        if not m:
            raise UsageError(f"bad --input-shape '{spec}': expected NAME=D1xD2x..., e.g. input=1x3x224x224 "
                             f"(NAME= for a scalar)")
        dims = tuple(int(d) for d in re.split(r"\s*[xX,]\s*", m.group(2))) if m.group(2) else ()
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
    return TensorSpec(vi.name, t.elem_type, dims, t.HasField("shape"))


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


def _drop_initializer_inputs(proto: onnx.ModelProto) -> None:
    """IR < 4 lists initializers as graph inputs; they are weights, not inputs. Without them in the
    input list the model needs IR 4 or later (and at least what its opset needs)."""
    init_names = {i.name for i in proto.graph.initializer}
    if not any(vi.name in init_names for vi in proto.graph.input):
        return
    real_inputs = [vi for vi in proto.graph.input if vi.name not in init_names]
    del proto.graph.input[:]
    proto.graph.input.extend(real_inputs)
    try:
        needed = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    except Exception:  # an opset this onnx does not know: the newest IR it writes is safe
        needed = MAX_IR_VERSION
    proto.ir_version = max(proto.ir_version, needed, 4)


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
            if not spec.has_shape:
                raise ShapeError(f"input '{spec.name}' has no declared shape: pass --input-shape "
                                 f"{spec.name}=D1xD2x... ({spec.name}= for a scalar)")
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
            shape.SetInParent()  # a scalar is an empty shape, not a missing one
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


def _inline_constant_ifs(graph: gs.Graph) -> int:
    """Replace each If whose condition is constant by the branch it takes. Every If output stays, as an
    `Identity` of the branch output (which may be an outer tensor or a branch constant), so graph
    outputs keep their producers and names. Nested graphs first: a branch's own shape tests (squeeze
    a dim if it is 1) become constant once shapes are static, and the branch not taken may no longer
    type-check."""
    count = 0
    for node in list(graph.nodes):
        for sub in subgraphs(node):
            count += _inline_constant_ifs(sub)
    for node in list(graph.nodes):
        if node.op != "If" or not isinstance(node.inputs[0], gs.Constant):
            continue
        cond = np.asarray(node.inputs[0].values).reshape(-1)
        if cond.size != 1:
            continue
        branch = node.attrs["then_branch" if bool(cond[0]) else "else_branch"]
        outs, branch_outs = list(node.outputs), list(branch.outputs)
        if len(outs) != len(branch_outs):
            continue
        for t in branch._local_tensors().values():  # branch names may repeat the other branch's
            t.name = f"{t.name}__{node.name}"
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.remove(node)
        graph.nodes.extend(branch.nodes)
        for i, (out, src) in enumerate(zip(outs, branch_outs)):
            graph.nodes.append(gs.Node("Identity", name=f"{node.name}__out{i}", inputs=[src], outputs=[out]))
        count += 1
    if count:
        graph.toposort()
    return count


def _fill_missing_shapes(graph: gs.Graph, model: onnx.ModelProto, static: dict, source: str) -> None:
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
    try:
        values = run_model(probe, feeds, outputs=[t.name for t in missing])
    except Exception as exc:  # e.g. a branch that can't be taken no longer type-checks at these shapes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"ONNX Runtime cannot run the model while loading the model: {first[:300]} "
                             f"({source}, input shapes { {k: list(v) for k, v in static.items()} })") from None
    for t, v in zip(missing, values):
        t.shape = list(v.shape)
        if t.dtype is None:
            t.dtype = v.dtype


def load_model(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    source: str | None = None,
) -> LoadedModel:
    """Load, convert the opset if needed, make shapes static, fold constants and infer shapes.
    `source`: the name messages give the model (default: its path)."""
    proto, read_from = read_model(model)
    source = source or read_from
    notes: list[str] = []
    # Convert the file as it is: the version converter needs IR < 4's initializers-as-inputs in place.
    proto = _convert_opset(proto, source, notes)
    _drop_initializer_inputs(proto)
    if not proto.graph.input:
        raise ModelLoadError(f"{source}: the model has no inputs")
    specs_in = [_spec(vi) for vi in proto.graph.input]
    specs_out = [_spec(vi) for vi in proto.graph.output]
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
    check_fits(inferred, static, source)  # before anything allocates a sample input or activation
    # Folding one shape sub-graph can make the shapes behind the next one static (Swin pads every
    # stage to whole windows): fold and re-infer while the graph shrinks and Shape ops remain.
    for _ in range(16):
        graph = gs.import_onnx(inferred)
        before = len(graph.nodes)
        try:
            # graph-surgeon's own If flattening drops every other output of a multi-output If
            with contextlib.redirect_stdout(sys.stderr):  # its log is print()ed
                graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=False)
                if _inline_constant_ifs(graph):
                    graph.fold_constants(fold_shapes=True, error_ok=True, flatten_subgraphs=False)
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
    _fill_missing_shapes(graph, inferred, static, source)
    final = gs.export_onnx(graph, do_type_check=False)
    final.ir_version = folded.ir_version
    del final.opset_import[:]
    final.opset_import.extend(proto.opset_import)
    return LoadedModel(final, specs_in, specs_out, static, _default_opset(final), source, notes, original)
