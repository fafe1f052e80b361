"""Pruning methods: each scores the prunable units; `decide` turns scores into a keep-mask.

Every method module is listed here, and only here: importing this package registers them all."""

from ..errors import UsageError
from . import fisher, magnitude, trained  # noqa: F401  (each module registers its methods)
from .base import PruningMethod, method_class, registered_methods
from .decide import Selection, select_units

METHOD_MODULES = (fisher, magnitude, trained)


def method_names() -> list[str]:
    return registered_methods()


def get_method(name: str, **options) -> PruningMethod:
    cls = method_class(name)
    if cls is None:
        raise UsageError(f"unknown method '{name}': choose one of {', '.join(registered_methods())}")
    return cls(**options)


__all__ = ["METHOD_MODULES", "PruningMethod", "Selection", "get_method", "method_names", "select_units"]
