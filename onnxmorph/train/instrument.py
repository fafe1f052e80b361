"""What the training loops need from the thing they train: a way to instrument the graph (gates at
every gate point, each the unit's optional learned gate times a fixed 0/1 unit mask) and the hooks
the loop calls each step. Methods (methods/trained.py) subclass `MaskedTraining`; recovery trains
a `FixedMask`, which has no regularizer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from ..gates import gate_shape, insert_gates
from .graph import UNIT_MASK


@dataclass
class Instrumented:
    params: dict[str, np.ndarray]  # new trainable initializers (name -> initial value)
    reg_vector: gs.Tensor  # [units]
    extra_outputs: dict[str, gs.Tensor] = field(default_factory=dict)
    extra_shapes: dict[str, list[int]] = field(default_factory=dict)


class MaskedTraining:
    """The instrumentation and per-step hooks of a trained method: subclasses define the learned
    gates (`gate_values`), the regularization vector r (`regularizer`) and which units are alive."""

    holds = False  # freeze() can hold the decision once the target is reached

    def instrument(self, graph: gs.Graph, analysis, b) -> Instrumented:
        u = analysis.num_units
        unit_mask = b.input(UNIT_MASK, [u])
        learned = self.gate_values(analysis, b)
        gate_vec = unit_mask if learned is None else b.op("Mul", [learned, unit_mask])
        full = b.op("Concat", [gate_vec, b.const([1.0])], {"axis": 0})  # index u: frozen positions

        def gate(name, cmap, tensor):
            units = analysis.unit_of_element[cmap.ids]
            index = np.where(units >= 0, units, u).astype(np.int64)
            picked = b.op("Gather", [full, b.const(index.ravel(), np.int64)], {"axis": 0})
            return b.op("Reshape", [picked, b.const(gate_shape(cmap, len(tensor.shape)), np.int64)])

        insert_gates(graph, analysis, gate)
        return self.regularizer(graph, analysis, b)

    # hooks
    def gate_values(self, analysis, b) -> gs.Tensor | None:
        """A learned per-unit gate vector, or None for methods without gates."""
        return None

    def regularizer(self, graph, analysis, b) -> Instrumented:
        raise NotImplementedError

    def step_inputs(self, rng: np.random.Generator, last: dict, unit_mask=None) -> dict[str, np.ndarray]:
        return {}

    def eval_inputs(self) -> dict[str, np.ndarray]:
        return {}

    def alive(self, last: dict) -> np.ndarray:
        raise NotImplementedError

    def keep_probability(self, last: dict) -> np.ndarray:
        """What the strength controller measures: 0/1 alive by default; gates give their open
        probability, whose expected cost moves with the logits at once instead of lagging the
        hard count by the dozens of steps a gate takes to cross zero."""
        return self.alive(last)

    def after_step(self, session) -> None:
        """Called after each optimizer step (e.g. to clamp parameters)."""

    def set_lr(self, lr: float, session=None) -> None:
        """The weights' learning rate is `lr` (parameters of the method's own may want another pace)."""

    def freeze(self, session, keep: np.ndarray) -> None:
        """The cost reached the target: hold the 0/1 decision `keep` from now on (only where `holds`:
        |gamma| and group norms are the weights themselves, nothing separate to hold)."""

    def final_importance(self, last: dict) -> np.ndarray:
        return np.asarray(last["reg_vector"], dtype=np.float64)


class FixedMask(MaskedTraining):
    """No regularizer: fine-tunes the weights under the fixed unit mask (recovery)."""

    name = "fixed-mask"

    def regularizer(self, graph, analysis, b) -> Instrumented:
        return Instrumented({}, b.const(np.zeros(analysis.num_units)))
