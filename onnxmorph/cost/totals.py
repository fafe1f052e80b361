"""Model totals of MACs, params and bytes for any keep-mask over prunable units."""

from __future__ import annotations

import re

import numpy as np

from ..errors import UsageError

METRICS = ("macs", "params", "bytes")
TARGET_ALIASES = {"flops": "macs", "macs": "macs", "params": "params", "latency": "latency"}


def parse_target(target: str) -> tuple[str, float]:
    """`flops=0.5` -> ("macs", 0.5): the metric and the fraction of the original to keep."""
    m = re.fullmatch(r"\s*([a-z]+)\s*=\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*", str(target))
    if not m or m.group(1) not in TARGET_ALIASES:
        raise UsageError(f"bad --target '{target}': expected flops=F, params=F or latency=F with 0 < F <= 1")
    fraction = float(m.group(2))
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"bad --target '{target}': the fraction must be in (0, 1]")
    return TARGET_ALIASES[m.group(1)], fraction


class CostModel:
    """Per-node bilinear costs evaluated at the alive channel positions of a keep-mask.

    `touch_*` arrays list, for each (unit, node) pair, how many channel positions the
    unit occupies on the node's input (`din`) and output (`dout`) tensor.
    """

    def __init__(self, analysis):
        self.nodes = analysis.costs
        self.num_units = analysis.num_units
        self.in_full = np.array([c.in_full for c in self.nodes], dtype=np.float64)
        self.out_full = np.array([c.out_full for c in self.nodes], dtype=np.float64)
        pairs: dict[tuple[int, int], list[int]] = {}
        for k, c in enumerate(self.nodes):
            for tensor, slot in ((c.in_tensor, 0), (c.out_tensor, 1)):
                if tensor is None:
                    continue
                units, counts = analysis.unit_counts(tensor)
                for u, n in zip(units.tolist(), counts.tolist()):
                    pairs.setdefault((u, k), [0, 0])[slot] += n
        keys = sorted(pairs)
        self.touch_unit = np.array([u for u, _ in keys], dtype=np.int64)
        self.touch_node = np.array([k for _, k in keys], dtype=np.int64)
        self.touch_din = np.array([pairs[key][0] for key in keys], dtype=np.float64)
        self.touch_dout = np.array([pairs[key][1] for key in keys], dtype=np.float64)
        # Per-metric coefficient vectors: f = a*i*o + b*i + c*o + d.
        self.coef = {
            m: np.array([[getattr(getattr(c, m), f) for f in "abcd"] for c in self.nodes], dtype=np.float64)
            .reshape(len(self.nodes), 4)
            for m in METRICS
        }

    def alive(self, keep_units: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if keep_units is None or keep_units.all():
            return self.in_full.copy(), self.out_full.copy()
        removed = ~keep_units[self.touch_unit]
        n = len(self.nodes)
        din = np.bincount(self.touch_node[removed], weights=self.touch_din[removed], minlength=n)
        dout = np.bincount(self.touch_node[removed], weights=self.touch_dout[removed], minlength=n)
        return self.in_full - din, self.out_full - dout

    def per_node(self, metric: str, i: np.ndarray, o: np.ndarray) -> np.ndarray:
        c = self.coef[metric]
        return c[:, 0] * i * o + c[:, 1] * i + c[:, 2] * o + c[:, 3]

    def total(self, metric: str, keep_units: np.ndarray | None = None) -> float:
        i, o = self.alive(keep_units)
        return float(self.per_node(metric, i, o).sum())

    def totals(self, keep_units: np.ndarray | None = None) -> dict[str, int]:
        i, o = self.alive(keep_units)
        return {m: int(round(self.per_node(m, i, o).sum())) for m in METRICS}
