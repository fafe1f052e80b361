"""CLI output contracts for issue 14: `inspect --json` prints only JSON on stdout, and `--save-masked`
keeps the original interface (dynamic batch) like the pruned model."""

import json
import subprocess
import sys

import numpy as np
import onnx

from onnxmorph.runtime import run_model
from zoo import ZOO, GraphBuilder

CLI = [sys.executable, "-m", "onnxmorph.cli"]


def run(args, cwd):
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_inspect_json_stdout_is_only_json(tmp_path):
    """A weight computed from a > 1 MiB constant (Transpose of a stored matrix, as tf2onnx writes) makes
    onnx-graphsurgeon's folder warn; that warning must not reach stdout."""
    b = GraphBuilder("large_folded_weight")
    x = b.input([1, 600])
    w = b.op("Transpose", [b.const(b.rand(600, 600))], perm=[1, 0])
    m = b.build(b.matmul(b.op("Relu", [b.op("MatMul", [x, w])]), 600, 4))
    onnx.save(m, tmp_path / "m.onnx")
    proc = run(["inspect", "m.onnx", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["opset"] == 17


def test_save_masked_keeps_dynamic_batch(tmp_path):
    onnx.save(ZOO["dynamic_batch"](), tmp_path / "d.onnx")
    proc = run(["prune", "d.onnx", "--target", "flops=0.5", "--save-masked", "masked.onnx", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    masked, pruned = onnx.load(tmp_path / "masked.onnx"), onnx.load(tmp_path / "d.pruned.onnx")
    for m in (masked, pruned):
        assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
        assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    out_m, out_p = run_model(masked, {"input": x})[0], run_model(pruned, {"input": x})[0]
    assert out_m.shape == (5, 5)
    np.testing.assert_allclose(out_m, out_p, rtol=1e-4, atol=1e-5)
    assert sum(n.op_type == "Mul" for n in masked.graph.node) > 0  # gates are there


def test_scalar_input_from_the_cli(tmp_path):
    onnx.save(ZOO["scalar_input"](), tmp_path / "s.onnx")
    proc = run(["prune", "s.onnx", "--target", "flops=0.5", "--input-shape", "gain=", "--report", "r.json",
                "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verify"]["passed"] and rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
