"""Insert per-channel gate `Mul` nodes at the gate points of an analysis.

A gate sits on a tensor right before each op that sums over its channels (Conv,
Gemm, MatMul inputs): zeroing a channel there removes its contribution exactly as
deleting it does. With 0/1 constants this is the *masked model* the pruned model
must match; training methods insert learnable gates at the same points.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..analysis.handlers.quant import integer_zero_point
from ..graph.export import export_graph


def gate_shape(cmap, rank: int) -> list[int]:
    """Broadcastable shape of a gate: channel dims on the map's axes, 1 elsewhere."""
    shape = [1] * rank
    for a, n in zip(cmap.axes, cmap.ids.shape):
        shape[a] = n
    return shape


def insert_gates(graph: gs.Graph, analysis, make_gate: Callable[[str, object, gs.Variable], gs.Tensor | None]):
    """For every gated tensor, `make_gate(name, cmap, tensor)` returns the gate operand (or None to skip);
    a `Mul` feeds the gated value to the registered consumer nodes only."""
    nodes = {n.name: n for n in graph.nodes}
    tensors = graph.tensors()
    for name, consumers in analysis.gates.items():
        cmap = analysis.maps[name]
        tensor = tensors[name]
        gate = make_gate(name, cmap, tensor)
        if gate is None:
            continue
        gated = gs.Variable(f"{name}__gated", dtype=tensor.dtype, shape=tensor.shape)
        if isinstance(gate, gs.Constant) and gate.values.dtype == np.bool_:  # an integer (quantized) tensor:
            fill = gs.Constant(f"{name}__zero_point", integer_zero_point(tensor))  # its real 0 is the zero point
            mul = gs.Node("Where", name=f"{name}__gate", inputs=[gate, tensor, fill], outputs=[gated])
        else:
            mul = gs.Node("Mul", name=f"{name}__gate", inputs=[tensor, gate], outputs=[gated])
        graph.nodes.append(mul)
        for cname in set(consumers):
            node = nodes[cname]
            for i, t in enumerate(node.inputs):
                if t is tensor:
                    node.inputs[i] = gated
    return graph


def build_masked(analysis, keep_units: np.ndarray) -> onnx.ModelProto:
    """The loaded model plus 0/1 gate `Mul` nodes wherever a removed channel is consumed."""
    keep_el = analysis.keep_elements(keep_units)
    graph = analysis.loaded.graph()

    def zero_one(name, cmap, tensor):
        mask = keep_el[cmap.ids]
        if mask.all():
            return None
        dtype = tensor.dtype if tensor.dtype is not None else np.float32
        if np.issubdtype(np.dtype(dtype), np.integer):
            dtype = np.bool_  # a quantized tensor: `insert_gates` makes a Where to its zero point
        return gs.Constant(f"{name}__mask", mask.astype(dtype).reshape(gate_shape(cmap, len(tensor.shape))))

    insert_gates(graph, analysis, zero_one)
    return export_graph(graph, analysis.loaded)
