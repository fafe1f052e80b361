"""The Python API: `prune` and `inspect`. The CLI is a thin layer over these."""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from .analysis import Analysis, analyze
from .analysis.options import AnalysisOptions
from .cost import CostModel, parse_target
from .bench.retarget import measure_once, measure_threads, measurement_notes, retarget_measured
from .data import check_inputs, load_arrays, split_holdout
from .emit import emit_pruned
from .errors import OnnxMorphError, TargetUnreachable, UsageError, VerificationError
from .fidelity import fidelity
from .gates import build_masked
from .graph import load_model
from .graph.interface import restore_interface
from .methods import get_method, select_units
from .methods.decide import select_uniform
from .report.build import build_report, count_params
from .train.engine import apply_params
from .train.loop import recover
from .train.reconstruct import reconstruct_cut
from .verify import compare, sample_inputs

VERIFY_BATCHES = 3
# how one-shot scores share the cut among groups: the same share of every group, a global ranking of
# the (per-group normalized) scores, or scores per unit of cost saved
ALLOCATIONS = ("uniform", "global", "cost")
DEFAULT_STEPS = 300  # optimizer steps in all (training + recovery) when data is given


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


def inspect(model, *, input_shapes: dict | None = None, attention: str = "heads",
            prune_embedding: bool = False) -> Analysis:
    """Load and analyse a model (path or ModelProto). `attention` ("heads" | "head-dims" | "off") and
    `prune_embedding` choose the transformer units (see `AnalysisOptions`)."""
    options = AnalysisOptions(attention, prune_embedding)
    return analyze(load_model(model, input_shapes), options)


def summarize(analysis: Analysis, profile=None) -> dict:
    """Groups with their channel counts, MAC share and status, plus model totals (for `inspect`).

    With a hardware `profile`, also the predicted latency and each group's share of it."""
    cm = CostModel(analysis, profile)
    full = cm.totals()
    latency = cm.total("latency") if profile is not None else None
    groups = []
    for g in analysis.groups:
        keep = np.ones(analysis.num_units, dtype=bool)
        keep[g.units] = False
        share = (full["macs"] - cm.total("macs", keep)) / full["macs"] if full["macs"] else 0.0
        groups.append({"name": g.name, "channels": g.channels, "macs_share": round(share, 6),
                       "prunable": True, "reason": None})
        if latency:
            groups[-1]["latency_share"] = round((latency - cm.total("latency", keep)) / latency, 6)
    for g in analysis.frozen_groups:
        groups.append({"name": g.name, "channels": g.channels, "macs_share": None, "prunable": False,
                       "reason": g.frozen_reason})
    return {
        "model": analysis.loaded.source,
        "opset": analysis.loaded.opset,
        "inputs": {k: list(v) for k, v in analysis.loaded.static_inputs.items()},
        "macs": full["macs"],
        **({"profile": cm.profile.name, "latency_ms": round(1e3 * latency, 6)} if profile is not None else {}),
        "params": count_params(analysis.loaded.model),
        "prunable_channels": analysis.num_units,
        "frozen_channels": sum(g.channels for g in analysis.frozen_groups),
        "groups": groups,
        "leaves": [{"node": k, "reason": v} for k, v in analysis.leaves.items()],
        "notes": analysis.loaded.notes,
    }


def prune(
    model,
    *,
    method: str = "magnitude",
    target: str = "flops=0.5",
    data: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    labels: str | None = None,
    round_to: int | None = None,
    profile=None,
    input_shapes: dict | None = None,
    seed: int = 0,
    best_effort: bool = False,
    recover_steps: int | None = None,
    image_mean: tuple[float, ...] | None = None,
    image_std: tuple[float, ...] | None = None,
    progress: Callable[..., None] | None = None,
    attention: str = "heads",
    prune_embedding: bool = False,
    measure: bool = False,
    measure_rounds: int = 3,
    eval_data: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    reconstruct: bool = True,
    allocation: str | None = None,
    bn_stats: bool = False,
    **method_options,
) -> PruneResult:
    """Prune `model` to `target` and return the verified pruned model with its report.

    `profile` (a built-in name, a JSON file or a `HardwareProfile`) enables `target="latency=F"`,
    adds predicted latencies to the report, and makes `round_to` default to its channel multiple.

    `measure`: time the pruned model against the original with ONNX Runtime on this machine and add
    it to the report; with a latency target, re-target until the measured ratio is below F by more
    than its measurement noise (at most `measure_rounds` selections, see `retarget_measured`)."""
    say = progress or (lambda msg, **info: None)
    timer = _Timer()
    metric, fraction = parse_target(target)
    options = AnalysisOptions(attention, prune_embedding)
    if profile is not None:
        from .cost.profile import load_profile

        profile = load_profile(profile)
    if round_to is None:
        round_to = profile.channel_multiple if profile is not None else 1
    if round_to < 1:
        raise UsageError(f"--round-to must be >= 1, got {round_to}")
    method_obj = get_method(method, **method_options)
    budget = split_budget(method_options.get("steps"), recover_steps, method_obj.trains, data is not None)
    if method_obj.trains:
        method_obj.options["steps"] = budget["training"]
    if method_obj.needs_data and data is None:
        raise UsageError(f"method '{method}' needs --data (an .npz of inputs or a folder of images)")
    if metric == "latency" and profile is None:
        raise UsageError("--target latency=F needs a hardware profile: --profile NAME or a JSON file "
                         "(see `onnxmorph profiles list`)")
    if allocation is None:  # a latency target needs the per-layer latency ranking; MACs share alike
        allocation = "cost" if metric == "latency" else "uniform"
    if allocation not in ALLOCATIONS:
        raise UsageError(f"unknown allocation '{allocation}': choose one of {', '.join(ALLOCATIONS)}")
    if measure_rounds < 1:
        raise UsageError(f"--measure-rounds must be >= 1, got {measure_rounds}")
    threads = measure_threads(profile) if measure else 1

    with timer("load"):
        say("loading")
        loaded = load_model(model, input_shapes)
    arrays, held_out = None, None
    if data is not None:
        arrays = _checked(data, loaded, labels, image_mean, image_std)
        if eval_data is not None:
            held_out = _checked(eval_data, loaded, labels, image_mean, image_std)
        else:
            arrays, held_out = split_holdout(arrays, seed)
    with timer("analyze"):
        say("analyzing channel groups")
        analysis = analyze(loaded, options)
        cost_model = CostModel(analysis, profile)
    with timer("train" if method_obj.trains else "score"):
        say(f"scoring channels ({method})")
        fit = method_obj.fit(analysis, cost_model, data=arrays, seed=seed, metric=metric, fraction=fraction,
                             progress=progress, labels=labels)
        if fit.params:
            analysis = replace(analysis, loaded=replace(loaded, model=apply_params(loaded.model, fit.params)))
    floor = method_obj.min_keep(fraction)

    def decide(frac: float):
        """The selection for `frac` of `metric`, and whether it had to drop the per-group floor."""
        if method_obj.per_cost and allocation == "uniform":
            return select_uniform(analysis, cost_model, fit.importance, metric, frac, round_to, best_effort), False
        per_cost = method_obj.per_cost and allocation == "cost"
        try:
            return select_units(analysis, cost_model, fit.importance, metric, frac, round_to,
                                per_cost=per_cost, min_keep=floor), False
        except TargetUnreachable:  # retry without the per-group floor (and, if asked, best effort)
            return select_units(analysis, cost_model, fit.importance, metric, frac, round_to,
                                best_effort, per_cost=per_cost, min_keep=0.0), floor > 0

    with timer("decide"):
        selection, relaxed = decide(fraction)
    teacher = loaded.model  # the untouched model: distillation and reconstruction targets
    measured = None
    if measure and metric == "latency":
        with timer("measure"):
            selection, relaxed, measured = retarget_measured(decide, lambda keep: emit_pruned(analysis, keep),
                                                             selection, relaxed, loaded.model, fraction,
                                                             measure_rounds, threads, say)
        fit.notes.extend(measured.pop("notes"))
    if relaxed:
        fit.notes.append(f"the target needs some layers below {100 * floor:.0f} % of their channels")
    keep = selection.keep_units
    if arrays is not None and (reconstruct or bn_stats):
        with timer("reconstruct"):
            say("reconstructing the cut layers (least squares)")
            inputs_only = {s.name: arrays[s.name] for s in loaded.inputs}
            rebuilt = reconstruct_cut(analysis, keep, inputs_only, teacher=teacher, seed=seed, progress=progress,
                                      refit=reconstruct, bn_stats=bn_stats)
        analysis = replace(analysis, loaded=replace(analysis.loaded,
                                                    model=apply_params(analysis.loaded.model, rebuilt.params)))
        fit.notes.append(rebuilt.note())
    recover_steps = budget["recovery"]
    curve = list(fit.curve)
    if recover_steps > 0:
        if arrays is None:
            raise UsageError("--recover-steps needs --data (distillation fine-tuning of the pruned model)")
        with timer("recover"):
            rec = recover(analysis, keep, data=arrays, steps=recover_steps, seed=seed, progress=progress,
                          labels=labels, teacher=teacher, **{k: v for k, v in method_options.items() if k != "steps"})
        analysis = replace(analysis, loaded=replace(analysis.loaded,
                                                    model=apply_params(analysis.loaded.model, rec.params)))
        curve += rec.curve
        fit.notes.extend(rec.notes)
        budget["probe"] = rec.extra.get("probe_steps", 0)
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
        pruned, note = restore_interface(pruned, loaded, lambda: sample_inputs(loaded, 2, seed + 1, arrays))
    if measure and measured is None:  # not a latency target: report the measurement, re-target nothing
        with timer("measure"):
            measured = measure_once(loaded.model, pruned, cost_model, selection, fraction, threads, say)
    notes = list(loaded.notes) + fit.notes + ([note] if note else [])
    if measure:
        notes += measurement_notes(cost_model.profile)
    report = build_report(analysis, cost_model, selection, method, target, metric, fraction, result, pruned,
                          timer.times, notes, round_to, seed)
    report["analysis"] = options.as_dict()
    report["budget"] = budget
    report["allocation"] = allocation if method_obj.per_cost else "learned"
    report["reconstruction"] = bool(arrays is not None and reconstruct)
    if measured is not None:
        report["measured"] = measured
    if curve:
        report["training_curve"] = curve
    if held_out is not None:
        with timer("fidelity"):
            say("measuring held-out fidelity")
            report["fidelity"] = held_out_fidelity(loaded, pruned, held_out, labels)
        report["timings"] = dict(timer.times, total=round(sum(timer.times.values()), 4))
    report.update(fit.extra)
    return PruneResult(pruned, masked, report, analysis)


def split_budget(steps: int | None, recover_steps: int | None, trains: bool, has_data: bool) -> dict:
    """How `steps` optimizer steps in all are spent: a training method trains for half and recovers
    for the rest (`recover_steps` sets the recovery part); one-shot methods spend them all on
    recovery, which needs data."""
    if (steps is not None and steps < 0) or (recover_steps is not None and recover_steps < 0):
        raise UsageError(f"--steps must be >= 0 and --recover-steps between 0 and --steps "
                         f"(got {steps}, {recover_steps})")
    if steps is not None:
        total = steps
    elif recover_steps is not None:  # recovery as asked, training its default half
        total = recover_steps + (DEFAULT_STEPS // 2 if trains else 0)
    else:
        total = DEFAULT_STEPS if has_data else 0
    recovery = recover_steps if recover_steps is not None else (total // 2 if trains else total)
    if recovery > total:
        raise UsageError(f"--recover-steps {recover_steps} is more than --steps {total}")
    return {"steps": total, "training": total - recovery if trains else 0, "recovery": recovery, "probe": 0}


def _checked(data, loaded, labels, mean, std) -> dict[str, np.ndarray]:
    """Data checked against the model's inputs, with the label array (if any) under its own name."""
    inputs, label_array, _ = check_inputs(load_arrays(data, loaded, mean, std), loaded, labels)
    arrays = dict(inputs)
    if label_array is not None:
        arrays[labels] = label_array
    return arrays


def held_out_fidelity(loaded, pruned: onnx.ModelProto, held_out: dict[str, np.ndarray], labels: str | None) -> dict:
    """The report's fidelity block: the pruned model against the file's on the held-out rows."""
    reference = loaded.original if loaded.original is not None and loaded.dynamic else loaded.model
    inputs = {s.name: held_out[s.name] for s in loaded.inputs}
    return fidelity(reference, pruned, inputs, labels=held_out.get(labels) if labels else None)


__all__ = ["PruneResult", "inspect", "prune", "summarize", "OnnxMorphError"]
