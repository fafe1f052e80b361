"""The Pareto front of (cost, fidelity): trials no other trial beats on both."""

from __future__ import annotations

import math
from typing import Sequence


def pareto_front(costs: Sequence[float | None], fidelities: Sequence[float | None]) -> list[int]:
    """Indices of the non-dominated points, by increasing cost.

    Point j dominates point i when cost_j <= cost_i and fidelity_j >= fidelity_i with at least one
    strict; equal points do not dominate each other (both stay). Points missing either figure are
    not on the front. One sort by (cost, -fidelity) and a sweep keeping the best fidelity so far."""
    points = [(c, f, i) for i, (c, f) in enumerate(zip(costs, fidelities))
              if c is not None and f is not None and math.isfinite(c) and math.isfinite(f)]
    points.sort(key=lambda p: (p[0], -p[1], p[2]))
    front: list[int] = []
    best = -math.inf  # the highest fidelity among strictly cheaper points
    k = 0
    while k < len(points):
        cost = points[k][0]
        same = [p for p in points[k:] if p[0] == cost]  # equal cost: only the highest fidelity survives
        top = same[0][1]
        if top > best:
            front.extend(p[2] for p in same if p[1] == top)
            best = top
        k += len(same)
    return front


def fronts(trials, fidelity_key: str, axes: Sequence[str]) -> dict[str, list[str]]:
    """{axis: names of the front's trials by increasing cost} for each cost axis the trials have."""
    done = [t for t in trials if t.status == "done"]
    out = {}
    for axis in axes:
        costs = [t.value(axis) for t in done]
        if any(c is not None for c in costs):
            out[axis] = [done[i].name for i in pareto_front(costs, [t.value(fidelity_key) for t in done])]
    return out
