"""What fitting a method hands to the decision (and what recovery returns): unit importance, the
fine-tuned weights, the training curve, notes and report entries."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FitResult:
    """What a method hands to the decision: unit importance, and fine-tuned weights if it trained."""

    importance: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # method-specific report entries (e.g. pruning order)
