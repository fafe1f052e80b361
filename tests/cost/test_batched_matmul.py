"""Products of two activations (attention's Q·Kᵀ and attn·V) priced with the batched-product formula."""

import numpy as np
import pytest

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.bench import products
from onnxmorph.cost import batched_matmul
from onnxmorph.cost.profile import profile_from_dict
from onnxmorph.errors import ProfileError
from onnxmorph.graph import load_model

from zoo import einsum_attention, vit_encoder

COEF = {"call": 2e-6, "pack": 3e-9, "write": 1e-9, "mac": 2e-11}
TABLE = {"channels": [8, 64], "sizes": [1, 256], "seconds": [[1e-6, 1e-5], [1e-5, 1e-4]],
         "work": [[100, 1000], [1000, 10000]]}


def profile(products=None):
    return profile_from_dict({"name": "m", "kind": "measured", "peak_gflops": 100, "memory_gbps": 10,
                              "channel_multiple": 1, "batched_matmul": products or {},
                              "tables": {k: TABLE for k in ("conv", "conv1x1", "unary", "binary", "pool", "gemm")}})


def test_fit_recovers_the_coefficients_of_timings_that_follow_the_formula():
    points = products.shapes(tokens=(16, 49, 196), head_dims=(16, 64))
    seconds = batched_matmul.seconds(COEF, *np.asarray(points, dtype=float).T)
    fitted = batched_matmul.fit(points, list(seconds))
    for name, value in COEF.items():
        assert fitted[name] == pytest.approx(value, rel=1e-3)


def test_fit_keeps_every_coefficient_non_negative():
    """Timings with no packing cost and a little noise: a negative 'pack' is dropped, not kept."""
    rng = np.random.default_rng(0)
    truth = {"call": 5e-6, "pack": 0.0, "write": 2e-9, "mac": 1e-11}
    points = products.shapes(tokens=(16, 64, 256), head_dims=(16, 32, 128))
    seconds = batched_matmul.seconds(truth, *np.asarray(points, dtype=float).T)
    fitted = batched_matmul.fit(points, list(seconds * rng.uniform(0.97, 1.03, len(seconds))))
    assert all(v >= 0 for v in fitted.values())
    predicted = batched_matmul.seconds(fitted, *np.asarray(points, dtype=float).T)
    assert np.max(np.abs(predicted / seconds - 1)) < 0.08


def _products(cm):
    return [(k, c) for k, c in enumerate(cm.nodes) if c.extra.get("kind") == "attention"]


def test_einsum_products_are_priced_by_the_formula_at_their_matrix_shapes():
    """'BGHID,BGHJD->BGHIJ' on [1, 4 windows, 3 heads, 16 tokens, 8 dims]: 12 products [16, 8] x [8, 16];
    'BGHIJ,BGHJD->BGHID': 12 products [16, 16] x [16, 8]."""
    a = analyze(load_model(einsum_attention()))
    cm = CostModel(a, profile(COEF))
    shapes = sorted(tuple(c.extra["matmul"]) for _, c in _products(cm))
    assert shapes == [(12.0, 16.0, 8.0, 16.0), (12.0, 16.0, 16.0, 8.0)]
    i, o = cm.alive(None)
    t = cm.per_node("latency", i, o)
    for k, c in _products(cm):
        assert t[k] == pytest.approx(float(batched_matmul.seconds(COEF, *c.extra["matmul"])), rel=1e-9)
    # without the formula the same profile prices them by its roofline (100 GFLOP/s): far cheaper here
    plain = CostModel(a, profile())
    t_plain = plain.per_node("latency", *plain.alive(None))
    assert all(t_plain[k] < 0.5 * t[k] for k, _ in _products(cm))


def test_removing_heads_removes_their_share_of_the_products():
    a = analyze(load_model(vit_encoder()))
    cm = CostModel(a, profile(COEF))
    groups = [g for g in a.groups if g.name.startswith("attention heads of ")]
    keep = np.ones(a.num_units, dtype=bool)
    keep[groups[0].units[:2]] = False  # 2 of block 1's 4 heads
    full = cm.per_node("latency", *cm.alive(None))
    pruned = cm.per_node("latency", *cm.alive(keep))
    ratios = sorted(round(pruned[k] / full[k], 6) for k, _ in _products(cm))
    assert ratios == [0.5, 0.5, 1.0, 1.0]  # block 1's two products halve, block 2's stay
    # the linearised saving of a head's positions agrees with the finite difference
    di, do = cm.latency.gradients(*cm.alive(None))
    for k, c in _products(cm):
        assert max(di[k], do[k]) > 0


def test_measured_products_fit_their_own_timings():
    """A real (small) measurement on this machine, MatMul and Einsum: each fit reproduces the
    products it was fitted to within 35 % (median; five coefficients for eight shapes) and their
    total within 25 %."""
    points = products.shapes(tokens=(16, 64), head_dims=(16, 64))
    for op in products.OPS:
        times = np.array([products.product_seconds(*p, threads=1, runs=5, flush=True, op=op) for p in points])
        fitted = batched_matmul.fit(points, list(times), columns=16)
        predicted = batched_matmul.seconds(fitted, *np.asarray(points, dtype=float).T)
        assert np.median(np.abs(predicted / times - 1)) < 0.35, op
        assert predicted.sum() / times.sum() == pytest.approx(1.0, abs=0.25), op


def test_measure_fits_matmul_and_einsum_coefficients_separately(monkeypatch):
    """Timings that follow the formula, the Einsum's at twice the MatMul's: `measure` returns both
    sets (the Einsum's prefixed), and `seconds` reads each for its op."""
    einsum = {name: 2 * v for name, v in COEF.items()}

    def fake(batch, m, k, n, *, threads, runs, flush, op="MatMul"):
        return float(batched_matmul.seconds(einsum if op == "Einsum" else COEF, batch, m, k, n))

    monkeypatch.setattr(products, "product_seconds", fake)
    points = products.shapes(tokens=(16, 49, 196), head_dims=(16, 64))
    coef = products.measure(threads=1, runs=1, flush=False, points=points)
    for name, value in COEF.items():
        assert coef[name] == pytest.approx(value, rel=1e-3)
        assert coef[f"einsum_{name}"] == pytest.approx(2 * value, rel=1e-3)
    shape = (12, 197, 64, 197)
    assert batched_matmul.seconds(coef, *shape, op="Einsum") == pytest.approx(
        2 * batched_matmul.seconds(coef, *shape), rel=1e-3)


@pytest.mark.parametrize("raw", [{"call": -1.0}, {"mac": "fast"}, ["call", 1e-6]])
def test_malformed_batched_matmul_is_a_clear_error(raw):
    with pytest.raises(ProfileError, match="batched_matmul"):
        profile(raw)
