"""Walking an onnx-graphsurgeon graph from a tensor to the node that made it."""

from __future__ import annotations


def producer(t):
    """The node that writes tensor `t` (None for graph inputs, constants and ambiguous tensors)."""
    producers = getattr(t, "inputs", None) or []
    return producers[0] if len(producers) == 1 else None


def is_constant(t) -> bool:
    """Whether `t` is an onnx-graphsurgeon Constant (an initializer or a folded value)."""
    return type(t).__name__ == "Constant"


def subgraphs(node):
    """The graphs in `node`'s attributes (If branches, Loop/Scan bodies, ...)."""
    for value in node.attrs.values():
        for g in value if isinstance(value, (list, tuple)) else [value]:
            if type(g).__name__ == "Graph":
                yield g


def outer_reads(node) -> list:
    """Tensors of the enclosing graph that `node`'s subgraphs (at any depth) read by name: ONNX lets
    a branch or loop body use any tensor in scope without listing it as an input of the node."""
    inner: set[str] = set()
    read: dict[str, object] = {}

    def walk(g):
        inner.update(t.name for t in g.inputs)
        for n in g.nodes:
            inner.update(t.name for t in n.outputs)
            for t in n.inputs:
                if t.name:
                    read.setdefault(t.name, t)
            for sub in subgraphs(n):
                walk(sub)

    for g in subgraphs(node):
        walk(g)
    return [t for name, t in read.items() if name not in inner]
