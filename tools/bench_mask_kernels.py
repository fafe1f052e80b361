#!/usr/bin/env python3
"""Micro-benchmark: three ways to write a ReLU gradient mask with standard ONNX ops, 1 thread, CPU time.

dx = dy * (y > 0) as `Greater + Cast + Mul` (what train/autodiff emits), `Sign(y) * dy` (two kernels:
y >= 0 after a ReLU) and `Where(y > 0, dy, 0)`. All three give identical outputs (checked) on a
[64, 32, 32, 32] float32 tensor; prints the median process CPU time of 15 interleaved runs.

    nice -n 10 .venv/bin/python tools/bench_mask_kernels.py
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

SHAPE = [64, 32, 32, 32]
VARIANTS = {
    "Greater+Cast+Mul": [("Greater", ["y", "zero"], ["m"], {}), ("Cast", ["m"], ["mf"], {"to": TensorProto.FLOAT}),
                         ("Mul", ["dy", "mf"], ["dx"], {})],
    "Sign+Mul": [("Sign", ["y"], ["mf"], {}), ("Mul", ["dy", "mf"], ["dx"], {})],
    "Greater+Where": [("Greater", ["y", "zero"], ["m"], {}), ("Where", ["m", "dy", "zero"], ["dx"], {})],
}


def session(nodes):
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, SHAPE)  # noqa: E731
    graph = helper.make_graph([helper.make_node(op, i, o, **a) for op, i, o, a in nodes], "mask",
                              [vi("y"), vi("dy")], [vi("dx")],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    rng = np.random.default_rng(0)
    feeds = {"y": np.maximum(rng.standard_normal(SHAPE), 0).astype(np.float32),
             "dy": rng.standard_normal(SHAPE).astype(np.float32)}
    sessions = {k: session(v) for k, v in VARIANTS.items()}
    ref = feeds["dy"] * (feeds["y"] > 0)
    for k, s in sessions.items():
        assert np.array_equal(s.run(None, feeds)[0], ref), k
    times = {k: [] for k in sessions}
    for _ in range(15):
        for k, s in sessions.items():
            t0 = time.process_time()
            s.run(None, feeds)
            times[k].append(time.process_time() - t0)
    base = np.median(times["Greater+Cast+Mul"])
    for k, t in times.items():
        print(f"{k:18s} {np.median(t) * 1e3:6.2f} ms CPU  ({np.median(t) / base:.2f}x)")


if __name__ == "__main__":
    main()
