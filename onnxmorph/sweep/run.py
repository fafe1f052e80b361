"""`sweep()`: one prune per (method, target), run on a backend, evaluated on held-out inputs, with the
Pareto front, the pick, sweep.json and sweep.html written to OUTDIR."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..version import __version__
from ..errors import DataError, ModelLoadError, UsageError
from ..options import PruneOptions
from .front import fronts
from .pick import PickResult, parse_constraints
from .pick import pick as choose
from .spec import TrialSpec, parse_methods, parse_targets, trial_specs
from .trial import Payload, TrialOptions, TrialResult, metrics_from_report, result_from_outcome

COST_AXES = ("macs", "predicted_ms", "measured_ms")


@dataclass
class SweepResult:
    trials: list[TrialResult]
    front: list[TrialResult]  # on the front of fidelity against `cost_key`, by increasing cost
    pick: PickResult | None
    fronts: dict[str, list[str]]  # every cost axis the trials have -> names on its front
    cost_key: str
    fidelity_key: str
    outdir: Path
    summary: dict = field(repr=False)  # what sweep.json holds

    def trial(self, name: str) -> TrialResult:
        return next(t for t in self.trials if t.name == name)

    @property
    def failed(self) -> list[TrialResult]:
        return [t for t in self.trials if t.status == "failed"]


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Mapping):
            for k in sorted(part):
                h.update(str(k).encode())
                h.update(_fingerprint(part[k]).encode())
        elif isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _load_data(data, loaded, labels, prune_options) -> dict[str, np.ndarray]:
    """Arrays checked against the model's inputs, the label array (if any) under its own name."""
    from ..data import check_inputs, load_arrays

    arrays = load_arrays(data, loaded, prune_options.get("image_mean"), prune_options.get("image_std"))
    inputs, y, _ = check_inputs(arrays, loaded, labels)
    return dict(inputs, **({labels: y} if labels is not None else {}))


def _notify(progress, event: str, name: str, counts: dict) -> None:
    if progress is not None:
        progress(event, name, dict(counts))


def sweep(
    model,
    *,
    data,
    targets,
    outdir: str | os.PathLike | None = None,
    eval_data=None,
    methods="fisher",
    profile=None,
    measure: bool = False,
    steps: int | None = None,
    labels: str | None = None,
    workers: int | None = None,
    ray: bool | str | None = None,
    trial_cpus: float | None = None,
    trial_gpus: float = 0.0,
    resume: bool = False,
    pick: str | None = None,
    seed: int = 0,
    progress: Callable[[str, str, dict], None] | None = None,
    **prune_options,
) -> SweepResult:
    """Prune `model` once per (method, target) and compare the results.

    `targets`: "flops=0.25,0.5,0.75" (see `spec.parse_targets`); `methods`: "fisher,magnitude".
    Each trial is `onnxmorph.prune(...)` on the training part of `data`, written to
    OUTDIR/<method>-<target>/{model.onnx, report.json}, and scored by `fidelity.fidelity` on the
    held-out inputs: `eval_data`, else the rows `data.split_holdout` keeps out of `data` (as prune
    does; the trial trains on the rest). `ray`: None/False for the local process pool of `workers`, True for a Ray instance
    (the one this process is connected to, else a local one), or a cluster address. `trial_cpus`:
    ORT threads per trial (and Ray CPUs per task); default cores // workers locally, 1 on Ray. `pick`:
    constraints for OUTDIR/best.onnx (see `pick`). `progress(event, trial_name, counts)` hears
    "running", "done", "failed" and "resumed". Other keywords go to `prune` (round_to, lr, ...)."""
    t_start = time.perf_counter()
    target_list, method_list, profile_obj, constraints = _check_usage(
        targets, methods, profile, pick, labels, measure, workers, trial_cpus, trial_gpus, ray)
    if steps is not None:
        prune_options["steps"] = steps
    PruneOptions.from_keywords(labels=labels, seed=seed, **prune_options)  # a bad option fails here, not per trial

    import onnx

    source = str(model) if not isinstance(model, onnx.ModelProto) else "<ModelProto>"
    outdir = Path(outdir) if outdir is not None else Path.cwd() / f"{Path(source).stem}.sweep"
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"-o {outdir}: exists and is not a folder")
    payload, eval_desc = _payload(model, data, eval_data, labels, seed, prune_options)
    options = TrialOptions(labels=labels, profile=profile_obj.to_json() if profile_obj is not None else None,
                           measure=measure, seed=seed, prune_options=prune_options)
    base_fp = _fingerprint(__version__, payload.model, payload.train, payload.eval_inputs,
                           payload.eval_labels if payload.eval_labels is not None else b"",
                           {"labels": labels, "profile": options.profile, "measure": measure, "seed": seed,
                            "options": prune_options})

    outdir.mkdir(parents=True, exist_ok=True)
    specs = trial_specs(method_list, target_list)
    results: dict[str, TrialResult] = {}
    counts = {"total": len(specs), "done": 0, "failed": 0, "running": 0, "resumed": 0}
    pending: list[TrialSpec] = []
    for spec in specs:
        fp = _fingerprint(base_fp, spec.name)
        previous = _finished(outdir / spec.name, fp) if resume else None
        if previous is not None:
            results[spec.name] = previous
            counts["resumed"] += 1
            _notify(progress, "resumed", spec.name, counts)
        else:
            pending.append(spec)

    backend_info = {"backend": "none (all trials resumed)"}
    if pending:
        backend = _make_backend(payload, ray, workers, len(pending), trial_cpus, trial_gpus)
        options.threads = backend.threads
        backend_info = backend.describe()
        try:
            for spec, outcome, wall in _run(backend, pending, options, counts, progress):
                result = _record(outdir, spec, outcome, wall, _fingerprint(base_fp, spec.name), eval_desc, source)
                results[spec.name] = result
                counts["running"] -= 1
                counts[result.status] += 1
                _notify(progress, result.status, spec.name, counts)
        finally:
            backend.close()

    trials = [results[s.name] for s in specs]
    fidelity_key = "accuracy" if labels is not None else "agreement"
    cost_key = "measured_ms" if measure else "predicted_ms" if profile_obj is not None else "macs"
    front_names = fronts(trials, fidelity_key, COST_AXES)
    front = [results[n] for n in front_names.get(cost_key, [])]
    picked = _pick(outdir, trials, constraints, cost_key, fidelity_key) if constraints is not None else None
    summary = {
        "onnxmorph": __version__, "model": source, "data": str(data) if not isinstance(data, Mapping) else "<arrays>",
        "eval": eval_desc, "labels": labels, "seed": seed,
        "profile": profile_obj.name if profile_obj is not None else None, "measure": measure,
        "methods": method_list, "targets": target_list, "prune_options": _jsonable(prune_options),
        "backend": backend_info, "fidelity_key": fidelity_key, "cost_key": cost_key,
        "original": _original(outdir, trials, fidelity_key),
        "counts": {"total": len(specs), "ran": len(pending), "resumed": counts["resumed"],
                   "done": sum(t.status == "done" for t in trials), "failed": sum(t.status == "failed" for t in trials)},
        "trials": [t.as_dict() for t in trials], "front": front_names,
        "pick": picked.as_dict() if picked is not None else None,
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    from ..api import write_text_atomic
    from .page import render_page

    write_text_atomic(json.dumps(summary, indent=2), outdir / "sweep.json")
    write_text_atomic(render_page(summary), outdir / "sweep.html")
    return SweepResult(trials, front, picked, front_names, cost_key, fidelity_key, outdir, summary)


def _check_usage(targets, methods, profile, pick, labels, measure, workers, trial_cpus, trial_gpus, ray):
    """Everything that can be wrong with the arguments, found before any work: UsageError (exit 2)."""
    target_list = parse_targets(targets)
    method_list = parse_methods(methods)
    profile_obj = None
    if profile is not None:
        from ..cost.profile import load_profile

        profile_obj = load_profile(profile)
    if any(t.startswith("latency=") for t in target_list) and profile_obj is None:
        raise UsageError("--targets latency=F needs a hardware profile: --profile NAME or a JSON file")
    constraints = parse_constraints(pick, labels=labels is not None, profile=profile_obj is not None,
                                    measure=measure) if pick is not None else None
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if (trial_cpus is not None and trial_cpus <= 0) or trial_gpus < 0:
        raise UsageError("--trial-cpus must be > 0 and --trial-gpus >= 0")
    if trial_gpus and not ray:
        raise UsageError("--trial-gpus needs --ray (the local pool schedules CPUs only)")
    if isinstance(ray, str) and ray not in ("", "auto", "local"):
        _check_ray_early(ray)
    return target_list, method_list, profile_obj, constraints


def _payload(model, data, eval_data, labels, seed, prune_options) -> tuple[Payload, dict]:
    """What every trial reads (see `Payload`), checked against the model, and how it was held out."""
    import onnx

    from ..data import split_holdout
    from ..fidelity import run_batched
    from ..graph import load_model

    if isinstance(model, onnx.ModelProto):
        original = model
    elif not Path(model).is_file():
        raise ModelLoadError(f"{model}: no such file")
    loaded = load_model(model, prune_options.get("input_shapes"))  # one clear line for a bad model
    if not isinstance(model, onnx.ModelProto):
        original = onnx.load(model)  # as it is in the file (external data included), not as analyzed
    train = _load_data(data, loaded, labels, prune_options)
    if eval_data is not None:
        held = _load_data(eval_data, loaded, labels, prune_options)
        eval_desc = {"source": str(eval_data)}
    else:
        train, held = split_holdout(train, seed)
        if held is None:
            raise DataError("--data has too few samples to hold some out for the fidelity figure; give --eval-data")
        eval_desc = {"source": f"rows of {data if not isinstance(data, Mapping) else 'data'} held out (seed {seed})"}
    eval_y = held.pop(labels) if labels is not None else None
    eval_inputs = held
    eval_desc.update(samples=len(next(iter(eval_inputs.values()))), train_samples=len(next(iter(train.values()))))
    payload = Payload(original.SerializeToString(), train, eval_inputs, eval_y, run_batched(original, eval_inputs))
    return payload, eval_desc


def _run(backend, pending: list[TrialSpec], options: TrialOptions, counts: dict, progress):
    """Yield (spec, outcome, wall seconds) as trials finish, keeping `backend.slots` in flight."""
    in_flight: dict = {}
    queue = list(pending)
    while queue or in_flight:
        while queue and len(in_flight) < backend.slots:
            spec = queue.pop(0)
            in_flight[backend.submit(spec, options)] = (spec, time.perf_counter())
            counts["running"] += 1
            _notify(progress, "running", spec.name, counts)
        for handle, outcome in backend.wait(list(in_flight)):
            spec, t0 = in_flight.pop(handle)
            yield spec, outcome, time.perf_counter() - t0


def _pick(outdir: Path, trials, constraints, cost_key: str, fidelity_key: str) -> PickResult:
    """Choose by `constraints` and copy the chosen model to OUTDIR/best.onnx."""
    from ..api import write_bytes_atomic

    picked = choose(trials, constraints, cost_key, fidelity_key)
    best = outdir / "best.onnx"
    if picked.chosen is not None:
        write_bytes_atomic((outdir / picked.chosen.name / "model.onnx").read_bytes(), best)
        picked.best_path = str(best)
    elif best.exists():
        best.unlink()  # a best.onnx from an earlier sweep would no longer be the pick
    return picked


def _check_ray_early(address: str) -> None:
    """Bad --ray addresses fail before the data is loaded (unless this process is already in Ray)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'onnxmorph[sweep]' (or pip install ray)") from None
    if not ray.is_initialized():
        from .backends import check_reachable

        check_reachable(address)


def _make_backend(payload, ray, workers, n_pending, trial_cpus, trial_gpus):
    from .backends import LocalPool, RayPool, available_cores

    if ray:
        address = ray if isinstance(ray, str) and ray not in ("local", "") else None
        return RayPool(payload, address, trial_cpus or 1.0, trial_gpus, local_cpus=workers)
    workers = workers or max(1, min(available_cores(), n_pending))
    return LocalPool(payload, workers, None if trial_cpus is None else max(1, int(trial_cpus)))


def _record(outdir: Path, spec: TrialSpec, outcome: dict, wall: float, fp: str, eval_desc: dict,
            source: str) -> TrialResult:
    """Write a finished trial's model, then its report (the report's presence marks it finished)."""
    from ..api import write_bytes_atomic, write_text_atomic

    folder = outdir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    if outcome["status"] != "done":
        for stale in ("report.json", "model.onnx"):  # from an earlier sweep: not this trial's result
            (folder / stale).unlink(missing_ok=True)
        return result_from_outcome(spec, outcome, wall)
    report = outcome["report"]
    report["model"] = source  # the trial pruned a copy shipped to it
    report["output"] = str(folder / "model.onnx")
    report["sweep"].update(method=spec.method, target=spec.target, fingerprint=fp, eval=eval_desc,
                           seconds=round(outcome["seconds"], 4))
    write_bytes_atomic(outcome["model"], folder / "model.onnx")
    write_text_atomic(json.dumps(report, indent=2), folder / "report.json")
    return result_from_outcome(spec, outcome, wall)


def _finished(folder: Path, fp: str) -> TrialResult | None:
    """The trial in `folder` if an earlier run of this same sweep finished it (for --resume)."""
    try:
        report = json.loads((folder / "report.json").read_text())
        block = report["sweep"]
        if block.get("fingerprint") != fp or not (folder / "model.onnx").is_file():
            return None
        return TrialResult(block["trial"], block["method"], block["target"], "done", metrics_from_report(report),
                           seconds=block.get("seconds"), resumed=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _original(outdir: Path, trials, fidelity_key: str) -> dict:
    """The original model's figures, read from the first finished trial's report."""
    done = [t for t in trials if t.status == "done"]
    if not done:
        return {}
    report = json.loads((outdir / done[0].name / "report.json").read_text())
    o = report["original"]
    out = {"macs": o["macs"], "params": o["params"], "agreement": 1.0}
    if "latency_ms" in o:
        out["predicted_ms"] = o["latency_ms"]
    measured = [t.metrics["original_measured_ms"] for t in done if "original_measured_ms" in t.metrics]
    if measured:
        out["measured_ms"] = float(np.median(measured))
    acc = [t.metrics["original_accuracy"] for t in done if "original_accuracy" in t.metrics]
    if acc:
        out["accuracy"] = acc[0]
    return out


def _jsonable(options: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in options.items()}


__all__ = ["SweepResult", "sweep"]
