"""The handler interface and registry: one handler per ONNX op kind.

A handler says how channels pass through its op (`propagate`, during analysis)
and how to rewrite the op's constants once channels are removed (`emit`).
Unknown ops get the leaf handler (`handlers.handler_for`): their channels are frozen, never guessed.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

_REGISTRY: dict[str, "OpHandler"] = {}


class OpHandler:
    """Base class. Subclasses list their `op_types` and are registered with `@register`."""

    op_types: tuple[str, ...] = ()

    def propagate(self, node: gs.Node, ctx) -> None:
        """Set output channel maps from input maps; union, freeze, declare gates/costs/weights."""
        raise NotImplementedError

    def emit(self, node: gs.Node, ctx) -> None:
        """Rewrite constants/attributes for the kept channels (default: nothing to rewrite)."""


def register(cls):
    handler = cls()
    for op in cls.op_types:
        assert op not in _REGISTRY, f"two handlers for {op}"
        _REGISTRY[op] = handler
    return cls


def registered_handler(op: str) -> OpHandler | None:
    """The handler registered for ONNX-domain op type `op` (None: no handler; `handler_for` then
    falls back to the leaf)."""
    return _REGISTRY.get(op)


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)


# --- small helpers shared by handlers -------------------------------------------------------


def const_value(t) -> np.ndarray | None:
    """The value of a constant input (None for activations and empty optional inputs).

    A weight stored quantized (`DequantizeLinear` of constants, as QDQ models keep them) reads as its
    float value; emit slices the quantized tensors themselves (`handlers/quant.py`)."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "DequantizeLinear" \
            and t.inputs[0].domain in (None, "", "ai.onnx"):
        from .quant import dequantized

        return dequantized(t.inputs[0])
    return None


def is_present(node: gs.Node, i: int) -> bool:
    return i < len(node.inputs) and not (isinstance(node.inputs[i], gs.Variable) and node.inputs[i].name == "")


def input_or_attr(node: gs.Node, attr: str, index: int, default=None):
    """Read an operand that older opsets give as attribute and newer ones as a constant input.

    Returns `default` when absent and raises ValueError when the input is not constant.
    """
    if attr in node.attrs:
        return node.attrs[attr]
    if is_present(node, index):
        v = const_value(node.inputs[index])
        if v is None:
            raise ValueError(f"non-constant '{attr}' input")
        return v.tolist()
    return default


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
