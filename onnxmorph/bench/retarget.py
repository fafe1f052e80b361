"""Measured re-targeting for `prune(..., measure=True)`: time the pruned model against the original
on this machine (`measure.measured_ratio`) and, for a latency target, select again for a tighter
fraction until the measured ratio is below the target by more than its own noise."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import TargetUnreachable
from . import measure as measuring
from .timing import cpu_name


def measure_threads(profile) -> int:
    """Intra-op threads for `measure`: a profile calibrated on this CPU is matched, otherwise 1."""
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


def retarget_measured(decide, build, selection, relaxed, original, fraction, rounds, threads, say):
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
        pruned = build(selection.keep_units)
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
    if profile is None:
        return []
    here = cpu_name()
    there = profile.measured.get("cpu")
    if there == here:
        return []
    target = f"measured on {there}" if there else f"{profile.kind} profile"
    return [f"measured latency is of this machine ({here}, ONNX Runtime CPU), not of the target of profile "
            f"'{profile.name}' ({target})"]
