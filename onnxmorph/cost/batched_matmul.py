"""The time of a product of two activations (attention's Q·Kᵀ and attn·V, a MatMul or an Einsum):
`batch` small matrix products [m, k] x [k, n], which run far below the weight GEMMs' throughput.

Per matrix of the batch, ONNX Runtime's MatMul kernel (MLAS SGEMM) pays a call, packs the right
operand (k·n), reads the left one (m·k), computes (m·k·n) and writes the result (m·n); the kernel
works on blocks of columns as wide as a vector register, so n counts padded up to that width
(`columns`: the profile's channel multiple, 16 floats with AVX-512). One product costs

    t(batch, m, k, n) = batch · (call + pack·k·n' + read·m·k + write·m·n' + mac·m·k·n')

with n' = n padded, the five coefficients fitted (non-negative least squares on relative error) to
products timed over the shapes attention uses: tokens 16-256 and head dims 16-128, both Q·Kᵀ
(m = n = tokens, k = head dim) and attn·V (m = k = tokens, n = head dim). On the development host
the fit is within 6 % (median) of the timed products; 49 tokens (7x7 windows) run 20 % slower per
MAC than the formula without the padding.

An Einsum written as the same product ('bik,bjk->bij', MaxViT) runs 2-3x slower than the MatMul:
ONNX Runtime transposes its operands into a batched MatMul layout first. It gets its own
coefficients, fitted the same way (keys prefixed `einsum_`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

COEFFICIENTS = ("call", "pack", "read", "write", "mac")
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
    from ..bench.calibrate import _model

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
    return _model(nodes, inits, {"x": [batch, m, k], "w": right}, "y")


def product_seconds(batch: int, m: int, k: int, n: int, *, threads: int, runs: int, flush: bool,
                    op: str = "MatMul") -> float:
    """Median kernel seconds of one product, from ONNX Runtime's profiler, less its own cost."""
    from ..bench.calibrate import kernel_times

    times = kernel_times(product_model(batch, m, k, n, op=op), threads=threads, runs=runs, flush=flush, net=True)
    kernels = [t for name, t in times.items() if name.startswith("product")]
    if not kernels:
        raise RuntimeError("the profiler timed none of the products")
    return float(np.median(kernels))


def features(batch, m, k, n, columns: float = 1.0) -> np.ndarray:
    """The terms of the cost formula (one row per product, columns in COEFFICIENTS order)."""
    batch, m, k, n = (np.asarray(v, dtype=np.float64) for v in (batch, m, k, n))
    n = np.ceil(n / columns - 1e-9) * columns
    return np.stack([batch, batch * k * n, batch * m * k, batch * m * n, batch * m * k * n], axis=-1)


def fit(points: list[tuple[int, int, int, int]], seconds: list[float], columns: int = 1) -> dict[str, float]:
    """Non-negative coefficients minimizing the relative error over the timed products (an active
    set: a coefficient that comes out negative is dropped and the rest fitted again); `columns`
    is kept with them."""
    x = features(*np.asarray(points, dtype=np.float64).T, columns=columns)
    y = np.asarray(seconds, dtype=np.float64)
    x, y = x / y[:, None], np.ones_like(y)  # relative error: each row scaled by its own time
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            break
        active.pop(int(np.argmin(sol)))
    return {"columns": float(columns), **{name: float(f"{c:.4g}") for name, c in zip(COEFFICIENTS, coef)}}


def seconds(coef: dict[str, float], batch, m, k, n, op: str = "MatMul") -> np.ndarray:
    """Predicted seconds of products with the fitted coefficients (an Einsum's own when the profile
    has them, else the MatMul's)."""
    prefix = "einsum_" if op == "Einsum" and any(key.startswith("einsum_") for key in coef) else ""
    c = np.array([coef.get(prefix + name, 0.0) for name in COEFFICIENTS], dtype=np.float64)
    return features(batch, m, k, n, columns=max(coef.get("columns", 1.0), 1.0)) @ c


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
