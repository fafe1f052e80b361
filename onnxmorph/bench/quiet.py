"""The quiet-state protocol: a shared machine switches between a quiet state and a loaded one, so
the reference workload is timed around every measurement and loaded measurements are taken again
once the machine is quiet (or rescaled to it)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .timing import reference_seconds


def _scaled(value, factor: float):
    """A measurement (seconds, or a dict of them) times `factor`."""
    if isinstance(value, dict):
        return {k: _scaled(v, factor) for k, v in value.items()}
    return value * factor


def _log_ratio(a, b) -> float:
    """The median log ratio of two measurements of the same thing (seconds or dicts of them)."""
    if isinstance(a, dict):
        keys = [k for k in a if k in b and a[k] > 0 and b[k] > 0]
        return float(np.median([np.log(a[k] / b[k]) for k in keys])) if keys else 0.0
    return float(np.log(a / b)) if a > 0 and b > 0 else 0.0


class MachineSpeed:
    """The reference workload timed every `every_s` seconds through a calibration.

    Shared machines switch between a quiet state and a loaded one (on the development host the
    reference runs up to 1.7x slower for tens of seconds at a time, and models about 1.3x): a
    profile measured across both predicts neither. The profile describes the quiet machine. A
    measurement is quiet when the reference timed before and after it is within LOADED of the
    fastest reference seen; `run` measures loaded ones again once the machine is quiet, within a
    time budget. Points still loaded when the budget is spent are rescaled by the reference's
    slowdown to the power ELASTICITY (how much a model slows per unit of reference slowdown, in log
    terms: 0.50-0.60 for ResNet-18, MobileNetV3 and EfficientNet-B0 over 100 s of switching states
    on the development host). Pairs of a loaded and a quiet measurement of the same calibration point
    estimate it too (`elasticity`, reported), but single points are too noisy to steer by: four
    calibrations in one afternoon gave 0.00, 0.20, 0.58 and 0.81."""

    LOADED = 1.2
    ELASTICITY = 0.55

    def __init__(self, every_s: float = 3.0, wait_s: float = 1.0, **opts):
        self.every_s, self.wait_s, self.opts = every_s, wait_s, opts
        self.samples: list[tuple[float, float]] = []  # (perf_counter, reference seconds)
        self.repeated = 0
        self.loaded_left = 0
        self.elasticity: float | None = None

    def sample(self) -> float:
        r = reference_seconds(runs=9, **self.opts)
        self.samples.append((time.perf_counter(), r))
        return r

    def quiet(self, r: float) -> bool:
        return r <= self.LOADED * self.fastest

    @property
    def fastest(self) -> float:
        return min(r for _, r in self.samples)

    @property
    def reference(self) -> float:
        """The quiet machine's reference time (median of the quiet samples)."""
        return float(np.median([r for _, r in self.samples if self.quiet(r)]))

    def run(self, jobs: list, budget_s: float = 120.0, progress: Callable[[int], None] | None = None,
            rescale: bool = True) -> list:
        """Results of `jobs` (callables returning seconds or a dict of them), as on the quiet machine.
        `rescale=False`: the results are ratios of back-to-back timings (no unit to rescale); what is
        still loaded when the budget is spent is kept as measured."""
        history: list[list[tuple[object, float, float]]] = [[] for _ in jobs]  # (value, before, after)

        def measure(todo: list[int], deadline: float | None = None) -> None:
            """Batches of `every_s` seconds between two reference samples; with a `deadline`
            (measuring again), a batch starts only on a quiet sample."""
            while todo and (deadline is None or time.perf_counter() < deadline):
                before, batch, start = self.sample(), [], time.perf_counter()
                if deadline is not None and not self.quiet(before):
                    time.sleep(self.wait_s)  # loaded: wait for the quiet state
                    continue
                while todo:
                    j = todo.pop(0)
                    if progress:
                        progress(j)
                    batch.append((j, jobs[j]()))
                    if time.perf_counter() - start >= self.every_s:
                        break
                after = self.sample()
                for j, value in batch:
                    history[j].append((value, before, after))

        def is_quiet(entry) -> bool:  # judged against the fastest reference seen so far
            return self.quiet(entry[1]) and self.quiet(entry[2])

        def loaded() -> list[int]:
            return [j for j, h in enumerate(history) if not any(is_quiet(e) for e in h)]

        measure(list(range(len(jobs))))
        again = loaded()
        self.repeated += len(again)
        deadline = time.perf_counter() + budget_s
        while again and time.perf_counter() < deadline:
            measure(list(again), deadline)
            again = loaded()
        self.loaded_left += len(again)
        if not rescale:
            return [next((e[0] for e in reversed(h) if is_quiet(e)), h[-1][0]) for h in history]
        pairs = []
        for h in history:
            q = [e for e in h if is_quiet(e)]
            for e in h:
                slow = np.log(max(e[1], e[2]) / self.reference)
                if q and not is_quiet(e) and slow > np.log(self.LOADED):
                    pairs.append(_log_ratio(e[0], q[0][0]) / slow)
        if pairs:
            self.elasticity = float(np.clip(np.median(pairs), 0.0, 1.5))
        beta = self.ELASTICITY
        results = []
        for h in history:
            q = [e for e in h if is_quiet(e)]
            if q:
                results.append(q[-1][0])
            else:  # still loaded: rescale to the quiet machine
                value, before, after = h[-1]
                results.append(_scaled(value, (self.reference / (0.5 * (before + after))) ** beta))
        return results
