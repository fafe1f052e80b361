"""Sweep pieces without running a prune: the Pareto front (known dominance, and against a brute-force
check on random sets), constraints and the pick, target parsing, the page."""

import math
import re

import numpy as np
import pytest

from onnxmorph.errors import UsageError
from onnxmorph.sweep.front import fronts, pareto_front
from onnxmorph.sweep.page import render_page
from onnxmorph.sweep.pick import parse_constraints, pick
from onnxmorph.sweep.spec import parse_methods, parse_targets
from onnxmorph.sweep.trial import TrialResult


def brute_front(costs, fids):
    """i is on the front iff no j is at least as good on both and strictly better on one."""
    ok = [i for i in range(len(costs)) if costs[i] is not None and fids[i] is not None]
    return sorted(i for i in ok if not any(
        costs[j] <= costs[i] and fids[j] >= fids[i] and (costs[j] < costs[i] or fids[j] > fids[i]) for j in ok))


def test_front_known_dominance():
    #        0     1     2     3     4     5     6     7
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 1.5, 3.0, None]
    fids = [0.50, 0.80, 0.70, 0.80, 0.95, 0.40, 0.80, 0.99]
    # 2 is beaten by 1 (same cost, lower fidelity); 3 and 6 by 1 (dearer, same fidelity);
    # 5 by 0 (dearer, worse); 7 has no cost. Left: 0, 1, 4 by increasing cost.
    assert pareto_front(costs, fids) == [0, 1, 4]
    # exact duplicates do not dominate each other: both stay
    assert pareto_front([1.0, 1.0, 2.0], [0.9, 0.9, 0.8]) == [0, 1]
    assert pareto_front([], []) == []


def test_front_matches_brute_force_on_random_sets():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        # few distinct values, so ties in cost and in fidelity are common
        costs = [float(c) for c in rng.integers(0, 5, n)]
        fids = [float(f) for f in rng.integers(0, 5, n) / 4]
        front = pareto_front(costs, fids)
        assert sorted(front) == brute_front(costs, fids)
        assert [costs[i] for i in front] == sorted(costs[i] for i in front)


def trial(name, status="done", **metrics):
    method, _, target = name.partition("-")
    return TrialResult(name, method, target, status, metrics, error=None if status == "done" else "boom")


TRIALS = [
    trial("a-flops=0.25", macs=25, macs_ratio=0.25, agreement=0.90, predicted_ms=2.0),
    trial("a-flops=0.5", macs=50, macs_ratio=0.5, agreement=0.97, predicted_ms=3.0),
    trial("b-flops=0.5", macs=48, macs_ratio=0.48, agreement=0.99, predicted_ms=3.5),
    trial("a-flops=0.75", macs=75, macs_ratio=0.75, agreement=0.995, predicted_ms=4.0),
    trial("b-flops=0.75", macs=74, macs_ratio=0.74, agreement=0.98, predicted_ms=3.9),
    trial("b-flops=0.01", status="failed"),
]


def test_fronts_per_axis_skip_failed():
    f = fronts(TRIALS, "agreement", ("macs", "predicted_ms", "measured_ms"))
    assert f["macs"] == ["a-flops=0.25", "b-flops=0.5", "a-flops=0.75"]  # a-0.5 and b-0.75 dominated
    assert f["predicted_ms"] == ["a-flops=0.25", "a-flops=0.5", "b-flops=0.5", "a-flops=0.75"]
    assert "measured_ms" not in f


def test_pick_cheapest_that_is_good_enough():
    cons = parse_constraints("agreement>=0.98", labels=False, profile=False, measure=False)
    r = pick(TRIALS, cons, "macs", "agreement")
    assert r.chosen.name == "b-flops=0.5"  # 48 MACs; a-0.75 and b-0.75 qualify too but cost more
    r = pick(TRIALS, cons, "predicted_ms", "agreement")
    assert r.chosen.name == "b-flops=0.5"  # 3.5 ms < 3.9 < 4.0
    two = parse_constraints("agreement>=0.98, predicted_ms>3.6", labels=False, profile=True, measure=False)
    assert pick(TRIALS, two, "macs", "agreement").chosen.name == "b-flops=0.75"


def test_pick_best_that_fits_a_budget():
    cons = parse_constraints("macs<=60", labels=False, profile=False, measure=False)
    r = pick(TRIALS, cons, "macs", "agreement")
    assert r.chosen.name == "b-flops=0.5"  # the most faithful of those <= 60 MACs
    cons = parse_constraints("latency_ms<=3.2", labels=False, profile=True, measure=False)
    assert pick(TRIALS, cons, "predicted_ms", "agreement").chosen.name == "a-flops=0.5"


def test_pick_none_names_the_closest():
    cons = parse_constraints("agreement>=0.999", labels=False, profile=False, measure=False)
    r = pick(TRIALS, cons, "macs", "agreement")
    assert r.chosen is None and r.closest.name == "a-flops=0.75"
    assert "closest: a-flops=0.75 (agreement 0.995)" in r.message
    cons = parse_constraints("agreement>=0.95,macs<=30", labels=False, profile=False, measure=False)
    # a-0.25 misses agreement by 5.3 %, a-0.5 misses macs by 67 %: a-0.25 is closer
    assert pick(TRIALS, cons, "macs", "agreement").closest.name == "a-flops=0.25"


@pytest.mark.parametrize("text, flags, words", [
    ("agreement>>0.9", {}, "bad constraint"),
    ("speed>=3", {}, "unknown key 'speed'"),
    ("", {}, "no constraint"),
    ("accuracy>=0.9", {}, "needs --labels"),
    ("latency_ms<=8", {}, "needs --profile or --measure"),
    ("measured_ms<=8", {"profile": True}, "needs --measure"),
    ("agreement>=0.9k", {}, "suffixes are for macs and params"),
])
def test_bad_constraints(text, flags, words):
    kw = {"labels": False, "profile": False, "measure": False, **flags}
    with pytest.raises(UsageError, match=re.escape(words)):
        parse_constraints(text, **kw)


def test_constraint_suffixes_and_joins():
    cons = parse_constraints("macs<=1.5M and params <= 20k", labels=False, profile=False, measure=False)
    assert [(c.key, c.op, c.bound) for c in cons] == [("macs", "<=", 1.5e6), ("params", "<=", 2e4)]


def test_parse_targets():
    assert parse_targets("flops=0.25,0.5,0.75") == ["flops=0.25", "flops=0.5", "flops=0.75"]
    assert parse_targets("flops=0.5|latency=0.3,0.40; params=0.5,flops=0.5") == \
        ["flops=0.5", "latency=0.3", "latency=0.4", "params=0.5"]
    for bad, words in (("", "no targets"), ("flops=", "no targets"), ("0.5", "has no metric"),
                       ("flops=1.5", "bad target 'flops=1.5'"), ("speed=0.5", "bad target")):
        with pytest.raises(UsageError, match=words):
            parse_targets(bad)
    assert parse_methods("fisher, magnitude,fisher") == ["fisher", "magnitude"]
    with pytest.raises(UsageError, match="unknown method 'sgd'"):
        parse_methods("fisher,sgd")


def test_page_is_self_contained_and_links_every_point():
    summary = {
        "model": "m.onnx", "methods": ["a", "b"], "targets": ["flops=0.5"], "fidelity_key": "agreement",
        "cost_key": "predicted_ms", "counts": {"total": 6, "done": 5, "failed": 1, "resumed": 0},
        "eval": {"source": "x.npz", "samples": 10}, "backend": {"backend": "local"}, "wall_s": 1.0,
        "original": {"macs": 100, "predicted_ms": 5.0, "agreement": 1.0},
        "trials": [dict(t.as_dict(), **({} if t.status != "done" else {"macs": t.metrics["macs"]})) for t in TRIALS],
        "front": fronts(TRIALS, "agreement", ("macs", "predicted_ms")),
        "pick": {"constraints": ["agreement>=0.98"], "chosen": "b-flops=0.5", "message": "picked", "best": "b"},
    }
    page = render_page(summary)
    assert page.count("<svg") == 2  # MACs and predicted latency
    for t in TRIALS[:5]:  # each point of both plots links to its report, and so does its table row
        assert page.count(f'xlink:href="{t.name}/report.json"') == 2
        assert page.count(f"href='{t.name}/report.json'") == 1
    assert "boom" in page  # the failed trial's error is in the table
    assert not re.search(r"<script|<link|<img|\bsrc=|url\((?!#)", page)  # nothing to fetch: opens offline
    assert all(h.startswith("#") or h.endswith("/report.json") for h in re.findall(r'xlink:href="([^"]*)"', page))
    assert page.count("<tr class='front'>") == 4 and math.isfinite(summary["wall_s"])
