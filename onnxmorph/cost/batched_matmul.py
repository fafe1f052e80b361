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

import numpy as np

COEFFICIENTS = ("call", "pack", "read", "write", "mac")


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
