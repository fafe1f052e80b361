"""Bad input and faults through the real CLI (issue 14): each case runs `onnxmorph` in a subprocess
with its own TMPDIR and checks the exit code, exactly one stderr line (no traceback), the input
files' bytes unchanged, and no stray files in the output folder or in TMPDIR.

Faults are made for real: a full disk by RLIMIT_FSIZE (the write fails with EFBIG), read-only
folders by a 0555 folder and a process without CAP_DAC_OVERRIDE (root otherwise writes anywhere),
SIGINT / SIGTERM sent while training runs. The cases run in parallel, one process per core."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zoo import ZOO, GraphBuilder

CLI = [sys.executable, "-m", "onnxmorph.cli"]
# onnxruntime (1.32) keeps a session id in $TMPDIR/.ses on import; it is the runtime's, not ours
RUNTIME_FILES = {".ses"}
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
TIMEOUT = 120  # seconds per case; each takes 1-7 s on a loaded 2-core machine


# --- models and data --------------------------------------------------------------------------------

def _residual() -> bytes:
    return ZOO["residual"]().SerializeToString()


def _shape(model_bytes: bytes) -> list[int]:
    m = onnx.load_from_string(model_bytes)
    return [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]


def _custom_op() -> bytes:
    """A custom-domain op after a conv: ONNX Runtime refuses the model when asked for shapes."""
    b = GraphBuilder("custom")
    y = b.cbr(b.input([1, 3, 8, 8]), 3, 8)
    b.nodes.append(helper.make_node("Foo", [y], ["foo"], domain="my.domain", name="foo"))
    g = helper.make_graph(b.nodes, "custom", b.inputs, [helper.make_tensor_value_info("foo", TensorProto.FLOAT, None)],
                          b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _dangling_input() -> bytes:
    """Fails the checker: a node reads a tensor nothing produces."""
    b = GraphBuilder("dangling")
    y = b.cbr(b.input([1, 3, 8, 8]), 3, 8)
    b.nodes.append(helper.make_node("Add", [y, "ghost"], ["out"], name="add"))
    g = helper.make_graph(b.nodes, "dangling", b.inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _no_inputs() -> bytes:
    g = helper.make_graph([helper.make_node("Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                          [1], [1.0]))],
                          "const", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _future_opset() -> bytes:
    m = ZOO["conv_chain"]()
    m.opset_import[0].version = 99
    return m.SerializeToString()


def _external_data_missing() -> bytes:
    m = ZOO["conv_chain"]()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    del w.float_data[:]
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "weights.bin"), ("offset", "0"), ("length", "1296")):
        w.external_data.add(key=k, value=v)
    return m.SerializeToString()


def _huge_input() -> bytes:
    b = GraphBuilder("huge")
    y = b.cbr(b.input([1, 3, 65536, 65536]), 3, 8)
    return b.build(b.head(y, 8)).SerializeToString()


def _spatial_dynamic() -> bytes:
    """Symbolic batch, height and width: --input-shape decides the size."""
    b = GraphBuilder("spatial")
    y = b.cbr(b.input(["N", 3, "H", "W"]), 3, 8)
    return b.build(b.head(y, 8)).SerializeToString()


def _huge_activation() -> bytes:
    """A small input that a Resize blows up to 3x65536x65536 floats (48 GiB)."""
    b = GraphBuilder("blowup")
    x = b.input([1, 3, 64, 64])
    scales = b.const(np.array([1, 1, 1024, 1024], np.float32))
    up = b.op("Resize", [x, "", scales], mode="nearest")
    y = b.cbr(up, 3, 4)
    return b.build(b.head(y, 4)).SerializeToString()


MODELS: dict[str, Callable[[], bytes]] = {
    "res.onnx": _residual, "frozen.onnx": lambda: ZOO["unsupported_op"]().SerializeToString(),
    "dyn.onnx": lambda: ZOO["dynamic_batch"]().SerializeToString(), "custom.onnx": _custom_op,
    "dangling.onnx": _dangling_input, "noinputs.onnx": _no_inputs, "future.onnx": _future_opset,
    "external.onnx": _external_data_missing, "huge.onnx": _huge_input, "spatial.onnx": _spatial_dynamic,
    "blowup.onnx": _huge_activation,
}
_CACHE: dict[str, bytes] = {}


def model_bytes(name: str) -> bytes:
    if name not in _CACHE:
        _CACHE[name] = MODELS[name]()
    return _CACHE[name]


def res_inputs(n=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal([n] + _shape(model_bytes("res.onnx"))[1:]).astype(np.float32)


def npz(path: Path, **arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --- the cases --------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    args: list[str]  # "{in}" is the inputs folder; the command runs in the (empty) output folder
    code: int
    says: str  # a piece of the one stderr line (case-insensitive)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # inputs to create
    out: Callable[[Path], None] | None = None  # prepare the output folder (existing entries are kept)
    limit: str | None = None  # "readonly": no CAP_DAC_OVERRIDE; "fsize:N": RLIMIT_FSIZE of N bytes


def m(name: str) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(model_bytes(name))


def raw(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def data(**arrays) -> Callable[[Path], None]:
    return lambda p: npz(p, **{k: (v() if callable(v) else v) for k, v in arrays.items()})


def folder(p: Path) -> None:
    p.mkdir()


def readonly(*names: str) -> Callable[[Path], None]:
    def make(out: Path) -> None:
        for n in names:
            (out / n).mkdir()
            (out / n).chmod(0o555)
    return make


def labels_of(n=24, classes=5):
    return np.arange(n) % classes


RES = {"res.onnx": m("res.onnx")}
RES_DATA = {**RES, "d.npz": data(input=res_inputs, y=labels_of)}
OBJ = np.array([{"pickled": True}, None], dtype=object)
PROFILE = {"schema": 1, "name": "mine", "peak_gflops": 100.0, "memory_gbps": 10.0}


def profile(**fields) -> Callable[[Path], None]:
    return lambda p: p.write_text(json.dumps({**PROFILE, **fields}))


CASES = [
    # model files
    Case("missing-model", ["prune", "{in}/nope.onnx"], 1, "no such file"),
    Case("model-is-folder", ["prune", "{in}/dir.onnx"], 1, "directory", {"dir.onnx": folder}),
    Case("text-model", ["prune", "{in}/t.onnx"], 1, "not a valid onnx model", {"t.onnx": raw(b"not a model\n" * 20)}),
    Case("empty-model", ["prune", "{in}/e.onnx"], 1, "e.onnx", {"e.onnx": raw(b"")}),
    Case("random-bytes", ["prune", "{in}/r.onnx"], 1, "r.onnx",
         {"r.onnx": raw(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())}),
    Case("truncated-model", ["prune", "{in}/cut.onnx"], 1, "cut.onnx",
         {"cut.onnx": lambda p: p.write_bytes(model_bytes("res.onnx")[: len(model_bytes("res.onnx")) // 2])}),
    Case("npz-as-model", ["prune", "{in}/d.npz"], 1, "not a valid onnx model", {"d.npz": data(input=res_inputs)}),
    Case("custom-op", ["prune", "{in}/custom.onnx"], 1, "my.domain:foo", {"custom.onnx": m("custom.onnx")}),
    Case("fails-checker", ["prune", "{in}/dangling.onnx"], 1, "ghost", {"dangling.onnx": m("dangling.onnx")}),
    Case("no-inputs", ["prune", "{in}/noinputs.onnx"], 1, "no inputs", {"noinputs.onnx": m("noinputs.onnx")}),
    Case("future-opset", ["prune", "{in}/future.onnx"], 1, "future.onnx", {"future.onnx": m("future.onnx")}),
    Case("external-data-missing", ["prune", "{in}/external.onnx"], 1, "external data",
         {"external.onnx": m("external.onnx")}),
    Case("inspect-missing", ["inspect", "{in}/nope.onnx"], 1, "no such file"),
    Case("inspect-truncated", ["inspect", "{in}/cut.onnx"], 1, "cut.onnx",
         {"cut.onnx": lambda p: p.write_bytes(model_bytes("res.onnx")[:100])}),
    Case("inspect-custom-op", ["inspect", "{in}/custom.onnx"], 1, "my.domain:foo", {"custom.onnx": m("custom.onnx")}),
    Case("inspect-json-custom-op", ["inspect", "{in}/custom.onnx", "--json"], 1, "my.domain:foo",
         {"custom.onnx": m("custom.onnx")}),
    # huge declared shapes: refused before anything is allocated
    Case("huge-input", ["prune", "{in}/huge.onnx"], 1, "input 'input' of shape 1x3x65536x65536 takes 48.0 gib",
         {"huge.onnx": m("huge.onnx")}),
    Case("inspect-huge-input", ["inspect", "{in}/huge.onnx"], 1, "48.0 gib", {"huge.onnx": m("huge.onnx")}),
    Case("huge-input-shape", ["prune", "{in}/spatial.onnx", "--input-shape", "input=1x3x60000x60000"], 1,
         "1x3x60000x60000", {"spatial.onnx": m("spatial.onnx")}),
    Case("huge-batch", ["prune", "{in}/dyn.onnx", "--input-shape", "input=100000000x3x8x8"], 1,
         "100000000x3x8x8", {"dyn.onnx": m("dyn.onnx")}),
    Case("huge-activation", ["prune", "{in}/blowup.onnx"], 1, "x65536x65536 takes", {"blowup.onnx": m("blowup.onnx")}),
    # --input-shape
    Case("shape-unknown-name", ["prune", "{in}/res.onnx", "--input-shape", "image=1x3x16x16"], 2, "image", RES),
    Case("shape-no-equals", ["prune", "{in}/res.onnx", "--input-shape", "input"], 2, "bad --input-shape", RES),
    Case("shape-not-numbers", ["prune", "{in}/res.onnx", "--input-shape", "input=1xax3"], 2, "bad --input-shape", RES),
    Case("shape-zero-dim", ["prune", "{in}/dyn.onnx", "--input-shape", "input=0x3x8x8"], 2, "positive",
         {"dyn.onnx": m("dyn.onnx")}),
    Case("shape-wrong-rank", ["prune", "{in}/dyn.onnx", "--input-shape", "input=1x3x8"], 1, "contradicts",
         {"dyn.onnx": m("dyn.onnx")}),
    Case("shape-contradicts", ["prune", "{in}/dyn.onnx", "--input-shape", "input=1x4x8x8"], 1, "contradicts",
         {"dyn.onnx": m("dyn.onnx")}),
    Case("shape-needed", ["prune", "{in}/spatial.onnx"], 1, "--input-shape", {"spatial.onnx": m("spatial.onnx")}),
    # output locations: all checked before any work starts
    Case("out-missing-folder", ["prune", "{in}/res.onnx", "-o", "nodir/p.onnx"], 2, "does not exist", RES),
    Case("out-is-folder", ["prune", "{in}/res.onnx", "-o", "sub"], 2, "is a folder", RES, out=lambda o: folder(o / "sub")),
    Case("out-parent-is-file", ["prune", "{in}/res.onnx", "-o", "f/p.onnx"], 2, "not a folder", RES,
         out=lambda o: (o / "f").write_text("x")),
    Case("report-missing-folder", ["prune", "{in}/res.onnx", "--report", "nodir/r.json"], 2, "--report", RES),
    Case("report-is-folder", ["prune", "{in}/res.onnx", "--report", "sub"], 2, "is a folder", RES,
         out=lambda o: folder(o / "sub")),
    Case("masked-missing-folder", ["prune", "{in}/res.onnx", "--save-masked", "nodir/m.onnx"], 2, "--save-masked", RES),
    Case("masked-is-folder", ["prune", "{in}/res.onnx", "--save-masked", "sub"], 2, "is a folder", RES,
         out=lambda o: folder(o / "sub")),
    Case("out-is-input", ["prune", "{in}/res.onnx", "-o", "{in}/res.onnx"], 2, "never overwrites", RES),
    Case("report-is-input", ["prune", "{in}/res.onnx", "--report", "{in}/res.onnx"], 2, "never overwrites", RES),
    Case("out-equals-report", ["prune", "{in}/res.onnx", "-o", "a.onnx", "--report", "a.onnx"], 2, "same file", RES),
    Case("out-readonly", ["prune", "{in}/res.onnx", "-o", "ro/p.onnx"], 2, "permission denied", RES,
         out=readonly("ro"), limit="readonly"),
    Case("default-out-readonly", ["prune", "{in}/res.onnx"], 2, "permission denied", RES, limit="readonly-cwd"),
    Case("report-readonly", ["prune", "{in}/res.onnx", "--report", "ro/r.json"], 2, "permission denied", RES,
         out=readonly("ro"), limit="readonly"),
    Case("masked-readonly", ["prune", "{in}/res.onnx", "--save-masked", "ro/m.onnx"], 2, "permission denied", RES,
         out=readonly("ro"), limit="readonly"),
    Case("checkpoint-readonly", ["prune", "{in}/res.onnx", "--method", "gates", "--data", "{in}/d.npz", "--steps", "2",
                                 "--checkpoint-every", "1", "--checkpoint-dir", "ro/ck"], 2, "--checkpoint-dir",
         RES_DATA, out=readonly("ro"), limit="readonly"),
    Case("checkpoint-is-file", ["prune", "{in}/res.onnx", "--method", "gates", "--data", "{in}/d.npz", "--steps", "2",
                                "--checkpoint-every", "1", "--checkpoint-dir", "f/ck"], 2, "not a folder",
         RES_DATA, out=lambda o: (o / "f").write_text("x")),
    # a full disk: the model (40 kB) cannot be written; then the masked model fails after the pruned
    # one was complete, and neither (nor the report) is left behind
    Case("disk-full", ["prune", "{in}/res.onnx", "-o", "p.onnx"], 1, "cannot write", RES, limit="fsize:4096"),
    Case("disk-full-second-file", ["prune", "{in}/res.onnx", "-o", "p.onnx", "--report", "r.json", "--save-masked",
                                   "m.onnx"], 1, "m.onnx", RES, limit="fsize:60000"),
    # data
    Case("data-missing", ["prune", "{in}/res.onnx", "--data", "{in}/none.npz"], 1, "no such file", RES),
    Case("data-text", ["prune", "{in}/res.onnx", "--data", "{in}/t.npz"], 1, "not a readable .npz",
         {**RES, "t.npz": raw(b"hello\n" * 50)}),
    Case("data-npy", ["prune", "{in}/res.onnx", "--data", "{in}/x.npy"], 1, "single array",
         {**RES, "x.npy": lambda p: np.save(p, res_inputs())}),
    Case("data-truncated", ["prune", "{in}/res.onnx", "--data", "{in}/cut.npz"], 1, "cut.npz",
         {**RES, "cut.npz": lambda p: (npz(p, input=res_inputs()), p.write_bytes(p.read_bytes()[:3000]))}),
    Case("data-pickled-input", ["prune", "{in}/res.onnx", "--data", "{in}/o.npz"], 1, "python objects",
         {**RES, "o.npz": data(input=OBJ)}),
    Case("data-pickled-labels", ["prune", "{in}/res.onnx", "--data", "{in}/o.npz", "--labels", "y"], 1,
         "python objects", {**RES, "o.npz": data(input=res_inputs, y=OBJ)}),
    Case("data-missing-key", ["prune", "{in}/res.onnx", "--data", "{in}/k.npz"], 1, "no array for model input",
         {**RES, "k.npz": data(image=res_inputs)}),
    Case("data-wrong-shape", ["prune", "{in}/res.onnx", "--data", "{in}/s.npz"], 1, "has shape",
         {**RES, "s.npz": data(input=np.zeros((4, 3, 5, 5), np.float32))}),
    Case("data-wrong-dtype", ["prune", "{in}/res.onnx", "--data", "{in}/s.npz"], 1, "dtype",
         {**RES, "s.npz": data(input=lambda: res_inputs().astype(str))}),
    Case("data-nan", ["prune", "{in}/res.onnx", "--data", "{in}/n.npz"], 1, "nan",
         {**RES, "n.npz": data(input=lambda: np.full_like(res_inputs(), np.nan))}),
    Case("data-empty", ["prune", "{in}/res.onnx", "--data", "{in}/e.npz"], 1, "empty",
         {**RES, "e.npz": data(input=lambda: res_inputs()[:0])}),
    Case("labels-missing", ["prune", "{in}/res.onnx", "--data", "{in}/d.npz", "--labels", "cls"], 1, "--labels 'cls'",
         RES_DATA),
    Case("labels-fractional", ["prune", "{in}/res.onnx", "--data", "{in}/f.npz", "--labels", "y"], 1, "fractional",
         {**RES, "f.npz": data(input=res_inputs, y=lambda: np.linspace(0, 4, 24))}),
    Case("labels-count", ["prune", "{in}/res.onnx", "--data", "{in}/c.npz", "--labels", "y"], 1, "samples",
         {**RES, "c.npz": data(input=res_inputs, y=lambda: labels_of(5))}),
    Case("labels-out-of-range", ["prune", "{in}/res.onnx", "--method", "gates", "--data", "{in}/c.npz", "--labels",
                                 "y", "--steps", "2"], 1, "labels must lie",
         {**RES, "c.npz": data(input=res_inputs, y=lambda: labels_of() + 50)}),
    Case("gates-without-data", ["prune", "{in}/res.onnx", "--method", "gates"], 2, "needs --data", RES),
    Case("data-empty-folder", ["prune", "{in}/res.onnx", "--data", "{in}/images"], 1, "images",
         {**RES, "images": folder}),
    Case("eval-data-missing", ["prune", "{in}/res.onnx", "--data", "{in}/d.npz", "--eval-data", "{in}/none.npz",
                               "--steps", "2"], 1, "no such file", RES_DATA),
    Case("resume-not-checkpoint", ["prune", "{in}/res.onnx", "--method", "gates", "--data", "{in}/d.npz", "--steps",
                                   "2", "--resume", "{in}/junk"], 1, "not an onnxmorph checkpoint",
         {**RES_DATA, "junk": folder}),
    # profiles
    Case("profile-unknown", ["prune", "{in}/res.onnx", "--profile", "nosuchchip"], 2, "unknown profile", RES),
    Case("profile-missing-file", ["prune", "{in}/res.onnx", "--profile", "{in}/p.json"], 2, "no such file", RES),
    Case("profile-not-json", ["prune", "{in}/res.onnx", "--profile", "{in}/p.json"], 2, "not valid json",
         {**RES, "p.json": raw(b"{peak: fast")}),
    Case("profile-measured-string", ["prune", "{in}/res.onnx", "--profile", "{in}/p.json"], 2, "'measured'",
         {**RES, "p.json": profile(measured="yesterday")}),
    Case("profile-measured-threads", ["prune", "{in}/res.onnx", "--profile", "{in}/p.json", "--target",
                                      "latency=0.5"], 2, "measured.threads",
         {**RES, "p.json": profile(measured={"threads": "four"})}),
    Case("profile-peak-string", ["prune", "{in}/res.onnx", "--profile", "{in}/p.json"], 2, "peak_gflops",
         {**RES, "p.json": profile(peak_gflops="fast")}),
    Case("profile-tables-list", ["inspect", "{in}/res.onnx", "--profile", "{in}/p.json"], 2, "tables",
         {**RES, "p.json": profile(tables=[1, 2])}),
    Case("profiles-show-bad", ["profiles", "show", "{in}/p.json"], 2, "'measured'",
         {"p.json": profile(measured=[1])}),
    Case("latency-without-profile", ["prune", "{in}/res.onnx", "--target", "latency=0.5"], 2, "profile", RES),
    # targets, methods, options
    Case("target-malformed", ["prune", "{in}/res.onnx", "--target", "half"], 2, "target", RES),
    Case("target-unknown-metric", ["prune", "{in}/res.onnx", "--target", "speed=0.5"], 2, "speed", RES),
    Case("method-unknown", ["prune", "{in}/res.onnx", "--method", "bogus"], 2, "bogus", RES),
    Case("allocation-unknown", ["prune", "{in}/res.onnx", "--allocation", "fair"], 2, "allocation", RES),
    Case("round-to-unreachable", ["prune", "{in}/res.onnx", "--round-to", "64"], 1, "--round-to 64 is the reason", RES),
    Case("frozen-unreachable", ["prune", "{in}/frozen.onnx", "--target", "flops=0.01"], 1, "unreachable",
         {"frozen.onnx": m("frozen.onnx")}),
    Case("unknown-option", ["prune", "{in}/res.onnx", "--bogus"], 2, "--bogus", RES),
    Case("missing-argument", ["prune"], 2, "missing argument"),
    Case("unknown-command", ["shrink", "{in}/res.onnx"], 2, "shrink", RES),
    Case("measure-rounds-without-measure", ["prune", "{in}/res.onnx", "--measure-rounds", "2"], 2, "--measure", RES),
]


# --- running them -----------------------------------------------------------------------------------

# loaded here, not in the forked child: a preexec_fn only makes plain system calls
_LIBC = ctypes.CDLL(None, use_errno=True)


def _drop_dac() -> None:
    """Make root subject to file permissions in the child: drop CAP_DAC_OVERRIDE (and the read /
    search override) from the bounding set, which the exec'd interpreter's capabilities come from.
    A non-root user has neither; without CAP_SETPCAP fall back to running as `nobody`."""
    if os.geteuid() != 0:
        return
    if all(_LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)):
        return
    os.setgid(65534)
    os.setuid(65534)


def _preexec(limit: str | None) -> Callable[[], None] | None:
    if limit is None:
        return None
    if limit.startswith("readonly"):
        return _drop_dac
    size = int(limit.split(":")[1])

    def fsize() -> None:  # writes past `size` fail with EFBIG (Python ignores SIGXFSZ, which would kill it)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return fsize


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder` with a hash of its bytes ("dir" for folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    inputs_before: dict
    inputs_after: dict
    out_before: dict
    out_after: dict
    tmp_after: list
    seconds: float


def folders(root: Path) -> tuple[Path, Path, Path]:
    ins, out, tmp = root / "in", root / "out", root / "tmp"
    for f in (ins, out, tmp):
        f.mkdir(parents=True)
    return ins, out, tmp


def env_for(tmp: Path) -> dict:
    return dict(os.environ, TMPDIR=str(tmp), COLUMNS="250", PYTHONDONTWRITEBYTECODE="1")


def run_case(case: Case, root: Path) -> Run:
    ins, out, tmp = folders(root)
    for name, make in case.files.items():
        make(ins / name)
    if case.out is not None:
        case.out(out)
    if case.limit == "readonly-cwd":
        out.chmod(0o555)
    before_in, before_out = snapshot(ins), snapshot(out)
    args = [a.replace("{in}", str(ins)) for a in case.args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(CLI + args, cwd=out, env=env_for(tmp), capture_output=True, text=True, timeout=TIMEOUT,
                              preexec_fn=_preexec(case.limit))
    except subprocess.TimeoutExpired as exc:  # fails this case alone, not the whole module
        proc = subprocess.CompletedProcess(exc.cmd, None, "", f"timed out after {TIMEOUT} s")
    return Run(proc, before_in, snapshot(ins), before_out, snapshot(out),
               sorted(p.name for p in tmp.iterdir() if p.name not in RUNTIME_FILES), time.perf_counter() - t0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All cases at once, in parallel (each is mostly interpreter start-up and imports)."""
    base = tmp_path_factory.mktemp("bad_input")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {c.id: pool.submit(run_case, c, base / c.id) for c in CASES}
        results = {k: f.result() for k, f in futures.items()}
    slowest = sorted(results.items(), key=lambda kv: -kv[1].seconds)[:5]
    print(f"\n{len(CASES)} bad-input cases in {time.perf_counter() - t0:.1f} s; slowest: "
          + ", ".join(f"{k} {r.seconds:.1f} s" for k, r in slowest))
    return results


def check_one_line(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_enough_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, runs):
    r = runs[case.id]
    line = check_one_line(r.proc, case.code)
    assert case.says.lower() in line.lower(), line
    assert r.inputs_after == r.inputs_before  # the input files' bytes are untouched
    assert r.out_after == r.out_before  # nothing written, no temp file left in the output folder
    assert r.tmp_after == []  # nor in TMPDIR


# --- signals while training -------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training(tmp_path, sig):
    """The signal arrives once training has written its first checkpoint (so it is surely training):
    one line, exit 128 + N, the input intact, nothing in the output folder or TMPDIR."""
    ins, out, tmp = folders(tmp_path)
    (ins / "res.onnx").write_bytes(model_bytes("res.onnx"))
    npz(ins / "d.npz", input=res_inputs(), y=labels_of())
    before = snapshot(ins)
    ck = tmp_path / "ck"
    proc = subprocess.Popen(CLI + ["prune", str(ins / "res.onnx"), "--method", "gates", "--data", str(ins / "d.npz"),
                                   "--steps", "2000", "-q", "--report", "r.json", "--save-masked", "m.onnx",
                                   "--checkpoint-every", "1", "--checkpoint-dir", str(ck)],
                            cwd=out, env=env_for(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (ck / "loop.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    line = check_one_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), 128 + sig)
    assert signal.Signals(sig).name in line
    assert snapshot(ins) == before
    assert snapshot(out) == {}
    assert sorted(p.name for p in tmp.iterdir() if p.name not in RUNTIME_FILES) == []
