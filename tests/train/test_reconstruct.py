"""Least-squares reconstruction after the cut (zoo patterns) and one-shot pruning that recovers (demo)."""

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.fidelity import run_batched
from onnxmorph.train.reconstruct import Layer, RefitCost, design, plan_rows, system_to_weights, weights_as_system
from zoo import conv_chain, grouped_and_depthwise, linear_layers

ROOT = Path(__file__).resolve().parents[2]


def _output_error(original, pruned, x):
    ref = run_batched(original, {"input": x})
    out = run_batched(pruned, {"input": x})
    return max(float(np.linalg.norm(out[k] - ref[k]) / np.linalg.norm(ref[k])) for k in ref)


def auto_pad_chain():
    """conv_chain with its pads given as auto_pad, as keras/tf2onnx exports write them (MTCNN's P-Net:
    VALID): SAME_UPPER, SAME_LOWER on the strided conv (the odd pad goes first), VALID on the 1x1."""
    model = conv_chain()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for node, mode in zip(convs, ["SAME_UPPER", "SAME_LOWER", "VALID"]):
        kept = [a for a in node.attribute if a.name != "pads"]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute("auto_pad", mode)])
    return model


CONVS = {  # (input [n, c, *spatial], weight [out, c/group, *kernel], Conv attributes)
    "3x3": ([2, 4, 9, 11], [6, 4, 3, 3], dict(pads=[1, 1, 1, 1])),
    "strided, uneven pads": ([2, 4, 9, 11], [6, 4, 3, 3], dict(strides=[2, 2], pads=[0, 1, 2, 0])),
    "dilated": ([2, 4, 9, 11], [6, 4, 3, 3], dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    "grouped": ([2, 4, 9, 11], [6, 2, 3, 3], dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise": ([2, 4, 9, 11], [4, 1, 5, 5], dict(group=4, pads=[2, 2, 2, 2])),
    "SAME_LOWER, strided": ([2, 4, 9, 11], [6, 4, 3, 3], dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "1x3, strides 2x1": ([2, 4, 9, 11], [6, 4, 1, 3], dict(strides=[2, 1], pads=[0, 1, 0, 1])),
    "conv1d": ([2, 4, 15], [6, 4, 3], dict(strides=[2], pads=[1, 1])),
}


@pytest.mark.parametrize("case", CONVS, ids=list(CONVS))
@pytest.mark.parametrize("limit", [None, 50], ids=["all rows", "50 sampled rows"])
def test_the_design_matrix_reproduces_the_conv(case, limit):
    """A @ W is the Conv's output on every row, all of them or a sample (the refit's system is exact)."""
    from onnx import TensorProto, helper, numpy_helper

    x_shape, w_shape, attrs = CONVS[case]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # CI's onnx writes an IR its onnxruntime refuses
    y = run_batched(model, {"x": x})["y"]
    layer = Layer("conv", "Conv", "x", "x", "y", "w", attrs=attrs)
    a, yy = design(x, y, layer, w.shape, np.random.default_rng(0), limit)
    system = weights_as_system(w, layer, attrs.get("group", 1))  # [G, D, out/G]
    assert len(a) == min(limit or y.size, y.size // w_shape[0])
    np.testing.assert_allclose(np.einsum("rgi,gio->rgo", a, system), yy, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(system_to_weights(system, layer, w.shape), w)


@pytest.mark.parametrize("pattern", [conv_chain, grouped_and_depthwise, linear_layers, auto_pad_chain],
                         ids=["conv->conv", "conv->depthwise->conv", "linear->linear", "auto_pad"])
def test_reconstruction_lowers_the_error_of_the_cut(pattern):
    model = pattern()
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal([shape[0] * 200] + shape[1:]).astype(np.float32)}
    held_out = rng.standard_normal([shape[0] * 40] + shape[1:]).astype(np.float32)
    kw = dict(method="magnitude", target="flops=0.5", data=data, steps=0, seed=0)
    plain = onnxmorph.prune(model, reconstruct=False, **kw)
    rebuilt = onnxmorph.prune(model, reconstruct=True, **kw)
    assert plain.report["budget"]["steps"] == 0 and rebuilt.report["reconstruction"]
    assert rebuilt.report["verify"]["passed"]  # refit weights keep pruned == masked
    # the same channels go; only the kept weights change
    assert [g["kept_indices"] for g in plain.report["groups"]] == [g["kept_indices"] for g in rebuilt.report["groups"]]
    before, after = _output_error(model, plain.model, held_out), _output_error(model, rebuilt.model, held_out)
    assert after < 0.8 * before, (before, after)
    # every linear layer after the first reads a cut input and is refit (auto_pad convs were skipped)
    note = next(n for n in rebuilt.report["notes"] if n.startswith("least-squares reconstruction"))
    refit, affected = map(int, re.search(r"refit (\d+) of (\d+) affected", note).groups())
    linear = sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in model.graph.node)
    assert refit == affected == linear - 1, note


def test_one_shot_cut_recovers_on_the_demo():
    """Magnitude at a quarter of the MACs, reconstruction and 300 steps of recovery with labels: 97-98 %
    in docs/BENCHMARKS.md (plain SGD + cross-entropy on the same cut: see the accuracy table); the cut
    alone is near chance."""
    test = np.load(ROOT / "models/demo_cnn_test.npz")
    res = onnxmorph.prune(str(ROOT / "models/demo_cnn.onnx"), method="magnitude", target="flops=0.25",
                          data=str(ROOT / "models/demo_cnn.npz"), labels="labels", steps=300, seed=0)
    assert res.report["pruned"]["macs"] <= 0.25 * res.report["original"]["macs"]
    assert res.report["budget"] == {**res.report["budget"], "steps": 300, "training": 0, "recovery": 300}
    logits = run_batched(res.model, {"input": test["input"]})["logits"]
    accuracy = float(np.mean(logits.argmax(1) == test["labels"]))
    assert accuracy > 0.93
    # the report's held-out figure is that of the pruned model it wrote
    fid = res.report["fidelity"]
    assert fid["samples"] == 130 and 0.85 < fid["accuracy"] <= 1.0
    cut = onnxmorph.prune(str(ROOT / "models/demo_cnn.onnx"), method="magnitude", target="flops=0.25")
    cut_acc = float(np.mean(run_batched(cut.model, {"input": test["input"]})["logits"].argmax(1) == test["labels"]))
    assert cut_acc < 0.6 < accuracy


def test_batchnorm_statistics_are_re_estimated_on_the_cut_model():
    """--bn-stats: each BatchNormalization's stored mean/variance become its input's statistics in the
    cut model on the calibration data (upstream first), computed here directly."""
    from zoo import residual
    from onnxmorph.fidelity import run_batched as run
    from onnxmorph.train.reconstruct import reestimate_bn

    model = residual(batch="N")
    rng = np.random.default_rng(0)
    data = {"input": rng.standard_normal((96, 3, 12, 12)).astype(np.float32)}
    res = onnxmorph.prune(model, method="magnitude", target="flops=0.5", data=data, steps=0,
                          reconstruct=False, bn_stats=True)
    assert res.report["verify"]["passed"]
    masked = onnx.ModelProto()
    masked.CopyFrom(res.masked)
    bns = [n for n in masked.graph.node if n.op_type == "BatchNormalization"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in masked.graph.initializer}
    # the masked model carries the re-estimated statistics: re-estimating again changes nothing
    train_rows = {"input": data["input"]}
    again = reestimate_bn(masked, train_rows, batch=32)
    first = bns[0]
    x = run(_with_output(res.masked, first.input[0]), train_rows)[first.input[0]].astype(np.float64)
    assert np.allclose(again[first.input[3]], x.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    # the prune used its training split (the held-out rows stay out): close to, not equal to, all rows
    assert np.allclose(inits[first.input[3]], x.mean(axis=(0, 2, 3)), atol=0.1)
    assert not np.allclose(inits[first.input[3]], onnx.numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == first.input[3])))


def _with_output(model, name):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return out


def test_a_budget_the_learning_rate_probe_uses_up_still_prunes():
    """With --steps 3 the probe may take every step: recovery then runs none and the cut stands."""
    model = conv_chain()
    data = {"input": np.random.default_rng(0).standard_normal((200, 3, 16, 16)).astype(np.float32)}
    res = onnxmorph.prune(model, method="magnitude", target="flops=0.5", data=data, steps=3, seed=0)
    assert res.report["verify"]["passed"] and res.report["budget"]["recovery"] == 3
    assert res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]


def test_the_refit_takes_the_rows_and_waves_its_work_budget_allows():
    """The budget is estimated work, not wall time, so a loaded machine refits the same rows: all of
    them if they fit, fewer down to 64, then only the first waves."""
    cost = {"a": RefitCost(per_row=1.0, fixed=10.0), "b": RefitCost(per_row=0.5, fixed=0.0)}
    wave = {"a": 0, "b": 1}
    assert plan_rows(cost, wave, 512, 1e9) == (512, 2)
    assert plan_rows(cost, wave, 512, 160.0) == (100, 2)  # (160 - 10) / 1.5 rows
    assert plan_rows(cost, wave, 40, 160.0) == (40, 2)
    assert plan_rows(cost, wave, 512, 100.0) == (64, 1)  # wave 0 on 64 rows: 74 s, wave 1 another 32 s
    assert plan_rows(cost, wave, 512, 50.0) == (64, 0)


def test_reconstruction_stops_at_its_work_budget(monkeypatch):
    """Deep models on a small machine: the waves past the budget are skipped and the note says so."""
    import onnxmorph.train.reconstruct as reconstruct

    monkeypatch.setattr(reconstruct, "WORK_SECONDS", 0.0)
    data = {"input": np.random.default_rng(0).standard_normal((200, 3, 16, 16)).astype(np.float32)}
    res = onnxmorph.prune(conv_chain(), method="magnitude", target="flops=0.5", data=data, steps=0)
    assert res.report["verify"]["passed"]
    assert any("on 64 calibration rows (stopped after 0 of 3 waves" in n for n in res.report["notes"]), \
        res.report["notes"]
