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
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..runtime import make_session, onnxruntime
from . import batched_matmul, subnormal
from .op_factors import TABLE_LINKS, measure_op_factors, measure_overheads, probe_chain
from .profile import SCHEMA, TABLE_KINDS, HardwareProfile, Table

CHAIN = 3
MAX_CHAIN = 48
OPSET = 17
GROUPED_CHANNELS = 256  # grouped convs are timed at this many channels, split into groups of each width
MS_DOMAIN = "com.microsoft"  # ONNX Runtime's contrib ops (Gelu, QuickGelu, ...) for op-factor probes

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
    return _model(nodes, inits, {"x": [1, c, side, side]}, x)


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
    return _model(nodes, inits, {"x": [1, widths[0], side, side]}, x)


def matmul_path(widths: list[int], rows: int, rng) -> onnx.ModelProto:
    """MatMuls of [rows, widths[j]] by a [widths[j], widths[j + 1]] weight (a linear layer without its
    bias), named after their outputs `y{j}`."""
    nodes, inits, x = [], [], "x"
    for j, (ci, co) in enumerate(zip(widths[:-1], widths[1:])):
        inits.append(numpy_helper.from_array((rng.standard_normal((ci, co)) / np.sqrt(ci)).astype(np.float32), f"w{j}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{j}"], [f"y{j}"], name=f"y{j}"))
        x = f"y{j}"
    return _model(nodes, inits, {"x": [rows, widths[0]]}, x)


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
        feeds = _feeds(model, rng)
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


def reference_model() -> onnx.ModelProto:
    """A fixed workload (eight 64->64 3x3 convs on 32x32, ~300 M MACs) timed with a calibration and
    next to later measurements: the ratio of the two says how much faster or slower the machine runs
    now than when it was calibrated (shared and throttled machines drift by tens of percent)."""
    return conv_path([64] * 9, 32, 3, np.random.default_rng(12345))


def reference_seconds(*, threads: int = 1, runs: int = 15, flush: bool = True, clock: str | None = None) -> float:
    """Median seconds of one run of `reference_model()` under the calibration's protocol."""
    model, rng = reference_model(), np.random.default_rng(0)
    sess, feeds = _session(model, threads), _feeds(model, rng)
    sess.run(None, feeds)
    return median_run_seconds(sess, feeds, runs=max(runs, 3), cold=flush_caches if flush else None,
                              now=clock_fn(clock or default_clock(threads)))


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


LEAD_IN = 4
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
            sess, feeds = _session(model, threads), _feeds(model, rng)
            for _ in range(20):
                sess.run(None, feeds)
            plain.append(median_run_seconds(sess, feeds, runs=200, now=now))
        per_kernel = (plain[1] - plain[0]) / (n - 1)
        profiled = kernel_times(chains[1], threads=threads, runs=50, flush=False)
        _OFFSET[threads] = max(float(np.median(list(profiled.values()))) - per_kernel, 0.0)
    return _OFFSET[threads]


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="onnxmorph")
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


def _session(model: onnx.ModelProto, threads: int, optimize: bool = True):
    return make_session(model, threads, optimize)


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
    """Seconds one node of `kind` takes (see `time_models`)."""
    rng = rng or np.random.default_rng(0)
    n = chain_length(kind, channels, size, kernel)
    return time_models(lambda m: build_chain(kind, channels, size, m, rng, kernel), n=n, threads=threads,
                       repeats=repeats, rng=rng, budget_s=budget_s, flush=flush, clock=clock)


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
    s1, sn = _session(one, threads, optimize), _session(many, threads, optimize)
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
            main = _io_table(kind, io_points[kind], io_channels[kind], io_sizes[kind])
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
    products = batched_matmul.measure(
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


def _io_table(kind: str, points: dict[tuple[int, int, int], float], channels, sizes) -> Table | None:
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
