"""Training-graph rewrites (the ort-training engine's, and BatchNorm's for every engine): same outputs
as the original op, and gradients flow through them."""

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper, numpy_helper

from onnxmorph.runtime import run_model
from onnxmorph.train.lowering import lower_for_training
from onnxmorph.train.autodiff import differentiate

SHAPE = [2, 4, 6, 6]


def _model(op, attrs=None, consts=(), extra_inputs=(), out_shape=None):
    """x * p -> op -> y, with p a trainable per-channel scale."""
    p = numpy_helper.from_array(np.linspace(0.5, 1.5, SHAPE[1]).astype(np.float32).reshape(1, -1, 1, 1), "p")
    nodes = [helper.make_node("Mul", ["x", "p"], ["xp"]),
             helper.make_node(op, ["xp", *extra_inputs], ["y"], **(attrs or {}))]
    g = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", 1, SHAPE)],
                          [helper.make_tensor_value_info("y", 1, out_shape)],
                          [p] + [numpy_helper.from_array(np.asarray(v), k) for k, v in consts])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return onnx.shape_inference.infer_shapes(m)


def _lowered(model, ort_training=True):
    graph = gs.import_onnx(model)
    done = lower_for_training(graph, ort_training=ort_training)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out, done


def _grad_of_p(model):
    """Gradient of sum(y) w.r.t. p through onnxmorph's autodiff (the ort-training engine's gradients of
    these rewrites are compared in tests/train/crosscheck/)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.node.append(helper.make_node("ReduceSum", ["y"], ["loss"], keepdims=0))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("loss", 1, []))
    full, names = differentiate(m, "loss", ["p"])
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    return run_model(full, {"x": x}, names)[0]


CASES = {
    "HardSigmoid": dict(attrs={"alpha": 0.3, "beta": 0.4}),
    "HardSwish": {},
    "Elu": dict(attrs={"alpha": 0.7}),
    "Selu": {},
    "Celu": dict(attrs={"alpha": 1.3}),
    "Softplus": {},
    "Softsign": {},
    "PRelu": dict(consts=[("s", np.full((4, 1, 1), 0.2, np.float32))], extra_inputs=["s"]),
    "GlobalMaxPool": dict(out_shape=[2, 4, 1, 1]),
    "Dropout": {},
    "InstanceNormalization": dict(consts=[("sc", np.linspace(1, 2, 4).astype(np.float32)),
                                          ("bi", np.linspace(-1, 1, 4).astype(np.float32))],
                                  extra_inputs=["sc", "bi"]),
    "BatchNormalization": dict(consts=[("sc", np.linspace(1, 2, 4).astype(np.float32)),
                                       ("bi", np.linspace(-1, 1, 4).astype(np.float32)),
                                       ("mu", np.linspace(-0.5, 0.5, 4).astype(np.float32)),
                                       ("var", np.linspace(0.5, 2, 4).astype(np.float32))],
                               extra_inputs=["sc", "bi", "mu", "var"]),
    "Resize": dict(consts=[("sc", np.array([1, 1, 2, 2], np.float32))], extra_inputs=["", "sc"],
                   attrs={"mode": "nearest"}, out_shape=[2, 4, 12, 12]),
    "Sum": dict(extra_inputs=["xp", "xp"]),
    "Mean": dict(extra_inputs=["xp"]),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_rewrite_is_exact_and_differentiable(op):
    model = _model(op, **CASES[op])
    lowered, done = _lowered(model)
    assert done == [op]
    native, native_done = _lowered(model, ort_training=False)
    assert native_done == ([op] if op == "BatchNormalization" else [])
    assert op not in {n.op_type for n in lowered.graph.node}
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32) * 3
    ref = run_model(model, {"x": x})[0]
    got = run_model(lowered, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    grad = _grad_of_p(lowered)
    if op == "InstanceNormalization":  # normalizing each channel undoes the channel scale p exactly
        assert np.abs(grad).max() < 1e-4
    else:
        assert np.abs(grad).sum() > 0


def test_bilinear_resize_has_no_rewrite():
    model = _model("Resize", consts=[("sc", np.array([1, 1, 2, 2], np.float32))], extra_inputs=["", "sc"],
                   attrs={"mode": "linear"}, out_shape=[2, 4, 12, 12])
    with pytest.raises(Exception, match="only nearest resizing"):
        _lowered(model)
