"""Fisher pruning (Theis et al. 2018; twml's PruningOptimizer) on ONNX Runtime training.

A mask tiled over the batch ([batch, units], all ones) multiplies every gate point, so the
gradient ONNX Runtime computes for it is, per example n and unit k, g_nk = sum a * dL/da over
every position of the unit's coupled channels. The signal Delta_k = 1/2 mean_n g_nk^2 is smoothed
by an EMA; after a burn-in, every few steps units are removed one at a time, each the one with the
smallest Delta_k / dC_k (or Delta_k - w * dC_k), dC being the cost it saves now, until the cost is
within a schedule that falls geometrically to the target by 85 % of the steps: the target is reached
during training, not left to one large cut at the end. Removed units stay at 0.
Without labels, the loss is cross-entropy on labels drawn from the original model's own
predictions (the model's Fisher information), mixed with distillation: one label per sample, or per
position for class maps and sequences ([N, C, H, W], [N, H, W, C], CTC's [N, T, C]).
"""

from __future__ import annotations

import time

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UsageError
from ..options import TrainConfig
from ..gates import gate_shape, insert_gates
from ..train.instrument import Instrumented
from ..train.result import FitResult
from .base import register_method
from .trained import TrainedMethod

FISHER_MASK = "onnxmorph_fisher_mask"
SCHEDULE_END = 0.85  # share of the steps by which removals reach the target; the rest trains the final shape
TRAIN = TrainConfig()  # the training defaults
OVERSHOOT = 0.02  # the last removals avoid going more than this share below the target when they can


@register_method
class FisherMethod(TrainedMethod):
    name = "fisher"

    def min_keep(self, fraction: float) -> float:
        return 0.0  # learned scores already weigh cost; their choice stands

    def __init__(self, fisher_decay: float = 0.96, burn_in: int | None = None, prune_every: int | None = None,
                 flops_weight="auto", prune_per_event: int | None = None, **options):
        super().__init__(**options)
        self.decay = float(fisher_decay)
        self.burn_in, self.prune_every, self.per_event = burn_in, prune_every, prune_per_event
        if isinstance(flops_weight, str) and flops_weight != "auto":
            try:
                flops_weight = float(flops_weight)
            except ValueError:
                raise UsageError(f"--flops-weight must be 'auto' or a number, got '{flops_weight}'") from None
        self.flops_weight = flops_weight

    # graph
    def instrument(self, graph, analysis, b) -> Instrumented:
        from ..train.graph import UNIT_MASK

        u = analysis.num_units
        batch = int(graph.inputs[0].shape[0])
        self.batch = batch
        unit_mask = b.input(UNIT_MASK, [u])
        mask = gs.Constant(FISHER_MASK, np.ones((batch, u), np.float32))
        per_example = b.op("Mul", [mask, unit_mask])
        full = b.op("Concat", [per_example, b.const(np.ones((batch, 1)))], {"axis": 1})

        def gate(name, cmap, tensor):
            if 0 in cmap.axes:
                raise UsageError(f"fisher: tensor '{name}' has channels on the batch axis")
            units = analysis.unit_of_element[cmap.ids]
            index = np.where(units >= 0, units, u).astype(np.int64).ravel()
            picked = b.op("Gather", [full, b.const(index, np.int64)], {"axis": 1})
            shape = gate_shape(cmap, len(tensor.shape))
            shape[0] = batch
            return b.op("Reshape", [picked, b.const(shape, np.int64)])

        insert_gates(graph, analysis, gate)
        return Instrumented({FISHER_MASK: mask.values}, b.const(np.zeros(u)))

    def after_step(self, session) -> None:
        self.last_grad = session.grad(FISHER_MASK)
        session.load_params({FISHER_MASK: np.tile(self.keep.astype(np.float32), (self.batch, 1))})

    def alive(self, last):
        return self.keep

    def fit(self, analysis, cost_model, **kw) -> FitResult:
        return self._fit(analysis, cost_model, **{**self.options, **kw})

    # the pruning loop
    def _fit(self, analysis, cost_model, *, data, seed=0, metric="macs", fraction=0.5, progress=None,
             labels=None, steps=400, batch_size=TRAIN.batch_size, lr=None, optimizer=TRAIN.optimizer,
             temperature=TRAIN.temperature, distill_weight=TRAIN.distill_weight, engine=TRAIN.engine,
             device=TRAIN.device, **_ignored) -> FitResult:
        from ..methods.decide import RemovalState
        from ..train.graph import weight_initializers
        from ..train.loop import Trainer, damage_share, probe_steps, weight_scaled_lr

        t0 = time.perf_counter()
        auto_lr = lr is None
        if auto_lr:
            lr = weight_scaled_lr(analysis.loaded.model, weight_initializers(analysis.loaded.graph()))
        u = analysis.num_units
        state = RemovalState(analysis, cost_model, metric)
        self.keep = state.keep  # removed units stay 0 in the mask (after_step) and in the cost
        full = cost_model.total(metric)
        target = fraction * full
        burn_in = self.burn_in if self.burn_in is not None else max(1, steps // 10)
        every = self.prune_every or 1
        end = max(burn_in + 1, int(SCHEDULE_END * steps))

        def budget(step):
            """The cost allowed after the event at `step`: falls geometrically from 1 at the burn-in to the
            target at SCHEDULE_END of the steps (equal relative cuts: the small late model loses less)."""
            return fraction ** min(1.0, (step - burn_in + 1) / (end - burn_in))

        trainer = Trainer(self, analysis, data=data, labels=labels, seed=seed, batch_size=batch_size,
                          lr=lr, optimizer=optimizer, temperature=temperature, distill_weight=distill_weight,
                          progress=progress, sample_labels=True, engine=engine, device=device)
        # the probe's steps come out of the budget (before the burn-in's end: nothing is removed yet)
        share = damage_share(fraction)
        probe = trainer.probe_intact(lr, probe_steps(steps), share)[1] if auto_lr and share < 1 else 0
        burn_in = max(burn_in, probe)
        end = max(burn_in + 1, int(SCHEDULE_END * steps))
        delta = None
        order: list[dict] = []

        def controller(step, keep, lam):
            nonlocal delta
            g = self.last_grad.astype(np.float64)
            signal = 0.5 * (g * g).mean(axis=0)
            delta = signal if delta is None else self.decay * delta + (1 - self.decay) * signal
            cost = cost_model.total(metric, self.keep)
            if step >= burn_in and (step - burn_in) % every == 0 and cost > target:
                allowed = max(target, budget(step) * full)
                removed = 0
                while cost > allowed and (self.per_event is None or removed < self.per_event):
                    # savings are recomputed after every removal: a channel saves less once its
                    # neighbours have shrunk
                    saving = cost_model.marginal(metric, self.keep)
                    ok = self.keep & (saving > 0)
                    for x in np.nonzero(ok)[0]:
                        ok[x] = state.legal([x])
                    if not ok.any():
                        break
                    # don't let the last channel overshoot the target (a stem channel can be worth several
                    # % of the MACs) where the channels that don't can together still reach it
                    near = ok & (cost - saving >= (1 - OVERSHOOT) * target)
                    if near.any() and cost - saving[near].sum() <= target:
                        ok = near
                    if self.flops_weight == "auto":
                        score = delta / np.maximum(saving, 1e-12)
                    else:
                        score = delta - float(self.flops_weight) * saving / full
                    score = np.where(ok, score, np.inf)
                    x = int(np.argmin(score))
                    if not order:
                        self.first_event = {"delta": delta.copy(), "saving": saving.copy(), "ok": ok.copy()}
                    state.remove([x], *state.saving([x])[1:])
                    cost -= saving[x]
                    removed += 1
                    order.append({"step": step, "unit": x, "signal": float(delta[x]), "delta_cost": float(saving[x])})
            return lam, cost / full

        try:
            curve = trainer.run(steps, reg_weights=lambda keep: np.zeros(u), strength=0.0, controller=controller,
                                label="fisher", start_step=probe)
            params = trainer.session.params()
        finally:
            trainer.close()
        params.pop(FISHER_MASK, None)
        # removed units first, in removal order; then the rest by their smoothed signal
        importance = np.asarray(delta if delta is not None else np.zeros(u), np.float64).copy()
        for rank, event in enumerate(order):
            importance[event["unit"]] = -1.0 - (len(order) - rank)
        group_of = analysis.group_of_unit()
        for event in order:
            g = analysis.groups[group_of[event["unit"]]]
            event["group"] = g.name
            event["channel"] = g.units.index(event["unit"])
        reached = cost_model.total(metric, self.keep) / full
        notes = trainer.notes + [f"fisher: removed {len(order)} channels in {steps} steps "
                                 f"({time.perf_counter() - t0:.1f} s), reaching {reached:.3f} of the original "
                                 f"{metric} (target {fraction:g}) by the end of training"]
        training = {"end_cost_fraction": round(float(reached), 5), "target": fraction,
                    "schedule": f"geometric from step {burn_in} to {end}"}
        return FitResult(importance, params, curve, notes, extra={"pruning_order": order, "training": training})
