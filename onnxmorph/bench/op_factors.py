"""How much slower or faster each runtime op is than a Sigmoid over the same tensor, and the fixed
costs the runtime pays that no table holds.

The `unary` table is measured with Sigmoid, `binary` with Add and `pool` with a 3x3 MaxPool; a
Relu pass is cheaper than a Sigmoid, an Erf, a LayerNorm or a fused Gelu dearer. Every factor is
the time of a chain of the op over the time of a chain of Sigmoids on the same tensor, both run
as written (no graph optimization: the optimizer would cancel a chain of Transposes). A node
priced with table K that the runtime runs as ops X, Y (`RuntimePlan.ops`, e.g. HardSwish as
HardSigmoid + Mul) costs table time x (f(X) + f(Y)) / f(base of K). Layout reorders (ONNX
Runtime's ReorderInput/ReorderOutput) are timed with the profiler between convs.

Overheads are seconds, not factors: a kernel that only re-labels its input (Reshape, Squeeze,
...: "view"), per span, a broadcasting element-wise op (x[1,C,H,W] * s[1,C,1,1] runs C spans of
H*W: "broadcast_span"), and once per inference the session run itself with cold caches ("run":
about 125 us on the development host, 8 % of a small MobileNet; the tables, made of chain
differences, leave it out). The subnormal costs of masked attention are in subnormal.py.

Transposes that move the last axis are priced by how the runtime copies them (`ops.transpose_class`):
one axis moved has a blocked kernel, any other permutation is copied element by element. Using the
factors is the pure part, in `cost/op_factors.py`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

from ..cost.op_factors import ROW_OPS
from .timing import (clock_fn, flush_caches, kernel_times, median_run_seconds, random_inputs, small_model,
                     time_models, timing_session)

# one link of a chain: (input name, link index, channels, side, initializers to extend) -> (nodes, output)
Link = Callable[[str, int, int, int, list], tuple[list, str]]
MS = "com.microsoft"


def _unary(op: str, domain: str = "", **attrs) -> Link:
    def link(x, j, shape, inits):
        return [helper.make_node(op, [x], [f"y{j}"], domain=domain, **attrs)], f"y{j}"
    return link


def _binary(op: str) -> Link:
    def link(x, j, shape, inits):
        return [helper.make_node(op, [x, "b"], [f"y{j}"])], f"y{j}"
    return link


def _const(inits: list, name: str, value) -> str:
    if not any(t.name == name for t in inits):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    return name


def _clip(x, j, shape, inits):
    lo, hi = _const(inits, "lo", 0.0), _const(inits, "hi", 6.0)
    return [helper.make_node("Clip", [x, lo, hi], [f"y{j}"])], f"y{j}"


def _batchnorm(x, j, shape, inits):
    stats = (("g", 1.0), ("be", 0.0), ("m", 0.0), ("v", 1.0))
    names = [_const(inits, f"{k}{j}", np.full(shape[1], v)) for k, v in stats]
    return [helper.make_node("BatchNormalization", [x, *names], [f"y{j}"])], f"y{j}"


def _layernorm(x, j, shape, inits):
    g, b = _const(inits, "ln_g", np.ones(shape[-1])), _const(inits, "ln_b", np.zeros(shape[-1]))
    return [helper.make_node("LayerNormalization", [x, g, b], [f"y{j}"], axis=-1)], f"y{j}"


def _bias_gelu(x, j, shape, inits):
    bias = _const(inits, "bias", np.zeros(shape[-1]))
    return [helper.make_node("BiasGelu", [x, bias], [f"y{j}"], domain=MS)], f"y{j}"


def _transposes(perm: list[int], inverse: list[int]) -> Link:
    def link(x, j, shape, inits):
        return [helper.make_node("Transpose", [x], [f"y{j}"], perm=perm if j % 2 == 0 else inverse)], f"y{j}"
    return link


def _maxpool(x, j, shape, inits):
    return [helper.make_node("MaxPool", [x], [f"y{j}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], f"y{j}"


# runtime op type -> the link that runs as that op
PROBES: dict[str, Link] = {
    "Relu": _unary("Relu"),
    "Clip": _clip,
    "HardSigmoid": _unary("HardSigmoid"),
    "Tanh": _unary("Tanh"),
    "Erf": _unary("Erf"),
    "Add": _binary("Add"),
    "Mul": _binary("Mul"),
    "QuickGelu": _unary("QuickGelu", MS, alpha=1.0),  # ONNX Runtime's fusion of x * Sigmoid(x)
    "Gelu": _unary("Gelu", MS),
    "BiasGelu": _bias_gelu,
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "Softmax": _unary("Softmax", axis=-1),
    # the head split of attention ([B, T, H, D] -> [B, H, T, D]): rows of D elements move
    "Transpose": _unary("Transpose", perm=[0, 2, 1, 3]),
    "MaxPool": _maxpool,
}
# Transposes that move the last axis (no contiguous rows to copy) run one of two ways in ONNX
# Runtime: moving a single axis (NCHW <-> NHWC) has a blocked kernel, about as fast as a Sigmoid;
# any other permutation is copied element by element, 10-15x slower (MaxViT's window partition,
# [B, C, h, p, w, p] -> [B, h, w, p, p, C]). Factor key -> (link, probe shape at (channels, side)).
TRANSPOSE_PROBES: dict[str, tuple[Link, Callable[[int, int], list[int]]]] = {
    "Transpose@single_axis": (_transposes([0, 2, 3, 1], [0, 3, 1, 2]), lambda c, side: [1, c, side, side]),
    "Transpose@elementwise": (_transposes([0, 2, 4, 3, 5, 1], [0, 5, 1, 3, 2, 4]),
                              lambda c, side: [1, c, 2, max(side // 2, 1), 2, max(side // 2, 1)]),
}
# the links the unary, binary and pool tables are measured with (calibrate.build_chain)
TABLE_LINKS: dict[str, Link] = {"unary": _unary("Sigmoid"), "binary": _binary("Add"), "pool": _maxpool}
ROW_LENGTHS = (16, 256)
POINTS = ((64, 1024), (256, 64))
SPAN_POINTS = ((128, 4), (256, 16))


def probe_chain(link: Link, shape: list[int], n: int):
    nodes, inits, x = [], [], "x"
    for j in range(n):
        new, x = link(x, j, shape, inits)
        nodes += new
    inputs = {"x": list(shape)}
    if any("b" in nd.input for nd in nodes):
        inputs["b"] = list(shape)
    return small_model(nodes, inits, inputs, x)


def probe_shapes(op: str, c: int, size: int) -> dict[int | None, list[int]]:
    """The tensors `op` is timed on at a (channels, pixels) point: [1, c, side, side], or for a
    row-wise op rows of each of ROW_LENGTHS (same element count, [1, R, 4, L])."""
    side = int(round(np.sqrt(size)))
    if op not in ROW_OPS:
        return {None: [1, c, side, side]}
    numel = c * side * side
    return {row: [1, max(numel // (4 * row), 1), 4, row] for row in ROW_LENGTHS}


def measure_op_factors(*, threads: int, repeats: int, flush: bool, clock: str, rng, points=POINTS,
                       progress: Callable[[str], None] | None = None, run_jobs=None) -> dict[str, float]:
    """Per runtime op type: its time over a Sigmoid's on the same tensor (median over `points`, each
    a (channels, pixels) pair), both timed as written; for ROW_OPS also the part per row. `run_jobs`
    runs a list of callables and returns their results (the calibration's quiet-state protocol:
    each op's measurement is one job, so a loaded one is measured again)."""
    opts = dict(threads=threads, repeats=repeats, flush=flush, clock=clock, rng=rng, optimize=False)

    def ratio(link: Link, shape: list[int]) -> float:
        t = time_models(lambda n: probe_chain(link, shape, n), **opts)
        return t / time_models(lambda n: probe_chain(_unary("Sigmoid"), shape, n), **opts)

    def op_job(op: str, link: Link):
        def run() -> dict[int | None, list[float]]:
            if progress:
                progress(f"op factor: {op}")
            out: dict[int | None, list[float]] = {}
            for c, size in points:
                for row, shape in probe_shapes(op, c, size).items():
                    out.setdefault(row, []).append(ratio(link, shape))
            return out
        return run

    def transpose_job(key: str, link: Link, shape_at):
        def run() -> dict[int | None, list[float]]:
            if progress:
                progress(f"op factor: {key}")
            return {None: [ratio(link, shape_at(c, int(round(np.sqrt(size))))) for c, size in points]}
        return run

    def reorder_job() -> dict[int | None, list[float]]:
        if progress:
            progress("op factor: layout reorders")
        return {None: [reorder_factor(threads=threads, repeats=repeats, flush=flush, clock=clock, rng=rng,
                                      points=points)]}

    keys = list(PROBES) + list(TRANSPOSE_PROBES) + ["Reorder"]
    jobs = [op_job(op, link) for op, link in PROBES.items()]
    jobs += [transpose_job(key, link, shape_at) for key, (link, shape_at) in TRANSPOSE_PROBES.items()]
    jobs.append(reorder_job)
    results = run_jobs(jobs) if run_jobs else [job() for job in jobs]
    factors: dict[str, float] = {}
    for key, ratios in zip(keys, results):
        med = {row: float(np.median(r)) for row, r in ratios.items()}
        if None in med:
            factors[key] = round(med[None], 3)
            continue
        short, long = ROW_LENGTHS  # f(L) = a + b / L through both lengths
        b = max((med[short] - med[long]) / (1 / short - 1 / long), 0.0)
        factors[key] = round(max(med[long] - b / long, 0.05), 3)
        if b > 0:
            factors[f"{key}@row"] = round(b, 3)
    return factors


def _reshape_chain(c: int, side: int, n: int):
    shapes = [numpy_helper.from_array(np.array(s, dtype=np.int64), f"s{k}")
              for k, s in enumerate(([1, c, side * side], [1, c, side, side]))]
    nodes, x = [], "x"
    for j in range(n):
        nodes.append(helper.make_node("Reshape", [x, f"s{j % 2}"], [f"y{j}"]))
        x = f"y{j}"
    return small_model(nodes, shapes, {"x": [1, c, side, side]}, x)


def _broadcast_chain(c: int, side: int, n: int, broadcast: bool):
    nodes, x = [], "x"
    for j in range(n):
        nodes.append(helper.make_node("Mul", [x, "b"], [f"y{j}"]))
        x = f"y{j}"
    return small_model(nodes, [], {"x": [1, c, side, side], "b": [1, c, 1, 1] if broadcast else [1, c, side, side]}, x)


def measure_overheads(*, threads: int, repeats: int, flush: bool, clock: str, rng,
                      progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Seconds of a kernel that only re-labels its input ("view": a Reshape), of one span of a
    broadcasting Mul beyond a Mul of two full tensors ("broadcast_span", median over SPAN_POINTS),
    and of a session run of a one-node model ("run": what every inference pays besides its nodes)."""
    opts = dict(threads=threads, repeats=repeats, flush=flush, clock=clock, rng=rng, optimize=False)
    if progress:
        progress("overhead: a session run")
    tiny = probe_chain(_unary("Relu"), [1, 8, 2, 2], 1)
    sess, feeds = timing_session(tiny, threads), random_inputs(tiny, rng)
    for _ in range(5):
        sess.run(None, feeds)
    run = median_run_seconds(sess, feeds, runs=max(4 * repeats, 20), now=clock_fn(clock),
                             cold=flush_caches if flush else None)
    if progress:
        progress("overhead: view kernels")
    view = time_models(lambda n: _reshape_chain(16, 2, n), **opts)  # nothing to move: the kernel's own cost
    if progress:
        progress("overhead: broadcast spans")
    spans = []
    for c, size in SPAN_POINTS:
        side = int(round(np.sqrt(size)))
        bc = time_models(lambda n: _broadcast_chain(c, side, n, True), **opts)
        full = time_models(lambda n: _broadcast_chain(c, side, n, False), **opts)
        spans.append(max(bc - full, 0.0) / c)
    return {"view": float(f"{view:.4g}"), "broadcast_span": float(f"{float(np.median(spans)):.4g}"),
            "run": float(f"{run:.4g}")}


def reorder_factor(*, threads: int, repeats: int, flush: bool, clock: str, rng, points=POINTS) -> float:
    """A ReorderInput/ReorderOutput (NCHWc <-> NCHW copy) over a Sigmoid on the same tensor: convs
    separated by an op without an NCHWc kernel (Erf) get one of each; the profiler times them."""
    ratios = []
    for c, size in points:
        side = int(round(np.sqrt(size)))
        nodes, inits, x = [], [], "x"
        for j in range(8):
            w = (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{j}"))
            nodes += [helper.make_node("Conv", [x, f"w{j}"], [f"c{j}"], name=f"c{j}"),
                      helper.make_node("Erf", [f"c{j}"], [f"y{j}"], name=f"y{j}")]
            x = f"y{j}"
        model = small_model(nodes, inits, {"x": [1, c, side, side]}, x)
        times = kernel_times(model, threads=threads, runs=repeats, flush=flush, net=True)
        reorders = [t for name, t in times.items() if name.startswith("Reorder")]
        if not reorders:
            return 1.0  # this runtime does not reorder (no NCHWc): the factor is never used
        per = float(np.median(reorders))
        base = time_models(lambda n: probe_chain(_unary("Sigmoid"), [1, c, side, side], n), threads=threads,
                           repeats=repeats, flush=flush, clock=clock, rng=rng)
        ratios.append(per / base)
    return float(np.median(ratios))
