"""MorphNet regularizers trained with ONNX Runtime: FiGS gates, Gamma (|BN scale|), GroupLasso.

Each method adds to the training graph a per-unit regularization vector `r` (one entry per
prunable unit = coupled channel set); the engine weighs it by the cost each unit carries
(FLOPs, params or latency, alive counts held constant) so the loss is MorphNet's bilinear
cost regularizer. Coupled channels combine by max (Gamma, GroupLasso: the index of the max is
fed back each step, so the gradient goes to the arg-max as max's subgradient does); FiGS has
one gate per unit, so coupling is built in.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UsageError
from ..train.instrument import Instrumented, MaskedTraining
from .base import PruningMethod, register_method

GATE_PARAM = "onnxmorph_gate_theta"
GATE_NOISE = "onnxmorph_gate_noise"
GATE_STRAIGHT = "onnxmorph_gate_hard_minus_soft"
GATE_SCALE = "onnxmorph_gate_scale"
REG_INDEX = "onnxmorph_reg_index"


class TrainedMethod(MaskedTraining, PruningMethod):
    """Shared plumbing: gates at every gate point, each the unit's (optional) learned gate times a
    fixed 0/1 unit mask; training happens in `onnxmorph.train.loop`; subclasses define r and alive."""

    needs_data = True
    trains = True
    per_cost = False

    def min_keep(self, fraction: float) -> float:
        return 0.0  # learned scores already weigh cost; their choice stands

    def fit(self, analysis, cost_model, *, data, seed=0, metric="macs", fraction=0.5, progress=None, **kw):
        from ..train.loop import train_method

        return train_method(self, analysis, cost_model, data=data, seed=seed, metric=metric,
                            fraction=fraction, progress=progress, **{**self.options, **kw})


@register_method
class GatesMethod(TrainedMethod):
    """LogisticSigmoid / FiGS gates: mask = sigmoid((logit + L) / tau), L ~ Logistic(0, 1)."""

    name = "gates"
    holds = True
    # A gate's logit moves this much per Adam step, whatever the weights' rate: logit = scale * theta
    # with scale = GATE_STEP / lr (on the demo, lr 9.6e-3, that is the scale of 30 it was tuned with).
    # With one fixed scale a model whose weights get a 5x smaller rate had gates that did not move
    # in 150 steps (resnet_bn).
    GATE_STEP = 0.2877
    LOGIT_RANGE = (-3.0, 6.0)  # keeps closed gates able to reopen (sigmoid' stays non-zero)

    # `gate_temperature`, not `temperature`: that name is the distillation temperature of the loop
    def __init__(self, gate_temperature: float = 0.5, init_logit: float = 4.0, straight_through: bool = True,
                 **options):
        super().__init__(**options)
        self.tau, self.init_logit, self.straight = gate_temperature, init_logit, straight_through
        self.units = 0
        self.scale = 30.0
        self.frozen = None  # theta held once the cost reached the target

    def set_lr(self, lr, session=None):
        scale = self.GATE_STEP / lr
        if session is not None:  # the same logits under the new scale
            session.load_params({GATE_PARAM: (session.param(GATE_PARAM) * (self.scale / scale)).astype(np.float32)})
        self.scale = scale

    def gate_values(self, analysis, b):
        u = self.units = analysis.num_units
        self.frozen = None
        self.theta = gs.Constant(GATE_PARAM, np.full(u, self.init_logit / self.scale, np.float32))
        noise = b.input(GATE_NOISE, [u])
        self.logits = b.op("Mul", [self.theta, b.input(GATE_SCALE, [1])])
        soft = b.op("Sigmoid", [b.op("Div", [b.op("Add", [self.logits, noise]), b.const(self.tau)])])
        return b.op("Add", [soft, b.input(GATE_STRAIGHT, [u])])  # forward: hard 0/1 with straight-through

    def regularizer(self, graph, analysis, b) -> Instrumented:
        prob = b.op("Sigmoid", [self.logits])
        return Instrumented({GATE_PARAM: self.theta.values}, prob, {"logits": self.logits},
                            {"logits": [self.units]})

    def step_inputs(self, rng, last, unit_mask=None):
        u = self.units
        p = rng.random(u).clip(1e-6, 1 - 1e-6)
        noise = np.log(p) - np.log1p(-p) if self.frozen is None else np.zeros(u)
        hms = np.zeros(u, np.float32)
        if self.straight and "logits" in last:
            soft = 1.0 / (1.0 + np.exp(-(last["logits"] + noise) / self.tau))
            hms = ((soft > 0.5).astype(np.float64) - soft).astype(np.float32)
        return {GATE_NOISE: noise.astype(np.float32), GATE_STRAIGHT: hms, GATE_SCALE: self._scale()}

    def eval_inputs(self):
        return {GATE_NOISE: np.zeros(self.units, np.float32), GATE_STRAIGHT: np.zeros(self.units, np.float32),
                GATE_SCALE: self._scale()}

    def _scale(self):
        return np.array([self.scale], np.float32)

    def after_step(self, session) -> None:
        theta = session.param(GATE_PARAM)
        lo, hi = (v / self.scale for v in self.LOGIT_RANGE)
        held = np.clip(theta, lo, hi) if self.frozen is None else self.frozen
        if not np.array_equal(held, theta):
            session.load_params({GATE_PARAM: held})

    def freeze(self, session, keep):
        # Adam's momentum would carry closing gates on well past the budget, and the task gradient
        # is too weak to reopen them: fix the gates at `keep` (noise off, so they are exactly 0/1),
        # the weights train on under the mask the cut will apply
        lo, hi = (v / self.scale for v in self.LOGIT_RANGE)
        self.frozen = np.where(keep, hi, lo).astype(np.float32)
        session.load_params({GATE_PARAM: self.frozen})

    def alive(self, last):
        return np.asarray(last["logits"]) > 0

    def keep_probability(self, last):
        return 1.0 / (1.0 + np.exp(-np.asarray(last["logits"], np.float64)))

    def final_importance(self, last):
        return 1.0 / (1.0 + np.exp(-np.asarray(last["logits"], np.float64)))


class _MaxOverCandidates(TrainedMethod):
    """r_u = max over the unit's channels of a per-channel value (|gamma| or a weight-group norm).

    A unit counts as alive while r_u keeps at least `alive_ratio` of its value at the start of
    fine-tuning: MorphNet's absolute thresholds (|gamma| < 1e-2) assume training from scratch, whereas a
    short post-training fine-tune moves r by a fraction, and the final cut is by r anyway."""

    alive_ratio = 0.5

    def __init__(self, **options):
        super().__init__(**options)
        self._r0 = None  # r at the first step: the reference for `alive`

    def candidates(self, graph, analysis, b) -> list[tuple[gs.Tensor, object]]:
        """(per-position value vector, weight ref) for every source of per-channel values."""
        raise NotImplementedError

    def regularizer(self, graph, analysis, b) -> Instrumented:
        sources = self.candidates(graph, analysis, b)
        if not sources:
            raise UsageError(f"method '{self.name}' found nothing to regularize in this model"
                             + (" (no BatchNormalization: the exporter folded it into the convs); use gates, "
                                "group-lasso or fisher" if self.name == "gamma" else ""))
        u = analysis.num_units
        per_unit: list[list[int]] = [[] for _ in range(u)]
        offset = 0
        for vec, ref in sources:
            cmap = analysis.maps[ref.tensor]
            units = analysis.unit_of_element[cmap.ids.ravel()]
            for p, unit in enumerate(units.tolist()):
                if unit >= 0:
                    per_unit[unit].append(offset + p)
            offset += cmap.ids.size
        self.total = offset
        self.per_unit = per_unit
        self.covered = np.array([bool(c) for c in per_unit])
        values = b.op("Concat", [v for v, _ in sources] + [b.const([0.0])], {"axis": 0}) if sources else \
            b.const([0.0])
        index = b.input(REG_INDEX, [u], dtype=np.int64)
        r = b.op("Gather", [values, index], {"axis": 0})
        self._index = np.array([c[0] if c else offset for c in per_unit], np.int64)
        return Instrumented({}, r, {"candidates": values}, {"candidates": [offset + 1]})

    def step_inputs(self, rng, last, unit_mask=None):
        if "candidates" in last:
            vals = np.asarray(last["candidates"])
            self._index = np.array([c[int(np.argmax(vals[c]))] if c else self.total for c in self.per_unit],
                                   np.int64)
        return {REG_INDEX: self._index}

    def eval_inputs(self):
        return {REG_INDEX: self._index}

    def alive(self, last):
        r = np.asarray(last["reg_vector"], np.float64)
        if self._r0 is None:
            self._r0 = r.copy()
        return (r >= self.alive_ratio * self._r0) | ~self.covered

    def final_importance(self, last):
        r = np.asarray(last["reg_vector"], dtype=np.float64)
        return np.where(self.covered, r, np.inf)


@register_method
class GammaMethod(_MaxOverCandidates):
    """MorphNet Gamma: r = |BatchNorm scale|; units without a BatchNorm are never pruned by it."""

    name = "gamma"

    def candidates(self, graph, analysis, b):
        tensors = graph.tensors()
        nodes = {n.name: n for n in graph.nodes}
        out = []
        for ref in analysis.weights:
            node = nodes.get(ref.node)
            if node is not None and node.op == "BatchNormalization" and node.inputs[1].name == ref.name:
                out.append((b.op("Abs", [tensors[ref.name]]), ref))
        return out


@register_method
class GroupLassoMethod(_MaxOverCandidates):
    """MorphNet GroupLasso: per output channel l1_fraction*mean|w| + (1 - l1_fraction)*sqrt(mean w^2)."""

    name = "group-lasso"

    def __init__(self, l1_fraction: float = 0.0, **options):
        super().__init__(**options)
        self.l1_fraction = l1_fraction

    def candidates(self, graph, analysis, b):
        tensors = graph.tensors()
        out = []
        for ref in analysis.weights:
            if not ref.produces or ref.name not in tensors:
                continue
            w = tensors[ref.name]
            n = ref.const.shape[ref.axis]
            k = ref.const.size // n
            perm = [ref.axis] + [a for a in range(ref.const.ndim) if a != ref.axis]
            flat = b.op("Reshape", [b.op("Transpose", [w], {"perm": perm}), b.const([n, k], np.int64)])
            ones = b.const(np.full((k, 1), 1.0 / k))
            rms = b.op("Sqrt", [b.op("Add", [b.op("MatMul", [b.op("Mul", [flat, flat]), ones]), b.const(1e-12)])])
            norm = rms
            if self.l1_fraction > 0:
                l1 = b.op("MatMul", [b.op("Abs", [flat]), ones])
                norm = b.op("Add", [b.op("Mul", [l1, b.const(self.l1_fraction)]),
                                    b.op("Mul", [rms, b.const(1 - self.l1_fraction)])])
            out.append((b.op("Reshape", [norm, b.const([n], np.int64)]), ref))
        return out
