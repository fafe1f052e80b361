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


def runtime_plan(analysis, profile):
    """ONNX Runtime's plan for the analyzed model, when `profile` was measured with ONNX Runtime
    on this kind of machine (the plan then describes the runtime the profile measured); made once
    per model."""
    import platform

    from .runtime_plan import ort_plan

    measured = profile.measured or {}
    if profile.kind != "measured" or not profile.tables or measured.get("machine", platform.machine()) \
            != platform.machine():
        return None
    model = analysis.loaded.model
    cached = getattr(analysis.loaded, "_ort_plan", None)
    if cached is not None and cached[0] is model:
        return cached[1]
    plan = ort_plan(model)
    analysis.loaded._ort_plan = (model, plan)
    return plan


class CostModel:
    """Per-node bilinear costs evaluated at the alive channel positions of a keep-mask.

    `touch_*` arrays list, for each (unit, node) pair, how many channel positions the
    unit occupies on the node's input (`din`) and output (`dout`) tensor.

    With a hardware `profile` (a name, a JSON path or a `HardwareProfile`), the metric "latency"
    (seconds) is available too: per node, the profile's measured table for the node's op kind,
    else the roofline `max(flops / peak, bytes / bandwidth)`.
    """

    def __init__(self, analysis, profile=None):
        self.nodes = analysis.costs
        self.num_units = analysis.num_units
        self.in_full = np.array([c.in_full for c in self.nodes], dtype=np.float64)
        self.out_full = np.array([c.out_full for c in self.nodes], dtype=np.float64)
        units_l, nodes_l, din_l, dout_l = [], [], [], []
        for k, c in enumerate(self.nodes):
            for tensor, slot in ((c.in_tensor, 0), (c.out_tensor, 1)):
                if tensor is None:
                    continue
                units, counts = analysis.unit_counts(tensor)
                units_l.append(units)
                nodes_l.append(np.full(len(units), k, dtype=np.int64))
                zeros = np.zeros(len(units))
                din_l.append(counts if slot == 0 else zeros)
                dout_l.append(counts if slot == 1 else zeros)
        n = max(1, len(self.nodes))
        cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))  # noqa: E731
        key = cat(units_l, np.int64) * n + cat(nodes_l, np.int64)
        keys, inv = np.unique(key, return_inverse=True)  # one row per (unit, node), sorted
        self.touch_unit = keys // n
        self.touch_node = keys % n
        self.touch_din = np.bincount(inv, weights=cat(din_l, np.float64), minlength=len(keys))
        self.touch_dout = np.bincount(inv, weights=cat(dout_l, np.float64), minlength=len(keys))
        # Per-metric coefficient vectors: f = a*i*o + b*i + c*o + d.
        self.coef = {
            m: np.array([[getattr(getattr(c, m), f) for f in "abcd"] for c in self.nodes], dtype=np.float64)
            .reshape(len(self.nodes), 4)
            for m in METRICS
        }
        self.profile = None
        self.latency = None
        if profile is not None:
            from .latency import LatencyModel
            from .profile import load_profile

            self.profile = load_profile(profile)
            plan = runtime_plan(analysis, self.profile)
            self.latency = LatencyModel(self.nodes, self.coef, self.profile, plan)

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS + (("latency",) if self.latency is not None else ())

    def _check(self, metric: str) -> None:
        if metric == "latency" and self.latency is None:
            raise UsageError("the latency metric needs a hardware profile (--profile NAME or a JSON file)")
        if metric not in METRICS and metric != "latency":
            raise UsageError(f"unknown cost metric '{metric}'")

    def alive(self, keep_units: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Alive channel positions per node; `keep_units` is a 0/1 mask or keep probabilities
        (then the result is the expected count)."""
        if keep_units is None or (keep_units.dtype == bool and keep_units.all()):
            return self.in_full.copy(), self.out_full.copy()
        gone = 1.0 - keep_units[self.touch_unit].astype(np.float64)
        n = len(self.nodes)
        din = np.bincount(self.touch_node, weights=self.touch_din * gone, minlength=n)
        dout = np.bincount(self.touch_node, weights=self.touch_dout * gone, minlength=n)
        return self.in_full - din, self.out_full - dout

    def per_node(self, metric: str, i: np.ndarray, o: np.ndarray, nodes: np.ndarray | None = None) -> np.ndarray:
        """Cost of each node (or of `nodes` only) at alive positions `i`, `o` (aligned with them)."""
        if metric not in self.coef:
            self._check(metric)
            return self.latency.per_node(i, o, nodes)
        c = self.coef[metric] if nodes is None else self.coef[metric][nodes]
        return c[:, 0] * i * o + c[:, 1] * i + c[:, 2] * o + c[:, 3]

    def total(self, metric: str, keep_units: np.ndarray | None = None) -> float:
        i, o = self.alive(keep_units)
        fixed = self.latency.run_seconds if metric == "latency" and self.latency is not None else 0.0
        return float(self.per_node(metric, i, o).sum()) + fixed

    def totals(self, keep_units: np.ndarray | None = None) -> dict[str, int]:
        i, o = self.alive(keep_units)
        return {m: int(round(self.per_node(m, i, o).sum())) for m in METRICS}

    def by_op(self, keep_units: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """Totals per op kind ({op: {"nodes": n, metric: total}}) over `self.metrics`; latency in
        seconds, without the profile's fixed per-run cost (no op's)."""
        i, o = self.alive(keep_units)
        ops = [c.op for c in self.nodes]
        kinds = sorted(set(ops))
        position = {op: k for k, op in enumerate(kinds)}
        index = np.array([position[op] for op in ops], dtype=np.int64)
        out = {op: {"nodes": int(n)} for op, n in zip(kinds, np.bincount(index, minlength=len(kinds)))}
        for m in self.metrics:
            sums = np.bincount(index, weights=self.per_node(m, i, o), minlength=len(kinds))
            for op, v in zip(kinds, sums):
                out[op][m] = float(v)
        return out

    def latency_ms(self, keep_units: np.ndarray | None = None) -> float:
        """Predicted latency in milliseconds under the profile (needs one)."""
        return 1e3 * self.total("latency", keep_units)

    def marginal(self, metric: str, keep_units: np.ndarray | None = None) -> np.ndarray:
        """Per prunable unit: the `metric` saved by removing that unit alone at the current keep state,
        linearised (d cost / d alive channels at each node the unit touches, times its positions there).

        Removed units get the same derivative (what keeping them would cost). For latency the
        binding roofline branch is differentiated (MorphNet), or the measured table's smooth slope.
        """
        self._check(metric)
        i, o = self.alive(keep_units)
        if metric == "latency":
            di, do = self.latency.gradients(i, o)
        else:
            c = self.coef[metric]
            di, do = c[:, 0] * o + c[:, 1], c[:, 0] * i + c[:, 2]
        per_touch = di[self.touch_node] * self.touch_din + do[self.touch_node] * self.touch_dout
        return np.bincount(self.touch_unit, weights=per_touch, minlength=self.num_units).astype(np.float64)
