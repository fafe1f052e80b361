"""The ort-training engine: onnxruntime-training 1.19.2's artifacts (in a temp dir), checkpoint state,
module and optimizer. Optional: that package replaces the `onnxruntime` module, so it lives in an
environment of its own."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import OnnxMorphError
from .engine import TrainingSession
from .graph import TrainingGraph
from .ortsupport import training_modules


class OrtTrainingSession(TrainingSession):
    """Wraps onnxruntime.training.api for one training graph."""

    def __init__(self, tg: TrainingGraph, *, optimizer: str = "adamw", workdir: str | None = None):
        artifacts, _, _ = training_modules()
        self.tg = tg
        self._tmp = tempfile.TemporaryDirectory(prefix="onnxmorph-train-") if workdir is None else None
        self.dir = Path(workdir or self._tmp.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        optim = {"adamw": artifacts.OptimType.AdamW, "sgd": artifacts.OptimType.SGD}.get(optimizer)
        if optim is None:
            raise OnnxMorphError(f"unknown optimizer '{optimizer}': use adamw or sgd")
        cwd = os.getcwd()
        try:
            os.chdir(self.dir)  # onnxblock may write temp files into the working directory
            with _quiet_stderr():  # the gradient builder logs every graph transformer at INFO level
                artifacts.generate_artifacts(
                    tg.model, requires_grad=tg.trainable, frozen_params=[], loss=None, optimizer=optim,
                    artifact_directory=str(self.dir), additional_output_names=tg.outputs[1:],
                )
        except Exception as exc:
            raise OnnxMorphError(f"cannot build the training graph: {_first_line(exc)}") from None
        finally:
            os.chdir(cwd)
        self._open()
        self.input_names = list(self.module.input_names())
        self.output_names = list(self.module.output_names())

    def _open(self) -> None:
        """Checkpoint state, module and optimizer from the artifacts (the initial parameters, no moments)."""
        _, api, _ = training_modules()
        self.state = api.CheckpointState.load_checkpoint(str(self.dir / "checkpoint"))
        self.module = api.Module(str(self.dir / "training_model.onnx"), self.state,
                                 str(self.dir / "eval_model.onnx"))
        self.optimizer = api.Optimizer(str(self.dir / "optimizer_model.onnx"), self.module)

    def _args(self, feeds: dict[str, np.ndarray]):
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise OnnxMorphError(f"internal error: training inputs {missing} not fed")
        return [feeds[n] for n in self.input_names]

    def train_step(self, feeds: dict[str, np.ndarray], apply: bool = True) -> dict[str, np.ndarray]:
        """Forward + backward; gradients accumulate until `apply` runs the optimizer and resets them."""
        self.module.train()
        outs = self.module(*self._args(feeds))
        if apply:
            self.optimizer.step()
            self.module.lazy_reset_grad()
        return self._named(outs)

    def evaluate(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.module.eval()
        return self._named(self.module(*self._args(feeds)))

    def _named(self, outs) -> dict[str, np.ndarray]:
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return dict(zip(self.output_names, (np.asarray(o) for o in outs)))

    def set_lr(self, lr: float) -> None:
        self.optimizer.set_learning_rate(float(lr))

    def params(self) -> dict[str, np.ndarray]:
        return {name: np.array(self.state.parameters[name].data) for name in self.tg.trainable}

    def load_params(self, values: dict[str, np.ndarray]) -> None:
        for name, v in values.items():
            self.state.parameters[name].data = np.ascontiguousarray(v)

    def grad(self, name: str) -> np.ndarray:
        return np.array(self.state.parameters[name].grad)

    def reset_grad(self) -> None:
        self.module.lazy_reset_grad()

    def reset_optimizer(self) -> None:
        # the moments live in the checkpoint state, so a new Optimizer alone would keep them: rebuild the
        # state from the artifacts' checkpoint and put the current parameters into it
        params, lr = self.params(), self.optimizer.get_learning_rate()
        self._open()
        self.load_params(params)
        self.optimizer.set_learning_rate(lr)

    def save(self, path: str | os.PathLike) -> None:
        _, api, _ = training_modules()
        api.CheckpointState.save_checkpoint(self.state, str(path))

    def load(self, path: str | os.PathLike) -> None:
        _, api, _ = training_modules()
        state = api.CheckpointState.load_checkpoint(str(path))
        self.load_params({name: np.array(state.parameters[name].data) for name in self.tg.trainable})

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence native (C++) writes to stderr; Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    if "gradient builder has not been registered" in str(exc):
        op = str(exc).split("registered:")[-1].split("for node")[0].strip()
        line = f"op {op} has no gradient in onnxruntime-training 1.19.2 and no training rewrite"
    return line[:300]

