"""`onnxmorph sweep` end to end on the demo model: the local process pool (trials, held-out fidelity,
front, --pick, --resume), the same sweep on a real local Ray instance, and one-line usage errors."""

import json
import shutil
import socket
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnxmorph
from conftest import REPO
from onnxmorph.runtime import make_session

MODEL = REPO / "models" / "demo_cnn.onnx"
DATA = REPO / "models" / "demo_cnn.npz"
TEST = REPO / "models" / "demo_cnn_test.npz"
# tiny trials: one-shot magnitude and Fisher signals without training steps, no reconstruction;
# one ORT thread per trial in both backends
ARGS = ["--data", DATA, "--eval-data", TEST, "--targets", "flops=0.25,0.5,0.75", "--methods", "magnitude,fisher",
        "--steps", "0", "--no-reconstruct", "--trial-cpus", "1"]
TINY = {"steps": 0, "reconstruct": False}
NAMES = [f"{m}-flops={f}" for m in ("magnitude", "fisher") for f in (0.25, 0.5, 0.75)]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnxmorph.cli", "sweep", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def one_line(proc, code):
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def brute_front(trials, cost, fid):
    done = [t for t in trials if t["status"] == "done"]
    front = [t for t in done if not any(o[cost] <= t[cost] and o[fid] >= t[fid] and (o[cost] < t[cost] or o[fid] > t[fid])
                                        for o in done)]
    return [t["name"] for t in sorted(front, key=lambda t: t[cost])]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    proc = cli(MODEL, *ARGS, "--workers", "2", "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "sweep.json").read_text())


def test_local_sweep_trials_fidelity_front(local):
    out, summary = local
    trials = {t["name"]: t for t in summary["trials"]}
    assert list(trials) == NAMES and all(t["status"] == "done" for t in trials.values())
    assert summary["backend"]["backend"] == "local" and summary["counts"]["ran"] == 6
    test = np.load(TEST)
    original = make_session(onnx.load(MODEL)).run(None, {"input": test["input"]})[0]
    for name, t in trials.items():
        fraction = float(name.split("=")[1])
        report = json.loads((out / name / "report.json").read_text())
        assert t["macs"] == report["pruned"]["macs"] <= fraction * report["original"]["macs"]
        pruned = onnx.load(out / name / "model.onnx")
        assert pruned.graph.input[0].name == "input"
        # the sweep's fidelity is the held-out agreement: recomputed here from the written model
        logits = make_session(pruned).run(None, {"input": test["input"]})[0]
        assert abs(t["agreement"] - np.mean(logits.argmax(1) == original.argmax(1))) < 1e-6
        assert report["sweep"]["fidelity"]["samples"] == len(test["input"])
        assert report["fidelity"]["agreement"] == t["agreement"]  # the prune report's own figure, alike
    for method in ("magnitude", "fisher"):
        macs = [trials[f"{method}-flops={f}"]["macs"] for f in (0.25, 0.5, 0.75)]
        assert macs[0] < macs[1] < macs[2]
    assert summary["front"]["macs"] == brute_front(summary["trials"], "macs", "agreement")
    assert summary["cost_key"] == "macs" and summary["pick"] is None
    page = (out / "sweep.html").read_text()
    assert "<svg" in page and all(f'xlink:href="{n}/report.json"' in page for n in NAMES)


def test_pick_and_resume_rerun_nothing(local, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(local[0], out)  # copy2 keeps the mtimes
    trials = local[1]["trials"]
    files = sorted(out.glob("*/*.*"))
    assert len(files) == 12
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    bar = float(np.median([t["agreement"] for t in trials]))
    good = [t for t in trials if t["agreement"] >= bar]
    expected = min(good, key=lambda t: (t["macs"], -t["agreement"]))["name"]

    proc = cli(MODEL, *ARGS, "-o", out, "--resume", "--pick", f"agreement>={bar}", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"] == {"total": 6, "ran": 0, "resumed": 6, "done": 6, "failed": 0}
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert summary["pick"]["chosen"] == expected
    assert (out / "best.onnx").read_bytes() == (out / expected / "model.onnx").read_bytes()
    assert summary["front"] == local[1]["front"]

    # nothing qualifies: exit 1, one line naming the closest (the most faithful), no stale best.onnx
    top = max(trials, key=lambda t: (t["agreement"], -t["macs"]))
    line = one_line(cli(MODEL, *ARGS, "-o", out, "--resume", "--pick", "agreement>=1.01", "-q"), 1)
    assert f"closest: {top['name']} (agreement" in line and not (out / "best.onnx").exists()

    # a trial whose report is gone runs again, alone, with the same result
    victim = out / "fisher-flops=0.5"
    (victim / "report.json").unlink()
    proc = cli(MODEL, *ARGS, "-o", out, "--resume", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["counts"]["ran"] == 1 and summary["counts"]["resumed"] == 5
    changed = {p for p in files if not p.exists() or p.stat().st_mtime_ns != mtimes[p]}
    assert changed == {victim / "model.onnx", victim / "report.json"}
    again = next(t for t in summary["trials"] if t["name"] == victim.name)
    before = next(t for t in trials if t["name"] == victim.name)
    assert (again["macs"], again["agreement"]) == (before["macs"], before["agreement"])


def test_ray_sweep_matches_local_and_survives_a_failed_trial(local, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # flops=0.001 is below what removing every legal channel reaches: those trials raise
        result = onnxmorph.sweep(MODEL, data=DATA, eval_data=TEST, targets="flops=0.25,0.5,0.75,0.001",
                                 methods="magnitude,fisher", trial_cpus=1, ray=True, outdir=tmp_path, **TINY)
    finally:
        ray.shutdown()
    out, summary = local
    assert result.summary["backend"]["backend"] == "ray" and result.summary["backend"]["cluster"]["CPU"] == 2
    failed = {t.name: t.error for t in result.failed}
    assert set(failed) == {"magnitude-flops=0.001", "fisher-flops=0.001"}
    assert all("unreachable" in e and "\n" not in e for e in failed.values())
    assert not (tmp_path / "fisher-flops=0.001" / "model.onnx").exists()
    local_trials = {t["name"]: t for t in summary["trials"]}
    done = {t.name: t for t in result.trials if t.status == "done"}
    assert sorted(done) == sorted(NAMES)
    for name, t in done.items():  # same trials: same models byte for byte, same figures
        assert (tmp_path / name / "model.onnx").read_bytes() == (out / name / "model.onnx").read_bytes()
        assert (t.value("macs"), t.value("agreement")) == (local_trials[name]["macs"], local_trials[name]["agreement"])
    assert result.fronts["macs"] == summary["front"]["macs"]
    assert [t.name for t in result.front] == summary["front"]["macs"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra, words", [
    (["--targets", "flops=0.5", "--pick", "agreement>>0.9"], "bad constraint 'agreement>>0.9'"),
    (["--targets", ""], "no targets given"),
    (["--targets", "flops=0.5", "--ray", f"127.0.0.1:{_closed_port()}"], "cannot reach a Ray cluster there"),
])
def test_usage_errors_are_one_line(tmp_path, extra, words):
    line = one_line(cli(MODEL, "--data", DATA, *extra, "-o", tmp_path / "out"), 2)
    assert words in line
    assert not (tmp_path / "out").exists()


def test_measured_and_predicted_latency_axes(tmp_path):
    result = onnxmorph.sweep(MODEL, data=DATA, targets="flops=0.5", methods="magnitude", profile="dev-host-xeon-avx512",
                             round_to=1, measure=True, labels="labels", workers=1, outdir=tmp_path,
                             pick="latency_ms<=1000", **TINY)
    (t,) = result.trials
    report = json.loads((tmp_path / t.name / "report.json").read_text())
    row = report["measured"]["rounds"][report["measured"]["chosen"]]
    assert t.value("measured_ms") == row["pruned_ms"] > 0 and t.value("latency_ms") == t.value("measured_ms")
    assert t.value("predicted_ms") == report["pruned"]["latency_ms"] > 0
    assert t.value("predicted_ratio") == pytest.approx(t.value("predicted_ms") / report["original"]["latency_ms"])
    assert t.value("accuracy") == report["sweep"]["fidelity"]["accuracy"] and result.fidelity_key == "accuracy"
    # no --eval-data: the rows prune itself would keep out of --data are held out, and not trained on
    assert report["sweep"]["eval"]["samples"] == 130 and report["sweep"]["eval"]["train_samples"] == 1170
    assert report["fidelity"]["samples"] == 130 and report["fidelity"]["accuracy"] == t.value("accuracy")
    assert result.cost_key == "measured_ms" and set(result.fronts) == {"macs", "predicted_ms", "measured_ms"}
    assert result.pick.chosen is t and (tmp_path / "best.onnx").exists()
    assert (tmp_path / "sweep.html").read_text().count("<svg") == 3
