"""Build the physically smaller model: each handler slices its op's constants for the kept channels."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.handlers import handler_for
from ..analysis.handlers.quant import QuantizedWeights
from ..errors import OnnxMorphError
from ..graph.export import export_graph
from ..graph.walk import outer_reads


class EmitContext:
    """What handlers see while emitting: the kept positions of every tensor and constant rewrites."""

    def __init__(self, graph: gs.Graph, analysis, keep_elements: np.ndarray):
        self.graph = graph
        self.analysis = analysis
        self.keep_el = keep_elements
        self.opset = int(graph.opset)
        self._uses: dict[str, int] = {}
        for node in graph.nodes:
            # a constant a subgraph reads by name is never edited in place (its users there stay as they are)
            for t in list(node.inputs) + outer_reads(node):
                if isinstance(t, gs.Constant):
                    self._uses[t.name] = self._uses.get(t.name, 0) + 1
        self._names = set(graph.tensors())

    def map(self, t):
        return None if isinstance(t, gs.Constant) else self.analysis.maps.get(t.name)

    def shape(self, t) -> tuple[int, ...]:
        return tuple(int(d) for d in t.shape)

    def kept_axes(self, t) -> dict[int, np.ndarray]:
        """Kept indices per channel axis of `t`; empty when nothing of `t` is removed."""
        cmap = self.map(t)
        if cmap is None:
            return {}
        grid = self.keep_el[cmap.ids]
        if grid.all():
            return {}
        kept = {}
        for j, axis in enumerate(cmap.axes):
            others = tuple(k for k in range(grid.ndim) if k != j)
            kept[axis] = np.nonzero(grid.any(axis=others) if others else grid)[0]
        rect = np.ones(grid.shape, dtype=bool)
        for j, idx in enumerate(kept.values()):
            mask = np.zeros(grid.shape[j], dtype=bool)
            mask[idx] = True
            rect &= mask.reshape([-1 if k == j else 1 for k in range(grid.ndim)])
        if not np.array_equal(rect, grid):
            raise OnnxMorphError(f"internal error: kept channels of '{t.name}' are not a rectangle")
        return kept

    def kept(self, t) -> np.ndarray | None:
        """Kept indices along the single channel axis of `t`, or None when nothing is removed."""
        kept = self.kept_axes(t)
        if not kept:
            return None
        if len(kept) != 1:
            raise OnnxMorphError(f"internal error: '{t.name}' has a multi-axis channel layout here")
        return next(iter(kept.values()))

    def kept_count(self, t) -> int:
        cmap = self.map(t)
        return int(self.keep_el[cmap.ids].sum()) if cmap is not None else 0

    def _fresh_name(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def set_input(self, node: gs.Node, i: int, value: np.ndarray) -> None:
        old = node.inputs[i]
        value = np.asarray(value, order="C")  # (ascontiguousarray would make a scalar 1-D)
        if isinstance(old, gs.Constant) and self._uses.get(old.name, 0) <= 1:
            old.values = value  # sole user: edit in place, keeping the initializer's name
            return
        if isinstance(old, gs.Constant):
            self._uses[old.name] -= 1
        node.inputs[i] = gs.Constant(self._fresh_name(f"{old.name or node.name}__pruned"), value)

    def add_input(self, node: gs.Node, value: np.ndarray, hint: str) -> None:
        node.inputs.append(gs.Constant(self._fresh_name(f"{node.name}__{hint}"), np.asarray(value, order="C")))

    def constant(self, value: np.ndarray, hint: str) -> gs.Constant:
        return gs.Constant(self._fresh_name(hint), np.asarray(value, order="C"))

    def wrap_input(self, node: gs.Node, i: int, op: str, extra_inputs: list, hint: str, **attrs) -> gs.Node:
        """Insert `op(node.inputs[i], *extra_inputs)` in front of `node`'s input `i` (that use only)."""
        src = node.inputs[i]
        mid = gs.Variable(self._fresh_name(f"{src.name}__{hint}"), dtype=src.dtype)
        new = gs.Node(op, name=self._fresh_name(f"{node.name}__{hint}"), inputs=[src, *extra_inputs],
                      outputs=[mid], attrs=attrs)
        node.inputs[i] = mid
        self.graph.nodes.append(new)
        return new

    def wrap_output(self, node: gs.Node, i: int, op: str, extra_inputs: list, hint: str, **attrs) -> gs.Node:
        """Insert `op(y, *extra_inputs)` after `node`'s output `i`; the original tensor (and its name)
        becomes the new node's output, so every consumer sees the wrapped value."""
        out = node.outputs[i]
        mid = gs.Variable(self._fresh_name(f"{out.name}__{hint}"), dtype=out.dtype)
        node.outputs[i] = mid
        new = gs.Node(op, name=self._fresh_name(f"{node.name}__{hint}"), inputs=[mid, *extra_inputs],
                      outputs=[out], attrs=attrs)
        self.graph.nodes.append(new)
        return new


def emit_pruned(analysis, keep_units: np.ndarray) -> onnx.ModelProto:
    """The loaded model with every removed channel physically gone (static shapes)."""
    graph = analysis.loaded.graph()
    ctx = EmitContext(graph, analysis, analysis.keep_elements(keep_units))
    quantized = QuantizedWeights.install(graph, ctx)  # QDQ weights are sliced as stored (int8)
    for node in list(graph.nodes):
        handler_for(node).emit(node, ctx)
    quantized.restore()
    return export_graph(graph, analysis.loaded)
