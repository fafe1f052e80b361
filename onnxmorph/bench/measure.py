"""Measured latency of two models on this machine with ONNX Runtime (for `prune(..., measure=True)`).

The protocol is the calibration's (onnxmorph.cost.calibrate): 1-thread sequential sessions, caches
flushed before every run, the calling thread's CPU time as the clock with one thread (wall clock
otherwise), medians after warm-up. The two models run interleaved, A then B, so a change of machine
load during the measurement hits both alike and their ratio stays fair.

The ratio's noise is measured too: a bootstrap over the (A, B) pairs gives the relative standard
error of median(B) / median(A) (`ratio_rel_se`). Measuring stops early once that is at most
TARGET_REL_SE after STOP_PAIRS pairs; a noisy machine gets more pairs, within the same `runs` and
`max_seconds` limits as before.

A shared machine also switches between a quiet and a loaded state for seconds to minutes, and the
ratio of a small pruned model to its original is not the same in both (fixed costs respond to load
differently). So every pair is measured for at least MIN_SECONDS, and followed by the calibration's
reference workload: only pairs whose reference ran within LOADED of the fastest reference this
process has seen count, as in calibration (all pairs when fewer than MIN_PAIRS are quiet).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import ShapeError, UsageError
from ..runtime import make_session
from .quiet import MachineSpeed
from .timing import clock_fn, default_clock, flush_caches, reference_model

MIN_PAIRS = 5  # below this a median is mostly noise, whatever the time budget says
STOP_PAIRS = 10  # an early stop needs this many pairs: the bootstrap of a median is unreliable on fewer
TARGET_REL_SE = 0.01  # stop early once the ratio's relative standard error is at most this
BOOTSTRAP = 1000  # resamples for the standard error
MIN_SECONDS = 3.0  # a 2 ms model's 30 pairs take under a second: too short to see the machine's states
_FASTEST_REFERENCE = [math.inf]  # the fastest reference run this process has seen (seconds)


def clock_label(threads: int) -> str:
    """How the report names the clock `measure_latency` uses with `threads`."""
    return "thread cpu time" if default_clock(threads) == "cpu" else "wall"


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for `model` at its static shapes: random floats, zeros for integer and bool inputs
    (which are usually indices or masks, where random values would be out of range)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:  # old IR: initializers may be listed as inputs
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if any(d < 0 for d in shape):
            raise ShapeError(f"input '{vi.name}' has a symbolic shape; pass feeds to measure it")
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _session_feeds(session, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UsageError(f"no feed for input(s) {', '.join(missing)} of the model to measure")
    return {n: feeds[n] for n in names}


def ratio_rel_se(times_a, times_b, resamples: int = BOOTSTRAP, seed: int = 0) -> float:
    """Relative standard error of median(b) / median(a), by a bootstrap over the pairs (a_i, b_i).

    Pairs are resampled whole, so what slows A and B alike (load drifting during the measurement)
    stays out of the error as it stays out of the ratio. Fixed seed: the same times give the same
    estimate. Fewer than 2 pairs say nothing about noise: infinity."""
    a, b = np.asarray(times_a, float), np.asarray(times_b, float)
    if a.ndim != 1 or a.shape != b.shape:
        raise UsageError("times of A and B must be two lists of the same length")
    n = len(a)
    if n < 2 or np.median(a) <= 0 or np.median(b) <= 0:
        return math.inf
    ratio = float(np.median(b) / np.median(a))
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = np.median(b[idx], axis=1) / np.median(a[idx], axis=1)
    return float(np.std(boot, ddof=1) / ratio)


def collect_pairs(run_pair: Callable[[], tuple[float, float]], *, runs: int = 30, max_seconds: float = 10.0,
                  target_rel_se: float = TARGET_REL_SE, min_seconds: float = 0.0,
                  elapsed: Callable[[], float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Call `run_pair()` (seconds of A, seconds of B) until `elapsed()` is past `max_seconds` and
    at least MIN_PAIRS ran, or, once `elapsed()` is past `min_seconds`, until `runs` pairs ran or
    (with `target_rel_se` > 0) at least STOP_PAIRS ran and `ratio_rel_se` of those is at most
    `target_rel_se`. `elapsed` defaults to wall seconds since this call. Returns the times of A
    and of B."""
    if elapsed is None:
        start = time.perf_counter()
        elapsed = lambda: time.perf_counter() - start  # noqa: E731
    a: list[float] = []
    b: list[float] = []
    min_pairs, stop_pairs = min(runs, MIN_PAIRS), min(runs, STOP_PAIRS)
    while True:
        n = len(a)
        if n >= min_pairs and elapsed() >= max_seconds:
            break
        long_enough = min_seconds <= 0 or elapsed() >= min_seconds
        if n >= runs and long_enough:
            break
        # Check every pair while a check is cheap next to a run, every 10th pair past 50.
        if target_rel_se > 0 and long_enough and n >= stop_pairs and (n < 50 or n % 10 == 0) \
                and ratio_rel_se(a, b) <= target_rel_se:
            break
        ta, tb = run_pair()
        a.append(ta)
        b.append(tb)
    return np.asarray(a, float), np.asarray(b, float)


def quiet_pairs(references) -> np.ndarray:
    """Indices of the pairs whose reference ran within MachineSpeed.LOADED of the fastest reference
    this process has seen; all of them when fewer than MIN_PAIRS are."""
    refs = np.asarray(references, float)
    if refs.size == 0:
        return np.arange(0)
    _FASTEST_REFERENCE[0] = min(_FASTEST_REFERENCE[0], float(refs.min()))
    keep = np.flatnonzero(refs <= MachineSpeed.LOADED * _FASTEST_REFERENCE[0])
    return keep if keep.size >= min(MIN_PAIRS, refs.size) else np.arange(refs.size)


def measure_pairs(model_a: onnx.ModelProto, model_b: onnx.ModelProto, *, threads: int = 1, warmup: int = 3,
                  runs: int = 30, max_seconds: float = 10.0, feeds: Mapping[str, np.ndarray] | None = None,
                  target_rel_se: float = TARGET_REL_SE, min_seconds: float = MIN_SECONDS,
                  quiet: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each run of `model_a` and of `model_b`, measured interleaved in pairs (A then B).

    Stops as `collect_pairs` says, its `max_seconds` and `min_seconds` counted from this call
    (sessions included). With `quiet`, each pair is followed by the reference workload and only
    the pairs `quiet_pairs` keeps are returned. `feeds` overrides the random inputs by name."""
    if threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    if runs < 1:
        raise UsageError(f"runs must be >= 1, got {runs}")
    start = time.perf_counter()
    now = clock_fn(default_clock(threads))
    sessions = [make_session(m, threads) for m in (model_a, model_b)]
    if feeds is None:  # A's static shapes serve both (B may be a pruned copy with a symbolic batch)
        feeds = random_feeds(model_a)
        if any(i.name not in feeds for i in sessions[1].get_inputs()):
            feeds = {**random_feeds(model_b), **feeds}
    inputs = [_session_feeds(s, feeds) for s in sessions]
    runners = list(zip(sessions, inputs))
    if quiet:
        ref = reference_model()
        runners.append((make_session(ref, threads), random_feeds(ref)))
    for _ in range(max(warmup, 0)):
        for s, f in runners:
            s.run(None, f)

    references: list[float] = []

    def run_pair() -> tuple[float, float]:
        times = []
        for s, f in runners:
            flush_caches()  # a deployed model runs cold-ish; the profile's tables were measured cold too
            t0 = now()
            s.run(None, f)
            times.append(now() - t0)
        if quiet:
            references.append(times[2])
        return times[0], times[1]

    a, b = collect_pairs(run_pair, runs=runs, max_seconds=max_seconds, target_rel_se=target_rel_se,
                         min_seconds=min_seconds, elapsed=lambda: time.perf_counter() - start)
    if not quiet:
        return a, b
    keep = quiet_pairs(references)
    return a[keep], b[keep]


def measure_latency(model_a: onnx.ModelProto, model_b: onnx.ModelProto, *, threads: int = 1, warmup: int = 3,
                    runs: int = 30, max_seconds: float = 10.0, feeds: Mapping[str, np.ndarray] | None = None,
                    target_rel_se: float = TARGET_REL_SE) -> tuple[float, float]:
    """Median seconds of one run of `model_a` and of `model_b`, measured interleaved (see
    `measure_pairs`; `target_rel_se=0` measures to the `runs` / `max_seconds` limits as before)."""
    a, b = measure_pairs(model_a, model_b, threads=threads, warmup=warmup, runs=runs, max_seconds=max_seconds,
                         feeds=feeds, target_rel_se=target_rel_se)
    return float(np.median(a)), float(np.median(b))


def measured_ratio(original: onnx.ModelProto, pruned: onnx.ModelProto, **kw) -> dict:
    """Measured latency of `pruned` relative to `original` (keywords: those of `measure_pairs`).

    "ratio" is median(pruned) / median(original); "ratio_rel_se" its bootstrap relative standard
    error (infinity with fewer than 2 pairs); "pairs" how many interleaved pairs ran."""
    a, b = measure_pairs(original, pruned, **kw)
    ma, mb = float(np.median(a)), float(np.median(b))
    return {"original_ms": round(1e3 * ma, 6), "pruned_ms": round(1e3 * mb, 6), "ratio": mb / ma if ma > 0 else 1.0,
            "ratio_rel_se": ratio_rel_se(a, b), "pairs": len(a)}


__all__ = ["measure_latency", "measure_pairs", "measured_ratio", "ratio_rel_se", "collect_pairs", "random_feeds",
           "clock_label"]
