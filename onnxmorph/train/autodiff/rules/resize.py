"""Resize's interpolation matrix along one axis, read off the ONNX reference implementation."""

from __future__ import annotations

import numpy as np
from onnx import helper


def axis_matrix(node, xs, ys, axis, scale: float) -> np.ndarray:
    """M [out, in] with y = M x along `axis` (Resize is separable: every axis interpolates alone)."""
    from onnx.reference import ReferenceEvaluator

    n_in, n_out, rank = xs[axis], ys[axis], len(xs)
    # a probe holding the identity along a new leading batch axis; only `axis` is resized
    probe_shape = [n_in] + [1] * rank
    probe_shape[1 + axis] = n_in
    probe = np.eye(n_in, dtype=np.float32).reshape(probe_shape)
    scales = np.ones(rank + 1, np.float32)
    scales[1 + axis] = scale
    if node.op == "Upsample":
        attrs = {"mode": node.attr("mode", "nearest"), "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}
    else:
        attrs = {k: v for k, v in node.attrs.items() if k not in ("axes", "keep_aspect_ratio_policy")}
    res = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    graph = helper.make_graph([res], "probe", [helper.make_tensor_value_info("x", 1, probe_shape)],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [helper.make_tensor("scales", 1, [rank + 1], scales)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    out = ReferenceEvaluator(model).run(None, {"x": probe})[0].reshape(n_in, -1)
    if out.shape[1] != n_out:
        raise ValueError(f"resize probe gave {out.shape[1]} positions, expected {n_out}")
    return out.T.astype(np.float64)
