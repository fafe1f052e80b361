"""The Python API: `prune` and `inspect`. The CLI is a thin layer over these."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from .analysis import Analysis, analyze
from .analysis.options import AnalysisOptions
from .boundary import STAGE, boundary
from .cost import CostModel
from .bench.retarget import measure_once, measure_threads, measurement_notes, retarget_measured
from .data import check_inputs, load_arrays, split_holdout
from .emit import emit_pruned
from .errors import OnnxMorphError, TargetUnreachable, UsageError, VerificationError
from .fidelity import fidelity
from .gates import build_masked
from .graph.precision import load_working_copy
from .graph.interface import restore_interface
from .methods import get_method, select_units
from .methods.decide import select_uniform
from .options import DEFAULT_STEPS, PruneOptions
from .outputs import write_all
from .report.build import build_report, count_params
from .train.engine import apply_params
from .train.loop import held_out_rows, mixes_inputs, recover
from .train.reconstruct import reconstruct_cut
from .train.requantize import reconstruct_quantized
from .verify import compare, is_quantized, sample_inputs

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
        """The report as JSON, or as the human HTML page when `path` ends in .html."""
        write_text_atomic(self._report_text(path), path)

    def _report_text(self, path) -> str:
        from .report.html import is_html_path, render_html

        return render_html(self.report) if is_html_path(path) else json.dumps(self.report, indent=2)

    def save_all(self, path: str | os.PathLike, *, masked: str | os.PathLike | None = None,
                 report: str | os.PathLike | None = None) -> None:
        """Write the model, and the masked model and report if given, all together or none of them."""
        files = {path: self.model.SerializeToString()}
        if masked is not None:
            files[masked] = self.masked.SerializeToString()
        if report is not None:
            self.report["output"] = str(path)
            files[report] = self._report_text(report).encode()
        write_all(files)


def write_model_atomic(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    write_bytes_atomic(model.SerializeToString(), path)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    write_bytes_atomic(text.encode(), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Temp file in the target folder, then rename (see `onnxmorph.outputs.write_all`)."""
    write_all({path: data})


@boundary
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


@boundary
def prune(model, *, data: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
          eval_data: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
          progress: Callable[..., None] | None = None, options: PruneOptions | None = None,
          **keywords) -> PruneResult:
    """Prune `model` (a path or ModelProto) to a cost target; return the verified pruned model and its
    report. `data` / `eval_data`: training and held-out inputs (.npz, image folder or arrays). Every
    other keyword is a field of `PruneOptions` or of its `TrainConfig` / `MethodConfig` (e.g.
    `method="fisher", target="flops=0.25", steps=100`), validated before anything runs."""
    opts = PruneOptions.from_keywords(options, **keywords)
    run = _Run(progress)
    plan = plan_prune(opts, has_data=data is not None)
    with run.stage("load", "loading"):
        loaded, half = load_for(model, plan, opts)
    arrays, held_out = split_data(data, eval_data, loaded, opts)
    with run.stage("analyze", "analyzing channel groups"):
        analysis = analyze(loaded, opts.analysis)
        cost_model = CostModel(analysis, plan.profile)
        check_countable(analysis, cost_model, plan.metric, plan.fraction)
    with run.stage("train" if plan.method.trains else "score", f"scoring channels ({opts.method})"):
        fit = plan.method.fit(analysis, cost_model, data=arrays, seed=opts.seed, metric=plan.metric,
                              fraction=plan.fraction, progress=progress, labels=opts.labels)
        if fit.params:
            analysis = replace(analysis, loaded=replace(loaded, model=apply_params(loaded.model, fit.params)))
    decide = decider(analysis, cost_model, fit.importance, plan, opts)
    with run.stage("decide"):
        selection, relaxed = decided(decide, plan, fit)
    measured = None
    if opts.measure and plan.metric == "latency":
        with run.stage("measure"):
            selection, relaxed, measured = retarget_measured(
                decide, lambda keep: emit_pruned(analysis, keep), selection, relaxed, loaded.model, plan.fraction,
                plan.measure_rounds, plan.threads, run.say)
        fit.notes.extend(measured.pop("notes"))
    if relaxed:
        fit.notes.append(f"the target needs some layers below {100 * plan.floor:.0f} % of their channels")
    keep = selection.keep_units
    analysis = fine_tune_cut(run, analysis, keep, arrays, loaded.model, fit, plan, opts)
    with run.stage("emit", "emitting the pruned model"):
        pruned, masked = emit_pruned(analysis, keep), build_masked(analysis, keep)
        onnx.checker.check_model(pruned, full_check=True)
    with run.stage("verify", "verifying pruned == masked"):
        result = verified(masked, pruned, feeds := sample_inputs(loaded, VERIFY_BATCHES, opts.seed, arrays))
        pruned, masked, note = with_interface(pruned, masked, loaded,
                                              lambda: sample_inputs(loaded, 2, opts.seed + 1, arrays))
    if opts.measure and measured is None:  # not a latency target: report the measurement, re-target nothing
        with run.stage("measure"):
            measured = measure_once(loaded.model, pruned, cost_model, selection, plan.fraction, plan.threads,
                                    run.say)
    notes = list(loaded.notes) + fit.notes + ([note] if note else []) + \
        (measurement_notes(cost_model.profile) if opts.measure else [])
    report = build_report(analysis, cost_model, selection, opts.method, opts.target, plan.metric, plan.fraction,
                          result, pruned, run.times, notes, plan.round_to, opts.seed)
    add_run_blocks(report, opts, plan, arrays is not None, measured, fit)
    add_fidelity(report, run, loaded, pruned, held_out, opts.labels)
    report.update(fit.extra)
    if half is not None:  # the float32 working copy back in the model's own dtype
        pruned, masked, report["precision"] = write_back_half(half, pruned, masked, feeds)
    return PruneResult(pruned, masked, report, analysis)


class _Run:
    """A prune's progress messages and the wall time of each stage."""

    def __init__(self, progress):
        self.progress = progress
        self.say = progress or (lambda msg, **info: None)
        self.times: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, message: str | None = None):
        STAGE.set(name)  # for the error boundary's messages
        t0 = time.perf_counter()
        if message:
            self.say(message)
        yield
        self.times[name] = round(time.perf_counter() - t0, 4)


@dataclass
class Plan:
    """What the options resolve to before the model is read."""

    metric: str
    fraction: float
    profile: object
    round_to: int
    method: object
    budget: dict
    allocation: str
    measure_rounds: int
    threads: int
    floor: float
    quantized: bool = False  # set once the model is read


def plan_prune(opts: PruneOptions, has_data: bool) -> Plan:
    """Resolve the options' defaults (round_to from the profile, the step budget, the allocation)
    and check the combinations no single field can."""
    metric, fraction = opts.metric_and_fraction
    profile = None
    if opts.profile is not None:
        from .cost.profile import load_profile

        profile = load_profile(opts.profile)
    round_to = opts.round_to if opts.round_to is not None else (profile.channel_multiple if profile else 1)
    method = get_method(opts.method, **opts.method_kwargs())
    budget = split_budget(opts.steps, opts.recover_steps, method.trains, has_data)
    if method.trains:
        method.options["steps"] = budget["training"]
    if method.needs_data and not has_data:
        raise UsageError(f"method '{opts.method}' needs --data (an .npz of inputs or a folder of images)")
    if metric == "latency" and profile is None:
        raise UsageError("--target latency=F needs a hardware profile: --profile NAME or a JSON file "
                         "(see `onnxmorph profiles list`)")
    # a latency target needs the per-layer latency ranking; MACs share alike
    allocation = opts.allocation or ("cost" if metric == "latency" else "uniform")
    return Plan(metric, fraction, profile, round_to, method, budget, allocation,
                3 if opts.measure_rounds is None else opts.measure_rounds,
                measure_threads(profile) if opts.measure else 1, method.min_keep(fraction))


def split_data(data, eval_data, loaded, opts: PruneOptions):
    """The training rows and the held-out rows (`eval_data`, else 10 % of `data`), checked against
    the model's inputs; (None, None) without data."""
    if data is None:
        return None, None
    arrays = _checked(data, loaded, opts.labels, opts.image_mean, opts.image_std)
    if eval_data is not None:
        return arrays, _checked(eval_data, loaded, opts.labels, opts.image_mean, opts.image_std)
    return split_holdout(arrays, opts.seed)


def decider(analysis, cost_model, importance, plan: Plan, opts: PruneOptions):
    """decide(frac): the selection for `frac` of the metric, and whether it had to drop the
    per-group floor."""
    method, metric, round_to = plan.method, plan.metric, plan.round_to

    def decide(frac: float, multiple: int = round_to, best_effort: bool = opts.best_effort):
        if method.per_cost and plan.allocation == "uniform":
            return select_uniform(analysis, cost_model, importance, metric, frac, multiple, best_effort), False
        per_cost = method.per_cost and plan.allocation == "cost"
        try:
            return select_units(analysis, cost_model, importance, metric, frac, multiple,
                                per_cost=per_cost, min_keep=plan.floor), False
        except TargetUnreachable:  # retry without the per-group floor (and, if asked, best effort)
            return select_units(analysis, cost_model, importance, metric, frac, multiple,
                                best_effort, per_cost=per_cost, min_keep=0.0), plan.floor > 0

    return decide


def decided(decide, plan: Plan, fit):
    """decide(plan.fraction), saying when --round-to is what makes the target unreachable."""
    try:
        selection, relaxed = decide(plan.fraction)
    except TargetUnreachable as exc:
        raise TargetUnreachable(f"{exc}{_round_to_reason(decide, plan)}") from None
    reason = "" if selection.reached else _round_to_reason(decide, plan)
    if reason:
        fit.notes.append(f"target not reached{reason}")
    check_removed(selection, plan.metric, plan.fraction, reason)
    return selection, relaxed


def load_for(model, plan: Plan, opts: PruneOptions):
    """The model as it will be pruned, and the half dtype to write it back in (None for float32): a
    bfloat16 model, and a float16 one that trains, become a float32 working copy. A quantized model
    takes no gradient steps (the least-squares refit requantizes its weights)."""
    loaded, half = load_working_copy(model, opts.input_shapes, plan.method.trains or plan.budget["recovery"] > 0)
    plan.quantized = is_quantized(loaded.model)
    if plan.quantized:
        refuse_quantized_training(plan.method, opts.method, opts.steps, opts.recover_steps)
        plan.budget = split_budget(0, 0, False, False)
    return loaded, half


def fine_tune_cut(run: _Run, analysis, keep, arrays, teacher, fit, plan: Plan, opts: PruneOptions):
    """With data: the least-squares refit of the cut layers (and BatchNorm statistics), then recovery
    fine-tuning of the cut model toward `teacher` (the untouched model). Returns the analysis with
    the new weights; the training curve and notes go to `fit`."""
    # recovery's probe and guard judge on rows the refit never saw: fit on them, they flattered the
    # refit (ppocr-cls: KL 0.01 there, 0.21 on the other rows) and turned down every learning rate
    val_rows, fit_rows = held_out_rows(len(next(iter(arrays.values()))), opts.seed) if arrays is not None \
        else (None, None)
    if arrays is not None and (opts.reconstruct or opts.bn_stats):
        with run.stage("reconstruct", "reconstructing the cut layers (least squares)"):
            inputs_only = {s.name: arrays[s.name][fit_rows] for s in analysis.loaded.inputs}
            if plan.quantized:
                rebuilt = reconstruct_quantized(analysis, keep, inputs_only, teacher=teacher, seed=opts.seed,
                                                progress=run.progress)
            else:
                rebuilt = reconstruct_cut(analysis, keep, inputs_only, teacher=teacher, seed=opts.seed,
                                          progress=run.progress, refit=opts.reconstruct, bn_stats=opts.bn_stats)
        analysis = replace(analysis, loaded=replace(analysis.loaded,
                                                    model=apply_params(analysis.loaded.model, rebuilt.params)))
        fit.notes.append(rebuilt.note())
    steps = plan.budget["recovery"]
    fit.curve = list(fit.curve)
    if steps > 0:
        if arrays is None:
            raise UsageError("--recover-steps needs --data (distillation fine-tuning of the pruned model)")
        with run.stage("recover"):
            rec = recover(analysis, keep, data=arrays, steps=steps, seed=opts.seed, progress=run.progress,
                          labels=opts.labels, teacher=teacher, val_rows=val_rows,
                          mix_inputs=mixes_inputs(plan.fraction),
                          **{**opts.knobs.as_kwargs(), **opts.train.as_kwargs()})
        analysis = replace(analysis, loaded=replace(analysis.loaded,
                                                    model=apply_params(analysis.loaded.model, rec.params)))
        fit.curve += rec.curve
        fit.notes.extend(rec.notes)
        plan.budget["probe"] = rec.extra.get("probe_steps", 0)
    return analysis


def verified(masked: onnx.ModelProto, pruned: onnx.ModelProto, feeds):
    """Invariant 1: the pruned model computes what the masked one does on `feeds`, or nothing is written."""
    result = compare(masked, pruned, feeds)
    if not result.passed:
        raise VerificationError(
            f"verification failed: pruned differs from masked on output '{result.worst_output}' "
            f"(max abs diff {result.max_abs_diff:.3g}); nothing written — please report this model"
        )
    return result


def with_interface(pruned, masked, loaded, sample):
    """The original interface (a dynamic batch) back on the pruned model and, where it holds there, on
    the masked one (`--save-masked`)."""
    pruned, note = restore_interface(pruned, loaded, sample)
    if loaded.dynamic and note is None:
        masked, _ = restore_interface(masked, loaded, sample)
    return pruned, masked, note


def add_run_blocks(report: dict, opts: PruneOptions, plan: Plan, has_data: bool, measured, fit) -> None:
    """The report's blocks about how this prune ran: analysis options, step budget, allocation,
    reconstruction, the measurement and the training curve."""
    report["analysis"] = opts.analysis.as_dict()
    report["budget"] = plan.budget
    report["allocation"] = plan.allocation if plan.method.per_cost else "learned"
    report["reconstruction"] = bool(has_data and opts.reconstruct)
    if measured is not None:
        report["measured"] = measured
    if fit.curve:
        report["training_curve"] = fit.curve


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


def check_removed(selection, metric: str, fraction: float, reason: str = "") -> None:
    """Never report success for a prune that removed nothing it was asked to remove."""
    if fraction < 1.0 and selection.keep_units.all():
        raise TargetUnreachable(f"target {metric}={fraction:g} removed nothing: no prunable channel could be "
                                f"removed" + (reason or " (see `onnxmorph inspect`)"))


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
    arrays = load_arrays(data, loaded, mean, std, needed=(labels,) if labels else ())
    inputs, label_array, _ = check_inputs(arrays, loaded, labels)
    arrays = dict(inputs)
    if label_array is not None:
        arrays[labels] = label_array
    return arrays


def _round_to_reason(decide, plan: Plan) -> str:
    """"; --round-to N is the reason ..." when the target is reachable with channel counts not rounded."""
    round_to, profile = plan.round_to, plan.profile
    if round_to <= 1:
        return ""
    try:
        selection, _ = decide(plan.fraction, 1, False)
    except TargetUnreachable:
        return ""
    if not selection.reached:
        return ""
    origin = f" (profile '{profile.name}' channel multiple)" if profile is not None and \
        profile.channel_multiple == round_to else ""
    return (f"; --round-to {round_to}{origin} is the reason: with channel counts that are not rounded "
            f"(--round-to 1) the target is reachable")


def add_fidelity(report: dict, run: _Run, loaded, pruned: onnx.ModelProto, held_out, labels: str | None) -> None:
    """The report's fidelity block, when there are held-out rows (its time joins the timings)."""
    if held_out is not None:
        with run.stage("fidelity", "measuring held-out fidelity"):
            report["fidelity"] = held_out_fidelity(loaded, pruned, held_out, labels)
        report["timings"] = dict(run.times, total=round(sum(run.times.values()), 4))


def held_out_fidelity(loaded, pruned: onnx.ModelProto, held_out: dict[str, np.ndarray], labels: str | None) -> dict:
    """The report's fidelity block: the pruned model against the file's on the held-out rows."""
    reference = loaded.original if loaded.original is not None and loaded.dynamic else loaded.model
    inputs = {s.name: held_out[s.name] for s in loaded.inputs}
    return fidelity(reference, pruned, inputs, labels=held_out.get(labels) if labels else None)


__all__ = ["PruneResult", "inspect", "prune", "summarize", "OnnxMorphError"]
