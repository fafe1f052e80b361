"""Calibration/training data: `.npz` arrays named after the graph inputs, checked against the model."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import DataError


def load_arrays(data: str | os.PathLike | Mapping[str, np.ndarray], loaded=None, mean=None,
                std=None, needed: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Named arrays from a mapping, an .npz file, or a folder of images (resized to the model's input).

    An .npz is read without unpickling anything: an array of Python objects is left out, and refused
    only when it is one the run needs (a model input or a name in `needed`, e.g. the labels)."""
    if isinstance(data, Mapping):
        return {k: np.asarray(v) for k, v in data.items()}
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        from .images import load_image_folder  # optional path, only for folders of images

        if loaded is None or len(loaded.inputs) != 1:
            raise DataError(f"{path}: a folder of images needs a model with exactly one input")
        name = loaded.inputs[0].name
        kwargs = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
        return load_image_folder(path, loaded.static_inputs[name], name, **kwargs)
    try:
        loaded_file = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    if not hasattr(loaded_file, "files"):
        raise DataError(f"{path}: expected an .npz archive of arrays named after the model inputs, "
                        "got a single array")
    needed = set(needed) | ({s.name for s in loaded.inputs} if loaded is not None else set())
    arrays = {}
    with loaded_file as npz:
        for k in npz.files:
            try:
                arrays[k] = npz[k]
            except ValueError as exc:  # numpy refuses object arrays before unpickling them
                if "allow_pickle" not in str(exc) and "Object arrays" not in str(exc):
                    raise DataError(f"{path}: array '{k}' is not readable ({exc})") from None
                if k in needed:
                    raise DataError(f"{path}: array '{k}' holds Python objects (dtype=object), which onnxmorph "
                                    "never unpickles; save it as a numeric array") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: array '{k}' is not readable ({type(exc).__name__})") from None
    return arrays


def check_inputs(arrays: dict[str, np.ndarray], loaded, labels: str | None = None) -> tuple[dict, np.ndarray | None, int]:
    """Validate data against the model's inputs; returns (inputs, labels, number of samples)."""
    specs = {s.name: s for s in loaded.inputs}
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise DataError(f"data has no array for model input(s) {missing}; arrays present: {sorted(arrays)}")
    if labels is not None and labels not in arrays:
        raise DataError(f"--labels '{labels}' is not an array in the data; arrays present: {sorted(arrays)}")
    inputs = {}
    n = None
    for name, spec in specs.items():
        a = arrays[name]
        static = loaded.static_inputs[name]
        if not static:  # a scalar input (a gain, a sample rate) has no axis to take examples along
            raise DataError(f"model input '{name}' is a scalar: data-driven pruning needs every input batched "
                            f"along axis 0; prune this model with --method magnitude and no --data")
        if a.ndim != len(static) or a.shape[1:] != tuple(static[1:]):
            raise DataError(f"data '{name}' has shape {tuple(a.shape)}, the model expects "
                            f"(N, {', '.join(map(str, static[1:]))})")
        if a.shape[0] == 0:
            raise DataError(f"data '{name}' is empty")
        want = spec.dtype
        if a.dtype != want:
            if np.issubdtype(a.dtype, np.floating) and np.issubdtype(want, np.floating):
                a = a.astype(want)
            elif np.issubdtype(a.dtype, np.integer) and np.issubdtype(want, np.integer):
                a = a.astype(want)
            else:
                raise DataError(f"data '{name}' has dtype {a.dtype}, the model expects {want}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise DataError(f"data '{name}' contains NaN or Inf")
        if n is not None and a.shape[0] != n:
            raise DataError(f"data arrays have different numbers of samples ({n} and {a.shape[0]})")
        n = a.shape[0]
        inputs[name] = a
    y = None
    if labels is not None:
        y = np.asarray(arrays[labels])
        if y.ndim == 0 or y.shape[0] != n:
            raise DataError(f"labels '{labels}' have {y.shape[0] if y.ndim else 0} samples, inputs have {n}")
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
            raise DataError(f"labels '{labels}' have dtype {y.dtype}; give class indices (integers)")
        if np.issubdtype(y.dtype, np.floating):  # class indices stored as floats are fine; fractions are not
            if not np.isfinite(y).all():
                raise DataError(f"labels '{labels}' contain NaN or Inf")
            bad = y[y != np.round(y)]
            if bad.size:
                raise DataError(f"labels '{labels}' hold fractional values (e.g. {bad.flat[0]:g}); give class "
                                "indices (integers)")
            y = y.astype(np.int64)
    return inputs, y, int(n)


def split_holdout(arrays: dict[str, np.ndarray], seed: int = 0, share: float = 0.1,
                  most: int = 512) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """(training part, held-out part) of `arrays` (a common first axis): a seeded `share` of the rows,
    at most `most`, kept out of every fit for the report's fidelity figure; none under 10 rows."""
    n = next(iter(arrays.values())).shape[0]
    held = min(most, int(round(share * n))) if n >= 10 else 0
    if held == 0:
        return arrays, None
    order = np.random.default_rng(seed + 7919).permutation(n)
    out, keep = np.sort(order[:held]), np.sort(order[held:])
    return {k: v[keep] for k, v in arrays.items()}, {k: v[out] for k, v in arrays.items()}
