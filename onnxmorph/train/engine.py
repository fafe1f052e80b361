"""Training engines behind one session interface.

`open_session(tg, engine=..., device=...)` returns a `TrainingSession`:
- "onnxmorph" (default): onnxmorph's own backward graph (`train/autodiff`) and optimizer step graph
  (`train/optim.py`) on a plain onnxruntime InferenceSession (any onnxruntime >= 1.18; CPU or CUDA);
- "ort-training": onnxruntime-training 1.19.2's artifacts and training API (CPU), where installed.
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from ..errors import UsageError

ENGINES = ("onnxmorph", "ort-training")
DEVICES = ("cpu", "cuda")


class TrainingSession:
    """Forward + backward + optimizer over one training graph; gradients accumulate until a step."""

    def train_step(self, feeds: dict[str, np.ndarray], apply: bool = True) -> dict[str, np.ndarray]:
        """Forward and backward; with `apply` the optimizer steps and the next call starts new gradients."""
        raise NotImplementedError

    def evaluate(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        raise NotImplementedError

    def params(self) -> dict[str, np.ndarray]:
        """Host copies of every trainable parameter."""
        raise NotImplementedError

    def param(self, name: str) -> np.ndarray:
        return self.params()[name]

    def load_params(self, values: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def grad(self, name: str) -> np.ndarray:
        """The gradient of parameter `name` accumulated by the last step(s)."""
        raise NotImplementedError

    def reset_grad(self) -> None:
        """Drop accumulated gradients (after a rollback)."""
        raise NotImplementedError

    def reset_optimizer(self) -> None:
        """Start the optimizer afresh (no moments, step count 0) from the current parameters: after a
        rollback or a probe's try, moments from the abandoned path would steer the next steps."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        raise NotImplementedError

    def load(self, path: str | os.PathLike) -> None:
        """Parameters from a checkpoint written by `save` (optimizer state too where the engine can)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def check_engine(engine: str, device: str) -> None:
    """One usage line for an unknown engine or device, before any work is done."""
    if engine not in ENGINES:
        raise UsageError(f"unknown --engine '{engine}': use {' or '.join(ENGINES)}")
    if device not in DEVICES:
        raise UsageError(f"unknown --device '{device}': use cpu or cuda")
    if engine == "ort-training" and device != "cpu":
        raise UsageError("--engine ort-training runs on the CPU only; use --engine onnxmorph for --device cuda")


def open_session(tg, *, optimizer: str = "adamw", engine: str = "onnxmorph", device: str = "cpu",
                 workdir: str | None = None) -> TrainingSession:
    check_engine(engine, device)
    if engine == "ort-training":
        from .ort_engine import OrtTrainingSession

        return OrtTrainingSession(tg, optimizer=optimizer, workdir=workdir)
    from .native_engine import NativeSession

    return NativeSession(tg, optimizer=optimizer, device=device)


def apply_params(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` whose initializers named in `values` hold the trained values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in values:
            v = values[init.name]
            init.CopyFrom(onnx.numpy_helper.from_array(v.astype(onnx.helper.tensor_dtype_to_np_dtype(
                init.data_type)).reshape(tuple(init.dims)), init.name))
    return out
