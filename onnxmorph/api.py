"""The Python API: `prune` and `inspect`. The CLI is a thin layer over these."""

from __future__ import annotations

import copy
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

from . import __version__
from . import measure as measuring
from .analysis import Analysis, analyze
from .analysis.options import AnalysisOptions
from .cost import CostModel, parse_target
from .data import check_inputs, load_arrays, split_holdout
from .emit import emit_pruned
from .errors import OnnxMorphError, TargetUnreachable, UsageError, VerificationError
from .fidelity import fidelity
from .gates import build_masked
from .graph.precision import load_working_copy
from .methods import get_method, select_units
from .methods.decide import select_uniform
from .train.engine import apply_params
from .train.loop import recover
from .train.reconstruct import reconstruct_cut
from .train.requantize import reconstruct_quantized
from .verify import compare, is_quantized, sample_inputs

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
    return analyze(load_working_copy(model, input_shapes, train=False)[0], options)


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
        "quantized": quantized_share(analysis, cm),
        "notes": analysis.loaded.notes,
    }


def quantized_share(analysis: Analysis, cm: CostModel) -> dict:
    """How much of the model runs quantized: its nodes (QDQ-fed float ops and QOperator ops) and their
    share of the counted MACs."""
    from .analysis.handlers.quant import is_quantized_node

    quantized = {n.name for n in analysis.loaded.graph().nodes if is_quantized_node(n)}
    i, o = cm.alive(None)
    macs = cm.per_node("macs", i, o)
    total = float(macs.sum())
    q = float(sum(m for c, m in zip(cm.nodes, macs) if c.node in quantized))
    return {"nodes": len(quantized), "macs": int(round(q)), "macs_share": round(q / total, 6) if total else 0.0}


def count_params(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


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
        loaded, half = load_working_copy(model, input_shapes, method_obj.trains or budget["recovery"] > 0)
    quantized = is_quantized(loaded.model)
    if quantized:  # integer weights: no gradient steps (the least-squares refit requantizes)
        refuse_quantized_training(method_obj, method, method_options.get("steps"), recover_steps)
        budget = split_budget(0, 0, False, False)
        bn_stats = False
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
    check_countable(analysis, cost_model, metric, fraction)
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
            selection, relaxed, measured = retarget_measured(decide, selection, relaxed, analysis, loaded.model,
                                                             fraction, measure_rounds, threads, say)
        fit.notes.extend(measured.pop("notes"))
    check_removed(selection, metric, fraction)
    if relaxed:
        fit.notes.append(f"the target needs some layers below {100 * floor:.0f} % of their channels")
    keep = selection.keep_units
    if arrays is not None and (reconstruct or bn_stats):
        with timer("reconstruct"):
            say("reconstructing the cut layers (least squares)")
            inputs_only = {s.name: arrays[s.name] for s in loaded.inputs}
            if quantized:
                rebuilt = reconstruct_quantized(analysis, keep, inputs_only, teacher=teacher, seed=seed,
                                                progress=progress)
            else:
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
        pruned, note = restore_interface(pruned, loaded, seed, arrays)
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
    if half is not None:  # the float32 working copy back in the model's own dtype
        pruned, masked, report["precision"] = write_back_half(half, pruned, masked, feeds)
    return PruneResult(pruned, masked, report, analysis)


def write_back_half(half, pruned, masked, feeds) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    """Pruned and masked models in the half dtype they came in; float16 ones are verified again as
    written (ONNX Runtime runs float16 on the CPU; bfloat16 Conv/Gemm/MatMul it does not)."""
    pruned_h, masked_h = half.restore(pruned), half.restore(masked)
    check = {"dtype": half.name, "working_copy": "float32"}
    if half.name == "float16":
        f16 = [{k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in f.items()} for f in feeds]
        result = compare(masked_h, pruned_h, f16)
        if not result.passed:
            raise VerificationError(f"verification failed in float16: pruned differs from masked on output "
                                    f"'{result.worst_output}' (max abs diff {result.max_abs_diff:.3g}); nothing written")
        check["verify"] = result.as_dict()
    else:
        check["verify"] = "on the float32 copies (ONNX Runtime's CPU provider has no bfloat16 Conv/Gemm/MatMul)"
    return pruned_h, masked_h, check


def refuse_quantized_training(method_obj, method: str, steps: int | None, recover_steps: int | None) -> None:
    if method_obj.trains or (steps or 0) > 0 or (recover_steps or 0) > 0:
        what = f"method '{method}'" if method_obj.trains else "recovery fine-tuning (--steps/--recover-steps)"
        raise UsageError(f"{what} cannot train a quantized model: its weights are stored as integers "
                         f"(DequantizeLinear of int8 constants) that gradient steps cannot update; use "
                         f"--method magnitude without --steps, or prune the float model and quantize it after")


def check_countable(analysis: Analysis, cost_model: CostModel, metric: str, fraction: float) -> None:
    """A model whose counted cost is 0 has nothing onnxmorph knows how to shrink: a target on it would
    be "reached" by removing nothing, so refuse it instead; so is one with every channel frozen, unless
    the target keeps everything."""
    frozen = sorted({g.frozen_reason for g in analysis.frozen_groups if g.frozen_reason})
    if cost_model.total(metric) <= 0:
        raise TargetUnreachable(f"onnxmorph counts 0 {metric} in this model (no op it can price"
                                + (f"; {frozen[0]}" if frozen else "") + "): nothing to prune")
    if analysis.num_units == 0 and fraction < 1.0:
        raise TargetUnreachable(f"no prunable channels: all {sum(g.channels for g in analysis.frozen_groups)} are "
                                f"frozen ({frozen[0] if frozen else 'no channel groups'}"
                                + (f" and {len(frozen) - 1} more" if len(frozen) > 1 else "") + ")")


def check_removed(selection, metric: str, fraction: float) -> None:
    """Never report success for a prune that removed nothing it was asked to remove."""
    if fraction < 1.0 and selection.keep_units.all():
        raise TargetUnreachable(f"target {metric}={fraction:g} removed nothing: no prunable channel could be "
                                f"removed (see `onnxmorph inspect`)")


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


def measure_threads(profile) -> int:
    """Intra-op threads for `measure`: a profile calibrated on this CPU is matched, otherwise 1."""
    from .cost.calibrate import cpu_name

    if profile is not None and profile.measured.get("cpu") == cpu_name():
        return max(1, int(profile.measured.get("threads", 1)))
    return 1


def _predicted_ratio(selection) -> float:
    return selection.cost_after / selection.cost_before if selection.cost_before else 1.0


def _num(x) -> float | None:
    return round(float(x), 6) if x is not None and np.isfinite(x) else None


def _rel_se(m: dict) -> float:
    """The relative standard error of a measurement's ratio (0 where it reports none)."""
    se = m.get("ratio_rel_se")
    return 0.0 if se is None else float(se)


def _round(frac: float, predicted: float | None, m: dict, margin: float | None = None,
           fraction: float | None = None) -> dict:
    """One round of the report's "measured" block. `margin`: how far below the target this round's
    fraction was aimed (0 for the first round, the plain selection); `fraction`: the latency target,
    for the ratio this round had to be at or below (`met_below`) and whether it was."""
    se = _rel_se(m)
    out = {"fraction": round(frac, 6), "predicted_ratio": None if predicted is None else round(predicted, 6),
           "measured_ratio": round(m["ratio"], 6), "original_ms": m["original_ms"], "pruned_ms": m["pruned_ms"],
           "ratio_rel_se": _num(se), "pairs": m.get("pairs"), "margin": _num(margin)}
    if fraction is not None:
        out["met_below"] = _num(met_below(fraction, se))
        out["met"] = measured_met(m["ratio"], se, fraction)
    return out


MEASURE_Z = 1.645  # one-sided 95 %
MIN_MARGIN = 0.01  # the aim's least distance below F: room for the error of a re-targeting step itself
MAX_MARGIN = 0.10  # the aim's most: beyond this the measurement is too noisy to steer by


def met_below(fraction: float, rel_se: float) -> float:
    """The highest measured ratio that meets latency=`fraction` when it was measured with relative
    standard error `rel_se`: fraction * (1 - z * sqrt(2) * rel_se), z = MEASURE_Z.

    `met` promises that timing the two models again on this machine (the same protocol, with noise
    of its own) gives a ratio <= fraction. Such a re-measurement differs from ours by the noise of
    both, sqrt(2) * rel_se for alike noise, so this is a one-sided 95 % prediction bound for it.
    The plain upper confidence bound, fraction * (1 - z * rel_se), says only that the true ratio is
    <= fraction; a round accepted right at it re-measures above the target Phi(-z / sqrt 2) = 12 %
    of the time (one accepted right at F, as `ratio <= F` did, half the time): the failure the
    benchmark's independent re-measurement found. Noise that differs between sessions without
    showing within one is not in rel_se; MIN_MARGIN in the aim is the cover for that."""
    return fraction * (1.0 - MEASURE_Z * np.sqrt(2.0) * rel_se)


def measured_met(ratio: float, rel_se: float, fraction: float) -> bool:
    """Whether a ratio measured with relative standard error `rel_se` meets latency=`fraction`
    (see `met_below`; with no noise, plainly ratio <= fraction)."""
    return bool(ratio <= met_below(fraction, rel_se))


def measure_margin(rel_se: float) -> float:
    """How far below F `next_fraction` aims, relative: the acceptance bound's distance
    (z * sqrt(2) * rel_se, see `met_below`) plus room for where the next round lands — one standard
    error of its own measurement (so a round landing on the aim is met ~84 % of the time) and at
    least MIN_MARGIN for the step's own error — at most MAX_MARGIN."""
    return float(min(MAX_MARGIN, MEASURE_Z * np.sqrt(2.0) * rel_se + max(MIN_MARGIN, rel_se)))


def next_fraction(history: list[tuple[float, float]], fraction: float, rel_se: float = 0.0) -> float:
    """The predicted fraction to select next, from the (predicted, measured) ratios so far and the
    measurements' relative standard error `rel_se`: it aims at fraction * (1 - measure_margin(rel_se)).

    First step: assume the measurement stays off the prediction by the same factor. Later steps:
    the secant through the last two rounds, because the measured ratio usually moves less than the
    predicted one (fixed costs that pruning does not touch) and proportional steps then creep up on
    the target; never a step more than twice the proportional one."""
    aim = fraction * (1.0 - measure_margin(rel_se))
    p, m = history[-1]
    step = p * aim / m
    if len(history) >= 2:
        p0, m0 = history[-2]
        if p0 - p > 1e-9 and m0 - m > 1e-9:
            secant = p + (aim - m) * (p0 - p) / (m0 - m)
            step = max(min(step, secant), p - 2 * (p - step))
    return step


def retarget_measured(decide, selection, relaxed, analysis, original, fraction, rounds, threads, say):
    """Measure the selection's pruned model against `original`; until a round meets the target
    (`measured_met`: its measured ratio is below `fraction` by more than its own noise), select
    again for a tighter fraction and measure again (`rounds` in all).

    The next fraction comes from `next_fraction`, aiming `measure_margin` below the target for the
    noise measured so far (the root mean square of the rounds' rel_se); being below the current
    prediction it always removes more. Returns the chosen (selection, relaxed) — the met round,
    else the lowest measured ratio (a best of noisy numbers: biased low, and not a promise) — and
    the report's "measured" block with the notes to add under "notes"."""
    tried, notes, history, noise = [], [], [], []
    frac, margin = fraction, 0.0
    for r in range(rounds):
        if r > 0:
            try:
                selection, relaxed = decide(frac)
            except TargetUnreachable:
                notes.append(f"measured re-targeting stopped at round {r + 1}: latency={frac:.4g} is unreachable")
                break
        say(f"measuring latency (round {r + 1}/{rounds})")
        # Recovery training changes weights, never shapes: this model times like the final one.
        pruned = emit_pruned(analysis, selection.keep_units)
        m = measuring.measured_ratio(original, pruned, threads=threads)
        predicted, se = _predicted_ratio(selection), _rel_se(m)
        row = _round(frac, predicted, m, margin, fraction)
        tried.append((selection, relaxed, row))
        met = row["met"]
        if met:
            # The loop stops at the first measurement below the bound, so that one is biased low (the
            # smallest of several noisy numbers): an independent measurement must meet the target too.
            say(f"measured {m['ratio']:.3f}x: confirming with a second measurement")
            c = measuring.measured_ratio(original, pruned, threads=threads)
            met = measured_met(c["ratio"], _rel_se(c), fraction)
            row.update(confirmed_ratio=round(c["ratio"], 6), confirmed_rel_se=_num(_rel_se(c)), met=met)
            # the unbiased one steers the next round (it is above its own bound, so above the aim)
            m, se = c, _rel_se(c)
        done = met or r + 1 == rounds or not selection.reached  # (not reached: nothing more to remove)
        line = (f"measuring latency (round {r + 1}/{rounds}): predicted {predicted:.3f}x, "
                f"measured {row['measured_ratio']:.3f}x (±{100 * (row['ratio_rel_se'] or 0.0):.1f} %)")
        if "confirmed_ratio" in row:
            line += f", {'confirmed' if met else 'not confirmed:'} {row['confirmed_ratio']:.3f}x"
        if done:
            say(line)
            break
        history.append((predicted, m["ratio"]))
        noise.append(se)
        pooled = float(np.sqrt(np.mean(np.square(noise))))
        margin = measure_margin(pooled)
        frac = next_fraction(history, fraction, pooled)
        if frac >= predicted:  # the aim is above this measurement: noise past MAX_MARGIN
            say(line)
            notes.append(f"measured re-targeting stopped at round {r + 1}: the measurement noise "
                         f"(±{100 * pooled:.1f} %) is too large to steer by")
            break
        say(f"{line} -> retarget {frac:.3f}")
    rows = [t[2] for t in tried]
    ratios = [max(row["measured_ratio"], row.get("confirmed_ratio", 0.0)) for row in rows]
    met_rounds = [k for k, row in enumerate(rows) if row["met"]]
    chosen = min(met_rounds or range(len(ratios)), key=lambda k: ratios[k])
    selection, relaxed, _ = tried[chosen]
    # The report's target is the requested fraction, not the tightened one this selection was made for.
    selection = replace(selection, reached=selection.cost_after <= fraction * selection.cost_before * (1 + 1e-9))
    if not met_rounds:
        notes.append(f"measured latency ratio {ratios[chosen]:.3f} is not clearly below the target {fraction:g} "
                     f"after {len(tried)} measured round(s); kept the fastest measured selection")
        near = [k for k, v in enumerate(ratios) if v <= fraction]
        if near:
            row = rows[near[-1]]
            noise_text = "unknown" if row["ratio_rel_se"] is None else f"±{100 * row['ratio_rel_se']:.1f} %"
            notes.append(f"round {near[-1] + 1} measured {row['measured_ratio']:.3f} <= {fraction:g}, but within "
                         f"this machine's measurement noise ({noise_text}), so a re-measurement would too often "
                         f"exceed the target" + ("" if row["met_below"] is None else
                                                f" (met needs <= {row['met_below']:.3f})"))
    block = {"rounds": rows, "chosen": chosen, "met": bool(met_rounds), "z": MEASURE_Z,
             "clock": measuring.clock_label(threads), "threads": threads, "notes": notes}
    return selection, relaxed, block


def measure_once(original, pruned, cost_model, selection, fraction, threads, say) -> dict:
    """The report's "measured" block for a target other than latency: one measurement, no re-targeting."""
    say("measuring latency")
    m = measuring.measured_ratio(original, pruned, threads=threads)
    predicted = None
    if cost_model.profile is not None:
        predicted = cost_model.total("latency", selection.keep_units) / cost_model.total("latency")
    return {"rounds": [_round(fraction, predicted, m)], "chosen": 0, "met": None,
            "clock": measuring.clock_label(threads), "threads": threads}


def measurement_notes(profile) -> list[str]:
    """Say so when the measured latencies are not those of the profile's hardware."""
    from .cost.calibrate import cpu_name

    if profile is None:
        return []
    here = cpu_name()
    there = profile.measured.get("cpu")
    if there == here:
        return []
    target = f"measured on {there}" if there else f"{profile.kind} profile"
    return [f"measured latency is of this machine ({here}, ONNX Runtime CPU), not of the target of profile "
            f"'{profile.name}' ({target})"]


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


def _latency(cost_model, keep) -> dict:
    return {"latency_ms": round(cost_model.latency_ms(keep), 6)} if cost_model.profile is not None else {}


def build_report(analysis, cost_model, selection, method, target, metric, fraction, verify_result, pruned,
                 timings, notes, round_to, seed) -> dict:
    keep = selection.keep_units
    before, after = cost_model.totals(), cost_model.totals(keep)
    original_params, pruned_params = count_params(analysis.loaded.model), count_params(pruned)
    groups = []
    for g in analysis.groups:
        kept = [i for i, u in enumerate(g.units) if keep[u]]
        groups.append({"name": g.name, "channels": g.channels, "kept": len(kept),
                       "kept_ratio": round(len(kept) / max(1, len(g.units)), 4), "kept_indices": kept})
    achieved = selection.cost_after / selection.cost_before if selection.cost_before else 1.0
    return {
        "onnxmorph": __version__,
        "model": analysis.loaded.source,
        "method": method,
        "target": {"spec": target.strip(), "metric": metric, "fraction": fraction, "achieved": round(achieved, 6),
                   "reached": selection.reached, "round_to": round_to},
        "seed": seed,
        "original": {"macs": before["macs"], "params": original_params, "bytes": before["bytes"],
                     **_latency(cost_model, None)},
        "pruned": {"macs": after["macs"], "params": pruned_params, "bytes": after["bytes"],
                   **_latency(cost_model, keep)},
        **({"profile": {"name": cost_model.profile.name, "kind": cost_model.profile.kind,
                        "channel_multiple": cost_model.profile.channel_multiple}}
           if cost_model.profile is not None else {}),
        "groups": groups,
        "frozen": [{"name": g.name, "channels": g.channels, "reason": g.frozen_reason}
                   for g in analysis.frozen_groups],
        "verify": verify_result.as_dict(),
        "timings": dict(timings, total=round(sum(timings.values()), 4)),
        "notes": notes,
    }


__all__ = ["PruneResult", "inspect", "prune", "summarize", "OnnxMorphError"]
