"""The interface every method shares, and the registry the CLI chooses from."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

_METHODS: dict[str, type["PruningMethod"]] = {}


class PruningMethod:
    """Scores prunable units (higher = more important) for the shared greedy decision."""

    name = ""
    needs_data = False

    def __init__(self, **options):
        self.options = options

    def importance(self, analysis, cost_model, *, data=None, seed: int = 0) -> np.ndarray:
        raise NotImplementedError


def register_method(cls):
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get_method(name: str, **options) -> PruningMethod:
    _load_all()
    if name not in _METHODS:
        raise UsageError(f"unknown method '{name}': choose one of {', '.join(sorted(_METHODS))}")
    return _METHODS[name](**options)


def _load_all() -> None:
    from . import magnitude  # noqa: F401
