"""Measured latency of two models on this machine with ONNX Runtime (for `prune(..., measure=True)`).

The protocol is the calibration's (onnxmorph.cost.calibrate): 1-thread sequential sessions, caches
flushed before every run, the calling thread's CPU time as the clock with one thread (wall clock
otherwise), medians after warm-up. The two models run interleaved, A then B, so a change of machine
load during the measurement hits both alike and their ratio stays fair.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from .cost.calibrate import clock_fn, default_clock, flush_caches
from .errors import ShapeError, UsageError
from .runtime import make_session

MIN_PAIRS = 5  # below this a median is mostly noise, whatever the time budget says


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


def measure_latency(model_a: onnx.ModelProto, model_b: onnx.ModelProto, *, threads: int = 1, warmup: int = 3,
                    runs: int = 30, max_seconds: float = 10.0,
                    feeds: Mapping[str, np.ndarray] | None = None) -> tuple[float, float]:
    """Median seconds of one run of `model_a` and of `model_b`, measured interleaved.

    Stops after `runs` pairs, or once `max_seconds` have passed (counted from the call, sessions
    included) and at least MIN_PAIRS pairs ran. `feeds` overrides the random inputs by name."""
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
    for _ in range(max(warmup, 0)):
        for s, f in zip(sessions, inputs):
            s.run(None, f)
    times: list[list[float]] = [[], []]
    min_pairs = min(runs, MIN_PAIRS)
    while len(times[0]) < runs and (len(times[0]) < min_pairs or time.perf_counter() - start < max_seconds):
        for s, f, t in zip(sessions, inputs, times):
            flush_caches()  # a deployed model runs cold-ish; the profile's tables were measured cold too
            t0 = now()
            s.run(None, f)
            t.append(now() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def measured_ratio(original: onnx.ModelProto, pruned: onnx.ModelProto, **kw) -> dict:
    """Measured latency of `pruned` relative to `original` (keywords: those of `measure_latency`)."""
    a, b = measure_latency(original, pruned, **kw)
    return {"original_ms": round(1e3 * a, 6), "pruned_ms": round(1e3 * b, 6), "ratio": b / a if a > 0 else 1.0}


__all__ = ["measure_latency", "measured_ratio", "random_feeds", "clock_label"]
