"""The analysis re-made at a training batch size, carrying the current weights."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ..analysis import analyze
from ..errors import OnnxMorphError
from ..graph import load_model
from .engine import apply_params
from .graph import weight_initializers


def at_batch(analysis, batch: int):
    """The analysis at the training batch size, if the model's batch is symbolic and units match.

    Returns (analysis, batch, teacher): the student carries `analysis`'s current weights (trained
    or reconstructed ones, not the file's), and `teacher` is the untouched model at that batch size
    (None when training falls back to batch 1)."""
    loaded = analysis.loaded
    model = loaded.original
    if model is None or batch == 1 or not all(s.dims and not isinstance(s.dims[0], int) for s in loaded.inputs):
        return analysis, 1, None
    try:
        shapes = {s.name: (batch,) + tuple(loaded.static_inputs[s.name][1:]) for s in loaded.inputs}
        other = analyze(load_model(model, shapes), analysis.options)
    except OnnxMorphError:
        return analysis, 1, None
    same = other.num_units == analysis.num_units and all(
        np.array_equal(a, b) for a, b in zip(other.units, analysis.units))
    if not same:
        return analysis, 1, None
    current = {t.name: t for t in loaded.model.graph.initializer}
    batched = {t.name: t for t in other.loaded.model.graph.initializer}
    names = set(_weight_names(analysis))  # once: each call imports the whole graph (13 s on ppocr-rec)
    if any(name not in batched or list(batched[name].dims) != list(t.dims) for name, t in current.items()
           if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 1 and name in names):
        return analysis, 1, None
    values = {name: numpy_helper.to_array(current[name]) for name in names if name in current}
    student = replace(other, loaded=replace(other.loaded, model=apply_params(other.loaded.model, values)))
    return student, batch, other.loaded.model


def _weight_names(analysis) -> list[str]:
    """Initializers that training or reconstruction may change: the trainable weights, BN statistics."""
    graph = analysis.loaded.graph()
    names = weight_initializers(graph)
    names += [n.inputs[i].name for n in graph.nodes if n.op == "BatchNormalization"
              for i in (3, 4) if i < len(n.inputs) and isinstance(n.inputs[i], gs.Constant)]
    return names
