"""How much slower or faster each element-wise runtime op is than the op its table was measured with.

The `unary` table is measured with Sigmoid and the `binary` one with Add; a Relu pass is cheaper
than a Sigmoid, an Erf or a fused SiLU (ONNX Runtime's QuickGelu) dearer, and a standalone
BatchNorm is a multiply-add per element. `measure_op_factors` times a chain of each op against a
chain of the table's own op at the same channel counts and sizes; the latency model multiplies a
node's table time by the factor of the op the runtime ran it as (`RuntimePlan.op_type`). Layout
reorders (ONNX Runtime's ReorderInput/ReorderOutput) are timed with the profiler between convs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

# one link of a chain: (input name, link index, channels, initializers to extend) -> (nodes, output name)
Link = Callable[[str, int, int, list], tuple[list, str]]


def _unary(op: str, **attrs) -> Link:
    def link(x, j, c, inits):
        return [helper.make_node(op, [x], [f"y{j}"], **attrs)], f"y{j}"
    return link


def _binary(op: str) -> Link:
    def link(x, j, c, inits):
        return [helper.make_node(op, [x, "b"], [f"y{j}"])], f"y{j}"
    return link


def _silu(x, j, c, inits):
    return [helper.make_node("Sigmoid", [x], [f"s{j}"]), helper.make_node("Mul", [x, f"s{j}"], [f"y{j}"])], f"y{j}"


def _batchnorm(x, j, c, inits):
    for k, v in (("g", 1.0), ("be", 0.0), ("m", 0.0), ("v", 1.0)):
        inits.append(numpy_helper.from_array(np.full(c, v, np.float32), f"{k}{j}"))
    return [helper.make_node("BatchNormalization", [x, f"g{j}", f"be{j}", f"m{j}", f"v{j}"], [f"y{j}"])], f"y{j}"


def _transpose(x, j, c, inits):
    return [helper.make_node("Transpose", [x], [f"y{j}"], perm=[0, 1, 3, 2])], f"y{j}"


# runtime op type -> (table kind it is priced with, the link that runs as that op)
PROBES: dict[str, tuple[str, Link]] = {
    "Relu": ("unary", _unary("Relu")),
    "Clip": ("unary", _unary("Relu")),  # the same per-element max/min work; Clip needs constant inputs
    "HardSigmoid": ("unary", _unary("HardSigmoid")),
    "Tanh": ("unary", _unary("Tanh")),
    "Erf": ("unary", _unary("Erf")),
    "Mul": ("binary", _binary("Mul")),
    "QuickGelu": ("binary", _silu),
    "BatchNormalization": ("unary", _batchnorm),
    "Transpose": ("unary", _transpose),
}
POINTS = ((64, 1024), (256, 64))


def probe_chain(link: Link, c: int, side: int, n: int):
    from .calibrate import _model

    nodes, inits, x = [], [], "x"
    for j in range(n):
        new, x = link(x, j, c, inits)
        nodes += new
    inputs = {"x": [1, c, side, side]}
    if any("b" in nd.input for nd in nodes):
        inputs["b"] = [1, c, side, side]
    return _model(nodes, inits, inputs, x)


def measure_op_factors(*, threads: int, repeats: int, flush: bool, clock: str, rng, points=POINTS,
                       progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Per runtime op type: its time over the time of its table's op (median over `points`, each a
    (channels, pixels) pair)."""
    from .calibrate import time_models

    base_links = {"unary": _unary("Sigmoid"), "binary": _binary("Add")}
    factors: dict[str, float] = {}
    for op, (kind, link) in PROBES.items():
        if progress:
            progress(f"op factor: {op}")
        ratios = []
        for c, size in points:
            side = int(round(np.sqrt(size)))
            t = time_models(lambda n, lk=link: probe_chain(lk, c, side, n), threads=threads, repeats=repeats,
                            flush=flush, clock=clock, rng=rng)
            base = time_models(lambda n, lk=base_links[kind]: probe_chain(lk, c, side, n), threads=threads,
                               repeats=repeats, flush=flush, clock=clock, rng=rng)
            ratios.append(t / base)
        factors[op] = round(float(np.median(ratios)), 3)
    if progress:
        progress("op factor: layout reorders")
    factors["Reorder"] = round(reorder_factor(threads=threads, repeats=repeats, flush=flush, clock=clock, rng=rng,
                                              points=points), 3)
    return factors


def reorder_factor(*, threads: int, repeats: int, flush: bool, clock: str, rng, points=POINTS) -> float:
    """A ReorderInput/ReorderOutput (NCHWc <-> NCHW copy) over a Sigmoid on the same tensor: convs
    separated by an op without an NCHWc kernel (Erf) get one of each; the profiler times them."""
    from .calibrate import _model, kernel_times, profiler_offset, time_models

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
        model = _model(nodes, inits, {"x": [1, c, side, side]}, x)
        times = kernel_times(model, threads=threads, runs=repeats, flush=flush)
        reorders = [t for name, t in times.items() if name.startswith("Reorder")]
        if not reorders:
            return 1.0  # this runtime does not reorder (no NCHWc): the factor is never used
        per = max(float(np.median(reorders)) - profiler_offset(threads), 1e-7)
        base = time_models(lambda n: probe_chain(_unary("Sigmoid"), c, side, n), threads=threads,
                           repeats=repeats, flush=flush, clock=clock, rng=rng)
        ratios.append(per / base)
    return float(np.median(ratios))
