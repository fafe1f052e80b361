"""Costs no table holds: broadcast spans, row-wise ops, view kernels, kernels the optimizer makes
up (anchored to the node that reads them), and the machine-speed rescaling of a calibration."""

import numpy as np
import pytest

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.bench.op_factors import probe_shapes
from onnxmorph.bench.quiet import MachineSpeed
from onnxmorph.cost.op_factors import relative
from onnxmorph.ops import transpose_class
from onnxmorph.cost.profile import profile_from_dict
from onnxmorph.cost.runtime_plan import ort_plan
from onnxmorph.errors import ProfileError
from onnxmorph.graph import load_model

from helpers import latency_per_op
import zoo

TABLE = {"channels": [8, 64], "sizes": [1, 256], "seconds": [[1e-6, 1e-5], [1e-5, 1e-4]],
         "work": [[100, 1000], [1000, 10000]]}


def latency_per_node(cm, op):
    """Predicted seconds per node of op type `op` (reorders left out)."""
    out = {}
    for c, v in zip(cm.nodes, cm.per_node("latency", *cm.alive(None))):
        if c.op == op and c.extra.get("kind") != "reorder":
            out[c.node] = out.get(c.node, 0.0) + v
    return out


def profile(op_factors=None, overheads=None):
    return profile_from_dict({"name": "m", "kind": "measured", "peak_gflops": 100, "memory_gbps": 10,
                              "channel_multiple": 1, "op_factors": op_factors or {}, "overheads": overheads or {},
                              "tables": {k: TABLE for k in ("conv", "conv1x1", "unary", "binary", "pool", "gemm")},
                              "measured": {}})


def test_broadcast_spans_cost_per_span_and_shrink_with_channels():
    a = analyze(load_model(zoo.broadcast_scale(c=32)))
    span = 1e-6
    with_spans = CostModel(a, profile(overheads={"broadcast_span": span}))
    without = CostModel(a, profile())
    assert latency_per_op(with_spans)["Mul"] - latency_per_op(without)["Mul"] == pytest.approx(32 * span)
    # half the channels of the scaled tensor gone: half the spans
    mul = next(k for k, c in enumerate(with_spans.nodes) if c.op == "Mul" and "spans_c" in c.extra)
    i, o = with_spans.alive(None)
    o = np.array(o, dtype=np.float64)
    full = with_spans.latency.per_node(i, o)[mul] - without.latency.per_node(i, o)[mul]
    o[mul] /= 2
    half = with_spans.latency.per_node(i, o)[mul] - without.latency.per_node(i, o)[mul]
    assert full == pytest.approx(32 * span) and half == pytest.approx(16 * span)
    # the gradient of a table node sees the span a channel saves
    _, do = with_spans.latency.gradients(*with_spans.alive(None))
    _, do0 = without.latency.gradients(*without.alive(None))
    assert do[mul] - do0[mul] == pytest.approx(span, rel=1e-6)


def test_a_bias_over_the_last_axis_is_one_span_per_row_whatever_the_channels():
    model = zoo.row_bias_add()
    a = analyze(load_model(model))
    cm = CostModel(a, profile(overheads={"broadcast_span": 1e-6}))
    add = [c for c in cm.nodes if c.op == "Add" and ("spans_c" in c.extra or "spans_d" in c.extra)]
    assert len(add) == 1 and add[0].extra.get("spans_d") == 6 and "spans_c" not in add[0].extra


def test_same_shape_element_wise_ops_have_no_spans():
    model = zoo.same_shape_add()
    cm = CostModel(analyze(load_model(model)), profile(overheads={"broadcast_span": 1.0}))
    assert not any("spans_c" in c.extra or "spans_d" in c.extra for c in cm.nodes)


def test_row_lengths_of_row_wise_ops_and_transposes():
    model = zoo.softmax_rows_and_transposes()
    cm = CostModel(analyze(load_model(model)), profile())
    rows = {}
    for c in cm.nodes:
        if c.extra.get("kind") != "reorder":
            rows.setdefault((c.op, c.node), c.extra.get("row"))
    got = sorted((op, r or 0.0) for (op, _), r in rows.items() if op in ("Softmax", "Transpose"))
    assert got == [("Softmax", 48.0), ("Transpose", 0.0), ("Transpose", 12.0)]  # 0: moves single elements


@pytest.mark.parametrize("shape, perm, expected", [
    ([1, 10, 4, 12], [0, 2, 1, 3], ("rows", 12.0)),       # attention's head split: rows of the head dim
    ([64, 49, 3, 32], [2, 0, 1, 3], ("rows", 32.0)),      # windows x tokens move together
    ([1, 64, 56, 56], [0, 2, 3, 1], ("single_axis", None)),  # NCHW -> NHWC
    ([1, 56, 56, 64], [0, 3, 1, 2], ("single_axis", None)),  # NHWC -> NCHW
    ([1, 3, 196, 64], [0, 1, 3, 2], ("single_axis", None)),  # K transposed for Q·Kᵀ
    ([1, 64, 8, 7, 8, 7], [0, 2, 4, 3, 5, 1], ("elementwise", None)),  # MaxViT window partition
    ([3, 1, 8], [1, 0, 2], ("rows", 24.0)),               # only a size-1 axis moves: one copy
])
def test_how_the_runtime_copies_a_transpose(shape, perm, expected):
    assert transpose_class(shape, perm) == expected


def test_transposes_are_priced_by_how_the_runtime_copies_them():
    """An element-by-element Transpose costs its own factor; NCHW -> NHWC the single-axis one; old
    profiles without these factors price both like the row-copy Transpose (long rows)."""
    a = analyze(load_model(zoo.nhwc_and_window_transposes()))
    base = {"Transpose": 0.5}
    old = latency_per_node(CostModel(a, profile(op_factors=base)), "Transpose")
    new = latency_per_node(CostModel(a, profile(op_factors={**base, "Transpose@single_axis": 0.75,
                                                             "Transpose@elementwise": 12.0})), "Transpose")
    assert sorted(round(new[k] / old[k], 6) for k in old) == [1.5, 24.0]


def test_factors_are_relative_to_the_op_each_table_was_measured_with():
    f = {"Add": 0.5, "Mul": 0.6, "MaxPool": 3.0, "Softmax": 1.0, "Softmax@row": 50.0}
    assert relative(f, "Sigmoid", "unary") == 1.0
    assert relative(f, "Mul", "binary") == pytest.approx(0.6 / 0.5)  # against the Add the table ran
    assert relative(f, "Mul", "unary") == pytest.approx(0.6)  # HardSwish's Mul on a unary-priced node
    assert relative(f, "AveragePool", "pool") == 1.0  # unknown: runs like the table's own op
    assert relative(f, "Softmax", "other", row=50) == pytest.approx(2.0)
    assert relative(f, "Softmax", "other", row=None) == pytest.approx(1.0)
    assert relative({"LayerNormalization": 4.0}, "SkipLayerNormalization", "other") == 4.0
    shapes = probe_shapes("Softmax", 64, 1024)
    assert {r: int(np.prod(s)) for r, s in shapes.items()} == {16: 64 * 1024, 256: 64 * 1024}
    assert all(s[-1] == r for r, s in shapes.items())


def test_view_kernels_cost_a_fixed_overhead_each():
    model = zoo.view_between_activations()
    a = analyze(load_model(model))
    plan = ort_plan(load_model(model).model)
    views = sum(plan.views.values())
    assert views >= 1
    base = CostModel(a, profile())
    fixed = CostModel(a, profile(overheads={"view": 5e-6}))
    assert fixed.latency_ms() - base.latency_ms() == pytest.approx(1e3 * 5e-6 * views)
    # fixed: pruning channels does not change it
    assert fixed.latency.gradients(*fixed.alive(None))[1].sum() == pytest.approx(
        base.latency.gradients(*base.alive(None))[1].sum())


def test_a_session_run_costs_its_overhead_once_whatever_is_pruned():
    a = analyze(load_model(zoo.broadcast_scale()))
    base, run = CostModel(a, profile()), CostModel(a, profile(overheads={"run": 1e-4}))
    assert run.latency_ms() - base.latency_ms() == pytest.approx(0.1)
    i, o = run.alive(None)
    assert np.array_equal(run.per_node("latency", i, o), base.per_node("latency", i, o))  # no node's
    assert run.latency.run_seconds == 1e-4 and base.latency.run_seconds == 0.0


def test_kernels_the_optimizer_makes_up_are_charged_to_the_node_that_reads_them():
    """Three Gathers of q, k, v become one Split (a copy) and three Squeezes (views); HardSwish
    becomes HardSigmoid + Mul."""
    model = load_model(zoo.qkv_gathers()).model
    plan = ort_plan(model)
    gathers = [n.name for n in model.graph.node if n.op_type == "Gather"]
    assert sorted(op for g in gathers for op in plan.ops.get(g, [])) == ["Split"]
    assert sum(plan.views[g] for g in gathers) == 3
    (hs,) = [n.name for n in model.graph.node if n.op_type == "HardSwish"]
    assert plan.ops[hs] == ["HardSigmoid", "Mul"]


def test_grouped_convs_read_the_grouped_table_at_their_channels_per_group():
    model = zoo.grouped_between_pointwise()
    widths, work = [4.0, 8.0, 16.0], [[1e4, 1e6]] * 3
    per_unit = [16e-9 / w for w in widths]  # wider groups run faster per MAC
    grouped = {"channels": widths, "sizes": [1, 256], "work": work,
               "seconds": [[p * w for w in row] for p, row in zip(per_unit, work)]}
    prof = profile_from_dict({"name": "g", "kind": "measured", "peak_gflops": 100, "memory_gbps": 10,
                              "channel_multiple": 1, "measured": {},
                              "tables": {"conv1x1": TABLE, "grouped": grouped}})
    cm = CostModel(analyze(load_model(model)), prof)
    (k,) = [j for j, c in enumerate(cm.nodes) if c.extra.get("kind") == "grouped"]
    macs = 64 * 9 * 8 * 32
    i, o = (np.array(v, dtype=np.float64) for v in cm.alive(None))
    assert cm.latency.per_node(i, o)[k] == pytest.approx(2e-9 * macs)  # width 8
    i[k], o[k] = 16, 16  # half the groups pruned: each group keeps its 8 channels
    assert cm.latency.per_node(i, o)[k] == pytest.approx(2e-9 * macs / 2)


def scripted_speed(references):
    """A MachineSpeed whose reference timings come from a script (then stay quiet)."""
    speed = MachineSpeed(every_s=0.0, wait_s=0.0)
    script = iter(references)

    def sample():
        r = next(script, 1.0)
        speed.samples.append((len(speed.samples), r))
        return r
    speed.sample = sample
    return speed


def test_points_measured_while_the_machine_is_loaded_are_measured_again_when_quiet():
    calls = []

    def job(k, loaded_value, quiet_value):
        def run():
            calls.append(k)
            return loaded_value if calls.count(k) == 1 else quiet_value
        return run

    # reference samples around each one-job batch: job 0 quiet (1.0, 1.0), job 1 loaded (1.0, 1.6),
    # job 2 quiet; then a loaded check (1.7: wait), a quiet one, and job 1 again between quiet samples
    speed = scripted_speed([1.0, 1.0, 1.0, 1.6, 1.0, 1.0, 1.7, 1.0, 1.0, 1.0])
    results = speed.run([job(0, 5.0, -1), job(1, 1.3, 1.0), job(2, {"a": 2.0}, -1)])
    assert results == [5.0, 1.0, {"a": 2.0}]
    assert speed.repeated == 1 and speed.loaded_left == 0
    assert speed.reference == pytest.approx(1.0)  # the quiet machine's reference
    # 1.3x slower while the reference ran 1.6x slower: the machine's load elasticity
    assert speed.elasticity == pytest.approx(np.log(1.3) / np.log(1.6))


def test_points_still_loaded_when_the_budget_is_spent_are_rescaled_to_the_quiet_machine():
    speed = scripted_speed([1.0, 1.0] + [2.0] * 10_000)  # loaded from the second job on
    results = speed.run([lambda: 1.0, lambda: {"x": 2.0}], budget_s=0.05)
    beta = MachineSpeed.ELASTICITY
    assert results[0] == 1.0 and results[1]["x"] == pytest.approx(2.0 * 0.5 ** beta)
    assert speed.loaded_left == 1 and speed.elasticity is None


def test_ratios_are_measured_again_when_loaded_but_never_rescaled():
    """Op factors are ratios of back-to-back timings (jobs returning lists): a loaded one is measured
    again like any point, and one still loaded when the budget is spent is kept as it is."""
    calls = []

    def job():
        calls.append(1)
        return {None: [0.5 + 0.1 * len(calls)]}

    speed = scripted_speed([1.0, 1.0, 1.0, 1.6, 1.0, 1.0, 1.0])  # the second job loaded, then quiet
    results = speed.run([job, job], rescale=False)
    assert results == [{None: [0.6]}, {None: [0.8]}] and speed.repeated == 1
    speed = scripted_speed([1.0, 1.0] + [2.0] * 10_000)
    assert speed.run([lambda: {None: [0.5]}, lambda: {16: [3.0]}], budget_s=0.05, rescale=False) == \
        [{None: [0.5]}, {16: [3.0]}]


def test_the_alignment_probe_runs_its_timings_through_the_quiet_state_protocol():
    from onnxmorph.bench.calibrate import ALIGN_STEPS, probe_channel_multiple

    batches = []

    def run_jobs(jobs):
        batches.append(len(jobs))
        return [job() for job in jobs]

    q, worst = probe_channel_multiple(rng=np.random.default_rng(0), sizes=(16,), kinds=("conv1x1",),
                                      run_jobs=run_jobs, threads=1, repeats=3, flush=False)
    assert batches == [1 + len(ALIGN_STEPS)]  # the base count and every step, in one protocol run
    assert q in ALIGN_STEPS and set(worst) == {str(s) for s in ALIGN_STEPS}


@pytest.mark.parametrize("raw", [{"view": -1.0}, {"view": "fast"}, [1e-6]])
def test_malformed_overheads_are_a_clear_error(raw):
    with pytest.raises(ProfileError, match="overheads"):
        profile_from_dict({"name": "x", "peak_gflops": 1, "memory_gbps": 1, "overheads": raw})
