"""One handler per ONNX op kind; importing this package registers them all."""

from . import (  # noqa: F401  (registration side effects)
    concat_split,
    conv,
    elementwise,
    linear,
    normalization,
    pooling,
    quant,
    shape,
    spatial,
)
from .base import OpHandler, handler_for, register, registered_ops

__all__ = ["OpHandler", "handler_for", "register", "registered_ops"]
