"""What kind of tensor each model output is, read from the values it takes on real inputs.

One classification serves the distillation loss (train/) and the fidelity figure (fidelity.py):
- "probs": softmax already applied (non-negative, sums to 1 along the class axis), e.g. a
  classifier ending in Softmax or a CTC recognizer's [N, T, classes];
- "logits": [N, C] floats that are not probabilities;
- "dense": any other float output (detection/segmentation maps, embeddings, regressions);
- "skip": non-float outputs (indices, masks), which carry nothing to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutputKind:
    kind: str  # "probs" | "logits" | "dense" | "skip"
    class_axis: int | None = None  # for probs/logits

    @property
    def is_class(self) -> bool:
        return self.kind in ("probs", "logits")


def _sums_to_one(values: np.ndarray, axis: int) -> bool:
    if values.shape[axis] < 2:
        return False
    total = values.sum(axis=axis, dtype=np.float64)
    return bool(np.all(np.abs(total - 1.0) < 1e-3))


def classify_output(values: np.ndarray) -> OutputKind:
    """The kind of one output from its values on a batch (batch axis first)."""
    if not np.issubdtype(values.dtype, np.floating) or values.ndim == 0:
        return OutputKind("skip")
    v = np.asarray(values, np.float64)
    if v.size and np.all(np.isfinite(v)) and v.min() >= -1e-6 and v.max() <= 1 + 1e-6 and v.ndim >= 2:
        for axis in (v.ndim - 1, 1):  # CTC / sequence outputs are class-last; [N, C, ...] maps class-second
            if _sums_to_one(v, axis):
                return OutputKind("probs", axis)
    if v.ndim == 2 and v.shape[1] > 1:
        return OutputKind("logits", 1)
    return OutputKind("dense")


def classify_outputs(outputs: dict[str, np.ndarray]) -> dict[str, OutputKind]:
    return {name: classify_output(values) for name, values in outputs.items()}
