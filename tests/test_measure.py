"""`prune(..., measure=True)`: measured latency on this machine and re-targeting until it meets a
latency target; `measure_latency` itself on real models; the CLI's `--measure`."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnxmorph
import onnxmorph.bench.measure as measure_mod
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.bench.calibrate import build_chain
from onnxmorph.errors import ShapeError, UsageError
from onnxmorph.graph import load_model
from onnxmorph.bench.measure import measure_latency, random_feeds

import zoo

PROFILE = "desktop-avx2-core"  # a roofline profile: its predictions are not this machine's
F = 0.5


def predicted_latency(model) -> float:
    return CostModel(analyze(load_model(model)), PROFILE).total("latency")


def fake_measurement(monkeypatch, factor=None, ratio=None, rel_se=None):
    """Replace the ONNX Runtime measurement: measured = predicted * `factor`, or always `ratio`,
    reported with relative standard error `rel_se` (over 30 pairs; None: no noise estimate, as
    before measurements had one). Returns the list of measured ratios it handed out."""
    seen = []

    def fake(original, pruned, **kw):
        r = ratio if ratio is not None else factor * predicted_latency(pruned) / predicted_latency(original)
        seen.append(r)
        noise = {} if rel_se is None else {"ratio_rel_se": rel_se, "pairs": 30}
        return {"original_ms": 1.0, "pruned_ms": r, "ratio": r, **noise}

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
    # one measurement per round, plus one confirming the round that met the target
    assert len(rounds) >= 2 and len(seen) == len(rounds) + 1
    assert rounds[-1]["confirmed_ratio"] == rounds[-1]["measured_ratio"] and rounds[-1]["met"]
    assert all("confirmed_ratio" not in r for r in rounds[:-1])
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
    assert len(m["rounds"]) == 1 and len(seen) == 2 and m["chosen"] == 0 and m["met"]  # measured, confirmed
    assert m["rounds"][0]["measured_ratio"] == 0.45 and m["rounds"][0]["fraction"] == F
    assert m["rounds"][0]["confirmed_ratio"] == 0.45
    assert res.report["groups"] == plain.report["groups"]
    assert res.model.SerializeToString() == plain.model.SerializeToString()


def test_never_met_keeps_the_fastest_measured(monkeypatch, demo_model):
    fake_measurement(monkeypatch, factor=3.0)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True, measure_rounds=2)
    m = res.report["measured"]
    ratios = [r["measured_ratio"] for r in m["rounds"]]
    assert not m["met"] and 1 <= len(ratios) <= 2
    assert ratios[m["chosen"]] == min(ratios)
    assert any("not clearly below the target" in n for n in res.report["notes"])


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
    swapped = measure_mod.measured_ratio(matmul_chain(20), matmul_chain(1), runs=5, max_seconds=2.0, min_seconds=0)
    assert swapped["ratio"] < 0.3 and swapped["original_ms"] > swapped["pruned_ms"] > 0
    assert swapped["pairs"] == 5 and 0 <= swapped["ratio_rel_se"] < 0.5  # runs=5: no early stop before 5
    # A 1 s minimum measures past `runs` pairs of a sub-millisecond model. All pairs are counted here
    # (quiet=False): on a loaded machine the quiet-pair filter may keep as few as MIN_PAIRS of them,
    # which says nothing about the minimum. (The exact rule is tested on a fake clock below.)
    a, b = measure_mod.measure_pairs(matmul_chain(2), matmul_chain(1), runs=5, max_seconds=10.0, min_seconds=1.0,
                                     quiet=False)
    assert len(a) == len(b) > 5


def test_feeds_zeros_for_integers_and_symbolic_shapes_need_feeds():
    model = zoo.embedding_lookup()
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
    for r in m["rounds"]:  # every round says how noisy it was and what it had to be at or below
        assert 5 <= r["pairs"] and 0 <= r["ratio_rel_se"] < 0.5
        # met: measured below the bound, and confirmed below it by a second measurement
        assert r["met"] == (r["measured_ratio"] <= r["met_below"] and r.get("confirmed_ratio", 1.0) <= F)
        assert r["met_below"] < F
    assert m["rounds"][0]["margin"] == 0.0 and m["met"] == any(r["met"] for r in m["rounds"])
    proc = subprocess.run(cli[:7] + ["--measure-rounds", "2"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "--measure-rounds needs --measure" in proc.stderr


def test_next_fraction_uses_the_secant_when_measurements_lag():
    from onnxmorph.bench.retarget import measure_margin, next_fraction

    def measured(p):  # pruning only part of the time away: measured moves at 0.55x the prediction
        return 0.25 + 0.55 * p

    aim = 0.5 * (1 - measure_margin(0.01))
    assert aim == pytest.approx(0.48337, abs=1e-5)
    history = [(0.5, measured(0.5))]
    p1 = next_fraction(history, 0.5, 0.01)
    assert p1 == pytest.approx(0.5 * aim / measured(0.5))  # first step: proportional
    history.append((p1, measured(p1)))
    p2 = next_fraction(history, 0.5, 0.01)
    assert measured(p2) == pytest.approx(aim, rel=1e-6)  # the secant lands on the aim for a linear response
    assert p2 < history[-1][0] * aim / history[-1][1]  # further than another proportional step


# --- the measurement's noise and what the loop does with it ---------------------------------------

def synthetic_pairs(rng, n, noise, ratio=0.5, shape=()):
    """Times of A ~ 1 * (1 + noise * N(0, 1)) and of B ~ `ratio` * (1 + noise * N(0, 1)), independent."""
    a = 1.0 + noise * rng.standard_normal(shape + (n,))
    b = ratio * (1.0 + noise * rng.standard_normal(shape + (n,)))
    return a, b


def test_bootstrap_se_matches_the_spread_of_repeated_measurements():
    rng = np.random.default_rng(1)
    a, b = synthetic_pairs(rng, 30, 0.05, shape=(4000,))
    ratios = np.median(b, axis=1) / np.median(a, axis=1)
    truth = ratios.std() / ratios.mean()  # what 4000 independent measurements of 30 pairs scatter by
    # ~1.6 %: a median of n normal times has relative SE sqrt(pi / 2) s / sqrt(n); two of them, sqrt(2) that
    assert truth == pytest.approx(np.sqrt(2) * np.sqrt(np.pi / 2) * 0.05 / np.sqrt(30), rel=0.1)
    ses = np.array([measure_mod.ratio_rel_se(a[i], b[i]) for i in range(20)])  # each from one measurement alone
    assert ses.mean() == pytest.approx(truth, rel=0.2)
    assert (ses > 0.5 * truth).all() and (ses < 2 * truth).all()
    # Fixed seed: the same times, the same estimate; less noise, proportionally less error.
    assert measure_mod.ratio_rel_se(a[0], b[0]) == ses[0]
    quiet = measure_mod.ratio_rel_se(1 + (a[0] - 1) / 5, 0.5 + (b[0] - 0.5) / 5)
    assert quiet == pytest.approx(ses[0] / 5, rel=0.1)


def test_bootstrap_se_is_zero_without_noise_and_ignores_drift_common_to_a_pair():
    assert measure_mod.ratio_rel_se([2.0] * 10, [1.0] * 10) == 0.0
    # The machine slows by up to 40 % and back while measuring; A and B of a pair slow alike.
    drift = 1 + 0.4 * np.sin(np.linspace(0, 3, 20)) ** 2
    a, b = 1.0 * drift, 0.5 * drift
    assert np.std(a) / np.mean(a) > 0.1 and measure_mod.ratio_rel_se(a, b) < 1e-12
    assert measure_mod.ratio_rel_se([1.0], [0.5]) == np.inf  # one pair says nothing about noise
    with pytest.raises(UsageError):
        measure_mod.ratio_rel_se([1.0, 1.0], [1.0])


def fake_pairs(noise, seed=0):
    """A timing source for `collect_pairs`: (A, B) per call with relative noise `noise`; counts calls."""
    rng = np.random.default_rng(seed)
    calls = []

    def run_pair():
        calls.append(1)
        return 1.0 + noise * rng.standard_normal(), 0.5 * (1.0 + noise * rng.standard_normal())

    return run_pair, calls


def test_collect_pairs_stops_early_when_quiet_and_measures_on_when_noisy():
    quiet, calls = fake_pairs(0.002)
    a, b = measure_mod.collect_pairs(quiet, runs=30, max_seconds=10.0)
    assert len(a) == len(b) == len(calls) == measure_mod.STOP_PAIRS == 10  # SE ~0.1 % at once
    assert measure_mod.ratio_rel_se(a, b) <= measure_mod.TARGET_REL_SE
    noisy, calls = fake_pairs(0.10)
    a, b = measure_mod.collect_pairs(noisy, runs=30, max_seconds=10.0)
    assert len(a) == 30 and measure_mod.ratio_rel_se(a, b) > 0.02  # ~3 % at 30 pairs: all the runs
    quiet, calls = fake_pairs(0.002)
    a, _ = measure_mod.collect_pairs(quiet, runs=30, max_seconds=10.0, target_rel_se=0)
    assert len(a) == 30  # no early stop: as before


def test_collect_pairs_keeps_the_time_limit():
    noisy, calls = fake_pairs(0.10)
    a, _ = measure_mod.collect_pairs(noisy, runs=30, max_seconds=8.0, elapsed=lambda: 0.5 * len(calls))
    assert len(a) == 16  # 0.5 s a pair: noisy, yet stops at 8 s
    noisy, calls = fake_pairs(0.10)
    a, _ = measure_mod.collect_pairs(noisy, runs=30, max_seconds=8.0, elapsed=lambda: 100.0)
    assert len(a) == measure_mod.MIN_PAIRS  # out of time from the start: still the minimum


def test_margin_grows_with_the_noise():
    from onnxmorph.bench.retarget import MAX_MARGIN, MIN_MARGIN, measure_margin, met_below

    margins = [measure_margin(se) for se in (0.0, 0.005, 0.01, 0.02, 0.05, np.inf)]
    assert margins == pytest.approx([0.01, 0.021632, 0.033264, 0.066528, 0.10, 0.10], abs=1e-5)
    assert margins[0] == MIN_MARGIN and margins[-1] == MAX_MARGIN
    # The ratio a round must be at or below: z * sqrt(2) * rel_se under F (a prediction bound for a
    # re-measurement with noise of its own), always above the aim so a round on the aim is met.
    assert [met_below(F, se) for se in (0.0, 0.01, 0.02)] == pytest.approx([0.5, 0.488368, 0.476736], abs=1e-6)
    for se in (0.0, 0.005, 0.01, 0.02):
        assert F * (1 - measure_margin(se)) < met_below(F, se) - 0.005 * F


def test_a_ratio_measured_at_the_target_with_noise_is_not_met():
    from onnxmorph.bench.retarget import measured_met

    assert measured_met(0.5, 0.0, F)  # no noise estimate: plainly <= F, as before
    assert not measured_met(0.5, 0.01, F)  # right at F with 1 % noise: a coin toss next time
    assert not measured_met(0.49, 0.01, F)  # below even the 95 % confidence bound 0.4918, not the prediction bound
    assert measured_met(0.488, 0.01, F) and not measured_met(0.488, 0.02, F)
    assert not measured_met(0.1, np.inf, F)  # unknown noise never meets


def test_next_fraction_aims_lower_with_more_noise():
    from onnxmorph.bench.retarget import next_fraction

    steps = [next_fraction([(0.5, 0.55)], F, se) for se in (0.0, 0.005, 0.01, 0.02)]
    assert steps == pytest.approx([0.45, 0.444713, 0.439426, 0.424306], abs=1e-6)  # 0.5 * aim / 0.55
    history = [(0.5, 0.525), (0.45, 0.5)]  # secant steps aim lower too
    assert next_fraction(history, F, 0.02) < next_fraction(history, F, 0.01) < next_fraction(history, F, 0.0)


def test_a_met_round_that_a_second_measurement_does_not_confirm_is_not_met(monkeypatch, demo_model):
    """The first measurement below the bound is the smallest of noisy numbers: 0.47 then 0.52 on the
    same selection is not met, and the next round aims lower from both."""
    ratios = iter([0.47, 0.52, 0.44, 0.45])
    seen = []

    def fake(original, pruned, **kw):
        r = next(ratios)
        seen.append(r)
        return {"original_ms": 1.0, "pruned_ms": r, "ratio": r, "ratio_rel_se": 0.002, "pairs": 30}

    monkeypatch.setattr(measure_mod, "measured_ratio", fake)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True)
    m = res.report["measured"]
    assert seen == [0.47, 0.52, 0.44, 0.45]
    first, second = m["rounds"]
    assert first["measured_ratio"] == 0.47 and first["confirmed_ratio"] == 0.52 and not first["met"]
    assert second["fraction"] < first["fraction"] and second["met"] and m["met"] and m["chosen"] == 1


def test_measured_at_the_target_with_noise_retargets_and_is_never_met(monkeypatch, demo_model):
    from onnxmorph.bench.retarget import measure_margin

    seen = fake_measurement(monkeypatch, ratio=F, rel_se=0.01)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True)
    m = res.report["measured"]
    assert len(seen) == len(m["rounds"]) == 3 and not m["met"]
    assert [r["met"] for r in m["rounds"]] == [False] * 3
    assert [r["margin"] for r in m["rounds"]] == pytest.approx([0.0, 0.033264, 0.033264], abs=1e-6)
    assert all(r["ratio_rel_se"] == 0.01 and r["pairs"] == 30 and r["met_below"] == 0.488368 for r in m["rounds"])
    assert all(b["fraction"] < a["fraction"] for a, b in zip(m["rounds"], m["rounds"][1:]))
    assert any("within this machine's measurement noise (±1.0 %)" in n and "0.488" in n
               for n in res.report["notes"])
    assert measure_margin(0.01) == pytest.approx(m["rounds"][1]["margin"], abs=1e-6)


def test_noisy_measurement_retargets_below_the_noise_and_is_met(monkeypatch, demo_model):
    fake_measurement(monkeypatch, factor=1.15, rel_se=0.01)
    res = onnxmorph.prune(demo_model, target=f"latency={F}", profile=PROFILE, measure=True)
    m = res.report["measured"]
    chosen = m["rounds"][m["chosen"]]
    assert m["met"] and chosen["met"] and m["chosen"] == len(m["rounds"]) - 1 >= 1
    assert chosen["measured_ratio"] <= 0.488368  # F (1 - 1.645 sqrt(2) 1 %), not merely <= F
    assert chosen["margin"] == pytest.approx(0.033264, abs=1e-6)
    assert chosen["fraction"] <= F * (1 - 0.033264) / 1.15 + 1e-6  # the proportional step's aim


def test_collect_pairs_measures_for_min_seconds_before_any_stop():
    quiet, calls = fake_pairs(0.002)
    a, _ = measure_mod.collect_pairs(quiet, runs=10, max_seconds=100.0, min_seconds=5.0,
                                     elapsed=lambda: 0.1 * len(calls))
    assert len(a) == 50  # neither `runs` nor the quiet early stop end it before 5 s


def test_only_pairs_measured_on_the_quiet_machine_count(monkeypatch):
    monkeypatch.setattr(measure_mod, "_FASTEST_REFERENCE", [float("inf")])
    refs = [1.0, 1.1, 2.0, 1.0, 1.05, 1.9, 1.0]
    assert measure_mod.quiet_pairs(refs).tolist() == [0, 1, 3, 4, 6]
    # fewer than MIN_PAIRS quiet: all count (a loaded machine still gets a number)
    assert measure_mod.quiet_pairs([1.0, 2.0, 2.1, 2.2, 2.0, 1.9]).tolist() == [0, 1, 2, 3, 4, 5]
    # the fastest reference of the process carries over: a measurement taken loaded throughout
    assert measure_mod.quiet_pairs([2.0, 2.0, 2.1, 2.0, 2.2, 2.0]).tolist() == [0, 1, 2, 3, 4, 5]
    assert measure_mod._FASTEST_REFERENCE[0] == 1.0
