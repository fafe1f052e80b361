"""Thin wrapper over onnxruntime inference used by load, verify and benchmarks."""

from __future__ import annotations

import numpy as np
import onnx


def make_session(model: onnx.ModelProto, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_model(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
) -> list[np.ndarray]:
    """Run `model` once on `feeds` and return the requested (default: all) outputs."""
    return make_session(model).run(outputs, feeds)
