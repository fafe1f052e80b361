"""Bad data gets one clear error: wrong names, shapes, dtypes, NaN, empty, unreadable, bad labels."""

import numpy as np
import pytest

import onnxmorph
from onnxmorph.data import check_inputs, load_arrays
from onnxmorph.errors import DataError
from onnxmorph.graph import load_model
from zoo import residual


@pytest.fixture(scope="module")
def loaded():
    return load_model(residual(batch="N"))


def good(n=8):
    return np.random.default_rng(0).standard_normal((n, 3, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("arrays,needle", [
    ({"x": good()}, "no array for model input"),
    ({"input": good()[:, :2]}, "has shape"),
    ({"input": good().astype(np.int32)}, "dtype"),
    ({"input": np.full((4, 3, 12, 12), np.inf, np.float32)}, "NaN or Inf"),
    ({"input": good(0)}, "empty"),
    ({"input": good(), "y": np.zeros(3)}, "labels 'y' have 3 samples"),
])
def test_bad_arrays(loaded, arrays, needle):
    labels = "y" if "y" in arrays else None
    with pytest.raises(DataError, match=needle):
        check_inputs(arrays, loaded, labels)


def test_float64_is_converted(loaded):
    inputs, _, n = check_inputs({"input": good().astype(np.float64)}, loaded)
    assert inputs["input"].dtype == np.float32 and n == 8


def test_unreadable_files(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_arrays(tmp_path / "empty.npz")
    np.save(tmp_path / "single.npy", good())
    with pytest.raises(DataError):
        load_arrays(tmp_path / "single.npy")
    with pytest.raises(DataError, match="no such file"):
        load_arrays(tmp_path / "missing.npz")


def test_labels_out_of_range_for_training():
    data = {"input": good(64), "y": np.full(64, 99)}
    with pytest.raises(onnxmorph.OnnxMorphError, match="labels must lie in"):
        onnxmorph.prune(residual(batch="N"), method="gates", data=data, labels="y", steps=2, recover_steps=0)


def test_image_folder_feeds_the_model(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = load_model(residual(batch="N"))
    arrays = load_arrays(tmp_path, loaded, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = arrays["input"]
    assert x.shape == (5, 3, 12, 12) and x.dtype == np.float32
    assert -2.01 <= x.min() and x.max() <= 2.01  # (v/255 - 0.5) / 0.25
    inputs, _, n = check_inputs(arrays, loaded)
    assert n == 5
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        load_arrays(empty, loaded)
