"""The onnxmorph engine against onnxruntime-training 1.19.2 on whole training graphs.

Runs in the ort-training environment only (`.ci/run` builds it and names this folder; the default
test run does not recurse here). Both engines get the same graph (with the ort-training engine's
rewrites, so that ORT can differentiate it) and the same batch: the loss and the gradient of every
trainable parameter must agree to 1e-4 relative (of each tensor's largest magnitude)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxmorph.train.engine import open_session
from train_graphs import steps_after_rollback_and_fresh, training_graph
from zoo import mobile_block, vit_encoder


def test_this_environment_has_onnxruntime_training():
    """Guard: in any other environment this folder must fail, never pass vacuously."""
    import onnxruntime

    from onnxmorph.train.ortsupport import training_modules

    assert onnxruntime.__version__ == "1.19.2"
    training_modules()


MODELS = {
    "demo_cnn": lambda repo: (repo / "models" / "demo_cnn.onnx", 8),
    "residual_se_depthwise": lambda repo: (mobile_block(batch=4), None),
    "vit_encoder": lambda repo: (vit_encoder(), None),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_loss_and_every_gradient_match(name):
    from conftest import REPO

    model, batch = MODELS[name](REPO)
    tg, feeds = training_graph(model, batch=batch, engine="ort-training")
    ours = open_session(tg, engine="onnxmorph")
    ref = open_session(tg, engine="ort-training")
    try:
        a = ours.train_step(feeds, apply=False)
        b = ref.train_step(feeds, apply=False)
        loss_a, loss_b = float(a["onnxmorph_loss"]), float(b["onnxmorph_loss"])
        assert abs(loss_a - loss_b) <= 1e-4 * abs(loss_b)
        assert len(tg.trainable) > 5
        for p in tg.trainable:
            ga, gb = ours.grad(p), ref.grad(p)
            assert ga.shape == gb.shape
            scale = max(float(np.abs(gb).max()), 1e-6)
            assert float(np.abs(ga - gb).max()) <= 1e-4 * scale, (p, float(np.abs(ga - gb).max()), scale)
        assert any(float(np.abs(ours.grad(p)).max()) > 0 for p in tg.trainable)
    finally:
        ours.close()
        ref.close()


def test_ort_training_reset_optimizer_steps_like_a_new_session():
    """As for the onnxmorph engine: after steps, a rollback and `reset_optimizer`, the next step equals
    a new session's first step from the same weights."""
    tg, feeds = training_graph(mobile_block(batch=4), engine="ort-training")
    reset, fresh = steps_after_rollback_and_fresh(tg, feeds, engine="ort-training")
    for p in tg.trainable:
        np.testing.assert_allclose(reset[p], fresh[p], rtol=1e-5, atol=1e-6)
