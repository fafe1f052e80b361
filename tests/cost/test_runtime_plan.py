"""The runtime plan (what ONNX Runtime's optimizer makes of a model), per-op factors, (in, out, size)
tables and the calibration pieces behind them."""

import json

import numpy as np
import pytest

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.bench.calibrate import euler_circuit, measure_io_grid
from onnxmorph.bench.timing import kernel_times
from onnxmorph.cost.profile import Table, profile_from_dict
from onnxmorph.cost.runtime_plan import ort_plan
from onnxmorph.errors import ProfileError
from onnxmorph.graph import load_model

from helpers import latency_per_op
import zoo


def measured(tables=None, op_factors=None):
    t = {"channels": [8, 64], "sizes": [4, 256], "seconds": [[1e-6, 1e-5], [1e-5, 1e-4]],
         "work": [[100, 1000], [1000, 10000]]}
    return profile_from_dict({"name": "m", "kind": "measured", "peak_gflops": 100, "memory_gbps": 10,
                              "channel_multiple": 1, "tables": tables or {k: t for k in ("conv", "conv1x1", "unary",
                                                                                        "binary")},
                              "op_factors": op_factors or {}, "measured": {}})


def test_plan_maps_runtime_kernels_back_to_nodes():
    model = load_model(zoo.mixed_block()).model
    plan = ort_plan(model)
    assert plan is not None
    ops = {n.name: n.op_type for n in model.graph.node}
    by_op = {}
    for name, op in ops.items():
        by_op.setdefault(op, []).append(name)
    # folded into the conv: no kernel of their own
    for op in ("BatchNormalization", "Relu", "Sigmoid"):
        for name in by_op.get(op, []):
            assert plan.passes(name) == 0, op
    # every conv is a kernel; SiLU's Mul runs as QuickGelu; HardSwish as HardSigmoid + Mul
    assert all(plan.passes(n) == 1 for n in by_op["Conv"])
    (mul,) = by_op["Mul"]
    assert plan.passes(mul) == 1 and plan.ops[mul] == ["QuickGelu"]
    (hswish,) = by_op["HardSwish"]
    # expanded to HardSigmoid + Mul (onnxruntime 1.19), or fused into the conv before it (1.2x-1.3x)
    assert plan.passes(hswish) in (0, 2)
    (erf,) = by_op["Erf"]
    assert plan.passes(erf) == 1
    producer = {t: n for n in model.graph.node for t in n.output}
    # the Erf sits between NCHWc convs: its input and output are reordered
    erf_node = next(n for n in model.graph.node if n.name == erf)
    assert {erf_node.input[0], erf_node.output[0]} <= plan.reordered
    # a Clip folded into its conv still costs a pass over the output (unlike Relu)
    (clip,) = by_op["Clip"]
    assert plan.passes(clip) == 1 or clip in plan.activation_pass
    assert all(producer[t].op_type != "BatchNormalization" for t in plan.reordered if t in producer)


def test_latency_model_charges_what_the_runtime_runs():
    a = analyze(load_model(zoo.mixed_block()))
    prof = measured(op_factors={"QuickGelu": 3.0})
    cm = CostModel(a, prof)
    i, o = cm.alive(None)
    t = cm.per_node("latency", i, o)
    per_op = latency_per_op(cm)
    assert per_op["BatchNormalization"] == 0 and per_op["Relu"] == 0 and per_op["Sigmoid"] == 0
    assert per_op["Clip"] > 0 and per_op["Erf"] > 0
    # QuickGelu's factor applies to the Mul that anchors it
    plain = CostModel(a, measured())
    ti = plain.per_node("latency", i, o)
    mul = [k for k, c in enumerate(cm.nodes) if c.op == "Mul" and c.extra.get("kind") != "reorder"]
    assert t[mul].sum() == pytest.approx(3.0 * ti[mul].sum())
    # HardSwish pays the passes the runtime makes (two expanded, none fused into its conv), an Erf one
    hs = [k for k, c in enumerate(cm.nodes) if c.op == "HardSwish"]
    erf = [k for k, c in enumerate(cm.nodes) if c.op == "Erf" and c.extra.get("kind") != "reorder"]
    hs_node = next(c.node for c in cm.nodes if c.op == "HardSwish")
    assert cm.latency.charge[hs].max() == cm.latency.plan.passes(hs_node) and cm.latency.charge[erf].max() == 1.0
    reorders = [k for k, c in enumerate(cm.nodes) if c.extra.get("kind") == "reorder" and t[k] > 0]
    assert len(reorders) >= 2


def test_roofline_profiles_use_no_plan_and_no_reorders():
    a = analyze(load_model(zoo.mixed_block()))
    cm = CostModel(a, {"name": "r", "peak_gflops": 100, "memory_gbps": 10})
    assert cm.latency.plan is None
    assert all(cm.latency.charge[k] == 0 for k, c in enumerate(cm.nodes) if c.extra.get("kind") == "reorder")


def test_io_table_interpolates_in_three_axes_and_round_trips():
    ch, sizes = np.array([8.0, 64.0]), np.array([4.0, 256.0])
    work = np.array([[[i * o * s for s in sizes] for o in ch] for i in ch])
    per = np.array([[[1.0, 0.5], [4.0, 2.0]], [[2.0, 1.0], [1.0, 0.5]]]) * 1e-9  # (8->64) slower than (64->8)
    t = Table("conv1x1", ch, sizes, per * work, work, out_channels=ch.copy())
    assert t.per_unit([8], [4], [64])[0] == pytest.approx(4e-9)
    assert t.per_unit([64], [4], [8])[0] == pytest.approx(2e-9)
    mid = t.per_unit([np.sqrt(8 * 64)], [4], [8])[0]  # halfway in log space: geometric mean
    assert mid == pytest.approx(np.sqrt(1e-9 * 2e-9))
    assert t.per_unit([1000], [1e6], [1000])[0] == pytest.approx(0.5e-9)  # clamped at the edges
    raw = {"channels": [8, 64], "out_channels": [8, 64], "sizes": [4, 256],
           "seconds": t.to_json()["seconds"], "work": t.to_json()["work"]}
    prof = profile_from_dict({"name": "x", "peak_gflops": 1, "memory_gbps": 1, "tables": {"conv1x1": raw}})
    assert prof.tables["conv1x1"].per_unit([8], [256], [64])[0] == pytest.approx(2e-9, rel=1e-4)
    bad = dict(raw, seconds=[[1, 2], [3, 4]])
    with pytest.raises(ProfileError, match="seconds"):
        profile_from_dict({"name": "x", "peak_gflops": 1, "memory_gbps": 1, "tables": {"conv1x1": bad}})


@pytest.mark.parametrize("factors", [{"Relu": -1}, {"Relu": "fast"}, [1, 2]])
def test_malformed_op_factors_are_a_clear_error(factors):
    with pytest.raises(ProfileError, match="op_factors"):
        profile_from_dict({"name": "x", "peak_gflops": 1, "memory_gbps": 1, "op_factors": factors})


def test_euler_circuit_walks_every_channel_pair_once():
    ch = [8, 16, 32, 64]
    edges = {(a, b) for a in ch for b in ch if a * b <= 1024}
    walk = euler_circuit(ch, edges)
    steps = list(zip(walk[:-1], walk[1:]))
    assert sorted(steps) == sorted(edges) and walk[0] == walk[-1]


def test_io_grid_measures_every_pair_and_asymmetry_is_real():
    times = measure_io_grid("conv1x1", [8, 64], 256, cap=1e9, threads=1, runs=5, flush=False,
                            rng=np.random.default_rng(0))
    assert set(times) == {(a, b, 256) for a in (8, 64) for b in (8, 64)}
    assert all(v > 0 for v in times.values())
    # 64 -> 64 has 8x the MACs of 8 -> 64: it must take longer
    assert times[(64, 64, 256)] > times[(8, 64, 256)]


def test_gemm_io_grid_times_rectangular_matmuls_read_by_in_and_out():
    """Linear layers are rectangular (a transformer MLP's C -> 4C): the gemm table is measured per
    (in, out, rows), and a MatMul is read at its own in and out, not at sqrt(in * out)."""
    from onnxmorph.bench.calibrate import io_table

    times = measure_io_grid("gemm", [16, 256], 64, cap=1e9, threads=1, runs=5, flush=False,
                            rng=np.random.default_rng(0))
    assert set(times) == {(a, b, 64) for a in (16, 256) for b in (16, 256)}
    assert times[(256, 256, 64)] > times[(16, 256, 64)]  # 16x the MACs
    table = io_table("gemm", times, [16, 256], [64])
    assert table.out_channels is not None and table.seconds.shape == (2, 2, 1)
    per_unit = table.per_unit(np.array([16.0]), np.array([64.0]), np.array([256.0]))
    assert per_unit[0] * 16 * 256 * 64 == pytest.approx(times[(16, 256, 64)], rel=1e-6)


def test_kernel_times_names_nodes():
    from onnxmorph.bench.timing import conv_path

    model = conv_path([8, 16, 8], 4, 1, np.random.default_rng(0))
    times = kernel_times(model, runs=3, flush=False)
    assert {"y0", "y1"} <= set(times) and all(v > 0 for v in times.values())
    assert json.dumps(times)


def test_reference_workload_is_fixed_and_timed():
    from onnxmorph.bench.timing import reference_model, reference_seconds

    a, b = reference_model(), reference_model()
    assert a.SerializeToString() == b.SerializeToString()  # the same workload at calibration and later
    t = reference_seconds(runs=3, flush=False)
    assert 1e-4 < t < 5.0  # ~300 M MACs: milliseconds on any CPU this runs on
