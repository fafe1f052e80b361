"""The onnxmorph training engine: optimizer steps against numpy references, gradient accumulation,
checkpoints, devices, and a training graph whose ops onnxruntime-training could not differentiate."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from onnxmorph.errors import OnnxMorphError, UsageError
from onnxmorph.runtime import make_session
from onnxmorph.train.engine import open_session
from onnxmorph.train.optim import OptimizerSpec, state_name, step_model
from train_graphs import steps_after_rollback_and_fresh, training_graph
from zoo import mobile_block, residual


@pytest.fixture(scope="module")
def graph():
    return training_graph(residual(batch=4))


def _numpy_adamw(p, g, m, v, lr, t, spec):
    b1, b2 = spec.betas
    p = p - lr * spec.weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + spec.eps)
    return p, m, v


def test_adamw_step_graph_matches_numpy_over_steps():
    spec = OptimizerSpec("adamw", weight_decay=0.05)
    rng = np.random.default_rng(0)
    shapes = {"w": [3, 4], "b": [4]}
    sess = make_session(step_model(spec, {k: (s, 1) for k, s in shapes.items()}))
    p = {k: rng.standard_normal(s) for k, s in shapes.items()}
    m = {k: np.zeros(s) for k, s in shapes.items()}
    v = {k: np.zeros(s) for k, s in shapes.items()}
    got = {k: x.astype(np.float32) for k, x in p.items()}
    gm, gv = {k: x.astype(np.float32) for k, x in m.items()}, {k: x.astype(np.float32) for k, x in v.items()}
    for t, lr in enumerate([1e-2, 5e-3, 2e-2, 1e-3, 1e-2], start=1):
        grads = {k: rng.standard_normal(s) * 10 ** rng.uniform(-3, 1) for k, s in shapes.items()}
        feeds = dict(spec.scalars(lr, t))
        for k in shapes:
            feeds.update({k: got[k], f"grad__{k}": grads[k].astype(np.float32), state_name("m", k): gm[k],
                          state_name("v", k): gv[k]})
            p[k], m[k], v[k] = _numpy_adamw(p[k], grads[k], m[k], v[k], lr, t, spec)
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for k in shapes:
            got[k], gm[k], gv[k] = out[f"{k}__new"], out[f"m__{k}__new"], out[f"v__{k}__new"]
            np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(gv[k], v[k], rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_session_steps_follow_numpy_with_its_own_gradients(graph, optimizer):
    """Several engine steps (parameters and state on OrtValues, double-buffered) equal numpy's update
    applied to the gradients the engine reports."""
    tg, feeds = graph
    s = open_session(tg, optimizer=optimizer)
    spec = s.spec
    p = {k: v.astype(np.float64) for k, v in s.params().items()}
    start = s.params()
    state = {k: [np.zeros_like(v) for _ in spec.states] for k, v in p.items()}
    for t, lr in enumerate([3e-3, 1e-3, 2e-3], start=1):
        s.set_lr(lr)
        s.train_step(feeds)
        for k in p:
            g = s.grad(k).astype(np.float64)
            if optimizer == "adamw":
                p[k], state[k][0], state[k][1] = _numpy_adamw(p[k], g, *state[k], lr, t, spec)
            else:
                state[k][0] = spec.momentum * state[k][0] + g
                p[k] = p[k] - lr * state[k][0]
        now = s.params()
        for k in p:
            np.testing.assert_allclose(now[k], p[k], rtol=1e-4, atol=1e-6)
    assert all(np.abs(s.param(k) - start[k]).max() > 0 for k in p)  # every parameter moved
    s.close()


def test_gradient_accumulation_sums_micro_batches(graph):
    tg, feeds = graph
    other = dict(feeds, input=feeds["input"][::-1].copy())
    single = open_session(tg)
    single.train_step(feeds, apply=False)
    g1 = {k: single.grad(k) for k in tg.trainable}
    single.reset_grad()
    single.train_step(other, apply=False)
    g2 = {k: single.grad(k) for k in tg.trainable}
    acc = open_session(tg)
    acc.train_step(feeds, apply=False)
    acc.train_step(other, apply=True)
    for k in tg.trainable:
        np.testing.assert_allclose(acc.grad(k), g1[k] + g2[k], rtol=1e-4, atol=1e-6)
    assert any(np.abs(g2[k] - g1[k]).max() > 1e-4 for k in tg.trainable)  # the two batches differ


def test_checkpoint_resume_continues_the_same_trajectory(graph, tmp_path):
    tg, feeds = graph
    a = open_session(tg)
    for _ in range(3):
        a.train_step(feeds)
    a.save(tmp_path / "ckpt")
    b = open_session(tg)
    b.load(tmp_path / "ckpt")
    for s in (a, b):
        s.set_lr(2e-3)
        s.train_step(feeds)
    for k in tg.trainable:
        np.testing.assert_array_equal(a.param(k), b.param(k))  # parameters and Adam state restored


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_reset_optimizer_steps_like_a_new_session(graph, optimizer):
    """After steps, a rollback and `reset_optimizer`, the next step equals a new session's first step
    from the same weights: no moments of the abandoned path remain (without the reset they differ)."""
    tg, feeds = graph
    reset, fresh = steps_after_rollback_and_fresh(tg, feeds, optimizer=optimizer)
    for k in tg.trainable:
        np.testing.assert_allclose(reset[k], fresh[k], rtol=1e-6, atol=1e-7)
    stale, fresh = steps_after_rollback_and_fresh(tg, feeds, optimizer=optimizer, reset=False)
    assert max(float(np.abs(stale[k] - fresh[k]).max()) for k in tg.trainable) > 1e-5


def test_training_graph_with_ops_ort_training_could_not_differentiate():
    """HardSwish, HardSigmoid (no ORT-training gradient) are differentiated as they are: a few steps
    lower the distillation loss on a fixed batch."""
    tg, feeds = training_graph(mobile_block(batch=4))
    ops = {n.op_type for n in tg.model.graph.node}
    assert {"HardSwish", "HardSigmoid"} <= ops and tg.notes == ["training graph rewrites: BatchNormalization"]
    s = open_session(tg)
    s.set_lr(1e-2)
    losses = [float(s.train_step(feeds)["onnxmorph_task_loss"]) for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0]


def test_devices():
    from onnxmorph.train.native_engine import cuda_starts

    tg, feeds = training_graph(residual(batch=2))
    if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_starts(ort):
        cpu, gpu = open_session(tg), open_session(tg, device="cuda")
        a, b = cpu.train_step(feeds), gpu.train_step(feeds)
        assert abs(float(a["onnxmorph_loss"]) - float(b["onnxmorph_loss"])) < 1e-4 * abs(float(a["onnxmorph_loss"]))
    else:
        with pytest.raises(UsageError, match="--device cuda needs onnxruntime-gpu"):
            open_session(tg, device="cuda")
    with pytest.raises(UsageError, match="unknown --engine 'torch'"):
        open_session(tg, engine="torch")


def test_cuda_provider_listed_but_not_starting_is_one_usage_line(monkeypatch):
    """onnxruntime-gpu lists CUDAExecutionProvider without a GPU or CUDA libraries, and a session then
    falls back to the CPU: --device cuda must say so instead of training on the CPU (or a traceback)."""
    from onnxmorph.train import native_engine

    tg, _ = training_graph(residual(batch=2))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(native_engine, "cuda_starts", lambda ort_module: False)
    with pytest.raises(UsageError, match="could not start its CUDA provider.*use --device cpu"):
        open_session(tg, device="cuda")
    monkeypatch.undo()
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # the probe itself, on a CPU build
        assert native_engine.cuda_starts(ort) is False


def test_missing_ort_training_is_one_clear_line(graph):
    tg, _ = graph
    import os

    if not os.path.isdir(os.path.join(os.path.dirname(ort.__file__), "training")):
        with pytest.raises(OnnxMorphError, match="onnxruntime-training"):
            open_session(tg, engine="ort-training")
    else:  # the ort-training environment: the engine opens
        open_session(tg, engine="ort-training").close()
