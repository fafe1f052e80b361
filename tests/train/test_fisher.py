"""Fisher pruning: the per-example signal equals an analytic numpy reference; the schedule removes the
channel with the smallest signal per FLOP (auto) or thins the most expensive layer first (large float
weight); it reaches the target and the emitted model verifies."""

import numpy as np
import pytest

import onnxmorph
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.graph import load_model
from onnxmorph.methods import get_method
from onnxmorph.train.loop import Trainer
import zoo
from zoo import residual


def test_per_example_signal_matches_numpy():
    model, w1, w2 = zoo.tiny_mlp()
    b = 8
    rng = np.random.default_rng(1)
    data = {"x": rng.standard_normal((b, 4)).astype(np.float32), "y": rng.integers(0, 3, b)}
    analysis = analyze(load_model(model))
    assert analysis.num_units == 6
    method = get_method("fisher")
    method.keep = np.ones(6, dtype=bool)
    trainer = Trainer(method, analysis, data=data, labels="y", batch_size=b, lr=0.0, distill_weight=0.5)
    order = trainer._order.copy()
    trainer.run(1, reg_weights=lambda keep: np.zeros(6), strength=0.0)
    trainer.close()
    x, y = data["x"][order], data["y"][order]
    a = np.maximum(x @ w1, 0)
    s = a @ w2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # loss = 0.5 * KL (zero gradient: student == teacher) + 0.5 * mean_n CE_n
    dl_ds = 0.5 * (p - np.eye(3)[y]) / b
    g_ref = a * (dl_ds @ w2.T)  # g_nk = a_nk * dL/da_nk
    np.testing.assert_allclose(method.last_grad, g_ref, rtol=1e-4, atol=1e-7)


@pytest.fixture(scope="module")
def data():
    return {"input": np.random.default_rng(0).standard_normal((128, 3, 12, 12)).astype(np.float32)}


def test_auto_removes_smallest_signal_per_flop_and_reaches_target(data):
    res = onnxmorph.prune(residual(batch="N"), method="fisher", target="flops=0.6", data=data, steps=40,
                          batch_size=16, lr=1e-3, recover_steps=0, seed=0, burn_in=5)
    assert res.report["pruned"]["macs"] <= 0.6 * res.report["original"]["macs"]
    assert res.report["verify"]["passed"]
    order = res.report["pruning_order"]
    assert order and {"step", "group", "channel", "signal", "delta_cost"} <= set(order[0])
    assert order[0]["step"] >= 5  # burn-in respected
    assert res.report["training"]["target"] == 0.6
    assert abs(res.report["training"]["end_cost_fraction"] / 0.6 - 1) <= 0.05  # reached during training


def test_first_choice_is_the_minimum(data):
    model = residual(batch="N")
    analysis = analyze(load_model(model))
    cm = CostModel(analysis)
    method = get_method("fisher", burn_in=3)
    fit = method.fit(analysis, cm, data=data, fraction=0.7, steps=20, batch_size=16, lr=1e-3)
    first = method.first_event
    ratio = np.where(first["ok"], first["delta"] / first["saving"], np.inf)
    assert fit.extra["pruning_order"][0]["unit"] == int(np.argmin(ratio))


def test_large_flops_weight_thins_the_most_expensive_layer_first(data):
    model = zoo.cheap_and_expensive()
    res = onnxmorph.prune(model, method="fisher", target="flops=0.7", data=data, steps=30, batch_size=16,
                          recover_steps=0, burn_in=2, flops_weight=1000.0)
    analysis = res.analysis
    expensive = [g.name for g in analysis.groups if g.channels == 8]
    first_groups = [e["group"] for e in res.report["pruning_order"][:3]]
    costs = {g.name: CostModel(analysis).marginal("macs")[g.units[0]] for g in analysis.groups}
    top = max(costs, key=costs.get)
    assert expensive and all(g == top for g in first_groups)
