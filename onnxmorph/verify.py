"""Invariant 1: the pruned model computes what the masked model computes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .ops import QDQ_OPS, QOPERATOR_OPS
from .runtime import make_session

RTOL = 1e-4
FP16_RTOL = 4 * float(np.finfo(np.float16).eps)  # float16 outputs: sums in another order differ by a few ulps
QUANT_STEPS = 1  # quantized models: outputs may differ by this many steps of their quantization scale


@dataclass
class VerifyResult:
    max_abs_diff: float
    worst_ratio: float  # max |pruned - masked| / (1e-4 * max(1, max|masked|)) per output; <= 1 passes
    inputs_used: int
    passed: bool
    worst_output: str = ""
    quantized: dict | None = None  # for quantized models: the tolerance in steps and both runs

    def as_dict(self) -> dict:
        out = {"max_abs_diff": self.max_abs_diff, "tolerance_ratio": self.worst_ratio,
               "inputs_used": self.inputs_used, "passed": self.passed, "worst_output": self.worst_output}
        if self.quantized is not None:
            out["quantized"] = self.quantized
        return out


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


def output_steps(model: onnx.ModelProto) -> dict[str, float]:
    """The quantization step of each graph output a DequantizeLinear makes (its largest scale)."""
    inits = {t.name: t for t in model.graph.initializer}
    steps = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[1] in inits and node.output[0] in \
                {o.name for o in model.graph.output}:
            steps[node.output[0]] = float(np.max(np.abs(onnx.numpy_helper.to_array(inits[node.input[1]]))))
    return steps


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS + QOPERATOR_OPS or n.op_type.startswith("QLinear") for n in model.graph.node)


def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: list[dict]) -> VerifyResult:
    """Run both models on `feeds`; every output must agree to 1e-4·max(1, |ref|).

    Quantized models round at every QuantizeLinear: ONNX Runtime fuses the pruned model's
    Dequantize→Conv→Quantize into integer kernels but not the masked model's (its gates sit in between),
    and a value that lands on a rounding boundary in one and not the other moves by one step. So both
    runs are checked, with graph optimizations off (the ONNX reference arithmetic) and on (as deployed),
    each output within QUANT_STEPS steps of its own quantization scale (or 1e-4, whichever is larger)."""
    if not is_quantized(reference):
        return _compare(reference, candidate, feeds)
    steps = output_steps(reference)
    runs = {mode: _compare(reference, candidate, feeds, steps, optimize=mode == "optimized")
            for mode in ("reference", "optimized")}
    worst = max(runs.values(), key=lambda r: r.worst_ratio)
    quantized = {"tolerance": f"{QUANT_STEPS} quantization step of each output's scale (or 1e-4·max(1, |ref|))",
                 "steps": steps,
                 **{f"{mode}_max_abs_diff": r.max_abs_diff for mode, r in runs.items()},
                 **{f"{mode}_max_diff_steps": _in_steps(r, steps) for mode, r in runs.items()}}
    return VerifyResult(max(r.max_abs_diff for r in runs.values()), worst.worst_ratio, len(feeds),
                        all(r.passed for r in runs.values()), worst.worst_output, quantized)


def _in_steps(result: VerifyResult, steps: dict[str, float]) -> float | None:
    step = max(steps.values()) if steps else None
    return round(result.max_abs_diff / step, 4) if step else None


def _compare(reference, candidate, feeds, steps: dict[str, float] | None = None,
             optimize: bool = True) -> VerifyResult:
    ref_s, cand_s = make_session(reference, optimize=optimize), make_session(candidate, optimize=optimize)
    names = [o.name for o in ref_s.get_outputs()]
    steps = steps or {}
    max_abs, worst, worst_name = 0.0, 0.0, ""
    for feed in feeds:
        for name, r, c in zip(names, ref_s.run(names, feed), cand_s.run(names, feed)):
            dtype = np.asarray(r).dtype
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
            rtol = RTOL if dtype != np.float16 else FP16_RTOL
            tol = max(rtol * scale, QUANT_STEPS * steps.get(name, 0.0) * (1 + 1e-4))
            ratio = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff / tol)))
            if ratio > worst:
                worst, worst_name = ratio, name
            max_abs = max(max_abs, float(np.max(np.where(np.isnan(diff), np.inf, diff))))
    return VerifyResult(max_abs, worst, len(feeds), worst <= 1.0, worst_name)
