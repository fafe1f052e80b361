"""Timing products of two activations (attention's Q·Kᵀ and attn·V) and fitting the formula of
`cost/batched_matmul.py` to them."""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

from ..cost.batched_matmul import COEFFICIENTS, fit
from .timing import kernel_times, small_model


TOKENS = (16, 49, 64, 196, 256)


HEAD_DIMS = (16, 32, 64, 128)


BATCH_MACS = 2e6  # MACs per timed product: enough to time, small enough for a few seconds in all


COPIES = 6  # products per timed model (the median kernel time is kept)


def shapes(tokens=TOKENS, head_dims=HEAD_DIMS) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of every timed product: Q·Kᵀ and attn·V for each tokens x head dim."""
    out = []
    for t in tokens:
        for d in head_dims:
            batch = max(1, int(BATCH_MACS // (t * t * d)))
            out += [(batch, t, d, t), (batch, t, t, d)]
    return out


OPS = ("MatMul", "Einsum")


def product_model(batch: int, m: int, k: int, n: int, copies: int = COPIES, op: str = "MatMul"):
    """`copies` independent products of [batch, m, k] x [batch, k, n] (an Einsum may take the right
    operand as [batch, n, k]). Each operand is made by an Add right before its product (a distinct
    constant, so the optimizer cannot merge them): it is in cache, as attention's operands are,
    coming from the projections and reshapes just before."""

    right, attrs = [batch, k, n], {}
    if op == "Einsum" and m == n:  # Q·Kᵀ as attention writes it, K not transposed
        right, attrs = [batch, n, k], {"equation": "bik,bjk->bij"}
    elif op == "Einsum":  # attn·V
        attrs = {"equation": "bik,bkj->bij"}
    nodes, inits = [], []
    for j in range(copies):
        inits += [numpy_helper.from_array(np.float32(0.01 * (j + 1)), f"ca{j}"),
                  numpy_helper.from_array(np.float32(0.02 * (j + 1)), f"cb{j}")]
        nodes += [helper.make_node("Add", ["x", f"ca{j}"], [f"a{j}"]),
                  helper.make_node("Add", ["w", f"cb{j}"], [f"b{j}"]),
                  helper.make_node(op, [f"a{j}", f"b{j}"], [f"p{j}"], name=f"product{j}", **attrs)]
    nodes.append(helper.make_node("Sum", [f"p{j}" for j in range(copies)], ["y"]))
    return small_model(nodes, inits, {"x": [batch, m, k], "w": right}, "y")


def product_seconds(batch: int, m: int, k: int, n: int, *, threads: int, runs: int, flush: bool,
                    op: str = "MatMul") -> float:
    """Median kernel seconds of one product, from ONNX Runtime's profiler, less its own cost."""

    times = kernel_times(product_model(batch, m, k, n, op=op), threads=threads, runs=runs, flush=flush, net=True)
    kernels = [t for name, t in times.items() if name.startswith("product")]
    if not kernels:
        raise RuntimeError("the profiler timed none of the products")
    return float(np.median(kernels))


def measure(*, threads: int, runs: int, flush: bool, columns: int = 1, points=None,
            progress: Callable[[str], None] | None = None, run_jobs=None) -> dict[str, float]:
    """Time the products of `points` (default `shapes()`) as MatMuls and as Einsums and fit the
    coefficients of each. `run_jobs` runs a list of callables and returns their results (the
    calibration's quiet-state protocol)."""
    points = list(points or shapes())

    def job(p, op):
        def run():
            if progress:
                progress(f"batched products ({op}): {p[0]} x [{p[1]}, {p[2]}] x [{p[2]}, {p[3]}]")
            return product_seconds(*p, threads=threads, runs=runs, flush=flush, op=op)
        return run

    jobs = [job(p, op) for op in OPS for p in points]
    times = run_jobs(jobs) if run_jobs else [j() for j in jobs]
    out = fit(points, times[: len(points)], columns)
    einsum = fit(points, times[len(points):], columns)
    out.update({f"einsum_{name}": einsum[name] for name in COEFFICIENTS})
    return out
