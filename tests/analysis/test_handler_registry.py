"""Handler registration is explicit: every handler module is listed in analysis/handlers/__init__.py,
importing that package registers them all whatever was imported before, and every op type the
test zoo uses resolves to a handler (the leaf only where the zoo means it)."""

import ast
import subprocess
import sys
from pathlib import Path

import zoo
from onnxmorph.analysis import handlers
from onnxmorph.analysis.handlers import LEAF, handler_for
from onnxmorph.graph import load_model

HANDLERS = Path(handlers.__file__).parent
# op types the zoo uses on purpose with no handler (their channels are frozen), and where
INTENDED_LEAVES = {"LRN": {"unsupported_op"}}


def zoo_op_types() -> dict[str, set[str]]:
    """op type -> the zoo patterns using it (after loading: Constants folded, opsets converted)."""
    ops: dict[str, set[str]] = {}
    for name, build in list(zoo.ZOO.items()) + [(f.__name__, f) for f in zoo.TRANSFORMERS]:
        for node in load_model(build()).graph().nodes:
            ops.setdefault(node.op, set()).add(name)
    return ops


def test_every_zoo_op_has_a_handler():
    ops = zoo_op_types()
    assert len(ops) > 30
    leaves = {op: names for op, names in ops.items()
              if handler_for(type("Node", (), {"op": op, "domain": ""})) is LEAF}
    assert leaves == INTENDED_LEAVES


def registering_modules() -> set[str]:
    """Modules of analysis/handlers/ that define a class registered with @register."""
    found = set()
    for path in HANDLERS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list):
                found.add(path.stem)
    return found


def test_every_handler_module_is_listed_in_one_place():
    listed = {m.__name__.rsplit(".", 1)[-1] for m in handlers.HANDLER_MODULES}
    assert registering_modules() <= listed
    assert {"attention", "conv", "elementwise"} <= listed


def test_importing_the_package_registers_everything_in_any_order():
    # a fresh interpreter that first imports the module registered last before (linear imported
    # attention, which the package did not list): the registry must come out the same
    code = ("import onnxmorph.analysis.handlers.conv\nfrom onnxmorph.analysis.handlers import registered_ops\n"
            "print(','.join(registered_ops()))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().split(",") == handlers.registered_ops()
    assert "Einsum" in handlers.registered_ops()  # attention's handler
