"""Inputs and versions (zoo patterns scalar_input, old_ir3_opset7, slice_int32, new_opset_ir11): rank-0
inputs, classic-zoo IR-3 files, tf2onnx int32 Slice operands, and the newest opset/IR onnx knows."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxmorph
from onnxmorph.errors import DataError, ShapeError
from onnxmorph.graph import load_model, parse_input_shapes
from zoo import ZOO


def test_scalar_input_needs_no_flag():
    loaded = load_model(ZOO["scalar_input"]())
    assert loaded.static_inputs["gain"] == ()
    res = onnxmorph.prune(ZOO["scalar_input"](), target="flops=0.5")
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]
    gain = next(i for i in res.model.graph.input if i.name == "gain")
    assert gain.type.tensor_type.HasField("shape") and len(gain.type.tensor_type.shape.dim) == 0


def test_scalar_input_shape_syntax():
    assert parse_input_shapes(["gain=", "input=1x3x8x8"]) == {"gain": (), "input": (1, 3, 8, 8)}
    model = ZOO["scalar_input"]()
    gain = next(i for i in model.graph.input if i.name == "gain")
    gain.type.tensor_type.ClearField("shape")  # no declared shape: the user says it is a scalar
    with pytest.raises(ShapeError, match="gain="):
        load_model(model)
    assert load_model(model, {"gain": ()}).static_inputs["gain"] == ()


def test_scalar_input_with_data_is_refused_in_one_line():
    data = {"input": np.zeros((4, 3, 8, 8), np.float32), "gain": np.float32(2.0)}
    with pytest.raises(DataError, match="'gain' is a scalar"):
        onnxmorph.prune(ZOO["scalar_input"](), method="gates", target="flops=0.5", data=data, steps=2)


def test_ir3_initializers_as_inputs_convert():
    model = ZOO["old_ir3_opset7"]()
    assert model.ir_version == 3 and len(model.graph.input) > 1
    loaded = load_model(model)
    assert loaded.opset == 13 and any("converted opset 7" in n for n in loaded.notes)
    assert [s.name for s in loaded.inputs] == ["input"]
    res = onnxmorph.prune(model, target="flops=0.5")
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]
    onnx.checker.check_model(res.model, full_check=True)
    assert [i.name for i in res.model.graph.input] == ["input"] and res.model.ir_version >= 7


def test_int32_slice_operands_keep_their_type():
    model = ZOO["slice_int32"]()
    res = onnxmorph.prune(model, target="flops=0.5")
    onnx.checker.check_model(res.model, full_check=True)
    inits = {t.name: t for t in res.model.graph.initializer}
    slices = [n for n in res.model.graph.node if n.op_type == "Slice"]
    assert slices
    for n in slices:
        assert {inits[name].data_type for name in n.input[1:]} == {TensorProto.INT32}
    ends = sorted(int(numpy_helper.to_array(inits[n.input[2]])[0]) for n in slices)
    assert ends != [8, 12]  # the slice bounds were rewritten for the channels left
    assert res.report["verify"]["passed"]


def test_newest_opset_and_ir_load_as_they_are():
    model = ZOO["new_opset_ir11"]()
    loaded = load_model(model)
    assert loaded.opset == 22 and loaded.model.ir_version == 11 and not loaded.notes
    res = onnxmorph.prune(model, target="flops=0.5")
    assert res.model.ir_version == 11 and res.model.opset_import[0].version == 22
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]


def test_newest_opset_trains_with_the_onnxmorph_engine():
    """The training engine builds its graphs at the model's opset: gates on an opset-22 / IR-11 model."""
    model = ZOO["new_opset_ir11"]()
    data = {"input": np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)}
    res = onnxmorph.prune(model, method="gates", target="flops=0.5", data=data, steps=6, batch_size=8)
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]
