"""The error boundary and the output writer in-process (issue 14): faults that a subprocess cannot
make on every machine (ENOSPC on the third of three files, a rename failing half-way, a read-only
file system), the typed errors API users get, and the checks behind the CLI's one-line refusals."""

from __future__ import annotations

import errno
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxmorph
from onnxmorph import outputs
from onnxmorph.boundary import translate
from onnxmorph.cost.profile import profile_from_dict
from onnxmorph.data import check_inputs, load_arrays
from onnxmorph.errors import (DataError, ModelLoadError, ProfileError, ResourceError, ShapeError,
                              TargetUnreachable, UsageError)
from onnxmorph.graph import load_model
from onnxmorph.graph.memory import check_fits
from zoo import ZOO, GraphBuilder


def test_write_all_writes_every_file(tmp_path):
    outputs.write_all({tmp_path / "a": b"1", tmp_path / "b": b"22"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert (tmp_path / "b").read_bytes() == b"22"


def test_disk_full_on_the_last_file_leaves_nothing(tmp_path, monkeypatch):
    """The report fails after the model and the masked model were written: none of them is kept."""
    real_fdopen = outputs.os.fdopen
    opened = []

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, mode):
        opened.append(fd)
        f = real_fdopen(fd, mode)
        return Full(f) if len(opened) == 3 else f

    monkeypatch.setattr(outputs.os, "fdopen", fdopen)
    (tmp_path / "old.json").write_text("kept")
    with pytest.raises(ResourceError, match="cannot write .*r.json: the disk is full; nothing was written"):
        outputs.write_all({tmp_path / "p.onnx": b"model", tmp_path / "m.onnx": b"masked", tmp_path / "r.json": b"{}"})
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]  # no outputs, no temp files


def test_rename_failing_half_way_takes_back_the_new_files(tmp_path, monkeypatch):
    real_replace = outputs.os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(ResourceError, match="Input/output error"):
        outputs.write_all({tmp_path / "p.onnx": b"model", tmp_path / "r.json": b"{}"})
    assert list(tmp_path.iterdir()) == []


def test_read_only_file_system_is_a_usage_error(tmp_path, monkeypatch):
    def erofs(**kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", erofs)
    with pytest.raises(UsageError, match="--report .*cannot write in folder .*Read-only file system"):
        outputs.check_file("--report", tmp_path / "r.json")
    with pytest.raises(UsageError, match="--checkpoint-dir"):
        outputs.check_folder("--checkpoint-dir", tmp_path / "new" / "ck")


def test_output_checks(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a folder"):
        outputs.check_file("-o", tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        outputs.check_file("-o", tmp_path / "no" / "x.onnx")
    with pytest.raises(UsageError, match="not a folder"):
        outputs.check_folder("--checkpoint-dir", tmp_path / "f" / "ck")
    assert outputs.check_folder("--checkpoint-dir", tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(UsageError, match="same file"):
        outputs.check_distinct([("-o", tmp_path / "x"), ("--report", tmp_path / "." / "x")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probes left nothing


def test_translate_names_what_failed():
    full = translate(OSError(errno.ENOSPC, "No space left on device", "/data/out.onnx"), "emit")
    assert isinstance(full, ResourceError) and str(full) == "/data/out.onnx: the disk is full while emitting the pruned model"
    oom = translate(MemoryError("Unable to allocate 96.0 GiB"), "train")
    assert isinstance(oom, ResourceError) and "out of memory while training (Unable to allocate 96.0 GiB)" in str(oom)
    assert translate(ValueError("a bug"), "train") is None  # not a known kind of failure: stays a bug


def _custom_op_model() -> onnx.ModelProto:
    b = GraphBuilder("custom")
    y = b.cbr(b.input([1, 3, 8, 8]), 3, 8)
    b.nodes.append(helper.make_node("Foo", [y], ["foo"], domain="my.domain", name="foo"))
    g = helper.make_graph(b.nodes, "custom", b.inputs, [helper.make_tensor_value_info("foo", TensorProto.FLOAT, None)],
                          b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    m.ir_version = 8
    return m


def test_api_raises_typed_errors_for_runtime_failures():
    """ONNX Runtime refusing the model while shapes are filled in: a ModelLoadError for API users."""
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot run the model while loading the model: .*my.domain:Foo"):
        onnxmorph.prune(_custom_op_model())
    with pytest.raises(ModelLoadError, match="my.domain:Foo"):
        onnxmorph.inspect(_custom_op_model())


def test_huge_shapes_are_refused_before_allocating():
    b = GraphBuilder("big")
    y = b.cbr(b.input([1, 3, 224, 224]), 3, 8)
    model = b.build(b.head(y, 8))
    loaded = load_model(model)  # fits on this machine
    static = loaded.static_inputs
    with pytest.raises(ShapeError, match=r"input 'input' of shape 1x3x224x224 takes 0.6 MiB per sample, too much for the 1.0 MiB"):
        check_fits(loaded.model, static, "big.onnx", available=1 << 20)  # 1 MiB: the input x4 does not fit
    with pytest.raises(ShapeError, match=r"tensor '.*' of shape 1x8x224x224 takes 1.5 MiB"):
        check_fits(loaded.model, static, "big.onnx", available=3 << 20)  # the input fits, a conv output not
    check_fits(loaded.model, static, "big.onnx", available=1 << 30)


def test_object_arrays_are_never_unpickled(tmp_path):
    loaded = load_model(ZOO["residual"]())
    shape = loaded.static_inputs["input"]
    x = np.zeros((4,) + tuple(shape[1:]), np.float32)
    objects = np.array([{"a": 1}, None], dtype=object)
    np.savez(tmp_path / "extra.npz", input=x, notes=objects)
    arrays = load_arrays(tmp_path / "extra.npz", loaded)  # an unused object array does not stop the run
    assert sorted(arrays) == ["input"] and arrays["input"].shape == x.shape
    with pytest.raises(DataError, match="array 'notes' holds Python objects"):
        load_arrays(tmp_path / "extra.npz", loaded, needed=("notes",))


def test_labels_must_be_class_indices():
    loaded = load_model(ZOO["residual"]())
    x = np.zeros((4,) + tuple(loaded.static_inputs["input"][1:]), np.float32)
    _, y, _ = check_inputs({"input": x, "y": np.array([0.0, 1.0, 2.0, 1.0])}, loaded, "y")
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 1]  # indices stored as floats are fine
    with pytest.raises(DataError, match="fractional values \\(e.g. 1.5\\)"):
        check_inputs({"input": x, "y": np.array([0.0, 1.5, 2.0, 1.0])}, loaded, "y")


def test_profile_measured_block_types():
    base = {"schema": 1, "name": "mine", "peak_gflops": 10.0, "memory_gbps": 1.0}
    assert profile_from_dict({**base, "measured": {"cpu": "x", "threads": 2}}).measured["threads"] == 2
    for measured, field in (("yesterday", "'measured'"), ([1, 2], "'measured'"), ({"threads": "2"}, "measured.threads"),
                            ({"cpu": 7}, "measured.cpu"), ({"threads": 0}, "measured.threads")):
        with pytest.raises(ProfileError, match=field):
            profile_from_dict({**base, "measured": measured})


def test_round_to_is_named_as_the_reason():
    model = ZOO["residual"]()
    with pytest.raises(TargetUnreachable, match="--round-to 64 is the reason"):
        onnxmorph.prune(model, target="flops=0.5", round_to=64)
    # best effort at multiples of 64 removes nothing from this model: never a success, and the reason said
    with pytest.raises(TargetUnreachable, match="removed nothing.*--round-to 64 is the reason"):
        onnxmorph.prune(model, target="flops=0.5", round_to=64, best_effort=True)
    result = onnxmorph.prune(model, target="flops=0.5", round_to=16, best_effort=True)
    assert not result.report["target"]["reached"]
    assert any("--round-to 16 is the reason" in n for n in result.report["notes"])
    # the same target without rounding is reached, so the note is not a guess
    assert onnxmorph.prune(model, target="flops=0.5").report["target"]["reached"]


def test_save_all_is_all_or_nothing(tmp_path):
    result = onnxmorph.prune(ZOO["residual"](), target="flops=0.5")
    (tmp_path / "r.json").mkdir()  # the report path is a folder: refused before anything is written
    with pytest.raises(UsageError, match="is a folder"):
        result.save_all(tmp_path / "p.onnx", masked=tmp_path / "m.onnx", report=tmp_path / "r.json")
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    result.save_all(tmp_path / "p.onnx", masked=tmp_path / "m.onnx", report=tmp_path / "rep.json")
    assert json.loads((tmp_path / "rep.json").read_text())["output"] == str(tmp_path / "p.onnx")
    assert onnx.load(tmp_path / "p.onnx").graph.node and onnx.load(tmp_path / "m.onnx").graph.node
