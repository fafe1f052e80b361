"""The Python API: `prune` and `inspect`. The CLI is a thin layer over these."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from . import __version__
from .analysis import Analysis, analyze
from .cost import CostModel, parse_target
from .data import check_inputs, load_arrays
from .emit import emit_pruned
from .errors import OnnxMorphError, UsageError, VerificationError
from .gates import build_masked
from .graph import load_model
from .methods import get_method, select_units
from .verify import compare, sample_inputs

VERIFY_BATCHES = 3


@dataclass
class PruneResult:
    model: onnx.ModelProto
    masked: onnx.ModelProto
    report: dict
    analysis: Analysis = field(repr=False)

    def save(self, path: str | os.PathLike) -> None:
        write_model_atomic(self.model, path)

    def save_masked(self, path: str | os.PathLike) -> None:
        write_model_atomic(self.masked, path)

    def save_report(self, path: str | os.PathLike) -> None:
        write_text_atomic(json.dumps(self.report, indent=2), path)


def write_model_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    write_bytes_atomic(model.SerializeToString(), path)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    write_bytes_atomic(text.encode(), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Timer:
    def __init__(self):
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t0, 4)


def inspect(model, *, input_shapes: dict | None = None) -> Analysis:
    """Load and analyse a model (path or ModelProto)."""
    return analyze(load_model(model, input_shapes))


def summarize(analysis: Analysis) -> dict:
    """Groups with their channel counts, MAC share and status, plus model totals (for `inspect`)."""
    cm = CostModel(analysis)
    full = cm.totals()
    groups = []
    for g in analysis.groups:
        keep = np.ones(analysis.num_units, dtype=bool)
        keep[g.units] = False
        share = (full["macs"] - cm.total("macs", keep)) / full["macs"] if full["macs"] else 0.0
        groups.append({"name": g.name, "channels": g.channels, "macs_share": round(share, 6),
                       "prunable": True, "reason": None})
    for g in analysis.frozen_groups:
        groups.append({"name": g.name, "channels": g.channels, "macs_share": None, "prunable": False,
                       "reason": g.frozen_reason})
    return {
        "model": analysis.loaded.source,
        "opset": analysis.loaded.opset,
        "inputs": {k: list(v) for k, v in analysis.loaded.static_inputs.items()},
        "macs": full["macs"],
        "params": count_params(analysis.loaded.model),
        "prunable_channels": analysis.num_units,
        "frozen_channels": sum(g.channels for g in analysis.frozen_groups),
        "groups": groups,
        "leaves": [{"node": k, "reason": v} for k, v in analysis.leaves.items()],
        "notes": analysis.loaded.notes,
    }


def count_params(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def prune(
    model,
    *,
    method: str = "magnitude",
    target: str = "flops=0.5",
    data: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    labels: str | None = None,
    round_to: int = 1,
    input_shapes: dict | None = None,
    seed: int = 0,
    best_effort: bool = False,
    progress: Callable[[str], None] | None = None,
    **method_options,
) -> PruneResult:
    """Prune `model` to `target` and return the verified pruned model with its report."""
    say = progress or (lambda msg: None)
    timer = _Timer()
    metric, fraction = parse_target(target)
    if round_to < 1:
        raise UsageError(f"--round-to must be >= 1, got {round_to}")
    method_obj = get_method(method, **method_options)
    if method_obj.needs_data and data is None:
        raise UsageError(f"method '{method}' needs --data (an .npz of inputs or a folder of images)")
    if metric == "latency":
        raise UsageError("--target latency=F needs a hardware profile (not available yet); use flops= or params=")

    with timer("load"):
        say("loading")
        loaded = load_model(model, input_shapes)
    arrays = None
    if data is not None:
        inputs, label_array, _ = check_inputs(load_arrays(data), loaded, labels)
        arrays = dict(inputs)
        if label_array is not None:
            arrays[labels] = label_array
    with timer("analyze"):
        say("analyzing channel groups")
        analysis = analyze(loaded)
        cost_model = CostModel(analysis)
    with timer("score"):
        say(f"scoring channels ({method})")
        importance = method_obj.importance(analysis, cost_model, data=arrays, seed=seed)
    with timer("decide"):
        selection = select_units(analysis, cost_model, importance, metric, fraction, round_to, best_effort)
    keep = selection.keep_units
    with timer("emit"):
        say("emitting the pruned model")
        pruned = emit_pruned(analysis, keep)
        masked = build_masked(analysis, keep)
        onnx.checker.check_model(pruned, full_check=True)
    with timer("verify"):
        say("verifying pruned == masked")
        feeds = sample_inputs(loaded, VERIFY_BATCHES, seed, arrays)
        result = compare(masked, pruned, feeds)
        if not result.passed:
            raise VerificationError(
                f"verification failed: pruned differs from masked on output '{result.worst_output}' "
                f"(max abs diff {result.max_abs_diff:.3g}); nothing written — please report this model"
            )
        pruned, note = restore_interface(pruned, loaded, seed, arrays)
    notes = list(loaded.notes) + ([note] if note else [])
    report = build_report(analysis, cost_model, selection, method, target, metric, fraction, result, pruned,
                          timer.times, notes, round_to, seed)
    return PruneResult(pruned, masked, report, analysis)


def restore_interface(pruned: onnx.ModelProto, loaded, seed: int, data) -> tuple[onnx.ModelProto, str | None]:
    """Give a pruned model back its original symbolic batch dim when it provably still works."""
    if not loaded.dynamic:
        return pruned, None
    specs = {s.name: s for s in loaded.inputs + loaded.outputs}
    if any(not isinstance(d, int) for s in specs.values() for d in s.dims[1:]):
        return pruned, "the pruned model keeps the static input shapes used for the analysis"
    candidate = copy.deepcopy(pruned)
    del candidate.graph.value_info[:]
    for vi in list(candidate.graph.input) + list(candidate.graph.output):
        spec = specs.get(vi.name)
        if spec is None or isinstance(spec.dims[0], int):
            continue
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_param = str(spec.dims[0])
    try:
        candidate = onnx.shape_inference.infer_shapes(candidate, strict_mode=False)
        feeds1 = sample_inputs(loaded, 2, seed + 1, data)
        batched = {k: np.concatenate([f[k] for f in feeds1]) for k in feeds1[0]}
        from .runtime import make_session

        single = make_session(pruned)
        stacked = make_session(candidate).run(None, batched)
        singles = [single.run(None, f) for f in feeds1]
        for j, out in enumerate(stacked):
            ref = np.concatenate([s[j] for s in singles])
            if out.shape != ref.shape or not np.allclose(out, ref, rtol=1e-4, atol=1e-5):
                raise ValueError("batched outputs differ")
    except Exception:
        return pruned, "the pruned model has a fixed batch size of 1 (the dynamic batch did not survive folding)"
    return candidate, None


def build_report(analysis, cost_model, selection, method, target, metric, fraction, verify_result, pruned,
                 timings, notes, round_to, seed) -> dict:
    keep = selection.keep_units
    before, after = cost_model.totals(), cost_model.totals(keep)
    original_params, pruned_params = count_params(analysis.loaded.model), count_params(pruned)
    groups = []
    for g in analysis.groups:
        kept = [i for i, u in enumerate(g.units) if keep[u]]
        groups.append({"name": g.name, "channels": g.channels, "kept": len(kept), "kept_indices": kept})
    achieved = selection.cost_after / selection.cost_before if selection.cost_before else 1.0
    return {
        "onnxmorph": __version__,
        "model": analysis.loaded.source,
        "method": method,
        "target": {"spec": target.strip(), "metric": metric, "fraction": fraction, "achieved": round(achieved, 6),
                   "reached": selection.reached, "round_to": round_to},
        "seed": seed,
        "original": {"macs": before["macs"], "params": original_params, "bytes": before["bytes"]},
        "pruned": {"macs": after["macs"], "params": pruned_params, "bytes": after["bytes"]},
        "groups": groups,
        "frozen": [{"name": g.name, "channels": g.channels, "reason": g.frozen_reason}
                   for g in analysis.frozen_groups],
        "verify": verify_result.as_dict(),
        "timings": dict(timings, total=round(sum(timings.values()), 4)),
        "notes": notes,
    }


__all__ = ["PruneResult", "inspect", "prune", "summarize", "OnnxMorphError"]
