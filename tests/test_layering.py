"""The layering is enforced: import-linter's contracts (pyproject.toml) hold, and no module imports a
private name (`_name`) from another module."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout and " kept" in run.stdout


def private_imports(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from <onnxmorph module> import _name` in `tree`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        internal = node.level > 0 or (node.module or "").split(".")[0] == "onnxmorph"
        for alias in node.names:
            name = alias.name
            if internal and name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                found.append((node.lineno, "." * node.level + (node.module or ""), name))
    return found


def test_private_import_scan_finds_one():
    tree = ast.parse("from .bench.timing import _model, clock_fn\nfrom onnx.reference import _x\n"
                     "from .. import __version__\nfrom onnxmorph.cost import _hidden as h\n")
    assert private_imports(tree) == [(1, ".bench.timing", "_model"), (4, "onnxmorph.cost", "_hidden")]


def test_no_module_imports_a_private_name():
    files = [p for d in ("onnxmorph", "tests", "tools") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 100
    bad = [f"{p.relative_to(ROOT)}:{line}: from {mod} import {name}"
           for p in files for line, mod, name in private_imports(ast.parse(p.read_text(), str(p)))]
    assert not bad, "\n".join(bad)
