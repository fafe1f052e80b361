"""Emit the channel-pruned model."""

from .emitter import EmitContext, emit_pruned

__all__ = ["EmitContext", "emit_pruned"]
