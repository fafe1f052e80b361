"""Invariant 1: the pruned model computes what the masked model computes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .runtime import make_session

RTOL = 1e-4


@dataclass
class VerifyResult:
    max_abs_diff: float
    worst_ratio: float  # max |pruned - masked| / (1e-4 * max(1, max|masked|)) per output; <= 1 passes
    inputs_used: int
    passed: bool
    worst_output: str = ""

    def as_dict(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "tolerance_ratio": self.worst_ratio,
                "inputs_used": self.inputs_used, "passed": self.passed, "worst_output": self.worst_output}


def sample_inputs(loaded, count: int, seed: int, data: dict[str, np.ndarray] | None = None,
                  batch: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds for the static model: slices of `data` when given, else seeded random inputs."""
    rng = np.random.default_rng(seed)
    feeds = []
    for k in range(count):
        feed = {}
        for spec in loaded.inputs:
            shape = list(loaded.static_inputs[spec.name])
            if batch is not None and shape:  # (a scalar input has no batch)
                shape[0] = batch
            if data is not None and spec.name in data:
                arr = data[spec.name]
                idx = (np.arange(shape[0]) + k * shape[0]) % arr.shape[0]
                feed[spec.name] = np.ascontiguousarray(arr[idx])
            elif np.issubdtype(spec.dtype, np.floating):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype == np.bool_:
                feed[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
            else:
                feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        feeds.append(feed)
    return feeds


def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: list[dict]) -> VerifyResult:
    ref_s, cand_s = make_session(reference), make_session(candidate)
    names = [o.name for o in ref_s.get_outputs()]
    max_abs, worst, worst_name = 0.0, 0.0, ""
    for feed in feeds:
        for name, r, c in zip(names, ref_s.run(names, feed), cand_s.run(names, feed)):
            r = np.asarray(r, dtype=np.float64)
            c = np.asarray(c, dtype=np.float64)
            if r.shape != c.shape:
                return VerifyResult(float("inf"), float("inf"), len(feeds), False, name)
            if r.size == 0:
                continue
            diff = np.abs(r - c)
            both_nan = np.isnan(r) & np.isnan(c)
            diff = np.where(both_nan, 0.0, diff)
            # Scale by the output's magnitude: float32 sums in a different order already differ by
            # ~1e-6 of the largest values they pass through (Inception's logits reach ~300), while
            # a wrongly removed channel shifts outputs by a sizeable fraction of that scale.
            scale = max(1.0, float(np.nanmax(np.abs(r))))
            ratio = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff / (RTOL * scale))))
            if ratio > worst:
                worst, worst_name = ratio, name
            max_abs = max(max_abs, float(np.max(np.where(np.isnan(diff), np.inf, diff))))
    return VerifyResult(max_abs, worst, len(feeds), worst <= 1.0, worst_name)
