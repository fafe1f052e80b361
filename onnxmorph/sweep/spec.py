"""What a sweep runs: the target list, the method list, and one `TrialSpec` per (method, target)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..cost import parse_target
from ..errors import UsageError

TARGETS_EXAMPLE = "e.g. --targets flops=0.25,0.5,0.75 or 'flops=0.5|latency=0.3,0.4'"


@dataclass(frozen=True)
class TrialSpec:
    """One prune of the sweep. `target` is the user's spelling, normalized (`flops=0.25`)."""

    method: str
    target: str

    @property
    def name(self) -> str:
        """The trial's folder under OUTDIR: `<method>-<target>`."""
        return f"{self.method}-{self.target}"

    @property
    def metric(self) -> str:
        return parse_target(self.target)[0]


def parse_targets(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """`flops=0.25,0.5|latency=0.3` -> ["flops=0.25", "flops=0.5", "latency=0.3"].

    Tokens are separated by `,`, `|`, `;` or spaces; `metric=F` sets the metric for the bare
    fractions after it. Each target is checked as `prune --target` checks it; duplicates go."""
    parts = [text] if isinstance(text, str) else list(text)
    tokens = [t for part in parts for t in re.split(r"[,|;\s]+", str(part)) if t]
    targets: list[str] = []
    metric = None
    for token in tokens:
        if "=" in token:
            metric, _, value = token.partition("=")
            metric = metric.strip().lower()
            if not value:
                continue  # `flops=` alone: an empty list for that metric
        elif metric is None:
            raise UsageError(f"--targets: '{token}' has no metric; {TARGETS_EXAMPLE}")
        else:
            value = token
        spec = f"{metric}={value}"
        try:
            _, fraction = parse_target(spec)
        except UsageError:
            raise UsageError(f"--targets: bad target '{spec}': expected flops=F, params=F or latency=F "
                             f"with 0 < F <= 1; {TARGETS_EXAMPLE}") from None
        spec = f"{metric}={fraction:g}"
        if spec not in targets:
            targets.append(spec)
    if not targets:
        raise UsageError(f"--targets: no targets given; {TARGETS_EXAMPLE}")
    return targets


def parse_methods(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """`fisher,gates` -> ["fisher", "gates"], each a known method."""
    from ..methods import method_names

    parts = [text] if isinstance(text, str) else list(text)
    methods: list[str] = []
    for m in (t.strip().lower() for part in parts for t in re.split(r"[,|;\s]+", str(part))):
        if m and m not in methods:
            methods.append(m)
    known = method_names()
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UsageError(f"--methods: unknown method '{unknown[0]}': choose from {', '.join(known)}")
    if not methods:
        raise UsageError(f"--methods: no methods given; choose from {', '.join(known)}")
    return methods


def trial_specs(methods: list[str], targets: list[str]) -> list[TrialSpec]:
    return [TrialSpec(m, t) for m in methods for t in targets]
