"""One handler per ONNX op family. Every handler module is listed here, and only here: importing
this package registers them all, whatever else was imported first. A new op family is a new module
added to the import below and to HANDLER_MODULES."""

from . import (  # noqa: F401  (each module registers its handlers with @register)
    attention,
    concat_split,
    control_flow,
    conv,
    elementwise,
    linear,
    normalization,
    pooling,
    quant,
    recurrent,
    reductions,
    shape,
    spatial,
)
from .base import OpHandler, register, registered_handler, registered_ops
from .leaf import LEAF

HANDLER_MODULES = (attention, concat_split, control_flow, conv, elementwise, linear, normalization, pooling, quant, recurrent,
                   reductions, shape,
                   spatial)


def handler_for(node) -> OpHandler:
    """The handler of `node`'s op type: the registered one, else the leaf (channels frozen). Ops of
    other domains (com.microsoft, ...) are leaves."""
    if node.domain not in (None, "", "ai.onnx"):
        return LEAF
    return registered_handler(node.op) or LEAF


__all__ = ["HANDLER_MODULES", "LEAF", "OpHandler", "handler_for", "register", "registered_handler", "registered_ops"]
