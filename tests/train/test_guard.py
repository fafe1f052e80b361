"""Recovery's rollback guard judges by the held-out top-1 agreement as well as the loss (issue 12): the
lowest distillation loss is kept unless it moved the student's top class away from the teacher's on
more held-out positions than it won back; then the weights go back to where recovery started."""

import numpy as np
import onnxruntime as ort
import pytest

from onnxmorph.analysis import analyze
from onnxmorph.gates.masked import build_masked
from onnxmorph.graph import load_model
from onnxmorph.train.instrument import FixedMask
from onnxmorph.train.loop import Trainer, fewer_hits
import zoo


def _data(n=256):
    return {"input": np.random.default_rng(0).standard_normal((n, 3, 12, 12)).astype(np.float32)}


def _top(model, x, axis):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])  # batch 1 after load
    return np.argmax(out, axis=axis)


@pytest.mark.parametrize("model, axis", [(zoo.residual, 1), (lambda batch: zoo.class_map(False, batch), 1),
                                         (lambda batch: zoo.class_map(True, batch), -1)],
                         ids=["logits [N,C]", "class map [N,C,H,W]", "class last [N,H,W,C]"])
def test_held_out_hits_match_a_direct_computation(model, axis):
    """The hits the training graph reports are the masked model's top class against the original's, row
    by row and position by position, on every held-out row (25 rows at batch 16: the last batch wraps)."""
    analysis = analyze(load_model(model(batch="N")))
    data = _data()
    keep = np.random.default_rng(1).random(analysis.num_units) < 0.3
    trainer = Trainer(FixedMask(), analysis, data=data, batch_size=16, seed=0)
    try:
        _, hits = trainer.validate(keep)
        x = data["input"][trainer.val_rows]
    finally:
        trainer.close()
    want = _top(build_masked(analysis, keep), x, axis) == _top(analysis.loaded.model, x, axis)
    assert len(trainer.val_rows) == 25 and hits.dtype == bool
    assert hits.tolist() == want.ravel().tolist()
    assert 0.1 < hits.mean() < 0.99  # the cut moved some top classes, not all


def test_fewer_hits_counts_the_positions_each_side_lost():
    ref = np.ones(1000, bool)
    lost20 = ref.copy()
    lost20[:20] = False
    assert fewer_hits(lost20, ref)  # 20 flipped to wrong, none back
    mixed = np.concatenate([lost20[:500], np.zeros(500, bool)])
    base = np.concatenate([ref[:500], np.zeros(500, bool)])
    mixed[500:515] = True  # 20 lost, 15 won: within chance, and still the start is kept
    assert fewer_hits(mixed, base)
    mixed[515:520] = True  # 20 lost, 20 won: even
    assert not fewer_hits(mixed, base)
    assert not fewer_hits(ref, lost20) and not fewer_hits(ref, ref)
    assert not fewer_hits(None, ref) and not fewer_hits(ref, None)


@pytest.mark.parametrize("drop", [True, False], ids=["agreement fell", "agreement held"])
def test_recovery_goes_back_to_its_start_when_the_top_class_drifts(monkeypatch, drop):
    """The loss falls at every check; the weights end at the start only when the lowest loss's hits
    are worse than the start's beyond chance."""
    analysis = analyze(load_model(zoo.residual(batch="N")))
    trainer = Trainer(FixedMask(), analysis, data=_data(), batch_size=16, lr=1e-2, seed=0)
    try:
        start = trainer.session.params()
        checks = iter(range(100))
        ones = np.ones(400, bool)

        def validate(unit_mask=None):
            k = next(checks)
            hits = ones.copy()
            if drop and k:
                hits[:40] = False  # 40 of 400 positions lost, none won
            return 1.0 / (1 + k), hits

        monkeypatch.setattr(trainer, "validate", validate)
        u = analysis.num_units
        curve = trainer.run(20, reg_weights=lambda keep: np.zeros(len(keep), np.float32), strength=0.0,
                            unit_mask=np.ones(u, bool), label="recovery", guard_every=5)
        end = trainer.session.params()
    finally:
        trainer.close()
    moved = max(float(np.abs(end[k] - start[k]).max()) for k in start)
    checked = [c["held_out_top1"] for c in curve if "held_out_top1" in c]
    assert len(checked) == 4 and checked[-1] == (0.9 if drop else 1.0)
    assert any("agreement with the original 1.0000 at the start, 1.0000 at the end" in n for n in trainer.notes)
    if drop:
        assert moved == 0.0
        assert any("rolled back to the start" in n and "top-1 agreement 0.9000" in n for n in trainer.notes)
    else:
        assert moved > 1e-4 and not any("rolled back" in n for n in trainer.notes)


def test_recovery_distils_on_blends_the_teacher_labels():
    """Label-free recovery blends each training row with another and distils the teacher's outputs on
    the blend; the held-out rows stay out of every blend, and labelled training is never mixed."""
    analysis = analyze(load_model(zoo.residual(batch="N")))
    data = _data()
    trainer = Trainer(FixedMask(), analysis, data=data, batch_size=16, seed=0, mix_inputs=True)
    try:
        assert trainer.mixer is not None and any("mixed inputs" in n for n in trainer.notes)
        idx = trainer.train_rows[:16]
        feeds, targets = trainer._mixed(idx)
        x = feeds["input"]
        out = analysis.loaded.graph().outputs[0].name
        teacher = np.concatenate([ort.InferenceSession(analysis.loaded.model.SerializeToString(),
                                                       providers=["CPUExecutionProvider"])
                                  .run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        z = teacher.astype(np.float64) / trainer.spec.temperature
        p = np.exp(z - z.max(axis=1, keepdims=True))
        np.testing.assert_allclose(targets[out], p / p.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
        # each blend is w * its row + (1 - w) * some training row, never a held-out one
        rows = data["input"].reshape(len(data["input"]), -1)
        for k, i in enumerate(idx):
            blend = x[k].ravel()
            fits = []
            for j in range(len(rows)):
                d = rows[i] - rows[j]
                w = float(d @ (blend - rows[j]) / max(float(d @ d), 1e-12)) if j != i else 1.0
                fits.append(np.abs(w * rows[i] + (1 - w) * rows[j] - blend).max())
            partner = int(np.argmin(fits))
            assert fits[partner] < 1e-4 and partner not in set(trainer.val_rows.tolist())
        assert np.abs(x - data["input"][idx]).max() > 0.1  # blended, not the rows themselves
    finally:
        trainer.close()
    labelled = dict(data, y=np.zeros(len(data["input"]), np.int64))
    trainer = Trainer(FixedMask(), analysis, data=labelled, labels="y", batch_size=16, seed=0, mix_inputs=True)
    try:
        assert trainer.mixer is None
    finally:
        trainer.close()


@pytest.mark.parametrize("target, mixed", [("flops=0.5", True), ("flops=0.25", False)])
def test_only_gentle_cuts_recover_on_blends(target, mixed):
    """Blends keep a gentle cut from memorizing the rows; a deep cut has to relearn from the real ones."""
    import onnxmorph

    x = np.random.default_rng(0).standard_normal((200, 3, 12, 12)).astype(np.float32)
    res = onnxmorph.prune(zoo.residual(batch="N"), data={"input": x}, method="magnitude", target=target, steps=4)
    assert any("mixed inputs" in n for n in res.report["notes"]) == mixed


def test_a_nan_step_rolls_back_and_training_goes_on():
    """A step whose loss is NaN (here: one batch of NaN inputs) rolls the weights back, and the optimizer
    with them: its moments would be NaN, and so every later step."""
    analysis = analyze(load_model(zoo.residual(batch="N")))
    trainer = Trainer(FixedMask(), analysis, data=_data(), batch_size=16, lr=1e-3, seed=0)
    try:
        batch, calls = trainer._batch, iter(range(100))

        def poisoned(idx=None):
            feeds = batch(idx)
            if idx is None and next(calls) == 3:
                feeds["input"] = np.full_like(feeds["input"], np.nan)
            return feeds

        trainer._batch = poisoned
        u = analysis.num_units
        curve = trainer.run(12, reg_weights=lambda keep: np.zeros(len(keep), np.float32), strength=0.0,
                            unit_mask=np.ones(u, bool), label="recovery")
        end = trainer.session.params()
    finally:
        trainer.close()
    assert any("step 3: the loss was nan; rolled back and halved the lr" in n for n in trainer.notes)
    assert all(np.isfinite(v).all() for v in end.values())
    assert np.isfinite([c["loss"] for c in curve]).all() and curve[-1]["step"] == 11
