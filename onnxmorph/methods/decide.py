"""Turn per-unit importance into a keep-mask that meets a cost target.

Greedy: repeatedly remove, from the group where it is cheapest, the next chunk of
least-important units, ranked by importance per unit of cost saved. Savings are
recomputed exactly as neighbouring layers shrink. Chunks keep channel counts
multiples of `round_to`; no channel axis is ever emptied.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..errors import TargetUnreachable


@dataclass
class Selection:
    keep_units: np.ndarray
    cost_before: float
    cost_after: float
    target_cost: float
    reached: bool
    order: list[tuple[int, list[int]]]  # (group, units) in removal order


class RemovalState:
    """Keep-mask, alive channel counts per node and per constraint, as units are removed."""

    def __init__(self, analysis, cost_model, metric: str):
        self.cm = cost_model
        self.metric = metric
        self.keep = np.ones(analysis.num_units, dtype=bool)
        self.i_alive, self.o_alive = cost_model.alive(None)
        # unit -> its rows in the touch arrays
        order = np.argsort(cost_model.touch_unit, kind="stable")
        self.touch_rows = np.split(order, np.searchsorted(cost_model.touch_unit[order],
                                                          np.arange(1, analysis.num_units)))
        self.constraints = analysis.constraints
        self.alive_in_constraint = np.array([len(c) for c in self.constraints], dtype=np.int64)
        self.unit_constraints: list[list[int]] = [[] for _ in range(analysis.num_units)]
        for ci, c in enumerate(self.constraints):
            for u in c.tolist():
                self.unit_constraints[u].append(ci)

    def _rows(self, units):
        return np.concatenate([self.touch_rows[u] for u in units]) if units else np.zeros(0, np.int64)

    def saving(self, units) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        rows = self._rows(units)
        cm = self.cm
        if len(units) == 1:  # one unit touches each node at most once: no need to merge rows
            nodes, din, dout = cm.touch_node[rows], cm.touch_din[rows], cm.touch_dout[rows]
        else:
            nodes, inv = np.unique(cm.touch_node[rows], return_inverse=True)
            din = np.bincount(inv, weights=cm.touch_din[rows], minlength=len(nodes))
            dout = np.bincount(inv, weights=cm.touch_dout[rows], minlength=len(nodes))
        i, o = self.i_alive[nodes], self.o_alive[nodes]
        before = cm.per_node(self.metric, i, o, nodes)
        after = cm.per_node(self.metric, i - din, o - dout, nodes)
        return float((before - after).sum()), nodes, din, dout

    def legal(self, units) -> bool:
        hits: dict[int, int] = {}
        for u in units:
            for ci in self.unit_constraints[u]:
                hits[ci] = hits.get(ci, 0) + 1
        return all(self.alive_in_constraint[ci] - n >= 1 for ci, n in hits.items())

    def remove(self, units, nodes, din, dout) -> None:
        self.keep[units] = False
        self.i_alive[nodes] -= din
        self.o_alive[nodes] -= dout
        for u in units:
            for ci in self.unit_constraints[u]:
                self.alive_in_constraint[ci] -= 1


def _next_alive(alive: int, round_to: int) -> int:
    """Channel count after the next removal step in a group with `alive` channels."""
    if round_to <= 1:
        return alive - 1
    return alive - (alive % round_to or round_to)


def group_widths(analysis) -> list[int]:
    """Per group, the gcd over its units of how many channels a unit is in each layer that creates
    them (1 for ordinary channels, the head dim (x3 for a fused QKV) for a whole attention head)."""
    elems = np.flatnonzero(analysis.unit_of_element >= 0)
    width = np.ones(analysis.num_units, dtype=np.int64)
    if len(elems):
        units = analysis.unit_of_element[elems]
        spaces = np.asarray(analysis.table.space, dtype=np.int64)[elems]
        pairs, counts = np.unique(np.stack([units, spaces]), axis=1, return_counts=True)
        width[:] = np.iinfo(np.int64).max
        np.minimum.at(width, pairs[0], counts)
    return [int(np.gcd.reduce(width[g.units])) if g.units else 1 for g in analysis.groups]


def select_units(analysis, cost_model, importance: np.ndarray, metric: str, fraction: float,
                 round_to: int = 1, best_effort: bool = False, per_cost: bool = True,
                 min_keep: float = 0.0) -> Selection:
    """Remove least-important units until `fraction` of `metric` remains.

    `per_cost`: rank chunks by importance per unit of cost saved (one-shot criteria); otherwise by
    importance alone (trained gates already weigh cost), cost breaking ties. `min_keep`: each group keeps
    at least this fraction of its channels, so one expensive layer is not thinned to nothing."""
    state = RemovalState(analysis, cost_model, metric)
    before = cost_model.total(metric)
    target = fraction * before
    current = before
    groups = analysis.groups
    ranked = [sorted(g.units, key=lambda u: (importance[u], u)) for g in groups]
    removed_count = [0] * len(groups)
    node_groups: dict[int, set[int]] = {}
    for gi, g in enumerate(groups):
        for k in np.unique(cost_model.touch_node[state._rows(g.units)]).tolist():
            node_groups.setdefault(k, set()).add(gi)

    version = [0] * len(groups)
    heap: list[tuple[float, int, int]] = []

    floor = [max(1, int(np.ceil(min_keep * len(r)))) for r in ranked]
    # A unit that is w channels of a tensor (a whole attention head: its head dim) keeps counts
    # multiples of round_to in steps of round_to / gcd(round_to, w) units.
    step = [round_to // int(np.gcd(round_to, w)) for w in group_widths(analysis)] if round_to > 1 \
        else [1] * len(groups)

    def candidate(gi: int):
        alive = len(ranked[gi]) - removed_count[gi]
        nxt = _next_alive(alive, step[gi])
        if nxt < floor[gi]:
            return None
        chunk = ranked[gi][removed_count[gi]:removed_count[gi] + alive - nxt]
        if not state.legal(chunk):
            return None
        saving, *_ = state.saving(chunk)
        if saving <= 0:
            return None
        if per_cost:
            return float(importance[chunk].sum()) / saving, chunk
        return (float(importance[chunk].mean()), -saving), chunk

    def push(gi: int):
        version[gi] += 1
        cand = candidate(gi)
        if cand is not None:
            heapq.heappush(heap, (cand[0], gi, version[gi]))

    for gi in range(len(groups)):
        push(gi)
    order: list[tuple[int, list[int]]] = []
    while current > target and heap:
        _, gi, ver = heapq.heappop(heap)
        if ver != version[gi]:
            continue
        cand = candidate(gi)
        if cand is None:
            continue
        chunk = cand[1]
        saving, nodes, din, dout = state.saving(chunk)
        state.remove(chunk, nodes, din, dout)
        removed_count[gi] += len(chunk)
        current -= saving
        order.append((gi, list(chunk)))
        touched = set()
        for k in nodes.tolist():
            touched |= node_groups.get(k, set())
        for gj in touched | {gi}:
            push(gj)
    reached = current <= target * (1 + 1e-9)
    if not reached and not best_effort:
        raise TargetUnreachable(
            f"target {metric}={fraction:g} is unreachable: removing every legal channel reaches "
            f"{current / before:.3f} of the original {metric}"
            + (f" ({len(analysis.frozen_groups)} frozen groups; see `onnxmorph inspect`)"
               if analysis.frozen_groups else "")
        )
    return Selection(state.keep, before, current, target, reached, order)


def select_uniform(analysis, cost_model, importance: np.ndarray, metric: str, fraction: float,
                   round_to: int = 1, best_effort: bool = False) -> Selection:
    """Keep the same share of every group (its most important units), the largest share whose cost
    meets `fraction` of `metric`: Torch-Pruning's uniform per-layer ratio, found by bisection."""
    groups = analysis.groups
    ranked = [sorted(g.units, key=lambda u: (-importance[u], u)) for g in groups]
    step = [round_to // int(np.gcd(round_to, w)) for w in group_widths(analysis)] if round_to > 1 \
        else [1] * len(groups)
    before = cost_model.total(metric)
    target = fraction * before

    def keep_at(ratio: float) -> np.ndarray:
        keep = np.zeros(analysis.num_units, dtype=bool)
        for r, s in zip(ranked, step):
            k = int(np.ceil(ratio * len(r) / s - 1e-9)) * s
            keep[r[:min(len(r), max(s, k))]] = True
        for c in analysis.constraints:  # never empty a channel axis
            if len(c) and not keep[c].any():
                keep[max(c.tolist(), key=lambda u: importance[u])] = True
        return keep

    lo, hi = 0.0, 1.0
    if cost_model.total(metric, keep_at(lo)) > target:
        current = cost_model.total(metric, keep_at(lo))
        if not best_effort:
            raise TargetUnreachable(f"target {metric}={fraction:g} is unreachable: keeping one channel per "
                                    f"group reaches {current / before:.3f} of the original {metric}")
        keep = keep_at(lo)
        return Selection(keep, before, current, target, False, [])
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if cost_model.total(metric, keep_at(mid)) <= target:
            lo = mid
        else:
            hi = mid
    keep = keep_at(lo)
    current = cost_model.total(metric, keep)
    order = [(gi, [u for u in r if not keep[u]]) for gi, r in enumerate(ranked)]
    return Selection(keep, before, current, target, True, [o for o in order if o[1]])
