"""Packaging: onnxmorph names no ONNX Runtime package in its requirements (pip would install the CPU
`onnxruntime` beside onnxruntime-gpu and overwrite its module), and without any runtime the CLI says so in
one line while the analysis still works."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

NO_ORT = "import sys; sys.modules['onnxruntime'] = None; from onnxmorph.cli import main; sys.argv = {}; main()"


def _cli(args):
    code = NO_ORT.format(["onnxmorph"] + args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_no_runtime_is_required_by_name_and_the_extras_choose_one():
    text = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; 3.10 is supported)
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.-]+)', deps)
    assert "onnx" in names and not [n for n in names if n.lower().startswith("onnxruntime")], names
    assert re.search(r'^cpu = \["onnxruntime>=1\.18"\]', text, re.M)
    assert re.search(r'^gpu = \["onnxruntime-gpu>=1\.18"\]', text, re.M)


def test_without_a_runtime_prune_says_so_in_one_line_and_inspect_still_works(tmp_path):
    res = _cli(["prune", str(REPO / "models" / "demo_cnn.onnx"), "-o", str(tmp_path / "out.onnx")])
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "onnxmorph[cpu]" in lines[0] and "onnxmorph[gpu]" in lines[0]  # brackets survive the console
    assert not (tmp_path / "out.onnx").exists()
    res = _cli(["inspect", str(REPO / "models" / "demo_cnn.onnx"), "--json"])
    assert res.returncode == 0, res.stderr
    assert '"macs"' in res.stdout
