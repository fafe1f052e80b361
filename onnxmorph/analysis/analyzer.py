"""Walk the graph in topological order and let each op's handler propagate channel maps.

The result (`Analysis`) lists the prunable units, grouped by the producers they
couple (`ChannelGroup`), the frozen groups with their reasons, the gate points,
the weights used for importance, the per-node costs and the "keep at least one"
constraints of every channel axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .memory_cost import declare_memory_cost
from .node_cost import Bilinear, NodeCost
from ..graph.load import LoadedModel
from .channels import ChannelMap, ElementTable, resolve_rectangles
from .handlers import handler_for
from .handlers import LEAF
from .handlers.base import const_value
from .options import AnalysisOptions


@dataclass
class WeightRef:
    """Positions along `axis` of constant `const` belong to the channel positions of `tensor`."""

    node: str
    const: np.ndarray
    axis: int
    tensor: str
    name: str = ""  # the constant's (initializer's) name
    produces: bool = False  # True when `tensor` is the node's output (output-channel slices)


class AnalysisContext:
    """What handlers see while propagating."""

    def __init__(self, graph: gs.Graph, options: AnalysisOptions | None = None):
        self.graph = graph
        self.options = options or AnalysisOptions()
        self.grids: list[np.ndarray] = []  # multi-axis maps whose kept sets must stay rectangles
        self.labels: dict[int, tuple[int, str]] = {}  # element -> (priority, group name)
        self.table = ElementTable()
        self.maps: dict[str, ChannelMap] = {}
        self.gates: dict[str, list[str]] = {}  # tensor -> consumer nodes that reduce over its channels
        self.weights: list[WeightRef] = []
        self.costs: list[NodeCost] = []
        self.leaves: dict[str, str] = {}  # node -> reason its channels are frozen

    # tensors
    def shape(self, t: gs.Tensor) -> tuple[int, ...]:
        if isinstance(t, gs.Constant):
            return tuple(t.values.shape)
        if t.shape is None or not all(isinstance(d, int) for d in t.shape):
            raise ValueError(f"tensor '{t.name}' has no static shape")
        return tuple(int(d) for d in t.shape)

    def rank(self, t: gs.Tensor) -> int:
        return len(self.shape(t))

    def map(self, t: gs.Tensor) -> ChannelMap | None:
        return None if isinstance(t, gs.Constant) else self.maps.get(t.name)

    def set_map(self, t: gs.Tensor, cmap: ChannelMap | None) -> None:
        if cmap is not None:
            self.maps[t.name] = cmap

    def new_channels(self, t: gs.Tensor, axis: int, space: str) -> ChannelMap:
        n = self.shape(t)[axis]
        cmap = ChannelMap((axis,), self.table.new(n, space))
        self.maps[t.name] = cmap
        return cmap

    # coupling
    def require_rectangle(self, ids: np.ndarray) -> None:
        """Register a multi-axis grid; grids no handler ties get the default layout at the end."""
        if np.ndim(ids) > 1:
            self.grids.append(np.asarray(ids))

    def label(self, ids, name: str, priority: int = 1) -> None:
        """Name the groups these elements end up in (the highest priority wins, then the first)."""
        for e in np.unique(np.asarray(ids).ravel()).tolist():
            if self.labels.get(e, (-1, ""))[0] < priority:
                self.labels[e] = (priority, name)

    def couple(self, a: ChannelMap, b: ChannelMap) -> None:
        self.table.union(a.ids, b.ids)

    def freeze(self, cmap: ChannelMap | None, reason: str) -> None:
        if cmap is not None:
            self.table.freeze(cmap.ids, reason)

    def freeze_inputs(self, node: gs.Node, reason: str) -> None:
        """Leaf behaviour: every channel reaching `node` stays."""
        for t in node.inputs:
            cmap = self.map(t)
            if cmap is not None:
                self.freeze(cmap, reason)
                self.leaves.setdefault(node.name, reason)

    # declarations used by later stages
    def gate(self, node: gs.Node, t: gs.Tensor) -> None:
        if self.map(t) is not None:
            self.gates.setdefault(t.name, []).append(node.name)

    def weight(self, node: gs.Node, const: gs.Constant, axis: int, t: gs.Tensor) -> None:
        cmap = self.map(t)
        if cmap is not None and cmap.is_1d:  # (a quantized weight counts by its dequantized value)
            self.weights.append(WeightRef(node.name, const_value(const), axis, t.name, const.name,
                                          any(o is t for o in node.outputs)))

    def weight_values(self, node: gs.Node, values: np.ndarray, axis: int, t: gs.Tensor, produces: bool) -> None:
        """Like `weight`, for values that are not one stored constant as it is (e.g. a reshaped one)."""
        self.weights.append(WeightRef(node.name, np.asarray(values), axis, t.name, "", produces))

    def cost(self, node: gs.Node, in_t: gs.Tensor | None, out_t: gs.Tensor | None, in_axis: int,
             out_axis: int, **terms: Bilinear) -> None:
        in_full = self._positions(in_t, in_axis)
        out_full = self._positions(out_t, out_axis)
        self.costs.append(NodeCost(node.name, node.op, in_t.name if in_t is not None else None,
                                   out_t.name if out_t is not None else None, in_full, out_full, **terms))

    def _positions(self, t, axis):
        if t is None:
            return 1
        cmap = self.map(t)
        return int(cmap.ids.size) if cmap is not None else int(self.shape(t)[axis])


@dataclass
class ChannelGroup:
    """Units that couple the same producers; `units` index into `Analysis.units`."""

    name: str
    units: list[int]
    frozen_reason: str | None = None

    @property
    def channels(self) -> int:
        return len(self.units)


@dataclass
class Analysis:
    loaded: LoadedModel
    table: ElementTable
    maps: dict[str, ChannelMap]
    gates: dict[str, list[str]]
    weights: list[WeightRef]
    costs: list[NodeCost]
    leaves: dict[str, str]
    unit_of_element: np.ndarray  # -1 for frozen elements
    units: list[np.ndarray]  # elements of each prunable unit
    groups: list[ChannelGroup]
    frozen_groups: list[ChannelGroup]
    constraints: list[np.ndarray] = field(default_factory=list)  # unit sets that must keep >= 1
    options: AnalysisOptions = field(default_factory=AnalysisOptions)  # what `analyze` was asked for

    @property
    def num_units(self) -> int:
        return len(self.units)

    def group_of_unit(self) -> np.ndarray:
        out = np.empty(self.num_units, dtype=np.int64)
        for gi, g in enumerate(self.groups):
            out[g.units] = gi
        return out

    def keep_elements(self, keep_units: np.ndarray) -> np.ndarray:
        """Element-level keep mask for a unit-level keep mask (frozen elements always kept)."""
        keep = np.ones(len(self.unit_of_element), dtype=bool)
        prunable = self.unit_of_element >= 0
        keep[prunable] = keep_units[self.unit_of_element[prunable]]
        return keep

    def unit_counts(self, tensor: str) -> tuple[np.ndarray, np.ndarray]:
        """(unit indices, number of positions of each) along the channel axes of `tensor`."""
        cmap = self.maps.get(tensor)
        if cmap is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        u = self.unit_of_element[cmap.ids.ravel()]
        u = u[u >= 0]
        return np.unique(u, return_counts=True)


def analyze(loaded: LoadedModel, options: AnalysisOptions | None = None) -> Analysis:
    graph = loaded.graph()
    ctx = AnalysisContext(graph, options)
    for node in graph.nodes:
        handler = handler_for(node)
        first_new = len(ctx.table)
        declared = len(ctx.costs)
        try:
            handler.propagate(node, ctx)
        except Exception as exc:  # a handler that can't cope makes the node a leaf, never a guess
            reason = f"{node.op} '{node.name}': {exc}"
            for t in node.outputs:
                ctx.maps.pop(t.name, None)
            ctx.table.freeze(np.arange(first_new, len(ctx.table)), reason)
            LEAF.freeze_node(node, ctx, reason)
        if len(ctx.costs) == declared:  # every node moves memory: latency needs it even if MACs don't
            declare_memory_cost(ctx, node)
    resolve_rectangles(ctx.table, ctx.grids)
    for t in graph.outputs:
        ctx.freeze(ctx.map(t), f"graph output '{t.name}'")
    return _collect(loaded, ctx)


def _collect(loaded: LoadedModel, ctx: AnalysisContext) -> Analysis:
    table = ctx.table
    roots = table.roots()
    frozen_roots: dict[int, str] = {}
    for e, reason in table.frozen.items():
        frozen_roots.setdefault(int(roots[e]), reason)

    # Units and groups, in element order so results are deterministic.
    members: dict[int, list[int]] = {}
    for e, r in enumerate(roots.tolist()):
        members.setdefault(r, []).append(e)
    unit_of_element = np.full(len(roots), -1, dtype=np.int64)
    units: list[np.ndarray] = []
    groups: dict[tuple, ChannelGroup] = {}
    frozen_groups: dict[tuple, ChannelGroup] = {}
    for r, elems in members.items():
        signature = tuple(sorted({table.space[e] for e in elems}))
        name = "+".join(table.spaces[s] for s in signature)
        labelled = [ctx.labels[e] for e in elems if e in ctx.labels]
        if labelled:
            name = max(labelled, key=lambda pl: pl[0])[1]
        if r in frozen_roots:
            g = frozen_groups.setdefault(signature, ChannelGroup(name, [], frozen_roots[r]))
            g.units.append(-1)
            continue
        idx = len(units)
        units.append(np.asarray(elems, dtype=np.int64))
        unit_of_element[elems] = idx
        groups.setdefault(signature, ChannelGroup(name, [])).units.append(idx)

    constraints: dict[bytes, np.ndarray] = {}
    for cmap in ctx.maps.values():
        u = unit_of_element[cmap.ids.ravel()]
        if (u < 0).any():
            continue  # a frozen position always stays, so this axis can't become empty
        u = np.unique(u)
        constraints.setdefault(u.tobytes(), u)

    return Analysis(
        loaded=loaded, table=table, maps=ctx.maps, gates=ctx.gates, weights=ctx.weights,
        costs=ctx.costs, leaves=ctx.leaves, unit_of_element=unit_of_element, units=units,
        groups=list(groups.values()), frozen_groups=list(frozen_groups.values()),
        constraints=list(constraints.values()), options=ctx.options,
    )
