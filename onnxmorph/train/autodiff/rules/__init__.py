"""Gradient rules, one module per op family; importing this package registers them all."""

from . import (  # noqa: F401  (registration side effects)
    binary,
    conv,
    linear,
    movement,
    normalization,
    pooling,
    reductions,
    softmax,
    unary,
)
