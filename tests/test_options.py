"""The options object: every keyword of `prune` and every flag of `onnxmorph prune` is one validated
field; unknown names and out-of-range values are one-line usage errors raised before any work."""

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import pytest

import onnxmorph
from onnxmorph.errors import UsageError
from onnxmorph.options import MethodConfig, PruneOptions, TrainConfig, option_names

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo_cnn.onnx"


def test_defaults_are_valid_and_keywords_reach_their_field():
    opts = PruneOptions.from_keywords(steps=40, lr=0.01, batch_size=8, fisher_decay=0.9, method="fisher",
                                      target="flops=0.25", measure=True, measure_rounds=2)
    assert (opts.steps, opts.method, opts.measure_rounds) == (40, "fisher", 2)
    assert (opts.train.lr, opts.train.batch_size, opts.knobs.fisher_decay) == (0.01, 8, 0.9)
    assert opts.method_kwargs() == {"fisher_decay": 0.9, **TrainConfig(lr=0.01, batch_size=8).as_kwargs(),
                                    "steps": 40}
    assert opts.metric_and_fraction == ("macs", 0.25)
    # a base object keeps what the keywords do not set
    again = PruneOptions.from_keywords(opts, seed=3)
    assert (again.seed, again.steps, again.train.lr) == (3, 40, 0.01)
    names = set(option_names())
    assert {f.name for f in fields(TrainConfig)} | {f.name for f in fields(MethodConfig)} <= names
    assert not {"train", "knobs"} & names


@pytest.mark.parametrize("keywords, message", [
    ({"stepz": 5}, "unknown option 'stepz' (did you mean 'steps'?)"),
    ({"learning_rate": 0.1}, "unknown option 'learning_rate'"),
    ({"steps": -1}, "--steps must be >= 0"),
    ({"steps": 2.5}, "--steps must be a whole number"),
    ({"steps": True}, "--steps must be a whole number"),
    ({"recover_steps": -3}, "--recover-steps must be >= 0"),
    ({"lr": 0.0}, "--lr must be > 0"),
    ({"lr": float("nan")}, "--lr must be a finite number"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"round_to": 0}, "--round-to must be >= 1"),
    ({"target": "flops=0"}, "the fraction must be in (0, 1]"),
    ({"target": "flops=1.5"}, "the fraction must be in (0, 1]"),
    ({"target": "speed=0.5"}, "bad --target 'speed=0.5'"),
    ({"fisher_decay": 1.0}, "--fisher-decay must be < 1"),
    ({"l1_fraction": 1.5}, "--l1-fraction must be <= 1"),
    ({"distill_weight": -0.1}, "--distill-weight must be >= 0"),
    ({"temperature": 0}, "--temperature must be > 0"),
    ({"strength": -1.0}, "--strength must be >= 0"),
    ({"flops_weight": "fast"}, "--flops-weight must be 'auto' or a number"),
    ({"optimizer": "adam"}, "unknown optimizer 'adam'"),
    ({"allocation": "random"}, "unknown allocation 'random'"),
    ({"attention": "all"}, "unknown attention 'all'"),
    ({"measure_rounds": 2}, "--measure-rounds needs --measure"),
    ({"measure": True, "measure_rounds": 0}, "--measure-rounds must be >= 1"),
    ({"checkpoint_every": 5}, "--checkpoint-every needs --checkpoint-dir"),
    ({"image_std": (0.5, 0.0, 0.5)}, "--std values must be positive"),
    ({"measure": "yes"}, "--measure must be true or false"),
])
def test_bad_keywords_are_usage_errors(keywords, message):
    with pytest.raises(UsageError) as err:
        PruneOptions.from_keywords(**keywords)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_prune_validates_before_reading_the_model(tmp_path):
    missing = tmp_path / "absent.onnx"  # a load would fail with ModelLoadError: validation comes first
    with pytest.raises(UsageError, match="unknown option 'stepz'"):
        onnxmorph.prune(missing, stepz=5)
    with pytest.raises(UsageError, match="--batch-size must be >= 1"):
        onnxmorph.prune(missing, options=PruneOptions(), batch_size=0)
    with pytest.raises(UsageError, match="--lr must be > 0"):
        onnxmorph.prune(missing, options=PruneOptions(train=TrainConfig(lr=-1.0)))
    with pytest.raises(UsageError, match="--prune-every must be >= 1"):  # a sweep checks once, not per trial
        onnxmorph.sweep(missing, data=missing, targets="flops=0.5", prune_every=0)


def test_prune_is_a_short_sequence_of_stages():
    tree = ast.parse((ROOT / "onnxmorph" / "api.py").read_text())
    prune = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "prune")
    assert prune.end_lineno - prune.lineno + 1 < 60


CLI_CASES = [  # (flags, what the one stderr line says)
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--recover-steps", "-5"], "--recover-steps must be >= 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--target", "flops=0"], "the fraction must be in (0, 1]"),
    (["--target", "flops=1.5"], "the fraction must be in (0, 1]"),
    (["--target", "speed=0.5"], "bad --target 'speed=0.5'"),
    (["--round-to", "0"], "--round-to must be >= 1"),
    (["--measure", "--measure-rounds", "0"], "--measure-rounds must be >= 1"),
    (["--strength", "-1"], "--strength must be >= 0"),
    (["--method", "fisher", "--fisher-decay", "1.5"], "--fisher-decay must be < 1"),
    (["--prune-every", "0"], "--prune-every must be >= 1"),
    (["--checkpoint-every", "0", "--checkpoint-dir", "ckpt"], "--checkpoint-every must be >= 1"),
    (["--flops-weight", "fast"], "--flops-weight must be 'auto' or a number"),
    (["--steps", "5", "--recover-steps", "10"], "--recover-steps 10 is more than --steps 5"),
    (["--std", "0.2,0,0.2"], "--std values must be positive"),
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every case at once: each is a fresh interpreter (~0.4 s of CPU), 17 of them ~7 s on 2 cores."""
    cwd = tmp_path_factory.mktemp("cli")

    def run(flags):
        return subprocess.run([sys.executable, "-m", "onnxmorph.cli", "prune", str(DEMO), *flags], cwd=cwd,
                              capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(run, [flags for flags, _ in CLI_CASES]))
    return cwd, {tuple(flags): proc for (flags, _), proc in zip(CLI_CASES, runs)}


@pytest.mark.parametrize("flags, message", CLI_CASES, ids=[" ".join(f) for f, _ in CLI_CASES])
def test_cli_rejects_bad_numbers_with_one_line(cli_runs, flags, message):
    cwd, procs = cli_runs
    proc = procs[tuple(flags)]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]
    assert not list(cwd.glob("*.onnx"))  # nothing written
