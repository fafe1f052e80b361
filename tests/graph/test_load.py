"""Loading: opset conversion, Constant folding, external data, dynamic dims."""

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.errors import ModelLoadError, ShapeError
from onnxmorph.graph import load_model
from onnxmorph.runtime import run_model

import zoo
from zoo import ZOO


def test_dynamic_batch_becomes_one_and_is_restored():
    loaded = load_model(ZOO["dynamic_batch"]())
    assert loaded.static_inputs["input"] == (1, 3, 8, 8) and loaded.dynamic
    res = onnxmorph.prune(ZOO["dynamic_batch"](), target="flops=0.6")
    dim0 = res.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "N"
    out = run_model(res.model, {"input": np.random.default_rng(0).standard_normal((4, 3, 8, 8), np.float32)})
    assert out[0].shape[0] == 4


def test_symbolic_spatial_dims_need_input_shape():
    m = zoo.symbolic_spatial()
    with pytest.raises(ShapeError, match="--input-shape input="):
        load_model(m)
    loaded = load_model(m, {"input": (1, 3, 10, 12)})
    assert loaded.static_inputs["input"] == (1, 3, 10, 12)


def test_constant_nodes_are_folded():
    m = zoo.constant_node_scale()
    loaded = load_model(m)
    assert "Constant" not in [n.op_type for n in loaded.model.graph.node]
    res = onnxmorph.prune(m, target="flops=0.6")
    assert res.report["verify"]["passed"]


def test_old_opset_is_converted():
    m = zoo.opset9_convs()
    loaded = load_model(m)
    assert loaded.opset == 13 and any("converted opset 9" in n for n in loaded.notes)
    res = onnxmorph.prune(m, target="flops=0.6")
    assert res.report["pruned"]["macs"] <= 0.6 * res.report["original"]["macs"]


def test_external_data(tmp_path):
    m = ZOO["conv_chain"]()
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=0)
    assert (tmp_path / "w.bin").exists()
    res = onnxmorph.prune(path, target="flops=0.5")
    assert res.report["verify"]["passed"]
    assert res.report["original"]["params"] == sum(int(np.prod(t.dims)) for t in m.graph.initializer)


def test_model_without_nodes_is_rejected(tmp_path):
    path = tmp_path / "empty.onnx"
    onnx.save(zoo.empty_graph(), path)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        load_model(path)
