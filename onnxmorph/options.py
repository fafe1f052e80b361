"""The options of a prune, validated once at the API boundary.

`prune(model, data=..., **keywords)` and the CLI's flags both become one `PruneOptions`: every
keyword (and every `onnxmorph prune` flag) is one field of it or of the `TrainConfig` and
`MethodConfig` it holds. An unknown keyword or a value out of range raises `UsageError` with one
line, before anything is loaded.

`TrainConfig` holds the training defaults (batch size, optimizer, distillation temperature, ...)
that the training loops, recovery and Fisher pruning share.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .analysis.options import ATTENTION_MODES, AnalysisOptions
from .cost import parse_target
from .errors import UsageError

# how one-shot scores share the cut among groups: the same share of every group, a global ranking of
# the (per-group normalized) scores, or scores per unit of cost saved
ALLOCATIONS = ("uniform", "global", "cost")
OPTIMIZERS = ("adamw", "sgd")
DEFAULT_STEPS = 300  # optimizer steps in all (training + recovery) when data is given


@dataclass(frozen=True)
class TrainConfig:
    """How fine-tuning runs (regularized training, Fisher pruning and recovery alike).

    `lr` None: a rate scaled to the model's weights (recovery backs it off by a short probe);
    `strength` None: the regularizer's strength is controlled so the cost tracks the target."""

    batch_size: int = 32
    lr: float | None = None
    optimizer: str = "adamw"
    temperature: float = 4.0  # distillation temperature of logits
    distill_weight: float = 0.5  # with labels: the share of distillation in the task loss
    strength: float | None = None
    engine: str = "onnxmorph"
    device: str = "cpu"
    checkpoint_every: int | None = None
    checkpoint_dir: str | Path | None = None
    resume: str | Path | None = None

    def validate(self) -> None:
        _int(self, "batch_size", 1)
        _real(self, "lr", positive=True)
        _choice(self, "optimizer", OPTIMIZERS)
        _real(self, "temperature", positive=True)
        _real(self, "distill_weight", low=0.0, high=1.0)
        _real(self, "strength", low=0.0)
        _int(self, "checkpoint_every", 1)
        if self.checkpoint_every and not self.checkpoint_dir:
            raise UsageError("--checkpoint-every needs --checkpoint-dir")

    def as_kwargs(self) -> dict:
        """The keywords the training loops take (unset optional ones left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class MethodConfig:
    """Knobs of single methods; None leaves the method's own default."""

    # fisher
    fisher_decay: float | None = None  # EMA decay of the signal (0.96)
    burn_in: int | None = None  # steps before the first removal
    prune_every: int | None = None  # steps between removals
    prune_per_event: int | None = None  # at most N channels per removal event
    flops_weight: str | float | None = None  # "auto" (signal per cost) or w (signal - w * cost)
    # gates
    gate_temperature: float | None = None
    init_logit: float | None = None
    straight_through: bool | None = None
    # group-lasso
    l1_fraction: float | None = None

    def validate(self) -> None:
        _real(self, "fisher_decay", low=0.0, high=1.0, open_high=True)
        _int(self, "burn_in", 0)
        _int(self, "prune_every", 1)
        _int(self, "prune_per_event", 1)
        w = self.flops_weight
        if w is not None and w != "auto":
            try:
                value = float(w)
            except (TypeError, ValueError):
                raise UsageError(f"--flops-weight must be 'auto' or a number, got '{w}'") from None
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"--flops-weight must be 'auto' or a number >= 0, got '{w}'")
        _real(self, "gate_temperature", positive=True)
        _real(self, "init_logit")
        _bool(self, "straight_through")
        _real(self, "l1_fraction", low=0.0, high=1.0)

    def as_kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PruneOptions:
    """Everything `prune` takes besides the model and its data.

    `steps`: optimizer steps in all (training + recovery; default DEFAULT_STEPS with data);
    `recover_steps`: how many of them fine-tune the cut model (default: half for training methods,
    all for magnitude). `profile` (a built-in name, a JSON file or a `HardwareProfile`) enables
    `target="latency=F"`, adds predicted latencies to the report, and makes `round_to` default to
    its channel multiple. `measure`: time the pruned model against the original with ONNX Runtime
    on this machine; with a latency target, re-target until the measured ratio is below F by more
    than its noise (at most `measure_rounds` selections)."""

    method: str = "magnitude"
    target: str = "flops=0.5"
    labels: str | None = None
    round_to: int | None = None  # default: the profile's channel multiple, else 1
    profile: object = None  # a built-in name, a JSON file or a HardwareProfile
    input_shapes: dict | None = None
    seed: int = 0
    best_effort: bool = False
    steps: int | None = None
    recover_steps: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    attention: str = "heads"
    prune_embedding: bool = False
    measure: bool = False
    measure_rounds: int | None = None  # with measure: selections measured at most (default 3)
    reconstruct: bool = True
    allocation: str | None = None  # default: "cost" for latency targets, else "uniform"
    bn_stats: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    knobs: MethodConfig = field(default_factory=MethodConfig)

    @classmethod
    def from_keywords(cls, base: PruneOptions | None = None, **keywords) -> PruneOptions:
        """`base` (default: all defaults) with `keywords` set, each the name of a field here or of
        `TrainConfig` / `MethodConfig`; validated. Unknown names raise UsageError."""
        base = base or cls()
        own, train, knobs = {}, {}, {}
        for key, value in keywords.items():
            if key in _OWN:
                own[key] = value
            elif key in _TRAIN:
                train[key] = value
            elif key in _KNOBS:
                knobs[key] = value
            else:
                close = difflib.get_close_matches(key, sorted(_OWN | _TRAIN | _KNOBS), n=1)
                raise UsageError(f"unknown option '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        options = replace(base, train=replace(base.train, **train), knobs=replace(base.knobs, **knobs), **own)
        options.validate()
        return options

    def validate(self) -> None:
        if not isinstance(self.method, str):
            raise UsageError(f"method must be a name, got {self.method!r}")
        parse_target(self.target)
        _int(self, "round_to", 1)
        _int(self, "seed", 0)
        _int(self, "steps", 0)
        _int(self, "recover_steps", 0)
        _int(self, "measure_rounds", 1)
        if self.measure_rounds is not None and not self.measure:
            raise UsageError("--measure-rounds needs --measure")
        _choice(self, "attention", ATTENTION_MODES)
        _choice(self, "allocation", ALLOCATIONS)
        for name in ("best_effort", "prune_embedding", "measure", "reconstruct", "bn_stats"):
            _bool(self, name)
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if values is not None and (isinstance(values, str) or not all(_is_real(v) for v in values)):
                raise UsageError(f"--{name.removeprefix('image_')} expects numbers, got {values!r}")
        if self.image_std is not None and any(v <= 0 for v in self.image_std):
            raise UsageError("--std values must be positive")
        self.train.validate()
        self.knobs.validate()

    @property
    def metric_and_fraction(self) -> tuple[str, float]:
        return parse_target(self.target)

    @property
    def analysis(self) -> AnalysisOptions:
        return AnalysisOptions(self.attention, self.prune_embedding)

    def method_kwargs(self) -> dict:
        """What the method is built with: its own knobs, the training configuration and `steps`."""
        out = {**self.knobs.as_kwargs(), **self.train.as_kwargs()}
        if self.steps is not None:
            out["steps"] = self.steps
        return out


_OWN = {f.name for f in fields(PruneOptions)} - {"train", "knobs"}
_TRAIN = {f.name for f in fields(TrainConfig)}
_KNOBS = {f.name for f in fields(MethodConfig)}


def option_names() -> list[str]:
    """Every keyword `prune` takes as an option."""
    return sorted(_OWN | _TRAIN | _KNOBS)


# --- checks: one line each, named as the CLI flag ----------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(obj, name: str, low: int) -> None:
    v = getattr(obj, name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise UsageError(f"{_flag(name)} must be a whole number, got {v!r}")
    if v < low:
        raise UsageError(f"{_flag(name)} must be >= {low}, got {v}")


def _real(obj, name: str, *, positive: bool = False, low: float | None = None, high: float | None = None,
          open_high: bool = False) -> None:
    v = getattr(obj, name)
    if v is None:
        return
    if not _is_real(v):
        raise UsageError(f"{_flag(name)} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise UsageError(f"{_flag(name)} must be > 0, got {v:g}")
    if low is not None and v < low:
        raise UsageError(f"{_flag(name)} must be >= {low:g}, got {v:g}")
    if high is not None and (v >= high if open_high else v > high):
        raise UsageError(f"{_flag(name)} must be {'<' if open_high else '<='} {high:g}, got {v:g}")


def _choice(obj, name: str, choices) -> None:
    v = getattr(obj, name)
    if v is not None and v not in choices:
        raise UsageError(f"unknown {name} '{v}': choose one of {', '.join(choices)}")


def _bool(obj, name: str) -> None:
    v = getattr(obj, name)
    if v is not None and not isinstance(v, bool):
        raise UsageError(f"{_flag(name)} must be true or false, got {v!r}")


__all__ = ["ALLOCATIONS", "DEFAULT_STEPS", "MethodConfig", "PruneOptions", "TrainConfig", "option_names"]
