"""The fine-tuning loops: regularized training of a method's gates/weights, and recovery
fine-tuning of a fixed keep-mask. Both distill from the original model (label-free by default)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from ..errors import DataError, OnnxMorphError
from ..options import TrainConfig
from ..runtime import make_session
from .batched import at_batch
from .engine import TrainingSession, open_session
from .graph import (LABELS, REG_STRENGTH, REG_WEIGHTS, TOP1_PREFIX, UNIT_MASK, build_training_graph, loss_spec,
                    weight_initializers)
from .instrument import FixedMask
from .result import FitResult


LR_PER_WEIGHT = 0.05  # Adam's default rate as a share of the median layer's RMS weight (demo: 9.6e-3)
PROBE_RISE = 3.0  # the held-out loss may rise this much during the probe before the rate backs off
# before the cut, a rate is too large once a few steps without any regularizer move the held-out loss
# more than this share of the way from the intact model's to the collapsed model's (every unit masked),
# divided by the square of the target fraction: the gentler the target, the closer the result must stay
# to the original (0.7: 10 %, 1/4: 80 %); from about 0.22 down there is no probe: the cut rebuilds most
# of the model anyway (the demo at 1/8 ended 2-6 points lower at the 9x smaller rate a fixed 5 % chose)
DAMAGE_SHARE = 0.05
VAL_ROWS = 256  # at most this many rows held out for the probe and the guard (a tenth of the data)
PLATEAU_CUTS = 4  # after a probe that found no rate: times recovery may go back to its start at a third of the rate


def held_out_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows) of `n`: a tenth, at most VAL_ROWS, kept out of gradient steps and
    of the least-squares refit, so the learning-rate probe and the guard judge on rows nothing was fit to
    (none below 20 rows)."""
    order = np.random.default_rng([seed, 20]).permutation(n)  # a stream apart from default_rng(seed)'s
    held = min(VAL_ROWS, n // 10) if n >= 20 else 0
    return order[:held], (order[held:] if held else order)


def fewer_hits(hits: np.ndarray | None, ref: np.ndarray | None) -> bool:
    """Whether `hits` (1/0 per held-out row and position) agree with the teacher on fewer positions than
    `ref`: more positions flipped from right to wrong than back.

    No margin for chance: recovery after a gentle cut starts near the teacher, where a lower distillation
    loss can still cost top-1 agreement, and ppocr-rec at 0.7 of the MACs lost a point on 512 new lines
    each time its held-out loss fell (0.9668 after the refit, 0.956-0.960 after recovery) while the
    held-out positions lost were within two sd of those won (0.9647 -> 0.9576 and 0.9603 of 2 040). When
    the evidence is even, the start, the model the refit made, is the safer one to keep."""
    if hits is None or ref is None:
        return False
    return int(hits.sum()) < int(ref.sum())


# label-free recovery distils on blended inputs from this target fraction up. A gentle cut starts near
# the teacher and has little to learn but a few hundred rows to memorize (ppocr-cls at 0.7: 4.8 % of new
# inputs flipped without blends, 2.2 % with); a deep cut has to relearn features from the real rows,
# and blends cost it (demo, label-free, seeds 0-2: at 1/16 magnitude 87.7 -> 81.5, fisher 83.8 -> 76.0;
# at 1/2 within 0.2 points)
MIX_FROM = 0.5


def mixes_inputs(fraction: float) -> bool:
    return fraction >= MIX_FROM


def damage_share(fraction: float) -> float:
    return min(1.0, DAMAGE_SHARE / max(fraction, 1e-6) ** 2)


TRAIN = TrainConfig()  # the training defaults, shared with recovery and Fisher pruning


class TrainingDiverged(OnnxMorphError):
    """The loss stayed NaN/Inf after repeated rollbacks."""


def _softmax(x: np.ndarray, t: float) -> np.ndarray:
    z = x / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _teacher_outputs(session, inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    n = next(iter(inputs.values())).shape[0]
    chunks: dict[str, list] = {k: [] for k in names}
    for start in range(0, n, batch):
        idx = np.arange(start, start + batch) % n
        outs = session.run(names, {k: v[idx] for k, v in inputs.items()})
        keep = min(batch, n - start)
        for k, o in zip(names, outs):
            chunks[k].append(o[:keep])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 10 % of `base`."""
    warm = max(1, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


TOP1 = TOP1_PREFIX.replace("onnxmorph_", "")  # the hits' names in `_short` outputs


def _short(outs: dict) -> dict:
    return {k.replace("onnxmorph_extra__", "").replace("onnxmorph_", ""): v for k, v in outs.items()}


class Trainer:
    """Distillation fine-tuning of `method`'s training graph over `data` (one ORT session)."""

    def __init__(self, method, analysis, *, data, labels=None, seed=0, batch_size=TRAIN.batch_size,
                 lr=3e-3, optimizer=TRAIN.optimizer, temperature=TRAIN.temperature,
                 distill_weight=TRAIN.distill_weight, progress=None, sample_labels: bool = False, teacher=None,
                 engine: str = TRAIN.engine, device: str = TRAIN.device, val_rows=None, mix_inputs: bool = False):
        self.say = progress or (lambda msg, **info: None)
        self.method, self.analysis = method, analysis
        self.rng = np.random.default_rng(seed)
        self.notes: list[str] = []
        self.no_rate_found = False  # the learning-rate probe found no rate that kept the held-out loss down
        self.inputs = {s.name: data[s.name] for s in analysis.loaded.inputs}
        self.n = next(iter(self.inputs.values())).shape[0]
        self.labels = data.get(labels) if labels else None
        self.sampled = None  # teacher probabilities to draw labels from (the model's own Fisher)
        train_analysis, self.micro, batched_teacher = at_batch(analysis, min(batch_size, self.n))
        self.accumulate = 1 if self.micro > 1 else batch_size
        if self.micro == 1 and batch_size > 1:
            self.notes.append(f"the model's batch size is fixed at 1: gradients are accumulated over "
                              f"{batch_size} samples")
        self.say("computing teacher outputs")
        # the untouched model: `analysis` may carry trained or reconstructed weights (recovery)
        teacher_model = batched_teacher if batched_teacher is not None else (teacher or analysis.loaded.model)
        teacher_session = make_session(teacher_model)
        teacher = _teacher_outputs(teacher_session, self.inputs, self.micro)
        spec = loss_spec(teacher, temperature)
        kinds = spec.kinds
        logits = [k for k, v in kinds.items() if v in ("kl", "probs")]
        # labels are laid out as the class output: [N, classes], or per position for outputs with a class
        # axis among others (CTC [N, T, C], class maps [N, C, H, W]): (class axis, position shape)
        self.label_layout: tuple[int, tuple] = (1, ())
        if sample_labels and self.labels is None:
            if not logits:
                raise OnnxMorphError("this method needs a class output (logits or probabilities) or --labels")
            t = teacher[logits[0]].astype(np.float64)
            p = t if kinds[logits[0]] == "probs" else _softmax(t, 1.0)
            axis = spec.class_axes.get(logits[0], 1) % p.ndim
            p = np.moveaxis(p, axis, -1)
            self.label_layout = (axis, p.shape[1:-1])
            self.sampled = p.reshape(len(p), -1, p.shape[-1])  # [N, positions, classes]
            self.labels = np.zeros(self.sampled.shape[:2], np.int64)  # redrawn for every batch
        elif self.labels is not None and (not logits or teacher[logits[0]].ndim != 2):
            raise OnnxMorphError("--labels needs a [N, classes] output (logits or probabilities) "
                                 "for cross-entropy")
        if self.labels is not None:
            spec.label_output, spec.distill_weight = logits[0], distill_weight
            spec.num_classes = int(teacher[logits[0]].shape[self.label_layout[0]])
            if self.labels.min() < 0 or self.labels.max() >= spec.num_classes:
                raise DataError(f"labels must lie in [0, {spec.num_classes}) for output '{logits[0]}'")
        self.spec = spec
        self.targets = self._targets(teacher)
        # mixed inputs need the teacher at every step, and make sense only for label-free distillation
        # of float inputs (token ids do not mix)
        self.mixer = None
        if mix_inputs and self.labels is None and all(np.issubdtype(v.dtype, np.floating)
                                                      for v in self.inputs.values()):
            self.mixer = teacher_session
            self.notes.append("distilled on mixed inputs: each training row is blended with another "
                              "(weight ~ U(0, 1)) and the original model run on the blend")
        self.say("building the training graph")
        self.tg = build_training_graph(train_analysis, method, spec, engine=engine)
        self.notes += self.tg.notes
        self.session = open_session(self.tg, optimizer=optimizer, engine=engine, device=device)
        self.base_lr = lr
        # rows kept out of the gradient steps: the learning-rate probe and the rollback guard judge on them
        self.val_rows, self.train_rows = held_out_rows(self.n, seed) if val_rows is None else \
            (np.asarray(val_rows), np.setdiff1d(np.arange(self.n), val_rows))
        self._order, self._cursor = self.rng.permutation(self.train_rows), 0
        self.last: dict = {}

    def _targets(self, teacher: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What the loss compares with, from the teacher's outputs: probabilities and their logs for
        class outputs (logits softened at the temperature), the values themselves for dense ones."""
        out = {}
        for k, v in teacher.items():
            kind = self.spec.kinds.get(k)
            if kind in ("kl", "probs"):
                p = _softmax(v.astype(np.float64), self.spec.temperature) if kind == "kl" else v.astype(np.float64)
                out[k] = p.astype(np.float32)
                out[f"{k}::logp"] = np.log(np.maximum(p, 1e-30)).astype(np.float32)
            elif kind == "mse":
                out[k] = v
        return out

    def _mixed(self, idx: np.ndarray) -> tuple[dict, dict]:
        """Rows `idx` each blended with a random training row, and the teacher's targets on the blends.

        Distilling on the calibration rows alone memorizes them: on ppocr-cls at 0.7 of the MACs, 461
        rows, recovery reached a held-out loss of 0.019 yet flipped the top class of 4.8 % of 1 024
        new inputs. Blends are new inputs each step, and the teacher says what they should give
        (mixup as function matching, Beyer et al. 2022): 2.2 %."""
        other = self.rng.choice(self.train_rows, len(idx))
        lam = self.rng.random(len(idx)).astype(np.float32)
        feeds = {}
        for name, arr in self.inputs.items():
            w = lam.reshape((-1,) + (1,) * (arr.ndim - 1))
            feeds[name] = (w * arr[idx] + (1 - w) * arr[other]).astype(arr.dtype)
        names = [o.name for o in self.mixer.get_outputs()]
        return feeds, self._targets(dict(zip(names, self.mixer.run(None, feeds))))

    def _batch(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Feeds for rows `idx`, or for the next training batch (mixed, with `mix_inputs`)."""
        if idx is None:
            if self._cursor + self.micro > len(self._order):
                self._order, self._cursor = self.rng.permutation(self.train_rows), 0
            idx = self._order[self._cursor:self._cursor + self.micro]
            self._cursor += self.micro
            if self.mixer is not None:
                feeds, targets = self._mixed(idx)
                feeds.update({self.tg.targets[k]: v for k, v in targets.items() if k in self.tg.targets})
                return feeds
        feeds = {name: arr[idx] for name, arr in self.inputs.items()}
        feeds.update({self.tg.targets[k]: v[idx] for k, v in self.targets.items() if k in self.tg.targets})
        if self.sampled is not None:  # one label per row and position, drawn from the teacher
            cdf = np.cumsum(self.sampled[idx], axis=2)
            u = self.rng.random((len(idx), cdf.shape[1], 1))
            self.labels[idx] = np.minimum((u > cdf).sum(axis=2), cdf.shape[2] - 1)
        if self.labels is not None:
            labels = self.labels[idx].astype(np.int64).reshape(self.micro, -1)
            onehot = np.zeros(labels.shape + (self.spec.num_classes,), np.float32)
            np.put_along_axis(onehot, labels[..., None], 1.0, axis=2)
            axis, positions = self.label_layout
            feeds[LABELS] = np.moveaxis(onehot.reshape((self.micro,) + positions + (-1,)), -1, axis)
        return feeds

    def run(self, steps: int, *, reg_weights, strength: float, controller=None, unit_mask=None,
            label="training", log_every=10, checkpoint_every=0, checkpoint_dir=None, start_step=0,
            guard_every: int = 0) -> list[dict]:
        """`steps` optimizer steps. `reg_weights(keep)` gives the per-unit cost weights; `controller(step,
        keep, strength)` returns the next strength and the cost fraction to log.

        `guard_every`: every so many steps, the held-out loss is measured; the weights end at the best
        state seen (the start included), and training stops early once it is far past that best. The
        best state is the lowest loss, unless its top-1 agreement with the teacher (class outputs) is
        below the start's on the held-out rows: then the start."""
        u = self.analysis.num_units
        mask = np.ones(u, np.float32) if unit_mask is None else unit_mask.astype(np.float32)
        keep = np.ones(u, dtype=bool) if unit_mask is None else unit_mask.astype(bool)
        curve: list[dict] = []
        good, rollbacks = self.session.params(), 0
        cost = 1.0
        best, high, cuts = None, 0, 0
        self.steps_run = steps - start_step
        if guard_every:
            val, hits = self.validate(unit_mask)
            best = None if val is None else (val, good, start_step - 1, hits)
            start = best
        step = start_step - 1  # the last step taken (none yet)
        for step in range(start_step, steps):
            lr = lr_at(step, steps, self.base_lr)
            self.session.set_lr(lr)
            loss, outs = self._step(reg_weights(keep).astype(np.float32), strength, mask, unit_mask)
            if not math.isfinite(loss):
                rollbacks += 1
                if rollbacks > 5:
                    raise TrainingDiverged(f"training diverged: the loss is {loss} at step {step} after 5 "
                                           f"rollbacks; try a smaller --lr (now {self.base_lr:g})")
                self.session.load_params(good)
                self.session.reset_optimizer()  # moments of a NaN step are NaN: every later step would be too
                self.base_lr *= 0.5
                self.notes.append(f"step {step}: the loss was {loss}; rolled back and halved the lr "
                                  f"to {self.base_lr:g}")
                continue
            self.last = _short(outs)
            self.method.after_step(self.session)
            if controller is not None:
                keep = self.method.alive(self.last)
                strength, cost = controller(step, self.method.keep_probability(self.last), strength)
            if step % 10 == 0:
                good = self.session.params()
            if step % log_every == 0 or step == steps - 1:
                curve.append({"phase": label, "step": step, "loss": loss,
                              "task_loss": float(self.last["task_loss"]), "reg": float(self.last["reg_value"]),
                              "cost_fraction": round(float(cost), 5), "alive_fraction": round(float(keep.mean()), 5),
                              "strength": strength, "lr": lr})
            self.say(label, step=step + 1, total=steps, loss=loss, task=float(self.last["task_loss"]),
                     cost=float(cost), alive=float(keep.mean()))
            if checkpoint_every and checkpoint_dir and (step + 1) % checkpoint_every == 0:
                save_checkpoint(self.session, Path(checkpoint_dir), step + 1, strength)
            if best is not None and ((step + 1) % guard_every == 0 or step == steps - 1):
                val, hits = self.validate(unit_mask)
                if not curve or curve[-1]["step"] != step:
                    curve.append({"phase": label, "step": step, "loss": loss,
                                  "task_loss": float(self.last["task_loss"]), "lr": lr})
                curve[-1]["held_out_loss"] = val
                if hits is not None:
                    curve[-1]["held_out_top1"] = round(float(hits.mean()), 5)
                if val < best[0]:
                    best, high = (val, self.session.params(), step, hits), 0
                elif self.no_rate_found and best[2] < start_step and cuts < PLATEAU_CUTS:
                    # the probe's smallest rate still raised the loss and training has not yet got
                    # below its start: keep backing off (ppocr-rec after the refit of a 0.7 cut sits
                    # near the optimum, where Adam's fixed-size steps only drift)
                    self.session.load_params(best[1])
                    self.session.reset_optimizer()
                    self.base_lr /= 3.0
                    cuts += 1
                else:
                    # one noisy check on a small held-out set is no trend: stop after three in a row
                    high = high + 1 if val > 2.0 * best[0] + 1e-6 else 0
                    if high >= 3:
                        self.notes.append(f"{label}: the held-out loss stayed above twice its best ({best[0]:.4g}) "
                                          f"for three checks, {val:.4g} at step {step + 1}; stopped early")
                        self.steps_run = step + 1 - start_step
                        break
        if cuts:
            self.notes.append(f"{label}: the held-out loss was not below its start ({start[0]:.4g}) at {cuts} "
                              f"check(s); each went back to the start at a third of the rate, down to {self.base_lr:.3g}")
        drifted = best is not None and best[2] >= start_step and fewer_hits(best[3], start[3])
        if drifted:
            # a lower loss is not a better model where it moves the top class: the KL of a CTC recognizer
            # can fall while its greedy decode drifts (ppocr-rec at 0.7 of the MACs)
            self.session.load_params(start[1])
            self.notes.append(f"{label}: rolled back to the start: at step {best[2] + 1}, the lowest held-out loss "
                              f"({best[0]:.4g}), the held-out top-1 agreement {best[3].mean():.4f} was below the "
                              f"start's {start[3].mean():.4f}")
        elif best is not None and best[2] != step:
            self.session.load_params(best[1])
            where = "the start" if best[2] < start_step else f"step {best[2] + 1}"
            self.notes.append(f"{label}: rolled back to {where}, whose held-out loss {best[0]:.4g} was the lowest")
        if best is not None and start[3] is not None:
            end = start if drifted else best
            self.notes.append(f"{label}: held-out top-1 agreement with the original {start[3].mean():.4f} at the "
                              f"start, {end[3].mean():.4f} at the end")
        return curve

    def _step(self, weights, strength: float, mask, unit_mask) -> tuple[float, dict]:
        """One optimizer step (gradients accumulated over `accumulate` micro-batches)."""
        losses = []
        for k in range(self.accumulate):
            feeds = self._batch()
            feeds[REG_WEIGHTS] = weights
            feeds[REG_STRENGTH] = np.array(strength / self.accumulate, np.float32)
            feeds[UNIT_MASK] = mask
            feeds.update(self.method.step_inputs(self.rng, self.last, unit_mask))
            outs = self.session.train_step(feeds, apply=(k == self.accumulate - 1))
            losses.append((float(outs["onnxmorph_loss"]), float(outs["onnxmorph_task_loss"])))
        outs["onnxmorph_task_loss"] = np.float32(np.mean([t for _, t in losses]))
        return float(np.mean([x for x, _ in losses])), outs

    def validation_loss(self, unit_mask=None) -> float | None:
        """The distillation loss on every held-out row (None without them).

        After a cut the loss per row is heavy-tailed (ppocr-cls at 0.7 of the MACs: the median row's KL is 0,
        4 % of rows flip a confident prediction at KL 2-17), and a model of fixed batch 1 evaluated only four
        rows when this was four batches."""
        return self.validate(unit_mask)[0]

    def validate(self, unit_mask=None) -> tuple[float | None, np.ndarray | None]:
        """(distillation loss, top-1 hits) on every held-out row: the hits are 1/0 per row and position
        of every class output, where the student's top class is the teacher's (None without one)."""
        if not len(self.val_rows):
            return None, None
        values, hits = [], []
        for start in range(0, len(self.val_rows), self.micro):
            idx = self.val_rows[np.arange(start, start + self.micro) % len(self.val_rows)]
            outs = self._evaluate(idx, unit_mask)
            values.append(float(outs["task_loss"]))
            rows = min(self.micro, len(self.val_rows) - start)  # the last batch wraps around
            top1 = [v[:rows].reshape(rows, -1) for k, v in outs.items() if k.startswith(TOP1)]
            if top1:
                hits.append(np.concatenate(top1, axis=1) > 0.5)
        return float(np.mean(values)), (np.concatenate(hits).ravel() if hits else None)

    def choose_lr(self, start_lr: float, steps_each: int, unit_mask=None, tries: int = 4,
                  rise: float = PROBE_RISE) -> tuple[float, int]:
        """Back off from `start_lr` (by 3x, at most `tries` rates) until `steps_each` warmed-up steps from
        the current weights leave the held-out loss below `rise` times where it started; the weights
        are restored after each try. Returns (lr, steps spent).

        A few steps after a cut the loss often climbs before it falls (on the demo at 1/8 of the MACs,
        2x at the rate that ends best), so only a larger rise counts as divergence; the run's own
        guard rolls back anything the probe lets through."""
        if not len(self.val_rows) or steps_each < 1:
            return self.base_lr, 0
        u = self.analysis.num_units
        mask = np.ones(u, np.float32) if unit_mask is None else unit_mask.astype(np.float32)
        start = self.session.params()
        before = self.validation_loss(unit_mask)
        tried, lr = [], start_lr
        for _ in range(tries):
            for k in range(steps_each):  # warmed up like the run itself: Adam's first steps are its largest
                self.session.set_lr(lr * (k + 1) / steps_each)
                loss, _ = self._step(np.zeros(u, np.float32), 0.0, mask, unit_mask)
                if not math.isfinite(loss):
                    break
            val = self.validation_loss(unit_mask) if math.isfinite(loss) else math.inf
            self.session.load_params(start)
            self.session.reset_optimizer()  # each rate, and the run after the probe, starts afresh
            tried.append((lr, val))
            self.say("choosing the learning rate", lr=lr, loss=val)
            if val < rise * before:
                break
            lr /= 3.0
        text = ", ".join(f"{c:.3g} -> {v:.4g}" for c, v in tried)
        self.no_rate_found = tried[-1][1] >= rise * before
        if self.no_rate_found:
            lr = tried[-1][0]
            self.notes.append(f"every learning rate raised the held-out loss ({before:.4g}) in {steps_each} steps "
                              f"({text}); training at {lr:.3g}, the weights fall back to the best state seen")
        else:
            self.notes.append(f"learning rate {lr:.3g}: held-out loss {before:.4g} -> {tried[-1][1]:.4g} after "
                              f"{steps_each} probe steps" + (f" (backed off: {text})" if len(tried) > 1 else ""))
        self.base_lr = lr
        return lr, steps_each * len(tried)

    def probe_intact(self, start_lr: float, steps_each: int, share: float, tries: int = 4) -> tuple[float, int]:
        """The rate for training an intact model (before any cut): back off from `start_lr` by 3x until
        `steps_each` warmed-up steps with no regularizer keep the held-out loss within `share` of the way
        to the collapsed model's. The intact model is already the optimum of the distillation loss, so
        all a step can do there is damage it; a pretrained model with large weights lost its top-1
        (KL 0.26 -> 7.7 in 10 steps, ppocr-cls) at the rate scaled to its weights. Returns (lr, steps)."""
        if not len(self.val_rows) or steps_each < 1:
            return self.base_lr, 0
        u = self.analysis.num_units
        self.method.set_lr(start_lr, self.session)
        start = self.session.params()  # the method's own parameters at the pace of start_lr
        before = self.validation_loss()
        collapsed = self.validation_loss(np.zeros(u, np.float32))
        bound = before + share * max(collapsed - before, 0.0)
        tried, lr = [], start_lr
        for _ in range(tries):
            self.method.set_lr(lr, self.session)
            for k in range(steps_each):
                self.session.set_lr(lr * (k + 1) / steps_each)
                loss, outs = self._step(np.zeros(u, np.float32), 0.0, np.ones(u, np.float32), None)
                if not math.isfinite(loss):
                    break
                self.last = _short(outs)
            val = self.validation_loss() if math.isfinite(loss) else math.inf
            self.session.load_params(start)
            self.session.reset_optimizer()  # each rate, and the run after the probe, starts afresh
            self.method.set_lr(start_lr)
            self.last = {}
            tried.append((lr, val))
            self.say("choosing the learning rate", lr=lr, loss=val)
            if val <= bound:
                break
            lr /= 3.0
        text = ", ".join(f"{c:.3g} -> {v:.4g}" for c, v in tried)
        if len(tried) > 1:
            self.notes.append(f"learning rate {lr:.3g}: the held-out loss of the intact model ({before:.4g}; "
                              f"collapsed {collapsed:.4g}) after {steps_each} steps at each rate tried: {text}")
        self.base_lr = lr
        self.method.set_lr(lr, self.session)
        return lr, steps_each * len(tried)

    def _evaluate(self, idx: np.ndarray | None = None, unit_mask=None) -> dict:
        """The eval graph's outputs on rows `idx` (default: the next training batch), no regularizer."""
        feeds = self._batch(idx)
        u = self.analysis.num_units
        feeds[REG_WEIGHTS] = np.zeros(u, np.float32)
        feeds[REG_STRENGTH] = np.array(0.0, np.float32)
        feeds[UNIT_MASK] = np.ones(u, np.float32) if unit_mask is None else unit_mask.astype(np.float32)
        feeds.update(self.method.eval_inputs())
        return _short(self.session.evaluate(feeds))

    def final_outputs(self) -> dict:
        return self._evaluate()

    def close(self):
        self.session.close()


def train_method(method, analysis, cost_model, *, data, seed=0, metric="macs", fraction=0.5, progress=None,
                 labels=None, steps=400, batch_size=TRAIN.batch_size, lr=None, optimizer=TRAIN.optimizer,
                 temperature=TRAIN.temperature, distill_weight=TRAIN.distill_weight, strength=None, log_every=10,
                 checkpoint_every=0, checkpoint_dir=None, resume=None, engine=TRAIN.engine, device=TRAIN.device,
                 **_ignored) -> FitResult:
    """Regularized fine-tuning: the cost regularizer's strength tracks a budget shrinking to the target."""
    t0 = time.perf_counter()
    auto_lr = lr is None
    if auto_lr:
        lr = weight_scaled_lr(analysis.loaded.model, weight_initializers(analysis.loaded.graph()))
    trainer = Trainer(method, analysis, data=data, labels=labels, seed=seed, batch_size=batch_size,
                      lr=lr, optimizer=optimizer, temperature=temperature, distill_weight=distill_weight,
                      progress=progress, engine=engine, device=device)
    method.set_lr(lr, trainer.session)
    full = cost_model.total(metric)
    start, lam = 0, (strength if strength is not None else 0.01)
    if resume:
        start, lam = load_checkpoint(trainer.session, Path(resume))
        trainer.notes.append(f"resumed from {resume} at step {start}")
    probe = 0
    if auto_lr and not resume and damage_share(fraction) < 1.0:
        _, probe = trainer.probe_intact(lr, probe_steps(steps), damage_share(fraction))
        start = probe  # the probe's steps come out of the budget

    level = lam  # the strength applied while the cost is above the budget
    frozen_at = None  # the step at which the method's decision was held at the target

    def topped_up():
        """The open gates plus, most probable first, the closed ones that still fit the target: gates
        close in bunches under Adam, so the step that reaches the target overshoots it."""
        last = trainer.last
        keep = method.alive(last).copy()
        for unit in np.argsort(-np.asarray(method.keep_probability(last), float), kind="stable"):
            if not keep[unit]:
                keep[unit] = True
                keep[unit] = cost_model.total(metric, keep) <= fraction * full
        return keep

    # the strength may grow 1e4-fold within half the steps: a short budget must reach the target too
    growth = max(1.08, 10.0 ** (4.0 / max(1.0, 0.5 * steps)))

    def controller(step, keep, lam):
        """Bang-bang with memory: under Adam a gate closes at full speed whenever the regularizer
        outweighs a (near-zero) task gradient, whatever the strength, so the strength is switched
        off once the cost is within budget and resumes, a little weaker, if the cost climbs back.
        The cost is the lower of the expected one (gate probabilities: no lag while gates close) and
        the hard one (logit > 0: gates parked at the lower logit bound still count ~5 % open in the
        expected cost, which kept the strength on far below the target). Once the hard cost is at the
        target, methods that can hold their decision (gates) stop there."""
        nonlocal level, frozen_at
        hard = cost_model.total(metric, method.alive(trainer.last)) / full
        cost = min(hard, cost_model.total(metric, keep) / full)
        if strength is not None:
            return lam, cost
        if frozen_at is None and method.holds and hard <= fraction:
            method.freeze(trainer.session, topped_up())
            frozen_at = step
        if frozen_at is not None:
            return 0.0, cost_model.total(metric, method.alive(trainer.last)) / full
        budget = 1.0 - (1.0 - fraction) * min(1.0, (step + 1) / max(1.0, 0.6 * steps))
        if cost > budget:
            level = float(min(level * growth, 1e6))
            return level, cost
        level = float(max(level * 0.9, 1e-5))
        return 0.0, cost

    try:
        curve = trainer.run(steps, reg_weights=lambda keep: cost_model.marginal(metric, keep) / full,
                            strength=lam, controller=controller, log_every=log_every,
                            checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir, start_step=start)
        last = trainer.final_outputs()
        importance = method.final_importance(last)
        params = trainer.session.params()
        reached = cost_model.total(metric, method.alive(last)) / full
    finally:
        trainer.close()
    held = f", held from step {frozen_at}" if frozen_at is not None else ""
    notes = trainer.notes + [f"trained {steps - start} steps (and {probe} choosing the learning rate) in {time.perf_counter() - t0:.1f} s; the gates "
                             f"left {reached:.3f} of the original {metric} alive (target {fraction:g}{held}) "
                             f"by the end of training"]
    training = {"end_cost_fraction": round(float(reached), 5), "target": fraction, "held_from_step": frozen_at}
    return FitResult(importance, params, curve, notes, extra={"training": training})


def probe_steps(steps: int) -> int:
    """Steps per rate tried by a learning-rate probe within a budget of `steps`."""
    return max(2, min(10, steps // 30))


def weight_scaled_lr(model, names) -> float:
    """A learning rate for Adam in proportion to the model's weights: Adam moves every weight by about
    lr per step, so a model whose weights are ~0.02 needs a tenth of the rate one at ~0.2 tolerates.
    LR_PER_WEIGHT (the step as a share of the median layer's RMS weight) was measured on the demo."""
    names = set(names)
    rms = [float(np.sqrt(np.mean(np.square(numpy_helper.to_array(t).astype(np.float64)))))
           for t in model.graph.initializer if t.name in names and len(t.dims) >= 2]
    rms = [r for r in rms if r > 0]
    return LR_PER_WEIGHT * float(np.median(rms)) if rms else 3e-3




def recover(analysis, keep_units: np.ndarray, *, data, steps: int, seed=0, progress=None, labels=None,
            batch_size=TRAIN.batch_size, lr=None, optimizer=TRAIN.optimizer, temperature=TRAIN.temperature,
            distill_weight=TRAIN.distill_weight, teacher=None, engine=TRAIN.engine, device=TRAIN.device,
            val_rows=None, mix_inputs: bool = False, **_ignored) -> FitResult:
    """Distillation fine-tuning of the masked model (0/1 gates fixed to `keep_units`), starting from
    `analysis`'s current weights; `teacher`: the untouched model (default `analysis.loaded.model`).

    `steps` optimizer steps in all: with `lr` None, a few go to a probe that picks the learning rate
    backing off from `weight_scaled_lr` (of the teacher's weights) until the held-out loss falls.
    The weights end at the state of lowest held-out loss. `mix_inputs`: without labels, distil on
    blends of the rows (`Trainer._mixed`)."""
    t0 = time.perf_counter()
    names = weight_initializers(analysis.loaded.graph())
    base = weight_scaled_lr(teacher or analysis.loaded.model, names) if lr is None else lr
    trainer = Trainer(FixedMask(), analysis, data=data, labels=labels, seed=seed,
                      batch_size=batch_size, lr=base, optimizer=optimizer, temperature=temperature,
                      distill_weight=distill_weight, progress=progress, teacher=teacher, engine=engine,
                      device=device, val_rows=val_rows, mix_inputs=mix_inputs)
    try:
        spent = 0
        if lr is None:
            _, spent = trainer.choose_lr(base, probe_steps(steps), keep_units)
        curve = trainer.run(max(0, steps - spent), reg_weights=lambda keep: np.zeros(len(keep)), strength=0.0,
                            unit_mask=keep_units, label="recovery", guard_every=max(5, steps // 10))
        params = trainer.session.params()
    finally:
        trainer.close()
    notes = trainer.notes + [f"recovery fine-tuning: {spent + trainer.steps_run} of {steps} steps ({spent} of them "
                             f"choosing the learning rate) in {time.perf_counter() - t0:.1f} s"]
    return FitResult(np.zeros(0), params, curve, notes, extra={"lr": trainer.base_lr, "probe_steps": spent})


def save_checkpoint(session: TrainingSession, folder: Path, step: int, lam: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    session.save(folder / "checkpoint")
    (folder / "loop.json").write_text(json.dumps({"step": step, "strength": lam}))


def load_checkpoint(session: TrainingSession, folder: Path) -> tuple[int, float]:
    try:
        session.load(folder / "checkpoint")
        loop = json.loads((folder / "loop.json").read_text())
    except Exception as exc:
        raise OnnxMorphError(f"--resume {folder}: not an onnxmorph checkpoint of this model "
                             f"({type(exc).__name__})") from None
    return int(loop["step"]), float(loop["strength"])
