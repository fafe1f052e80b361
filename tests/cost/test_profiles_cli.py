"""`onnxmorph profiles list | show | calibrate`, and --profile on inspect / prune."""

import json
import subprocess
import sys

import onnx
import pytest

from onnxmorph.cost.profile import load_profile

from zoo import ZOO

CLI = [sys.executable, "-m", "onnxmorph.cli"]


def run(args, cwd):
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def one_line_error(proc, code):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_profiles_list_and_show(tmp_path):
    proc = run(["profiles", "list"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("k80", "p4", "t4", "p100", "v100", "tpuv2", "flop-latency", "memory-latency", "rpi4",
                 "jetson-nano", "desktop-avx2-core"):
        assert name in proc.stdout
    assert "125,000" in proc.stdout and "8,740" in proc.stdout
    listed = json.loads(run(["profiles", "list", "--json"], tmp_path).stdout)
    assert {p["name"]: p["peak_gflops"] for p in listed}["v100"] == 125000
    show = run(["profiles", "show", "T4"], tmp_path)
    assert show.returncode == 0, show.stderr
    assert "8,100 GFLOP/s" in show.stdout and "300 GB/s" in show.stdout and "resource_function.py" in show.stdout
    assert json.loads(run(["profiles", "show", "rpi4", "--json"], tmp_path).stdout)["channel_multiple"] == 4


def test_profile_errors_are_one_line(tmp_path):
    assert "unknown profile 'x999'" in one_line_error(run(["profiles", "show", "x999"], tmp_path), 2)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "peak_gflops": 10}))
    assert "missing 'memory_gbps'" in one_line_error(run(["profiles", "show", bad], tmp_path), 2)
    model = tmp_path / "m.onnx"
    onnx.save(ZOO["residual"](), model)
    line = one_line_error(run(["prune", model, "--profile", bad, "-q"], tmp_path), 2)
    assert "bad.json" in line and "memory_gbps" in line
    assert not (tmp_path / "m.pruned.onnx").exists()
    line = one_line_error(run(["prune", model, "--target", "latency=0.5", "-q"], tmp_path), 2)
    assert "needs a hardware profile" in line
    line = one_line_error(run(["inspect", model, "--profile", model], tmp_path), 2)
    assert "m.onnx" in line and ("not valid JSON" in line or "cannot read" in line)


def test_calibrate_tiny_grid_writes_a_usable_profile(tmp_path):
    out = tmp_path / "here.json"
    proc = run(["profiles", "calibrate", "--name", "here", "-o", out, "--grid", "tiny", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    prof = load_profile(out)
    assert prof.kind == "measured" and prof.name == "here"
    assert {"conv", "conv1x1", "depthwise", "gemm", "unary", "binary", "pool"} <= set(prof.tables)
    assert prof.tables["conv"].unaligned is not None
    assert prof.peak_gflops > 0 and prof.memory_gbps > 0 and prof.measured["threads"] == 1
    assert prof.tables["gemm"].out_channels is not None  # linear layers: an (in, out, rows) grid
    assert {"call", "mac", "einsum_call", "einsum_mac", "columns"} <= set(prof.batched_matmul)
    assert {"view", "run", "subnormal_exp", "subnormal_mac"} <= set(prof.overheads)
    assert {"Transpose@single_axis", "Transpose@elementwise"} <= set(prof.op_factors)
    show = run(["profiles", "show", out], tmp_path)
    assert show.returncode == 0 and "conv1x1" in show.stdout and "batched products" in show.stdout
    model = tmp_path / "m.onnx"
    onnx.save(ZOO["mobile_block"](), model)
    summary = json.loads(run(["inspect", model, "--profile", out, "--json"], tmp_path).stdout)
    assert summary["profile"] == "here" and summary["latency_ms"] > 0
    rep = tmp_path / "r.json"
    proc = run(["prune", model, "--profile", out, "--target", "flops=0.5", "--round-to", "1", "--report", rep,
                "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(rep.read_text())
    assert r["profile"]["name"] == "here" and r["original"]["latency_ms"] > 0 and r["pruned"]["latency_ms"] > 0


@pytest.mark.parametrize("args", [["--threads", "0"], ["--grid", "huge"], ["--wait-quiet", "-1"]])
def test_calibrate_bad_usage(tmp_path, args):
    one_line_error(run(["profiles", "calibrate", "--name", "x", "-q"] + args, tmp_path), 2)


def test_prune_and_inspect_show_latency(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(ZOO["residual"](), model)
    proc = run(["inspect", model, "--profile", "v100"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "predicted latency on v100" in proc.stdout and "latency share" in proc.stdout
    proc = run(["prune", model, "--profile", "t4", "--target", "flops=0.6", "--report", "r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "latency (t4)" in proc.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["target"]["round_to"] == 8 and r["profile"]["name"] == "t4"
    assert r["pruned"]["latency_ms"] < r["original"]["latency_ms"]
