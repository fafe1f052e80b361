"""`prune(..., measure=True)`: measured latency on this machine and re-targeting until it meets a
latency target; `measure_latency` itself on real models; the CLI's `--measure`."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxmorph
import onnxmorph.measure as measure_mod
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.cost.calibrate import build_chain
from onnxmorph.errors import ShapeError, UsageError
from onnxmorph.graph import load_model
from onnxmorph.measure import measure_latency, random_feeds

PROFILE = "desktop-avx2-core"  # a roofline profile: its predictions are not this machine's
F = 0.5


def predicted_latency(model) -> float:
    return CostModel(analyze(load_model(model)), PROFILE).total("latency")


def fake_measurement(monkeypatch, factor=None, ratio=None):
    """Replace the ONNX Runtime measurement: measured = predicted * `factor`, or always `ratio`.
    Returns the list of measured ratios it handed out."""
    seen = []

    def fake(original, pruned, **kw):
        r = ratio if ratio is not None else factor * predicted_latency(pruned) / predicted_latency(original)
        seen.append(r)
        return {"original_ms": 1.0, "pruned_ms": r, "ratio": r}

    monkeypatch.setattr(measure_mod, "measured_ratio", fake)
    return seen


def test_measured_ratio_above_target_retargets(monkeypatch, demo_model):
    plain = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE)
    seen = fake_measurement(monkeypatch, factor=1.15)
    messages = []
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True,
                          progress=lambda msg, **kw: messages.append(msg))
    m = res.report["measured"]
    rounds = m["rounds"]
    assert len(rounds) >= 2 and len(seen) == len(rounds)
    assert rounds[0]["fraction"] == F
    assert all(b["fraction"] < a["fraction"] for a, b in zip(rounds, rounds[1:]))
    for r in rounds:  # each round's prediction meets its fraction; the fake measures 15 % above it
        assert r["predicted_ratio"] <= r["fraction"] + 1e-9
        assert r["measured_ratio"] == pytest.approx(1.15 * r["predicted_ratio"], rel=1e-4)
    assert rounds[0]["measured_ratio"] > F  # so re-targeting was needed
    assert any(r["measured_ratio"] <= F for r in rounds)
    chosen = rounds[m["chosen"]]
    assert m["met"] and chosen["measured_ratio"] <= F
    assert chosen["measured_ratio"] == min(r["measured_ratio"] for r in rounds if r["measured_ratio"] <= F)
    assert m["clock"] == "thread cpu time" and m["threads"] == 1
    # The emitted model is the chosen selection, smaller than the one predicted to meet the target.
    assert res.report["pruned"]["macs"] < plain.report["pruned"]["macs"]
    assert res.report["target"]["reached"] and res.report["target"]["fraction"] == F
    assert res.report["pruned"]["latency_ms"] / res.report["original"]["latency_ms"] == \
        pytest.approx(chosen["predicted_ratio"], abs=1e-5)
    assert res.report["verify"]["passed"]
    assert "measure" in res.report["timings"]
    assert any("this machine" in n and PROFILE in n for n in res.report["notes"])
    assert any(msg.startswith("measuring latency (round 2/3): predicted") for msg in messages)
    assert any("-> retarget" in msg for msg in messages)


def test_measured_ratio_within_target_is_one_round(monkeypatch, demo_model):
    seen = fake_measurement(monkeypatch, ratio=0.45)
    plain = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True)
    m = res.report["measured"]
    assert len(m["rounds"]) == 1 and len(seen) == 1 and m["chosen"] == 0 and m["met"]
    assert m["rounds"][0]["measured_ratio"] == 0.45 and m["rounds"][0]["fraction"] == F
    assert res.report["groups"] == plain.report["groups"]
    assert res.model.SerializeToString() == plain.model.SerializeToString()


def test_never_met_keeps_the_fastest_measured(monkeypatch, demo_model):
    fake_measurement(monkeypatch, factor=3.0)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True, measure_rounds=2)
    m = res.report["measured"]
    ratios = [r["measured_ratio"] for r in m["rounds"]]
    assert not m["met"] and 1 <= len(ratios) <= 2
    assert ratios[m["chosen"]] == min(ratios)
    assert any("above the target" in n for n in res.report["notes"])


def test_other_metrics_measure_once_without_retargeting(monkeypatch, demo_model):
    seen = fake_measurement(monkeypatch, ratio=0.7)
    plain = onnxmorph.prune(demo_model, target="flops=0.5")
    res = onnxmorph.prune(demo_model, target="flops=0.5", measure=True)
    m = res.report["measured"]
    assert len(seen) == 1 and len(m["rounds"]) == 1 and m["met"] is None
    assert m["rounds"][0]["measured_ratio"] == 0.7 and m["rounds"][0]["predicted_ratio"] is None
    assert res.report["groups"] == plain.report["groups"]
    assert "measured" not in plain.report


def test_measure_rounds_must_be_positive(demo_model):
    with pytest.raises(UsageError, match="measure-rounds"):
        onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True, measure_rounds=0)


def matmul_chain(n: int, rows: int = 64, width: int = 256) -> onnx.ModelProto:
    return build_chain("gemm", width, rows, n, np.random.default_rng(0))


def test_measure_latency_on_real_models(demo_model):
    demo = load_model(demo_model).model  # static shapes, as prune measures it
    a, b = measure_latency(demo, demo, runs=5, max_seconds=2.0)
    assert a > 0 and b > 0
    one, twenty = measure_latency(matmul_chain(1), matmul_chain(20), runs=10, max_seconds=3.0)
    assert twenty > 4 * one, (one, twenty)  # ~8x here: 20x the MACs, plus a fixed cost per run
    swapped = measure_mod.measured_ratio(matmul_chain(20), matmul_chain(1), runs=5, max_seconds=2.0)
    assert swapped["ratio"] < 0.3 and swapped["original_ms"] > swapped["pruned_ms"] > 0


def test_feeds_zeros_for_integers_and_symbolic_shapes_need_feeds():
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [numpy_helper.from_array(np.ones((10, 8), np.float32), "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = random_feeds(model)
    assert list(feeds) == ["ids"] and feeds["ids"].dtype == np.int64 and not feeds["ids"].any()
    assert measure_latency(model, model, runs=2)[0] > 0
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ShapeError, match="symbolic"):
        random_feeds(model)
    ids = {"ids": np.zeros((3, 4), np.int64)}
    assert measure_latency(model, model, runs=2, feeds=ids)[1] > 0


def test_cli_measure(tmp_path, demo_model):
    cli = [sys.executable, "-m", "onnxmorph.cli", "prune", str(demo_model), "--target", f"latency={F}",
           "--profile", PROFILE, "--measure", "--measure-rounds", "2", "--report", "r.json", "-o", "p.onnx"]
    proc = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "measured here" in proc.stdout and "measured with ONNX Runtime" in proc.stdout
    m = json.loads((tmp_path / "r.json").read_text())["measured"]
    assert 1 <= len(m["rounds"]) <= 2 and 0 <= m["chosen"] < len(m["rounds"])
    assert all(r["original_ms"] > 0 and r["pruned_ms"] > 0 for r in m["rounds"])
    assert m["clock"] == "thread cpu time" and isinstance(m["met"], bool)
    proc = subprocess.run(cli[:7] + ["--measure-rounds", "2"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--measure-rounds needs --measure" in proc.stderr


def test_next_fraction_uses_the_secant_when_measurements_lag():
    from onnxmorph.api import MEASURE_MARGIN, next_fraction

    def measured(p):  # pruning only part of the time away: measured moves at 0.55x the prediction
        return 0.25 + 0.55 * p

    aim = 0.5 * (1 - MEASURE_MARGIN)
    history = [(0.5, measured(0.5))]
    p1 = next_fraction(history, 0.5)
    assert p1 == pytest.approx(0.5 * aim / measured(0.5))  # first step: proportional
    history.append((p1, measured(p1)))
    p2 = next_fraction(history, 0.5)
    assert measured(p2) == pytest.approx(aim, rel=1e-6)  # the secant lands on the aim for a linear response
    assert p2 < history[-1][0] * aim / history[-1][1]  # further than another proportional step
