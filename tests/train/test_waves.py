"""Wave-by-wave forward runs: each wave computes only new nodes, from the tensors earlier waves left."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxmorph.train.waves import Forward, runner


def _model(batch: int):
    """conv1 -> relu -> (flatten and back through a computed shape) -> conv2 -> + relu (skip) -> conv3."""
    rng = np.random.default_rng(0)
    w = {f"w{i}": rng.standard_normal([4, 4, 3, 3]).astype(np.float32) for i in (1, 2, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Shape", ["r1"], ["shape"], name="shape"),
        helper.make_node("Flatten", ["r1"], ["flat"], name="flatten"),
        helper.make_node("Reshape", ["flat", "shape"], ["back"], name="reshape"),
        helper.make_node("Conv", ["back", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["sum"], name="skip"),
        helper.make_node("Conv", ["sum", "w3"], ["y"], name="conv3", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 5, 5])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # CI's onnx writes an IR its onnxruntime refuses


@pytest.mark.parametrize("max_bytes", [1 << 30, 0], ids=["frontier kept", "frontier over its limit"])
def test_forward_matches_full_runs_as_weights_change_downstream(max_bytes):
    """Three waves (conv1, conv2, conv3 inputs), each refitting the conv whose input it read, on 10 rows
    at static batch 4 (the last chunk wraps around), handed out 3 rows at a time. Every wave equals a full run of the current model,
    and with the frontier kept no node runs twice; the computed shape and the skip tensor carry over."""
    model = _model(4)
    x = np.random.default_rng(1).standard_normal([10, 4, 5, 5]).astype(np.float32)
    forward = Forward({"x": x}, 4, max_bytes=max_bytes)
    inits = {t.name: t for t in model.graph.initializer}
    for wave, (tensor, weight) in enumerate([("x", "w1"), ("back", "w2"), ("sum", "w3")]):
        parts = [part[tensor] for part in forward.run(model, [tensor], 3)]  # chunks of 4 rows, given as 3s
        assert [len(p) for p in parts] == [3, 3, 3, 1]
        got = np.concatenate(parts)
        want = runner(model, [tensor], 4)({"x": x})[tensor]
        assert got.shape == want.shape == (10, 4, 5, 5)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        if wave == 1 and max_bytes:
            assert {"r1"} <= set(forward.frontier) and "x" not in forward.frontier  # the skip carries over
            assert len(forward.done) == 5  # conv1, relu, shape, flatten, reshape: nothing run again
        changed = numpy_helper.to_array(inits[weight]) * 0.5  # the refit: a weight of the wave's layer
        inits[weight].CopyFrom(numpy_helper.from_array(changed, weight))
    assert (len(forward.done) == 7) == bool(max_bytes)  # conv3 itself never ran


def test_two_runs_zipped_both_move_on():
    """The refit zips the masked and the original model's runs, and zip stops at the first exhausted
    one: both must have moved their kept tensors on by the time the last rows come out."""
    model = _model(4)
    x = np.random.default_rng(1).standard_normal([10, 4, 5, 5]).astype(np.float32)
    a, b = Forward({"x": x}, 4), Forward({"x": x}, 4)
    for _ in zip(a.run(model, ["back"], 4), b.run(model, ["sum"], 4)):
        pass
    assert len(a.done) == 5 and len(b.done) == 7 and set(b.frontier) == {"sum"}
