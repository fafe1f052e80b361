"""tools/bench_accuracy.py's bookkeeping (no torch, no training): the optimizer steps a row used are read
back from the report's training curve, which logs every 10th step and the last one of each phase."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "tools" / "bench_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _phase(label, steps, every=10):
    return [{"phase": label, "step": s} for s in range(steps) if s % every == 0 or s == steps - 1]


def test_curve_steps_counts_each_phase():
    bench = _tool()
    assert bench.curve_steps(_phase("training", 300)) == 300
    assert bench.curve_steps(_phase("training", 150) + _phase("recovery", 150)) == 300
    assert bench.curve_steps(_phase("fisher", 137) + _phase("recovery", 163)) == 300
    # two runs of the same phase label restart at step 0
    assert bench.curve_steps(_phase("recovery", 4) + _phase("recovery", 4)) == 8
    assert bench.curve_steps([]) == 0


def test_budget_split_keeps_the_total():
    bench = _tool()
    assert bench.om_kwargs("total", "gates", 300)[0] == {"steps": 300}
    split = bench.om_kwargs("split", "gates", 301)[0]
    if "recover_steps" in split:  # the API still has recovery on top of `steps`
        assert split["steps"] + split["recover_steps"] == 301
        assert bench.om_kwargs("split", "magnitude", 300)[0] == {"recover_steps": 300}
