"""Walking an onnx-graphsurgeon graph from a tensor to the node that made it."""

from __future__ import annotations


def producer(t):
    """The node that writes tensor `t` (None for graph inputs, constants and ambiguous tensors)."""
    producers = getattr(t, "inputs", None) or []
    return producers[0] if len(producers) == 1 else None


def is_constant(t) -> bool:
    """Whether `t` is an onnx-graphsurgeon Constant (an initializer or a folded value)."""
    return type(t).__name__ == "Constant"
