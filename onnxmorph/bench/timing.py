"""Timing primitives every measurement of this machine shares: small ONNX models, 1-thread
sessions, random inputs, cache flushes, clocks, medians of interleaved runs, per-kernel times from
ONNX Runtime's profiler, and the fixed reference workload."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..runtime import make_session, onnxruntime


OPSET = 17


MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (Gelu, QuickGelu, ...) for op-factor probes


def conv_path(widths: list[int], side: int, k: int, rng) -> onnx.ModelProto:
    """Convolutions (with bias, stride 1, same padding) through the channel counts `widths`: node j
    maps widths[j] -> widths[j + 1]; nodes are named after their outputs `y{j}`."""
    nodes, inits, x = [], [], "x"
    for j, (ci, co) in enumerate(zip(widths[:-1], widths[1:])):
        w = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{j}"), numpy_helper.from_array(np.zeros(co, np.float32), f"b{j}")]
        nodes.append(helper.make_node("Conv", [x, f"w{j}", f"b{j}"], [f"y{j}"], name=f"y{j}", kernel_shape=[k, k],
                                      pads=[k // 2] * 4))
        x = f"y{j}"
    return small_model(nodes, inits, {"x": [1, widths[0], side, side]}, x)


def kernel_times(model: onnx.ModelProto, *, threads: int = 1, runs: int = 9, warmup: int = 2,
                 flush: bool = True, budget_s: float = 3.0, net: bool = False) -> dict[str, float]:
    """Median seconds of each node's kernel over `runs` session runs (after `warmup`), from ONNX
    Runtime's profiler, keyed by node name (NCHWc kernels are named `<output>_nchwc`: the suffix is
    dropped). Caches are flushed before each run, so each node starts with its weights evicted and
    its input in cache, as inside a real model. `net`: less the profiler's own cost per kernel
    (`profiler_offset`), at least 1e-7 s."""
    import json
    import tempfile

    ort = onnxruntime()
    cold = flush_caches if flush else (lambda: None)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="onnxmorph-calibrate-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = random_inputs(model, rng)
        start = time.perf_counter()
        for r in range(warmup + runs):
            cold()
            sess.run(None, feeds)
            if r >= warmup + 2 and time.perf_counter() - start > budget_s:
                break
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")].removesuffix("_nchwc")
            per_node.setdefault(node, []).append(float(e["dur"]) * 1e-6)
    times = {k: _trimmed_mean(v[warmup:] if len(v) > warmup else v) for k, v in per_node.items()}
    if net:
        offset = profiler_offset(threads)
        times = {k: max(t - offset, 1e-7) for k, t in times.items()}
    return times


def _trimmed_mean(values: list[float]) -> float:
    """Mean of the middle half: robust like a median, but finer than the profiler's 1 us ticks."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    q = len(v) // 4
    return max(float(v[q: len(v) - q].mean()), 1e-7)


def reference_model() -> onnx.ModelProto:
    """A fixed workload (eight 64->64 3x3 convs on 32x32, ~300 M MACs) timed with a calibration and
    next to later measurements: the ratio of the two says how much faster or slower the machine runs
    now than when it was calibrated (shared and throttled machines drift by tens of percent)."""
    return conv_path([64] * 9, 32, 3, np.random.default_rng(12345))


def reference_seconds(*, threads: int = 1, runs: int = 15, flush: bool = True, clock: str | None = None) -> float:
    """Median seconds of one run of `reference_model()` under the calibration's protocol."""
    model, rng = reference_model(), np.random.default_rng(0)
    sess, feeds = timing_session(model, threads), random_inputs(model, rng)
    sess.run(None, feeds)
    return median_run_seconds(sess, feeds, runs=max(runs, 3), cold=flush_caches if flush else None,
                              now=clock_fn(clock or default_clock(threads)))


_OFFSET: dict[int, float] = {}


def profiler_offset(threads: int = 1, n: int = 33) -> float:
    """Seconds ONNX Runtime's profiler adds to each kernel it times: the profiled time of a tiny
    conv minus its time measured without the profiler (a chain of n against a chain of 1)."""
    if threads not in _OFFSET:
        rng = np.random.default_rng(0)
        chains = [conv_path([8] * (m + 1), 2, 1, rng) for m in (1, n)]
        now = clock_fn(default_clock(threads))
        plain = []
        for model in chains:
            sess, feeds = timing_session(model, threads), random_inputs(model, rng)
            for _ in range(20):
                sess.run(None, feeds)
            plain.append(median_run_seconds(sess, feeds, runs=200, now=now))
        per_kernel = (plain[1] - plain[0]) / (n - 1)
        profiled = kernel_times(chains[1], threads=threads, runs=50, flush=False)
        _OFFSET[threads] = max(float(np.median(list(profiled.values()))) - per_kernel, 0.0)
    return _OFFSET[threads]


def small_model(nodes, inits, inputs: dict, out: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "calibrate",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="onnxmorph")
    model.ir_version = 8
    return model


def timing_session(model: onnx.ModelProto, threads: int, optimize: bool = True):
    return make_session(model, threads, optimize)


def random_inputs(model: onnx.ModelProto, rng) -> dict:
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _cache_bytes() -> int:
    """Size of the largest CPU cache (Linux sysfs), 32 MiB when unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            best = max(best, int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return best or 32 << 20


_FLUSH: list[np.ndarray] = []


def flush_caches() -> None:
    """Evict weights and activations from the CPU caches by streaming through a buffer 1.5x the
    largest cache."""
    if not _FLUSH:
        _FLUSH.append(np.ones(int(1.5 * _cache_bytes()) // 8))
    float(_FLUSH[0].sum())


def default_clock(threads: int) -> str:
    return "cpu" if threads == 1 else "wall"


def clock_fn(clock: str):
    """`cpu`: the calling thread's CPU time (valid for 1-thread sessions); `wall`: perf_counter."""
    return time.thread_time if clock == "cpu" else time.perf_counter


def median_run_seconds(sess, feeds: dict, *, runs: int, now, cold: Callable[[], None] | None = None) -> float:
    """Median of `runs` timed runs of a session (`now`: the clock; `cold`: called before each run)."""
    times = []
    for _ in range(runs):
        if cold is not None:
            cold()
        a = now()
        sess.run(None, feeds)
        times.append(now() - a)
    return float(np.median(times))


def time_models(build: Callable[[int], onnx.ModelProto], *, n: int = 12, threads: int = 1, repeats: int = 9,
                rng=None, budget_s: float = 1.0, flush: bool = True, clock: str | None = None,
                optimize: bool = True) -> float:
    """Seconds of one link of the chain `build(k)` (k links): (chain of n - chain of 1) / (n - 1),
    medians of interleaved runs after warm-up, each run starting with cold caches (`flush`).
    `optimize=False` times the links as written (the optimizer would cancel a chain of Transposes
    or fuse one of activations)."""
    rng = rng or np.random.default_rng(0)
    cold = flush_caches if flush else (lambda: None)
    now = clock_fn(clock or default_clock(threads))
    one, many = build(1), build(n)
    s1, sn = timing_session(one, threads, optimize), timing_session(many, threads, optimize)
    f1, fn = random_inputs(one, rng), random_inputs(many, rng)
    for _ in range(2):
        s1.run(None, f1)
        sn.run(None, fn)
    t1, tn = [], []
    start = time.perf_counter()
    for r in range(max(repeats, 3)):
        cold()
        a = now()
        s1.run(None, f1)
        b = now()
        cold()
        c = now()
        sn.run(None, fn)
        d = now()
        t1.append(b - a)
        tn.append(d - c)
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    m1, mn = float(np.median(t1)), float(np.median(tn))
    per = (mn - m1) / (n - 1)
    # Noise can make the difference vanish: never below a quarter of the long chain's mean per node.
    return max(per, mn / (4 * n), 1e-8)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
