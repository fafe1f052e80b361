"""One trial: prune, evaluate on held-out inputs, hand back the model and its report.

`execute_trial` runs where the backend puts it (a pool process, a Ray worker on any node), so it
takes everything as values — the model's bytes and the arrays in a `Payload`, shipped once per
worker or once per cluster — and returns bytes and a dict; the driver writes the files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..runtime import THREADS_ENV  # ORT intra-op threads of every session the trial makes


@dataclass
class Payload:
    """What every trial reads: the original model, training arrays (inputs and labels, as prune's
    `data`), held-out inputs and labels, and the original's outputs on them (computed once)."""

    model: bytes
    train: dict[str, np.ndarray]
    eval_inputs: dict[str, np.ndarray]
    eval_labels: np.ndarray | None
    reference: dict[str, np.ndarray]


@dataclass
class TrialOptions:
    labels: str | None = None
    profile: dict | None = None  # HardwareProfile.to_json(): a plain value any node can rebuild
    measure: bool = False
    seed: int = 0
    threads: int = 1
    prune_options: dict = field(default_factory=dict)  # steps, round_to, lr, ... as prune takes them


def one_line(exc: BaseException) -> str:
    """An exception as one line: onnxmorph's own messages as they are, others with their type."""
    from ..errors import OnnxMorphError

    text = " ".join(str(exc).split())
    if len(text) > 300:  # e.g. a Ray error carrying the remote traceback
        text = text[:297] + "..."
    if isinstance(exc, OnnxMorphError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def execute_trial(spec, payload: Payload, options: TrialOptions) -> dict:
    """Prune the payload's model for `spec` and measure its fidelity on the held-out inputs.

    Returns {"status": "done", "model": bytes, "report": dict, "seconds": s} or {"status": "failed",
    "error": one line, "seconds": s}: a failing trial never raises, so the sweep goes on."""
    os.environ[THREADS_ENV] = str(max(1, int(options.threads)))
    t0 = time.perf_counter()
    try:
        import onnx

        from ..api import prune
        from ..fidelity import fidelity

        original = onnx.load_from_string(payload.model)
        held_out = dict(payload.eval_inputs)
        if options.labels is not None:
            held_out[options.labels] = payload.eval_labels
        # the held-out rows are prune's eval_data too: it trains on exactly `train`, and its report's
        # fidelity block is the figure computed below
        result = prune(original, method=spec.method, target=spec.target, data=payload.train, eval_data=held_out,
                       labels=options.labels, profile=options.profile, measure=options.measure,
                       seed=options.seed, **options.prune_options)
        block = fidelity(original, result.model, payload.eval_inputs, labels=payload.eval_labels,
                         reference=payload.reference)
        report = result.report
        report["sweep"] = {"trial": spec.name, "fidelity": block, "threads": options.threads}
        return {"status": "done", "model": result.model.SerializeToString(), "report": report,
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - a trial's failure is data for the sweep, not a crash
        return {"status": "failed", "error": one_line(exc), "seconds": time.perf_counter() - t0}


@dataclass
class TrialResult:
    """A trial as the sweep reports it: its figures (`metrics`), or why it failed."""

    name: str
    method: str
    target: str
    status: str  # "done" | "failed"
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None  # the trial's own run time, where it ran
    wall: float | None = None  # submit to result on the driver (seconds), queueing excluded
    resumed: bool = False

    def value(self, key: str):
        """A figure by the name `--pick` uses; `latency_*` is measured when measured, else predicted."""
        m = self.metrics
        if key == "latency_ms":
            return m.get("measured_ms", m.get("predicted_ms"))
        if key == "latency_ratio":
            return m.get("measured_ratio", m.get("predicted_ratio"))
        return m.get(key)

    def as_dict(self) -> dict:
        out = {"name": self.name, "method": self.method, "target": self.target, "status": self.status,
               "resumed": self.resumed, "seconds": _r(self.seconds), "wall": _r(self.wall)}
        if self.status == "done":
            out.update(self.metrics, report=f"{self.name}/report.json", model=f"{self.name}/model.onnx")
        else:
            out["error"] = self.error
        return out


def _r(x):
    return None if x is None else round(float(x), 4)


def metrics_from_report(report: dict) -> dict:
    """The figures a sweep compares, read from a trial's report.json."""
    o, p = report["original"], report["pruned"]
    fid = report["sweep"]["fidelity"]
    m = {"macs": p["macs"], "macs_ratio": _ratio(p["macs"], o["macs"]), "params": p["params"],
         "params_ratio": _ratio(p["params"], o["params"]), "agreement": fid.get("agreement"),
         "reached": report["target"]["reached"], "achieved": report["target"]["achieved"]}
    if "latency_ms" in p:
        m["predicted_ms"] = p["latency_ms"]
        m["predicted_ratio"] = _ratio(p["latency_ms"], o["latency_ms"])
    measured = report.get("measured")
    if measured:
        row = measured["rounds"][measured["chosen"]]
        m.update(measured_ms=row["pruned_ms"], measured_ratio=round(row["measured_ratio"], 6),
                 original_measured_ms=row["original_ms"])
    if "accuracy" in fid:
        m.update(accuracy=fid["accuracy"], original_accuracy=fid["original_accuracy"])
    return m


def _ratio(a, b):
    return round(a / b, 6) if b else None


def result_from_outcome(spec, outcome: dict, wall: float | None = None, resumed: bool = False) -> TrialResult:
    if outcome["status"] == "done":
        return TrialResult(spec.name, spec.method, spec.target, "done", metrics_from_report(outcome["report"]),
                           seconds=outcome.get("seconds"), wall=wall, resumed=resumed)
    return TrialResult(spec.name, spec.method, spec.target, "failed", error=outcome["error"],
                       seconds=outcome.get("seconds"), wall=wall)
