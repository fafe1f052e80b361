"""If, Loop and Scan: control flow is not pruned through.

Besides its listed inputs (a condition, loop-carried values, scan inputs), a subgraph may read any
tensor of the enclosing graph by name. Those reads are consumers too: every channel a subgraph reads,
or that enters the node, is frozen with the reason, and the node's outputs start untracked.
"""

from __future__ import annotations

from ...graph.walk import outer_reads
from .base import OpHandler, register


def freeze_subgraph_reads(node, ctx) -> None:
    """Freeze the channels of every outer tensor `node`'s subgraphs read (any op with graph attributes)."""
    for t in outer_reads(node):
        cmap = ctx.maps.get(t.name)
        if cmap is not None:
            reason = f"read inside a subgraph of {node.op} '{node.name}'"
            ctx.freeze(cmap, reason)
            ctx.leaves.setdefault(node.name, reason)


@register
class ControlFlowHandler(OpHandler):
    op_types = ("If", "Loop", "Scan")

    def propagate(self, node, ctx) -> None:
        ctx.freeze_inputs(node, f"{node.op} '{node.name}' is control flow (not pruned through)")
        freeze_subgraph_reads(node, ctx)
