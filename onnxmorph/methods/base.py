"""The interface every method shares, and the registry the CLI chooses from."""

from __future__ import annotations

import numpy as np

from ..train.result import FitResult

_METHODS: dict[str, type["PruningMethod"]] = {}


class PruningMethod:
    """Scores prunable units (higher = more important) for the shared greedy decision."""

    name = ""
    needs_data = False
    trains = False
    per_cost = True  # rank by importance per cost saved (one-shot scores); trained gates already weigh cost

    def min_keep(self, fraction: float) -> float:
        """Share of every group kept at least. One-shot scores per FLOP would otherwise thin the most
        expensive layer to a channel or two; half the uniform channel ratio (sqrt of the target) leaves
        the ranking free while no layer becomes a bottleneck."""
        return 0.5 * fraction ** 0.5

    def __init__(self, **options):
        from ..train.engine import check_engine

        check_engine(options.get("engine", "onnxmorph"), options.get("device", "cpu"))
        self.options = options

    def importance(self, analysis, cost_model, *, data=None, seed: int = 0) -> np.ndarray:
        raise NotImplementedError

    def fit(self, analysis, cost_model, *, data=None, seed: int = 0, **context) -> FitResult:
        return FitResult(self.importance(analysis, cost_model, data=data, seed=seed))


def register_method(cls):
    _METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[PruningMethod] | None:
    """The method registered as `name` (None: none is)."""
    return _METHODS.get(name)


def registered_methods() -> list[str]:
    return sorted(_METHODS)
