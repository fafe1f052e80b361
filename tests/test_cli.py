"""The CLI contract: outputs, exit codes, one-line errors, nothing written on failure, determinism."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from zoo import ZOO

CLI = [sys.executable, "-m", "onnxmorph.cli"]


def run(args, cwd):
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def residual_file(tmp_path):
    path = tmp_path / "residual.onnx"
    onnx.save(ZOO["residual"](), path)
    return path


def assert_one_line_error(proc, code):
    assert proc.returncode == code, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_prune_writes_verified_model_report_and_masked(tmp_path, residual_file):
    proc = run(["prune", residual_file, "--target", "flops=0.5", "--report", "r.json", "--save-masked",
                "m.onnx", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "residual.pruned.onnx"
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
    assert rep["pruned"]["params"] < rep["original"]["params"]
    assert rep["verify"]["passed"] and rep["verify"]["max_abs_diff"] < 1e-4
    assert rep["method"] == "magnitude" and rep["target"]["fraction"] == 0.5
    assert {"name", "channels", "kept_indices"} <= set(rep["groups"][0])
    assert rep["frozen"] and "reason" in rep["frozen"][0]
    pruned = onnx.load(out)
    onnx.checker.check_model(pruned, full_check=True)
    masked = onnx.load(tmp_path / "m.onnx")
    ops = [n.op_type for n in masked.graph.node]
    original_ops = [n.op_type for n in ZOO["residual"]().graph.node]
    assert ops.count("Mul") > original_ops.count("Mul")  # only gate Muls were added


def test_same_seed_byte_identical(tmp_path, residual_file):
    for name in ("a.onnx", "b.onnx"):
        assert run(["prune", residual_file, "-o", name, "--seed", "3", "-q"], tmp_path).returncode == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_missing_file(tmp_path):
    line = assert_one_line_error(run(["prune", "nope.onnx"], tmp_path), 1)
    assert "no such file" in line
    assert list(tmp_path.iterdir()) == []


def test_not_onnx_and_truncated(tmp_path, residual_file):
    (tmp_path / "text.onnx").write_text("hello, I am not a model\n" * 10)
    line = assert_one_line_error(run(["prune", "text.onnx"], tmp_path), 1)
    assert "not a valid ONNX model" in line
    data = residual_file.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    line = assert_one_line_error(run(["prune", "cut.onnx"], tmp_path), 1)
    assert "cut.onnx" in line
    assert not list(tmp_path.glob("*.pruned.onnx"))


def test_output_equal_to_input_refused(tmp_path, residual_file):
    before = residual_file.read_bytes()
    line = assert_one_line_error(run(["prune", residual_file, "-o", residual_file], tmp_path), 2)
    assert "never overwrites" in line
    assert residual_file.read_bytes() == before


def test_unreachable_target_writes_nothing(tmp_path):
    path = tmp_path / "extra.onnx"
    onnx.save(ZOO["extra_output"](), path)  # half of its convs are frozen by a graph output
    line = assert_one_line_error(run(["prune", path, "--target", "flops=0.05"], tmp_path), 1)
    assert "unreachable" in line and "reaches" in line
    assert not list(tmp_path.glob("*.pruned.onnx"))
    proc = run(["prune", path, "--target", "flops=0.05", "--best-effort", "-q"], tmp_path)
    assert proc.returncode == 0 and (tmp_path / "extra.pruned.onnx").exists()


@pytest.mark.parametrize("args,needle", [
    (["--method", "voodoo"], "unknown method"),
    (["--target", "flops=1.5"], "fraction"),
    (["--target", "speed=0.5"], "bad --target"),
    (["--input-shape", "input=1xAx3"], "bad --input-shape"),
    (["--engine", "torch"], "unknown --engine 'torch'"),
    (["--engine", "ort-training", "--device", "cuda"], "CPU only"),
])
def test_bad_usage(tmp_path, residual_file, args, needle):
    line = assert_one_line_error(run(["prune", residual_file] + args, tmp_path), 2)
    assert needle in line
    assert not list(tmp_path.glob("*.pruned.onnx"))


def test_unsupported_op_frozen_and_rest_pruned(tmp_path):
    path = tmp_path / "lrn.onnx"
    onnx.save(ZOO["unsupported_op"](), path)
    proc = run(["prune", path, "--target", "flops=0.7", "--report", "r.json", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert any("LRN" in f["reason"] for f in rep["frozen"])
    assert rep["pruned"]["macs"] <= 0.7 * rep["original"]["macs"]


def test_inspect_json(tmp_path, residual_file):
    proc = run(["inspect", residual_file, "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["macs"] > 0 and summary["prunable_channels"] == 96
    shares = [g["macs_share"] for g in summary["groups"] if g["prunable"]]
    assert all(0 < s <= 1 for s in shares)


def test_bad_data(tmp_path, residual_file):
    np.savez(tmp_path / "wrong.npz", input=np.zeros((4, 3, 5, 5), np.float32))
    line = assert_one_line_error(run(["prune", residual_file, "--data", "wrong.npz"], tmp_path), 1)
    assert "shape" in line
    np.savez(tmp_path / "nan.npz", input=np.full((4, 3, 12, 12), np.nan, np.float32))
    line = assert_one_line_error(run(["prune", residual_file, "--data", "nan.npz"], tmp_path), 1)
    assert "NaN" in line
