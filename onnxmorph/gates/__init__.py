"""Gate points: per-channel `Mul` nodes where removing a channel takes effect."""

from .masked import gate_shape, insert_gates, build_masked

__all__ = ["build_masked", "gate_shape", "insert_gates"]
