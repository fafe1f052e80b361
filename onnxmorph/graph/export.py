"""Export an edited graph-surgeon graph back to a checked-ready ModelProto."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs


def export_graph(graph: gs.Graph, loaded, infer_shapes: bool = False) -> onnx.ModelProto:
    """Export with the loaded model's opset/IR/metadata; stale intermediate shapes are dropped (and
    re-inferred if asked: that serializes the whole model, seconds for large ones, and neither
    onnxruntime nor the checker needs it)."""
    keep_shapes = {t.name for t in graph.inputs + graph.outputs}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.name not in keep_shapes:
            t.shape = None
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = loaded.model.ir_version
    del model.opset_import[:]
    model.opset_import.extend(loaded.model.opset_import)
    for key in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(model, key, getattr(loaded.model, key))
    return onnx.shape_inference.infer_shapes(model, strict_mode=False) if infer_shapes else model
