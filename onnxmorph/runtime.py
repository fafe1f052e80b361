"""Thin wrapper over onnxruntime inference used by load, verify and benchmarks."""

from __future__ import annotations

import os

import numpy as np
import onnx

THREADS_ENV = "ONNXMORPH_THREADS"

NO_RUNTIME = ("onnxmorph needs ONNX Runtime, and none is installed: pip install 'onnxmorph[cpu]' (onnxruntime) "
              "or 'onnxmorph[gpu]' (onnxruntime-gpu), or keep the onnxruntime package you have")


def onnxruntime():
    """The `onnxruntime` module, whichever package provides it (onnxruntime, onnxruntime-gpu, ...).

    onnxmorph requires none of them by name (pip would install the CPU package beside onnxruntime-gpu,
    overwriting its module): without any, the first use says so in one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        from .errors import RuntimeMissing

        raise RuntimeMissing(NO_RUNTIME) from None
    return ort


def make_session(model: onnx.ModelProto | bytes, threads: int = 0, optimize: bool = True):
    """A CPU session with all graph optimizations (none with `optimize=False`: to time one kernel
    as written); `threads` > 0 pins intra-op threads and runs nodes sequentially (for timing).

    Otherwise ORT picks its thread count, unless ONNXMORPH_THREADS says how many intra-op threads
    to use: set by `sweep` workers, so that parallel trials don't oversubscribe the cores."""
    ort = onnxruntime()

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    elif os.environ.get(THREADS_ENV, "").isdigit() and int(os.environ[THREADS_ENV]) > 0:
        opts.intra_op_num_threads = int(os.environ[THREADS_ENV])
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def run_model(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None
) -> list[np.ndarray]:
    """Run `model` once on `feeds` and return the requested (default: all) outputs."""
    return make_session(model).run(outputs, feeds)
