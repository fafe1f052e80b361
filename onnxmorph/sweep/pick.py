"""`--pick "agreement>=0.99"`: constraints on a trial's figures, and the choice among trials that meet them.

A constraint with a fidelity figure (agreement, accuracy) asks for the cheapest model that is good
enough: the qualifying trial with the lowest cost (the sweep's cost axis: measured latency, else
predicted latency, else MACs). Constraints on costs alone (`latency_ms<=8`) ask for the best model
that fits: the qualifying trial with the highest fidelity. When none qualifies, the closest is the
trial with the smallest relative shortfall on its worst constraint.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from ..errors import UsageError

FIDELITY_KEYS = ("agreement", "accuracy")
# key -> what it needs to exist in a sweep ("labels", "profile", "measure", "latency": profile or measure)
KEYS = {
    "agreement": None, "accuracy": "labels",
    "macs": None, "macs_ratio": None, "params": None, "params_ratio": None,
    "latency_ms": "latency", "latency_ratio": "latency",
    "predicted_ms": "profile", "predicted_ratio": "profile",
    "measured_ms": "measure", "measured_ratio": "measure",
}
NEEDS = {"labels": "--labels", "profile": "--profile", "measure": "--measure", "latency": "--profile or --measure"}
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
EXAMPLE = "e.g. --pick 'agreement>=0.99' or 'accuracy>=0.95,latency_ms<=8' (keys: " + ", ".join(KEYS) + ")"
_CONSTRAINT = re.compile(r"\s*([a-z_]+)\s*(>=|<=|>|<)\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*([kmg]?)\s*", re.I)


@dataclass(frozen=True)
class Constraint:
    key: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.bound:g}"

    def holds(self, value) -> bool:
        return value is not None and bool(OPS[self.op](value, self.bound))

    def shortfall(self, value) -> float:
        """How far `value` is from meeting the constraint, relative to the bound (0 when it does)."""
        if value is None:
            return math.inf
        if self.holds(value):
            return 0.0
        return abs(value - self.bound) / max(abs(self.bound), 1e-12)


def parse_constraints(text: str, *, labels: bool, profile: bool, measure: bool) -> list[Constraint]:
    """`agreement>=0.99,latency_ms<=8` (also joined by `and`) -> constraints, each checked against what
    the sweep will produce (accuracy needs --labels, latencies need --profile / --measure)."""
    parts = [p for p in re.split(r",|\band\b", text or "") if p.strip()]
    if not parts:
        raise UsageError(f"--pick: no constraint given; {EXAMPLE}")
    have = {"labels": labels, "profile": profile, "measure": measure, "latency": profile or measure}
    out = []
    for part in parts:
        m = _CONSTRAINT.fullmatch(part)
        if not m:
            raise UsageError(f"--pick: bad constraint '{part.strip()}'; {EXAMPLE}")
        key, op, number, suffix = m.group(1).lower(), m.group(2), float(m.group(3)), m.group(4).lower()
        if key not in KEYS:
            raise UsageError(f"--pick: unknown key '{key}' in '{part.strip()}'; {EXAMPLE}")
        if suffix and key not in ("macs", "params"):
            raise UsageError(f"--pick: '{part.strip()}': k/M/G suffixes are for macs and params only")
        need = KEYS[key]
        if need and not have[need]:
            raise UsageError(f"--pick: '{part.strip()}' needs {NEEDS[need]}")
        out.append(Constraint(key, op, number * SUFFIX[suffix]))
    return out


@dataclass
class PickResult:
    constraints: list[Constraint]
    chosen: object | None  # TrialResult
    closest: object | None  # TrialResult, when nothing qualified
    message: str
    best_path: str | None = None

    def as_dict(self) -> dict:
        return {"constraints": [str(c) for c in self.constraints],
                "chosen": getattr(self.chosen, "name", None), "closest": getattr(self.closest, "name", None),
                "message": self.message, "best": self.best_path}


def _describe(trial, constraints) -> str:
    keys = dict.fromkeys(c.key for c in constraints)
    parts = []
    for k in keys:
        v = trial.value(k)
        parts.append(f"{k} {'n/a' if v is None else format(v, '.4g')}")
    return f"{trial.name} ({', '.join(parts)})"


def pick(trials, constraints: list[Constraint], cost_key: str, fidelity_key: str) -> PickResult:
    """The trial `constraints` choose among the finished `trials` (see the module docstring)."""
    done = [t for t in trials if t.status == "done"]
    text = ",".join(str(c) for c in constraints)
    qualifying = [t for t in done if all(c.holds(t.value(c.key)) for c in constraints)]

    def cost(t):
        v = t.value(cost_key)
        return math.inf if v is None else v

    def fid(t):
        v = t.value(fidelity_key)
        return -math.inf if v is None else v

    if qualifying:
        if any(c.key in FIDELITY_KEYS for c in constraints):
            chosen = min(qualifying, key=lambda t: (cost(t), -fid(t), t.name))
            why = f"the lowest {cost_key}"
        else:
            chosen = max(qualifying, key=lambda t: (fid(t), -cost(t), t.name))
            why = f"the highest {fidelity_key}"
        return PickResult(constraints, chosen, None,
                          f"picked {_describe(chosen, constraints)}: {len(qualifying)} of {len(done)} trials "
                          f"meet {text}, this one has {why}")
    if not done:
        return PickResult(constraints, None, None, f"no trial meets {text}: no trial finished")
    closest = min(done, key=lambda t: (max(c.shortfall(t.value(c.key)) for c in constraints), cost(t), t.name))
    return PickResult(constraints, None, closest,
                      f"no trial meets {text}; closest: {_describe(closest, constraints)}")
