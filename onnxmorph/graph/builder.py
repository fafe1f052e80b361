"""Append nodes, constants and inputs to a graph-surgeon graph under one name prefix."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


class NodeBuilder:
    def __init__(self, graph: gs.Graph, prefix: str):
        self.graph, self.prefix, self.n = graph, prefix, 0

    def const(self, value, dtype=np.float32) -> gs.Constant:
        self.n += 1
        return gs.Constant(f"{self.prefix}__c{self.n}", np.asarray(value, dtype=dtype))

    def op(self, op: str, inputs, attrs=None, *, out: gs.Variable | None = None, name: str | None = None,
           dtype=np.float32) -> gs.Variable:
        """Add `op(inputs)`; its output is `out`, or a new tensor (named `name` if given)."""
        self.n += 1
        if out is None:
            out = gs.Variable(name or f"{self.prefix}__t{self.n}", dtype=dtype)
        self.graph.nodes.append(gs.Node(op, f"{self.prefix}__{op}{self.n}", attrs or {}, list(inputs), [out]))
        return out

    def input(self, name: str, shape, dtype=np.float32) -> gs.Variable:
        v = gs.Variable(name, dtype=dtype, shape=list(shape))
        self.graph.inputs.append(v)
        return v
