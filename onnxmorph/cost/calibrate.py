"""Measure this machine with ONNX Runtime micro-benchmarks and build a measured hardware profile.

For each op kind (dense 3x3 and 1x1 Conv, depthwise Conv, MatMul, an element-wise unary and
binary op, MaxPool) and each point of a grid of channel counts × sizes, a chain of 1 and of
`CHAIN` identical nodes is timed (warm-up, then the median of interleaved repeats). The time of
one node is the difference divided by `CHAIN - 1`, which cancels the fixed cost of a session run
and of layout reorders at the graph's edges. Caches are flushed before every run: in a real model
each layer's weights were evicted by the layers before it (measured here: a 160->960 1x1 conv on
2x2 takes 42 us with warm weights, 85 us cold, 80 us inside MobileNetV2), so warm micro-benchmarks
would predict models about 2x too fast. With one thread the clock is the calling thread's CPU
time (ONNX Runtime runs single-threaded sessions on the caller): it is what the run takes on an
idle core and does not count time the thread spent preempted on a busy machine. Conv-like kinds are also measured at channel counts
that are not multiples of the channel multiple (`unaligned`), where runtimes leave their fast
kernels. Big points above a work cap are not run: they take the time per unit of work of the
largest measured size of the same channel count (throughput has saturated there).
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..runtime import make_session
from .profile import SCHEMA, TABLE_KINDS, HardwareProfile, Table

CHAIN = 3
MAX_CHAIN = 48
OPSET = 17

GRIDS = {
    # channels, sizes (pixels per channel, or rows for gemm), MAC/byte cap per node
    "default": {
        "channels": [8, 16, 32, 64, 128, 256, 512],
        "sizes": [4, 16, 64, 256, 1024, 3136],
        "gemm_channels": [16, 64, 256, 1024, 2048],
        "gemm_rows": [1, 16, 64, 256],
        "max_macs": 1.2e8,
        "max_bytes": 6.4e7,
        "repeats": 9,
        "probe_sizes": (64, 256),
        "exponent_points": 5,
    },
    "tiny": {
        "channels": [8, 16],
        "sizes": [16, 64],
        "gemm_channels": [16, 64],
        "gemm_rows": [1, 16],
        "max_macs": 1e7,
        "max_bytes": 1e7,
        "repeats": 3,
        "probe_sizes": (64,),
        "exponent_points": 1,
    },
}


@dataclass
class Point:
    kind: str
    channels: int
    size: int
    aligned: bool


def _conv_chain(c: int, side: int, k: int, group: int, n: int, rng) -> onnx.ModelProto:
    nodes, inits, x = [], [], "x"
    for layer in range(n):
        w = (rng.standard_normal((c, c // group, k, k)) * (1.0 / np.sqrt(c // group * k * k))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{layer}"))
        nodes.append(helper.make_node("Conv", [x, f"w{layer}"], [f"y{layer}"], kernel_shape=[k, k],
                                      pads=[k // 2] * 4, group=group))
        x = f"y{layer}"
    return _model(nodes, inits, {"x": [1, c, side, side]}, x)


def _elementwise_chain(kind: str, c: int, side: int, n: int) -> onnx.ModelProto:
    nodes, x = [], "x"
    inputs = {"x": [1, c, side, side]}
    if kind == "binary":
        inputs["b"] = [1, c, side, side]
    for layer in range(n):
        y = f"y{layer}"
        if kind == "unary":
            nodes.append(helper.make_node("Sigmoid", [x], [y]))
        elif kind == "binary":
            nodes.append(helper.make_node("Add", [x, "b"], [y]))
        else:  # pool
            nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        x = y
    return _model(nodes, [], inputs, x)


def _gemm_chain(c: int, rows: int, n: int, rng) -> onnx.ModelProto:
    nodes, inits, x = [], [], "x"
    for layer in range(n):
        w = (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{layer}"], [f"y{layer}"]))
        x = f"y{layer}"
    return _model(nodes, inits, {"x": [rows, c]}, x)


def _model(nodes, inits, inputs: dict, out: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "calibrate",
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxmorph")
    model.ir_version = 8
    return model


def build_chain(kind: str, channels: int, size: int, n: int, rng, kernel: int = 3) -> onnx.ModelProto:
    """`n` identical nodes of `kind` in a row (`kernel` is the side of conv / depthwise kernels)."""
    if kind == "gemm":
        return _gemm_chain(channels, size, n, rng)
    side = int(round(np.sqrt(size)))
    if kind == "conv":
        return _conv_chain(channels, side, kernel, 1, n, rng)
    if kind == "conv1x1":
        return _conv_chain(channels, side, 1, 1, n, rng)
    if kind == "depthwise":
        return _conv_chain(channels, side, kernel, channels, n, rng)
    return _elementwise_chain(kind, channels, side, n)


def work_of(kind: str, channels: int, size: int, kernel: int = 3) -> float:
    """MACs (conv-like, gemm) or bytes read + written (the rest) of ONE node of the benchmark."""
    if kind == "conv":
        return float(channels * channels * kernel * kernel * size)
    if kind == "conv1x1":
        return float(channels * channels * size)
    if kind == "depthwise":
        return float(channels * kernel * kernel * size)
    if kind == "gemm":
        return float(channels * channels * size)
    if kind == "binary":
        return 4.0 * 3 * channels * size
    return 4.0 * 2 * channels * size  # unary, pool


def _session(model: onnx.ModelProto, threads: int):
    return make_session(model, threads)


def _feeds(model: onnx.ModelProto, rng) -> dict:
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


def chain_length(kind: str, channels: int, size: int, kernel: int = 3) -> int:
    """Nodes in the long chain: enough that it runs ~150 us (so noise averages out over small
    nodes), at least CHAIN, at most MAX_CHAIN."""
    work = work_of(kind, channels, size, kernel)
    guess = 0.5e-6 + (work / 1e10 if TABLE_KINDS[kind] == "macs" else work / 5e9)
    return int(np.clip(np.ceil(150e-6 / guess), CHAIN, MAX_CHAIN))


def time_node(kind: str, channels: int, size: int, threads: int = 1, repeats: int = 9, rng=None,
              budget_s: float = 1.0, flush: bool = True, clock: str | None = None, kernel: int = 3) -> float:
    """Seconds one node of `kind` takes: (chain of n - chain of 1) / (n - 1), medians of
    interleaved runs after warm-up, each run starting with cold caches (`flush`)."""
    rng = rng or np.random.default_rng(0)
    cold = flush_caches if flush else (lambda: None)
    now = clock_fn(clock or default_clock(threads))
    n = chain_length(kind, channels, size, kernel)
    one = build_chain(kind, channels, size, 1, rng, kernel)
    many = build_chain(kind, channels, size, n, rng, kernel)
    s1, sn = _session(one, threads), _session(many, threads)
    f1, fn = _feeds(one, rng), _feeds(many, rng)
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


def _unaligned(c: int, multiple: int) -> int:
    """A channel count near c that is not a multiple of the channel multiple (nor of 2)."""
    u = c - 1
    return u if u >= 1 and (multiple <= 1 or u % multiple) else c + 1


def detect_channel_multiple() -> tuple[int, str]:
    """ONNX Runtime's NCHWc block size on this CPU (MLAS: 16 with AVX-512F, 8 with AVX2), else the
    SIMD width in FP32 lanes."""
    machine = platform.machine().lower()
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    words = set(flags.split())
    if "avx512f" in words:
        return 16, "AVX-512F: ONNX Runtime's NCHWc block size is 16"
    if "avx2" in words:
        return 8, "AVX2: ONNX Runtime's NCHWc block size is 8"
    if machine in ("aarch64", "arm64") or "asimd" in words:
        return 4, "NEON: 4 FP32 lanes"
    return 4, "no AVX2/AVX-512 or NEON found: 4 FP32 lanes assumed"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate(name: str, *, threads: int = 1, grid: str = "default", kinds=None,
              progress: Callable[[int, int, str], None] | None = None, seed: int = 0,
              flush: bool = True, clock: str | None = None) -> HardwareProfile:
    """Run the micro-benchmarks on this machine and return a measured profile."""
    import onnxruntime as ort

    spec = GRIDS[grid]
    clock = clock or default_clock(threads)
    kinds = list(kinds or TABLE_KINDS)
    simd, why = detect_channel_multiple()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    opts = dict(threads=threads, repeats=spec["repeats"], flush=flush, clock=clock)
    if progress:
        progress(0, 1, "probing channel alignment")
    fast, alignment = probe_channel_multiple(rng=rng, sizes=spec["probe_sizes"], **opts)
    multiple = max(simd, fast)
    plan: list[Point] = []
    for kind in kinds:
        if kind == "gemm":
            plan += [Point(kind, c, r, True) for c in spec["gemm_channels"] for r in spec["gemm_rows"]]
            continue
        split = fast > 1 and kind in ("conv", "conv1x1", "depthwise", "pool")
        for aligned in ((True, False) if split else (True,)):
            for c in spec["channels"]:
                cc = c if aligned else _unaligned(c, fast)
                plan += [Point(kind, cc, s, aligned) for s in spec["sizes"]]
    cap = {k: spec["max_macs"] if TABLE_KINDS[k] == "macs" else spec["max_bytes"] for k in TABLE_KINDS}
    results: dict[tuple[str, bool], dict[tuple[int, int], float]] = {}
    total = len(plan)
    for n, p in enumerate(plan):
        if progress:
            progress(n, total, f"{p.kind} c={p.channels} size={p.size}{'' if p.aligned else ' (unaligned)'}")
        if work_of(p.kind, p.channels, p.size) > cap[p.kind]:
            continue
        seconds = time_node(p.kind, p.channels, p.size, rng=rng, **opts)
        results.setdefault((p.kind, p.aligned), {})[(p.channels, p.size)] = seconds
    if progress:
        progress(total, total, "kernel-size exponents")
    exponents = {k: kernel_exponent(k, results.get((k, True), {}), spec["exponent_points"], rng, **opts)
                 for k in ("conv", "depthwise") if k in kinds}
    tables = {}
    for kind in kinds:
        main = _table(kind, results.get((kind, True), {}))
        if main is None:
            continue
        un = _table(kind, results.get((kind, False), {}), main.sizes)
        main.unaligned = un
        if kind in exponents:
            main.kernel, main.kernel_exponent = 9.0, exponents[kind]
            if un is not None:
                un.kernel, un.kernel_exponent = 9.0, exponents[kind]
        tables[kind] = main
    peak = max((2 * w / s for t in tables.values() if TABLE_KINDS[t.kind] == "macs"
                for w, s in zip(t.work.ravel(), t.seconds.ravel())), default=1.0)
    bandwidth = max((w / s for t in tables.values() if TABLE_KINDS[t.kind] == "bytes"
                     for w, s in zip(t.work.ravel(), t.seconds.ravel())), default=1.0)
    return HardwareProfile(
        name=name, peak_gflops=round(peak / 1e9, 3), memory_gbps=round(bandwidth / 1e9, 3), dtype_bytes=4,
        channel_multiple=multiple, fast_multiple=fast, fusion=True, kind="measured",
        description=f"measured with onnxmorph profiles calibrate on {cpu_name()}, ONNX Runtime {ort.__version__}, "
                    f"{threads} thread{'s' if threads != 1 else ''}",
        source=(f"onnxruntime micro-benchmarks ({grid} grid, median of interleaved repeats, chain difference, "
                f"{'cold' if flush else 'warm'} caches, {'thread CPU' if clock == 'cpu' else 'wall-clock'} time); "
                f"roofline numbers are the best throughput measured; channel_multiple {multiple}: {why}; "
                f"fast_multiple {fast}: the smallest step of channel counts that stays on the fast kernels "
                f"(per-unit time of 64-q channels / 64 channels by step q: {alignment})"),
        tables=tables,
        measured={"cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
                  "onnxruntime": ort.__version__, "threads": threads, "grid": grid,
                  "date": datetime.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                  "cold_caches": flush, "clock": clock, "alignment": alignment},
    )


ALIGN_STEPS = (1, 2, 4, 8, 16)
ALIGN_TOLERANCE = 1.5


def probe_channel_multiple(*, rng, sizes=(64, 256), base: int = 64, kinds=("depthwise", "conv1x1"),
                           **opts) -> tuple[int, dict]:
    """The smallest step q such that channel counts that are multiples of q (base - q) run within
    ALIGN_TOLERANCE of the per-unit time at `base` channels, for every step >= q. Returns q and the
    worst ratio per step (the minimum over sizes, so a noisy measurement does not count)."""
    worst = {q: 0.0 for q in ALIGN_STEPS}
    for kind in kinds:
        ratios = {q: np.inf for q in ALIGN_STEPS}
        for size in sizes:
            ref = time_node(kind, base, size, rng=rng, **opts) / work_of(kind, base, size)
            for q in ALIGN_STEPS:
                c = base - q
                r = time_node(kind, c, size, rng=rng, **opts) / work_of(kind, c, size) / ref
                ratios[q] = min(ratios[q], r)
        for q in ALIGN_STEPS:
            worst[q] = max(worst[q], ratios[q])
    multiple = next((q for q in ALIGN_STEPS if all(worst[w] <= ALIGN_TOLERANCE for w in ALIGN_STEPS if w >= q)),
                    ALIGN_STEPS[-1])
    return multiple, {str(q): round(v, 2) for q, v in worst.items()}


def kernel_exponent(kind: str, points: dict, n_points: int, rng, **opts) -> float:
    """How time scales with kernel area: t(5x5) / t(3x3) = (25/9)^beta at the same channels and size,
    beta fitted as the median over `n_points` measured grid points (1 = proportional to MACs)."""
    chosen = sorted(points, key=lambda cs: points[cs])[len(points) // 3:][:n_points] if points else []
    betas = []
    for c, size in chosen:
        t5 = time_node(kind, c, size, rng=rng, kernel=5, **opts)
        betas.append(np.log(t5 / points[(c, size)]) / np.log(25 / 9))
    return round(float(np.clip(np.median(betas), 0.0, 2.0)), 3) if betas else 1.0


def _table(kind: str, points: dict[tuple[int, int], float], sizes=None) -> Table | None:
    """A table from measured points; grid cells that were not run are filled from their row."""
    if not points:
        return None
    channels = sorted({c for c, _ in points})
    sizes = sorted({s for _, s in points}) if sizes is None else [int(s) for s in sizes]
    seconds = np.zeros((len(channels), len(sizes)))
    work = np.zeros_like(seconds)
    for a, c in enumerate(channels):
        measured = [(b, s) for b, s in enumerate(sizes) if (c, s) in points]
        if not measured:
            return None
        for b, s in enumerate(sizes):
            w = work_of(kind, c, s)
            work[a, b] = w
            if (c, s) in points:
                seconds[a, b] = points[(c, s)]
                continue
            nb, ns = min(measured, key=lambda m: abs(m[0] - b))
            per_unit = points[(c, ns)] / work_of(kind, c, ns) * w
            if s > ns and len(measured) >= 2:
                # Above the cap: time is affine in size (a fixed part, e.g. loading the weights, plus a
                # part per pixel/row); extrapolate from the two largest measured sizes.
                (_, s1), (_, s2) = measured[-2:]
                t1, t2 = points[(c, s1)], points[(c, s2)]
                slope = (t2 - t1) / (s2 - s1)
                seconds[a, b] = t2 + slope * (s - s2) if slope > 0 else per_unit
            else:  # below the smallest measured size: nearest measured time per unit
                seconds[a, b] = per_unit
    return Table(kind, np.asarray(channels, np.float64), np.asarray(sizes, np.float64), seconds, work)


__all__ = ["calibrate", "time_node", "build_chain", "work_of", "detect_channel_multiple", "GRIDS", "SCHEMA"]
