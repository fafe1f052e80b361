"""Pruning methods: each scores the prunable units; `decide` turns scores into a keep-mask."""

from .base import PruningMethod, get_method, method_names
from .decide import Selection, select_units

__all__ = ["PruningMethod", "Selection", "get_method", "method_names", "select_units"]
