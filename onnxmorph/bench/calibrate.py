"""Measure this machine with ONNX Runtime micro-benchmarks and build a measured hardware profile.

Dense convolutions (3x3 and 1x1) and MatMuls with a weight (linear layers) are measured on an (in
channels, out channels, size) grid: for each size (rows for a MatMul) one chain walks through every
(in, out) pair of the channel grid (an Euler circuit), and ONNX Runtime's profiler times each
kernel, so every node reads the output of a node of another shape, as inside a network (a 16->96
conv runs at another speed per MAC than a 96->16 or a 39->39 one; a 768->3072 MLP layer at 60
GMAC/s where a square 1536 one runs at 45). The profiler's own cost per kernel is taken off.

The other kinds (depthwise Conv, grouped Conv, an element-wise unary and binary op, MaxPool), and dense
convs at channel counts that leave the fast kernels (`unaligned`), are timed per point of a grid
of channel counts x sizes as a chain of 1 and of n identical nodes (warm-up, then the median of
interleaved repeats); one node is the difference divided by n - 1, which cancels the fixed cost
of a session run. Element-wise op types other than the tables' own (Relu, Erf, ONNX Runtime's
fused SiLU, BatchNorm, layout reorders, ...) get a factor against them (`op_factors`).

Caches are flushed before every run: in a real model each layer's weights were evicted by the
layers before it (a 160->960 1x1 conv on 2x2 takes 42 us with warm weights, 85 us cold, 80 us
inside MobileNetV2), so warm micro-benchmarks would predict models about 2x too fast. With one
thread the clock is the calling thread's CPU time (ONNX Runtime runs single-threaded sessions on
the caller): what the run takes on an idle core, without time the thread spent preempted on a busy
machine. Big points above a work cap are not run: they are extrapolated from the largest measured
sizes of the same channel counts (throughput has saturated there).
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..cost.profile import SCHEMA, TABLE_KINDS, HardwareProfile, Table
from ..runtime import onnxruntime
from . import products as batched_products
from . import subnormal
from .op_factors import TABLE_LINKS, measure_op_factors, measure_overheads, probe_chain
from .quiet import MachineSpeed
from .timing import conv_path, cpu_name, default_clock, kernel_times, small_model, time_models

CHAIN = 3
MAX_CHAIN = 48
GROUPED_CHANNELS = 256  # grouped convs are timed at this many channels, split into groups of each width

GRIDS = {
    # channels, sizes (pixels per channel, or rows for gemm), MAC/byte cap per node
    "default": {
        "channels": [8, 16, 32, 64, 128, 256, 512],
        "sizes": [1, 4, 16, 64, 256, 1024, 3136],  # 1: squeeze-excite convs on pooled maps
        "gemm_channels": [16, 64, 256, 1024, 2048],
        "gemm_rows": [1, 16, 64, 256, 1024],  # 1024: token rows of vision transformers (MaxViT 3136)
        "grouped_widths": [4, 8, 16, 32, 64],  # channels per group (ResNeXt, RegNet)
        "max_macs": 1.2e8,
        "max_gemm_macs": 1.1e9,  # a transformer's MatMuls: 256 rows x 2048 x 2048
        "max_bytes": 6.4e7,
        "repeats": 9,
        "probe_sizes": (64, 256),
        "exponent_points": 5,
        "factor_points": ((64, 1024), (256, 64)),  # (channels, size) where op factors are measured
    },
    "tiny": {
        "channels": [8, 16],
        "sizes": [16, 64],
        "gemm_channels": [16, 64],
        "gemm_rows": [1, 16],
        "grouped_widths": [8],
        "max_macs": 1e7,
        "max_gemm_macs": 1e7,
        "max_bytes": 1e7,
        "repeats": 3,
        "probe_sizes": (64,),
        "exponent_points": 1,
        "factor_points": ((16, 64),),
        "product_shapes": [(4, 16, 16, 16), (4, 16, 32, 16), (2, 32, 16, 32), (2, 32, 32, 16)],
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
    return small_model(nodes, inits, {"x": [1, c, side, side]}, x)


def matmul_path(widths: list[int], rows: int, rng) -> onnx.ModelProto:
    """MatMuls of [rows, widths[j]] by a [widths[j], widths[j + 1]] weight (a linear layer without its
    bias), named after their outputs `y{j}`."""
    nodes, inits, x = [], [], "x"
    for j, (ci, co) in enumerate(zip(widths[:-1], widths[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((ci, co)) / np.sqrt(ci)).astype(np.float32), f"w{j}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{j}"], [f"y{j}"], name=f"y{j}"))
        x = f"y{j}"
    return small_model(nodes, inits, {"x": [rows, widths[0]]}, x)


def euler_circuit(vertices: list[int], edges: set[tuple[int, int]]) -> list[int]:
    """A closed walk through `vertices` that uses every directed edge once (Hierholzer). `edges` must
    be symmetric (with (a, b) also (b, a)) and connected, so that such a walk exists."""
    out = {v: sorted(b for a, b in edges if a == v) for v in vertices}
    start = min(a for a, _ in edges)
    stack, walk = [start], []
    while stack:
        v = stack[-1]
        if out[v]:
            stack.append(out[v].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


# kinds measured on an (in, out, size) grid -> kernel side (gemm: a MatMul of [rows, in] x [in, out])
IO_KINDS = {"conv": 3, "conv1x1": 1, "gemm": 1}


def io_work(kind: str, ci: int, co: int, size: int) -> float:
    return float(ci * co * IO_KINDS[kind] ** 2 * size)


def measure_io_grid(kind: str, channels: list[int], size: int, cap: float, *, threads: int, runs: int,
                    flush: bool, rng) -> dict[tuple[int, int, int], float]:
    """Seconds of a `kind` conv for every (in, out) pair of `channels` at `size` pixels whose MACs
    are within `cap`: one chain of convs that walks through all pairs (an Euler circuit of the
    complete graph on the channel counts), timed per kernel with ONNX Runtime's profiler. Each conv
    reads the output of a conv of another shape, as inside a network."""
    edges = {(a, b) for a in channels for b in channels if io_work(kind, a, b, size) <= cap}
    if not edges:
        return {}
    walk = euler_circuit(sorted({a for a, _ in edges}), edges)
    side = int(round(np.sqrt(size)))
    # the first kernels after a cache flush also pay for cold code and page tables: unmeasured lead-in
    walk = [walk[0]] * LEAD_IN + walk
    model = matmul_path(walk, size, rng) if kind == "gemm" else conv_path(walk, side, IO_KINDS[kind], rng)
    times = kernel_times(model, threads=threads, runs=runs, flush=flush, net=True)
    return {(a, b, size): times[f"y{j}"]
            for j, (a, b) in enumerate(zip(walk[:-1], walk[1:])) if j >= LEAD_IN and f"y{j}" in times}


LEAD_IN = 4


def _gemm_chain(c: int, rows: int, n: int, rng) -> onnx.ModelProto:
    nodes, inits, x = [], [], "x"
    for layer in range(n):
        w = (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{layer}"], [f"y{layer}"]))
        x = f"y{layer}"
    return small_model(nodes, inits, {"x": [rows, c]}, x)


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
    if kind == "grouped":  # `channels` per group
        return _conv_chain(GROUPED_CHANNELS, side, kernel, GROUPED_CHANNELS // channels, n, rng)
    return probe_chain(TABLE_LINKS[kind], [1, channels, side, side], n)  # the op each table is measured with


def work_of(kind: str, channels: int, size: int, kernel: int = 3) -> float:
    """MACs (conv-like, gemm) or bytes read + written (the rest) of ONE node of the benchmark."""
    if kind == "conv":
        return float(channels * channels * kernel * kernel * size)
    if kind == "conv1x1":
        return float(channels * channels * size)
    if kind == "depthwise":
        return float(channels * kernel * kernel * size)
    if kind == "grouped":
        return float(GROUPED_CHANNELS * channels * kernel * kernel * size)
    if kind == "gemm":
        return float(channels * channels * size)
    if kind == "binary":
        return 4.0 * 3 * channels * size
    return 4.0 * 2 * channels * size  # unary, pool


def chain_length(kind: str, channels: int, size: int, kernel: int = 3) -> int:
    """Nodes in the long chain: enough that it runs ~150 us (so noise averages out over small
    nodes), at least CHAIN, at most MAX_CHAIN."""
    work = work_of(kind, channels, size, kernel)
    guess = 0.5e-6 + (work / 1e10 if TABLE_KINDS[kind] == "macs" else work / 5e9)
    return int(np.clip(np.ceil(150e-6 / guess), CHAIN, MAX_CHAIN))


def time_node(kind: str, channels: int, size: int, threads: int = 1, repeats: int = 9, rng=None,
              budget_s: float = 1.0, flush: bool = True, clock: str | None = None, kernel: int = 3) -> float:
    """Seconds one node of `kind` takes (see `time_models`)."""
    rng = rng or np.random.default_rng(0)
    n = chain_length(kind, channels, size, kernel)
    return time_models(lambda m: build_chain(kind, channels, size, m, rng, kernel), n=n, threads=threads,
                       repeats=repeats, rng=rng, budget_s=budget_s, flush=flush, clock=clock)


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


def calibrate(name: str, *, threads: int = 1, grid: str = "default", kinds=None,
              progress: Callable[[int, int, str], None] | None = None, seed: int = 0,
              flush: bool = True, clock: str | None = None, quiet_budget_s: float = 600.0) -> HardwareProfile:
    """Run the micro-benchmarks on this machine and return a measured profile. `quiet_budget_s`:
    how long to wait for the quiet state to measure again what was measured on a loaded machine."""
    ort = onnxruntime()
    spec = GRIDS[grid]
    clock = clock or default_clock(threads)
    kinds = list(kinds or TABLE_KINDS)
    simd, why = detect_channel_multiple()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    opts = dict(threads=threads, repeats=spec["repeats"], flush=flush, clock=clock)
    if progress:
        progress(0, 1, "reference workload")
    speed = MachineSpeed(threads=threads, flush=flush, clock=clock)
    speed.sample()
    if progress:
        progress(0, 1, "probing channel alignment")
    fast, alignment = probe_channel_multiple(rng=rng, sizes=spec["probe_sizes"],
                                             run_jobs=lambda jobs: speed.run(jobs, budget_s=quiet_budget_s), **opts)
    multiple = max(simd, fast)
    plan: list[Point] = []
    for kind in kinds:
        if kind == "grouped":
            plan += [Point(kind, w, s, True) for w in spec["grouped_widths"] for s in spec["sizes"]]
            continue
        split = fast > 1 and kind in ("conv", "conv1x1", "depthwise", "pool")
        aligned_runs = () if kind in IO_KINDS else (True,)  # aligned dense convs and MatMuls: the io grid
        for aligned in dict.fromkeys(aligned_runs + ((False,) if split else ())):
            for c in spec["channels"]:
                cc = c if aligned else _unaligned(c, fast)
                plan += [Point(kind, cc, s, aligned) for s in spec["sizes"]]
    cap = {k: spec["max_macs"] if TABLE_KINDS[k] == "macs" else spec["max_bytes"] for k in TABLE_KINDS}
    cap["gemm"] = spec["max_gemm_macs"]
    plan = [p for p in plan if work_of(p.kind, p.channels, p.size) <= cap[p.kind]]
    # (in, out, size) grids: dense convs over the channel grid and sizes, MatMuls over their own
    io_channels = {k: spec["gemm_channels"] if k == "gemm" else spec["channels"] for k in IO_KINDS}
    io_sizes = {k: spec["gemm_rows"] if k == "gemm" else spec["sizes"] for k in IO_KINDS}
    grids = [(kind, size) for kind in kinds if kind in IO_KINDS for size in io_sizes[kind]]
    jobs = [lambda p=p: time_node(p.kind, p.channels, p.size, rng=rng, **opts) for p in plan]
    jobs += [lambda k=k, size=size: measure_io_grid(k, io_channels[k], size, cap[k], threads=threads,
                                                    runs=spec["repeats"], flush=flush, rng=rng) for k, size in grids]
    labels = [f"{p.kind} c={p.channels} size={p.size}{'' if p.aligned else ' (unaligned)'}" for p in plan]
    labels += [f"{k}: all in x out channel pairs at size {size}" for k, size in grids]
    total = len(jobs)
    done = speed.run(jobs, budget_s=quiet_budget_s,
                     progress=(lambda j: progress(j, total, labels[j])) if progress else None)
    results: dict[tuple[str, bool], dict[tuple[int, int], float]] = {}
    for p, seconds in zip(plan, done):
        results.setdefault((p.kind, p.aligned), {})[(p.channels, p.size)] = seconds
    io_points: dict[str, dict] = {}
    for (kind, size), points in zip(grids, done[len(plan):]):
        io_points.setdefault(kind, {}).update(points)
    for kind in io_points:  # the square points also serve the kernel-size exponent
        results[(kind, True)] = {(i, s): t for (i, o, s), t in io_points[kind].items() if i == o}
    if progress:
        progress(total, total, "kernel-size exponents")
    exponents = {k: kernel_exponent(k, results.get((k, True), {}), spec["exponent_points"], rng, **opts)
                 for k in ("conv", "depthwise") if k in kinds}
    if "conv" in exponents and "grouped" in kinds:
        exponents["grouped"] = exponents["conv"]  # the same kernels per group
    tables = {}
    for kind in kinds:
        if kind in io_points:
            main = io_table(kind, io_points[kind], io_channels[kind], io_sizes[kind])
        else:
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
    factors = measure_op_factors(threads=threads, repeats=spec["repeats"], flush=flush, clock=clock, rng=rng,
                                 points=spec["factor_points"],
                                 progress=(lambda msg: progress(total, total, msg)) if progress else None,
                                 run_jobs=lambda jobs: speed.run(jobs, budget_s=quiet_budget_s, rescale=False))
    overheads = speed.run([lambda: measure_overheads(threads=threads, repeats=spec["repeats"], flush=flush,
                                                     clock=clock, rng=rng)], budget_s=20.0)[0]
    plain, masked = speed.run([lambda m=m: subnormal.probe_seconds(m, threads=threads, runs=spec["repeats"],
                                                                   flush=flush)
                               for m in (0.0, subnormal.PROBE_MASKED)], budget_s=min(quiet_budget_s, 30.0))
    overheads.update(subnormal.overheads(plain, masked))
    overheads = {k: float(f"{v:.4g}") for k, v in overheads.items()}
    products = batched_products.measure(
        threads=threads, runs=spec["repeats"], flush=flush, columns=simd, points=spec.get("product_shapes"),
        progress=(lambda msg: progress(total, total, msg)) if progress else None,
        run_jobs=lambda jobs: speed.run(jobs, budget_s=min(quiet_budget_s, 30.0)))
    reference = [r for _, r in speed.samples]
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
                f"measured again or rescaled where a reference workload timed every few seconds says the "
                f"machine was loaded, {'cold' if flush else 'warm'} caches, "
                f"{'thread CPU' if clock == 'cpu' else 'wall-clock'} time); "
                f"roofline numbers are the best throughput measured; channel_multiple {multiple}: {why}; "
                f"fast_multiple {fast}: the smallest step of channel counts that stays on the fast kernels "
                f"(per-unit time of 64-q channels / 64 channels by step q: {alignment})"),
        tables=tables,
        op_factors=factors,
        overheads=overheads,
        batched_matmul=products,
        measured={"cpu": cpu_name(), "machine": platform.machine(), "cores": os.cpu_count(),
                  "onnxruntime": ort.__version__, "threads": threads, "grid": grid,
                  "date": datetime.date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
                  "cold_caches": flush, "clock": clock, "alignment": alignment,
                  # reference_model() timed through the calibration: the quiet machine's time, the
                  # range seen, and the points measured again because the machine was loaded
                  "reference_ms": round(1e3 * speed.reference, 4),
                  "reference_ms_range": [round(1e3 * min(reference), 4), round(1e3 * max(reference), 4)],
                  "reference_samples": len(reference), "points_measured_again": speed.repeated,
                  "points_rescaled_from_loaded": speed.loaded_left,
                  "load_elasticity_of_points": None if speed.elasticity is None else round(speed.elasticity, 3)},
    )


ALIGN_STEPS = (1, 2, 4, 8, 16)
ALIGN_TOLERANCE = 1.5


def probe_channel_multiple(*, rng, sizes=(64, 256), base: int = 64, kinds=("depthwise", "conv1x1"),
                           run_jobs=None, **opts) -> tuple[int, dict]:
    """The smallest step q such that channel counts that are multiples of q (base - q) run within
    ALIGN_TOLERANCE of the per-unit time at `base` channels, for every step >= q. Returns q and the
    worst ratio per step (the minimum over sizes, so a noisy measurement does not count). `run_jobs`:
    the calibration's quiet-state protocol (a step of 16 timed while the machine turned loaded read
    1.55 and made every count that is not a multiple of 16 use the unaligned tables)."""
    points = [(kind, size, c) for kind in kinds for size in sizes for c in (base, *(base - q for q in ALIGN_STEPS))]
    jobs = [lambda p=p: time_node(p[0], p[2], p[1], rng=rng, **opts) for p in points]
    seconds = dict(zip(points, run_jobs(jobs) if run_jobs else [job() for job in jobs]))
    worst = {q: 0.0 for q in ALIGN_STEPS}
    for kind in kinds:
        ratios = {q: np.inf for q in ALIGN_STEPS}
        for size in sizes:
            ref = seconds[(kind, size, base)] / work_of(kind, base, size)
            for q in ALIGN_STEPS:
                c = base - q
                ratios[q] = min(ratios[q], seconds[(kind, size, c)] / work_of(kind, c, size) / ref)
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


def _fill_row(measured: dict[int, float], sizes, work) -> list[float] | None:
    """Seconds at every size of one grid row from its measured sizes (`work(size)`: the node's work).
    Above the largest measured size (the work cap) time is affine in size (a fixed part, e.g.
    loading the weights, plus a part per pixel/row), extrapolated from the two largest; below the
    smallest, the nearest measured time per unit of work."""
    if not measured:
        return None
    known = sorted(measured)
    row = []
    for s in sizes:
        if s in measured:
            row.append(measured[s])
            continue
        ns = min(known, key=lambda m: abs(np.log(m) - np.log(s)))
        per_unit = measured[ns] / work(ns) * work(s)
        if s > known[-1] and len(known) >= 2:
            s1, s2 = known[-2:]
            slope = (measured[s2] - measured[s1]) / (s2 - s1)
            row.append(measured[s2] + slope * (s - s2) if slope > 0 else per_unit)
        else:
            row.append(per_unit)
    return row


def _table(kind: str, points: dict[tuple[int, int], float], sizes=None) -> Table | None:
    """A table from measured points; grid cells that were not run are filled from their row."""
    if not points:
        return None
    channels = sorted({c for c, _ in points})
    sizes = sorted({s for _, s in points}) if sizes is None else [int(s) for s in sizes]
    seconds, work = [], []
    for c in channels:
        row = _fill_row({s: t for (cc, s), t in points.items() if cc == c}, sizes, lambda s: work_of(kind, c, s))
        if row is None:
            return None
        seconds.append(row)
        work.append([work_of(kind, c, s) for s in sizes])
    return Table(kind, np.asarray(channels, np.float64), np.asarray(sizes, np.float64), np.asarray(seconds),
                 np.asarray(work))


def io_table(kind: str, points: dict[tuple[int, int, int], float], channels, sizes) -> Table | None:
    """A table over (in channels, out channels, size) from `measure_io_grid` points."""
    if not points:
        return None
    channels, sizes = [int(c) for c in channels], [int(s) for s in sizes]
    seconds = np.zeros((len(channels), len(channels), len(sizes)))
    work = np.zeros_like(seconds)
    for a, ci in enumerate(channels):
        for b, co in enumerate(channels):
            row = _fill_row({s: t for (i, o, s), t in points.items() if (i, o) == (ci, co)}, sizes,
                            lambda s: io_work(kind, ci, co, s))
            if row is None:
                return None
            seconds[a, b] = row
            work[a, b] = [io_work(kind, ci, co, s) for s in sizes]
    c = np.asarray(channels, np.float64)
    return Table(kind, c, np.asarray(sizes, np.float64), seconds, work, out_channels=c.copy())


__all__ = ["calibrate", "time_node", "build_chain", "work_of", "detect_channel_multiple", "GRIDS", "SCHEMA"]
