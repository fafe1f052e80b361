"""The fallback for any op no handler understands: its channels are frozen, with the reason."""

from __future__ import annotations

from .base import OpHandler


class LeafHandler(OpHandler):
    def propagate(self, node, ctx) -> None:
        domain = f"{node.domain}." if node.domain not in (None, "", "ai.onnx") else ""
        self.freeze_node(node, ctx, f"{domain}{node.op} '{node.name}' is not supported")

    @staticmethod
    def freeze_node(node, ctx, reason: str) -> None:
        from .control_flow import freeze_subgraph_reads

        ctx.freeze_inputs(node, reason)
        freeze_subgraph_reads(node, ctx)  # an unknown op with a graph attribute reads by name too
        ctx.leaves.setdefault(node.name, reason)


LEAF = LeafHandler()
