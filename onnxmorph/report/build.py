"""The report dict of a prune (what `--report PATH.json` writes): costs before and after, the
groups with their kept channels, frozen groups with reasons, verification, timings and notes."""

from __future__ import annotations

import numpy as np
import onnx

from ..version import __version__


def count_params(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def _latency(cost_model, keep) -> dict:
    return {"latency_ms": round(cost_model.latency_ms(keep), 6)} if cost_model.profile is not None else {}


def cost_by_op(cost_model, keep) -> list[dict]:
    """The report's cost per op kind, original and pruned, the op kinds with most MACs first."""
    def block(totals: dict) -> dict:
        out = {m: int(round(totals[m])) for m in ("macs", "params", "bytes")}
        if "latency" in totals:
            out["latency_ms"] = round(1e3 * totals["latency"], 6)
        return out

    before, after = cost_model.by_op(), cost_model.by_op(keep)
    rows = [{"op": op, "nodes": b["nodes"], "original": block(b), "pruned": block(after[op])}
            for op, b in before.items()]
    return sorted(rows, key=lambda r: (-r["original"]["macs"], -r["original"]["bytes"], r["op"]))


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
        "cost_by_op": cost_by_op(cost_model, keep),
        "verify": verify_result.as_dict(),
        "timings": dict(timings, total=round(sum(timings.values()), 4)),
        "notes": notes,
    }
