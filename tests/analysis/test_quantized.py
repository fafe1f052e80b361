"""Quantized models (zoo patterns `qdq_*`, `qlinear_conv`, `integer_conv_matmul`): QDQ prunes through its
quantized weights with the Q/DQ structure kept and pruned == masked within one quantization step;
QLinearConv prunes with zero-point gates; the other integer ops have their MACs counted and their channels
refused with the reason; nothing is ever reported as a success when nothing was removed."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxmorph
from onnxmorph.api import summarize
from onnxmorph.errors import TargetUnreachable, UsageError
from zoo import QDQ, QOPERATOR, GraphBuilder, QDQBuilder, qlinear_conv

CLI = [sys.executable, "-m", "onnxmorph.cli"]


def _dq_weights(model):
    """name of each weight DequantizeLinear's output -> (quantized array, scale, zero point, axis)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            out[n.output[0]] = (inits[n.input[0]], inits[n.input[1]], inits[n.input[2]], axis)
    return out


@pytest.mark.parametrize("builder", QDQ, ids=lambda f: f.__name__)
def test_qdq_prunes_keeping_int8_weights(builder):
    model = builder()
    res = onnxmorph.prune(model, target="flops=0.5")
    rep = res.report
    assert rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
    assert rep["verify"]["passed"] and "quantized" in rep["verify"]
    # within one step of the output's scale, with ONNX Runtime's graph optimizations off and on
    q = rep["verify"]["quantized"]
    assert q["reference_max_diff_steps"] <= 1.0001 and q["optimized_max_diff_steps"] <= 1.0001
    ops = lambda m: sorted(n.op_type for n in m.graph.node)  # noqa: E731
    assert ops(res.model) == ops(model)  # every Q/DQ kept, nothing folded to float
    before, after = _dq_weights(model), _dq_weights(res.model)
    assert len(after) == len(before)
    shrunk = 0
    for q_arr, scale, zp, axis in after.values():
        assert q_arr.dtype in (np.int8, np.int32)
        if scale.size > 1:  # per-axis: one scale per kept position of its axis
            assert scale.shape == (q_arr.shape[axis],) and zp.shape == scale.shape
        else:
            assert scale.ndim == 0
        shrunk += q_arr.size < max(b[0].size for b in before.values() if b[0].ndim == q_arr.ndim)
    assert shrunk > 0


def test_qlinear_conv_prunes_with_zero_point_gates():
    """The masked model gates the uint8 activation with Where(keep, x, 128): a removed channel reads as
    its zero point (real 0). The pruned model agrees with it, and the weight scales follow the kept filters."""
    model = qlinear_conv()
    res = onnxmorph.prune(model, target="flops=0.6")
    rep = res.report
    full = 16 * 3 * 9 * 100 + 8 * 16 * 9 * 100
    assert rep["original"]["macs"] == full and rep["pruned"]["macs"] <= 0.6 * full
    assert rep["verify"]["passed"] and rep["verify"]["quantized"]["optimized_max_diff_steps"] <= 1.0001
    where = [n for n in res.masked.graph.node if n.op_type == "Where"]
    inits = {t.name: numpy_helper.to_array(t) for t in res.masked.graph.initializer}
    assert len(where) == 1 and inits[where[0].input[2]] == 128
    convs = [n for n in res.model.graph.node if n.op_type == "QLinearConv"]
    pinits = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    kept = pinits[convs[0].input[3]].shape[0]
    assert kept < 16 and pinits[convs[0].input[4]].shape == (kept,) and pinits[convs[0].input[8]].shape == (kept,)
    assert pinits[convs[1].input[3]].shape == (8, kept, 3, 3)
    # with a Mul gate (0 instead of the zero point) the masked model would differ: the gate matters
    bad = onnx.ModelProto.FromString(res.masked.SerializeToString())
    for t in bad.graph.initializer:
        if t.name == where[0].input[2]:
            t.CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), t.name))
    from onnxmorph.verify import compare, sample_inputs
    feeds = sample_inputs(res.analysis.loaded, 2, 0)
    assert not compare(bad, res.model, feeds).passed


@pytest.mark.parametrize("name,macs", [("integer_conv_matmul", 12 * 3 * 9 * 64 + 12 * 4)])
def test_qoperator_macs_counted_and_refused_with_reason(name, macs):
    model = QOPERATOR[name]()
    summary = summarize(onnxmorph.inspect(model))
    assert summary["macs"] == macs
    assert summary["quantized"]["macs_share"] == 1.0
    assert all(not g["prunable"] and "integer domain" in g["reason"] for g in summary["groups"])
    with pytest.raises(TargetUnreachable, match="no prunable channels.*integer domain"):
        onnxmorph.prune(model, target="flops=0.5")
    with pytest.raises(TargetUnreachable):
        onnxmorph.prune(model, target="flops=0.5", best_effort=True)


def test_qdq_inspect_share_counts_only_quantized_ops():
    """Convs with float weights are not quantized, even when they read a DequantizeLinear."""
    b = QDQBuilder("half_quantized", opset=13)
    y = b.qconv(b.fake_quant(b.input([1, 3, 8, 8])), 3, 8)
    y = b.conv(y, 8, 8, k=1)  # float weights on a dequantized input
    y = b.conv(b.op("Relu", [y]), 8, 4, k=1)  # float all through
    s = summarize(onnxmorph.inspect(b.build(y)))
    float_macs = 8 * 8 * 64 + 4 * 8 * 64
    assert s["quantized"]["macs"] == s["macs"] - float_macs
    assert s["quantized"]["macs_share"] == pytest.approx(1 - float_macs / s["macs"], abs=1e-6)


def test_training_refused_on_quantized_models():
    x = {"input": np.random.default_rng(0).standard_normal((8, 3, 12, 12)).astype(np.float32)}
    with pytest.raises(UsageError, match="cannot train a quantized model"):
        onnxmorph.prune(QDQ[0](), method="gates", data=x, steps=4)
    with pytest.raises(UsageError, match="cannot train a quantized model"):
        onnxmorph.prune(QDQ[0](), data=x, steps=4)


def _no_macs_model():
    b = GraphBuilder("no_macs")
    y = b.op("Relu", [b.op("Add", [b.input([1, 4, 6, 6]), b.const(b.rand(1, 4, 1, 1))])])
    return b.build(y)


def _nothing_removable_model():
    """One channel between two convs: a prunable unit that can never go (an axis keeps >= 1)."""
    b = GraphBuilder("nothing_removable")
    return b.build(b.conv(b.op("Relu", [b.conv(b.input([1, 3, 6, 6]), 3, 1)]), 1, 4))


def test_never_success_without_removing_anything():
    with pytest.raises(TargetUnreachable, match="counts 0 macs"):
        onnxmorph.prune(_no_macs_model(), target="flops=0.5")
    with pytest.raises(TargetUnreachable, match="removed nothing"):
        onnxmorph.prune(_nothing_removable_model(), target="flops=0.9", best_effort=True)


@pytest.mark.parametrize("model", ["no_macs", "integer_conv_matmul"])
def test_cli_exit_1_one_line_nothing_written(tmp_path, model):
    path = tmp_path / "m.onnx"
    onnx.save(_no_macs_model() if model == "no_macs" else QOPERATOR[model](), path)
    before = path.read_bytes()
    proc = subprocess.run(CLI + ["prune", str(path), "--report", "r.json", "--best-effort"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert ("0 macs" if model == "no_macs" else "integer domain") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and path.read_bytes() == before


def test_cli_inspect_says_quantized_share(tmp_path):
    path = tmp_path / "q.onnx"
    onnx.save(QDQ[1](), path)
    proc = subprocess.run(CLI + ["inspect", str(path), "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["quantized"]["macs_share"] == 1.0


def test_qdq_least_squares_refit_requantized():
    """With data, the cut QDQ model is refit in float and stored back as int8 (per-channel scales grow only
    where needed): its outputs move closer to the unpruned model's than the plain cut's, and verify holds."""
    model = QDQ[0]()
    x = {"input": np.random.default_rng(0).standard_normal((160, 3, 12, 12)).astype(np.float32)}
    plain = onnxmorph.prune(model, target="flops=0.4", data=x, reconstruct=False)
    refit = onnxmorph.prune(model, target="flops=0.4", data=x)
    assert any("least-squares reconstruction refit" in n for n in refit.report["notes"])
    out = model.graph.output[0].name
    err = {k: r.report["fidelity"]["outputs"][out]["relative_error"]
           for k, r in (("plain", plain), ("refit", refit))}
    assert err["refit"] < 0.8 * err["plain"], err
    assert refit.report["verify"]["passed"]
    for q_arr, scale, zp, _ in _dq_weights(refit.model).values():
        assert q_arr.dtype in (np.int8, np.int32) and np.all(np.abs(q_arr.astype(np.int64)) <= 2 ** 31 - 1)


def test_requantize_grows_scale_only_where_needed():
    from onnxmorph.train.requantize import dequantize, quantize

    w = np.array([[0.5, -1.0], [3.0, 0.1]], np.float32)  # row 1 leaves the range of its scale 0.01
    scale = np.array([0.01, 0.01], np.float32)
    q, s = quantize(w, scale, np.zeros(2, np.int8), 0, np.int8, grow=True)
    assert s[0] == scale[0] and s[1] == pytest.approx(3.0 / 127)
    np.testing.assert_allclose(dequantize(q, s, np.zeros(2, np.int8), 0), w, atol=s.max() / 2 + 1e-7)
    q, s = quantize(w, scale, np.zeros(2, np.int8), 0, np.int8, grow=False)
    assert np.array_equal(s, scale) and q.max() == 127
