"""gates / gamma / group-lasso trained with ONNX Runtime on a small residual model and synthetic data:
the cost falls towards the target, the cut meets it exactly, the emitted model verifies, and
distillation keeps the pruned model close to the original."""

import numpy as np
import pytest

import onnxmorph
from onnxmorph.runtime import run_model
from zoo import residual


@pytest.fixture(scope="module")
def setup():
    model = residual(batch="N")
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal((256, 3, 12, 12)).astype(np.float32)}
    return model, data


def _distill_gap(original, pruned, x):
    """Mean KL(teacher || student) of the softmax outputs on held-out inputs."""
    t = run_model(original, {"input": x})[0]
    s = run_model(pruned, {"input": x})[0]
    p = np.exp(t - t.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logq = s - s.max(1, keepdims=True)
    logq -= np.log(np.exp(logq).sum(1, keepdims=True))
    return float((p * (np.log(p) - logq)).sum(1).mean())


@pytest.mark.parametrize("method,lr", [("gates", 3e-3), ("gamma", 1e-2), ("group-lasso", 1e-2)])
def test_trained_method_reaches_target_and_verifies(setup, method, lr):
    model, data = setup
    # gamma / group-lasso move weights themselves, which Adam moves by ~lr per step: a larger lr
    # lets 100 steps shrink them
    # --steps is the whole budget: 100 regularized steps + 40 of recovery
    res = onnxmorph.prune(model, method=method, target="flops=0.5", data=data, steps=140, batch_size=32,
                          lr=lr, recover_steps=40, seed=0)
    assert res.report["budget"] == {"steps": 140, "training": 100, "recovery": 40, "probe": 0}
    rep = res.report
    assert rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
    assert rep["verify"]["passed"]
    curve = [c for c in rep["training_curve"] if c["phase"] == "training"]
    assert curve[-1]["cost_fraction"] < curve[0]["cost_fraction"]  # the regularizer shrank the model
    recovery = [c for c in rep["training_curve"] if c["phase"] == "recovery"]
    held = [c["held_out_loss"] for c in recovery if "held_out_loss" in c]
    # recovery is guarded: it ends at the lowest held-out loss it saw, and says so when that was not its end
    assert held and (held[-1] <= min(held) or any("rolled back" in n for n in rep["notes"]))
    held_out = np.random.default_rng(5).standard_normal((64, 3, 12, 12)).astype(np.float32)
    magnitude = onnxmorph.prune(model, method="magnitude", target="flops=0.5")
    # on this random model and data one-shot uniform magnitude is a strong cut: training on random inputs
    # must stay in its league (within 2.5x its gap), never destroy the model
    assert _distill_gap(model, res.model, held_out) < 2.5 * _distill_gap(model, magnitude.model, held_out)


def test_gates_cost_tracks_target(setup):
    model, data = setup
    res = onnxmorph.prune(model, method="gates", target="flops=0.4", data=data, steps=120, batch_size=32,
                          lr=3e-3, recover_steps=0, seed=1)
    training = [c for c in res.report["training_curve"] if c["phase"] == "training"]
    assert abs(training[-1]["cost_fraction"] - 0.4) < 0.2
    assert abs(res.report["training"]["end_cost_fraction"] / 0.4 - 1) <= 0.1  # held at the target
    assert res.report["pruned"]["macs"] <= 0.4 * res.report["original"]["macs"]


def test_same_seed_same_trained_model(setup):
    model, data = setup
    a = onnxmorph.prune(model, method="gates", target="flops=0.6", data=data, steps=20, recover_steps=10, seed=3)
    b = onnxmorph.prune(model, method="gates", target="flops=0.6", data=data, steps=20, recover_steps=10, seed=3)
    assert a.model.SerializeToString() == b.model.SerializeToString()


def test_methods_that_train_need_data(setup):
    model, _ = setup
    with pytest.raises(onnxmorph.OnnxMorphError, match="needs --data"):
        onnxmorph.prune(model, method="gates", target="flops=0.5")


@pytest.mark.parametrize("method", ["gates", "fisher"])
def test_training_methods_prune_attention_heads_and_mlp(method):
    """On a ViT-style encoder (batch fixed at 1: gradients accumulate), heads and MLP units train and go."""
    from zoo import vit_encoder

    data = {"input": np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)}
    res = onnxmorph.prune(vit_encoder(), method=method, target="flops=0.6", data=data, steps=20,
                          recover_steps=10, batch_size=4)
    assert res.report["pruned"]["macs"] <= 0.6 * res.report["original"]["macs"]
    assert res.report["verify"]["passed"]
    removed = {g["name"].split(" of ")[0] for g in res.report["groups"] if g["kept"] < g["channels"]}
    assert removed & {"attention heads", "MLP hidden"}, removed


def test_distillation_temperature_does_not_touch_the_gate_temperature():
    from onnxmorph.methods import get_method

    gates = get_method("gates", temperature=8.0, steps=10)
    assert gates.tau == 0.5 and gates.options["temperature"] == 8.0


def test_checkpoint_and_resume(setup, tmp_path):
    model, data = setup
    ckpt = tmp_path / "ckpt"
    onnxmorph.prune(model, method="gates", target="flops=0.7", data=data, steps=10, recover_steps=0,
                    checkpoint_every=5, checkpoint_dir=ckpt)
    assert (ckpt / "checkpoint").exists() and (ckpt / "loop.json").exists()
    res = onnxmorph.prune(model, method="gates", target="flops=0.7", data=data, steps=15, recover_steps=0,
                          resume=ckpt)
    training = [c for c in res.report["training_curve"] if c["phase"] == "training"]
    assert training[0]["step"] == 10 and training[-1]["step"] == 14
    assert any("resumed from" in n and "step 10" in n for n in res.report["notes"])
    with pytest.raises(onnxmorph.OnnxMorphError, match="not an onnxmorph checkpoint"):
        onnxmorph.prune(model, method="gates", target="flops=0.7", data=data, steps=15, recover_steps=0,
                        resume=tmp_path / "nothing")


def test_diverging_training_rolls_back_then_stops_with_a_clear_error():
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal((64, 3, 12, 12)).astype(np.float32)}
    # weights 1e30 after a step: float32 products overflow to inf, the loss to nan (the gates' logits move
    # a fixed amount per step whatever the rate, so only the weights can diverge)
    with pytest.raises(onnxmorph.OnnxMorphError, match=r"training diverged: .* after 5 rollbacks; try a smaller --lr"):
        onnxmorph.prune(residual(batch="N"), method="gates", target="flops=0.7", data=data, steps=30,
                        recover_steps=0, lr=1e30, batch_size=16)
