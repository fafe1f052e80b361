"""Latency from hardware profiles: roofline arithmetic, measured-table interpolation, malformed profiles,
marginal costs, and consistency of the latency of pruned models."""

import json

import numpy as np
import pytest

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.cost.profile import HardwareProfile, Table, list_profiles, load_profile, profile_from_dict
from onnxmorph.emit import emit_pruned
from onnxmorph.errors import OnnxMorphError, ProfileError, UsageError
from onnxmorph.graph import load_model

from conftest import random_keep
import zoo
from zoo import ZOO

# 100 GFLOP/s, 10 GB/s: ridge point at 10 FLOP/byte.
ROOF = {"name": "test-roof", "peak_gflops": 100, "memory_gbps": 10, "dtype_bytes": 4, "channel_multiple": 1,
        "fusion": False}


def node_latency(model, profile, op="Conv"):
    a = analyze(load_model(model))
    cm = CostModel(a, profile)
    i, o = cm.alive(None)
    t = cm.per_node("latency", i, o)
    return [float(v) for v, c in zip(t, cm.nodes) if c.op == op]


def test_roofline_compute_bound_by_hand():
    # 3x3 conv 64->64 on 8x8: 2·64·64·9·64 = 4,718,592 FLOPs -> 47.18592 us at 100 GFLOP/s;
    # bytes = 4·(64·64 in + 64·64 out + 64·64·9 weights) = 180,224 -> 18.0224 us at 10 GB/s.
    (t,) = node_latency(zoo.single_conv(64, 64, 8, 3), ROOF)
    assert t == pytest.approx(47.18592e-6, rel=1e-9)


def test_roofline_memory_bound_by_hand():
    # 1x1 conv 16->16 on 32x32: 524,288 FLOPs -> 5.24288 us; bytes = 4·(16·1024 + 16·1024 + 256)
    # = 132,096 -> 13.2096 us: memory-bound.
    (t,) = node_latency(zoo.single_conv(16, 16, 32, 1), ROOF)
    assert t == pytest.approx(13.2096e-6, rel=1e-9)
    # Half-precision elements halve the memory term: 6.6048 us, still above the 5.24288 us of compute.
    (t16,) = node_latency(zoo.single_conv(16, 16, 32, 1), dict(ROOF, dtype_bytes=2))
    assert t16 == pytest.approx(6.6048e-6, rel=1e-9)
    # MorphNet's synthetic profiles isolate one branch each.
    (tf,) = node_latency(zoo.single_conv(16, 16, 32, 1), "FLOP_LATENCY")
    assert tf == pytest.approx(524288 / 1e9, rel=1e-6)
    (tm,) = node_latency(zoo.single_conv(16, 16, 32, 1), "memory-latency")
    assert tm == pytest.approx(132096 / 1e9, rel=1e-6)


def test_morphnet_table_is_shipped():
    got = {p.name: (p.peak_gflops, p.memory_gbps) for p in list_profiles()}
    assert {k: got[k] for k in ("k80", "p4", "t4", "p100", "v100", "tpuv2")} == {
        "k80": (8740, 480), "p4": (5500, 192), "t4": (8100, 300), "p100": (9300, 732),
        "v100": (125000, 900), "tpuv2": (22500, 300)}
    assert got["flop-latency"] == (1, 1e20) and got["memory-latency"] == (1e20, 1)
    for p in list_profiles():
        assert p.source and p.channel_multiple >= 1 and p.dtype_bytes in (1, 2, 4, 8)
    assert load_profile("T4").name == load_profile("t4").name == "t4"


def table(channels, sizes, per_unit, work_scale=1000.0):
    per_unit = np.asarray(per_unit, dtype=np.float64)
    work = np.full(per_unit.shape, work_scale)
    return Table("conv", np.asarray(channels, float), np.asarray(sizes, float), per_unit * work, work)


def test_measured_table_interpolates_in_log_space_and_clamps():
    t = table([8, 32], [16, 256], [[4e-9, 2e-9], [1e-9, 0.5e-9]])
    # Corners are exact; the log-midpoint (16 channels, 64 pixels) is the geometric mean of the corners.
    assert t.per_unit([8, 32, 32], [16, 16, 256]) == pytest.approx([4e-9, 1e-9, 0.5e-9])
    assert t.per_unit([16], [64])[0] == pytest.approx((4 * 2 * 1 * 0.5) ** 0.25 * 1e-9)
    # Along one axis: halfway in log channels at a grid size.
    assert t.per_unit([16], [16])[0] == pytest.approx(2e-9)
    # Outside the grid: clamped to the edge, never extrapolated.
    assert t.per_unit([2, 1000], [4, 10**6]) == pytest.approx([4e-9, 0.5e-9])


def measured_profile(multiple=1):
    conv = {"channels": [16, 64], "sizes": [16, 256], "seconds": [[1e-6, 4e-6], [8e-6, 32e-6]],
            "work": [[1e6, 1e6], [1e6, 1e6]],
            "unaligned": {"channels": [15, 63], "seconds": [[3e-6, 12e-6], [24e-6, 96e-6]],
                          "work": [[1e6, 1e6], [1e6, 1e6]]}}
    return profile_from_dict(dict(ROOF, name="test-measured", channel_multiple=multiple, tables={"conv": conv}))


def test_measured_table_gives_node_latency_and_unaligned_penalty():
    # A 3x3 conv 16->64 on 4x4 (16 pixels): channel feature sqrt(16·64) = 32, halfway (in log) between
    # 16 and 64 -> per-MAC time sqrt(1e-12 · 8e-12); MACs = 16·64·9·16.
    macs = 16 * 64 * 9 * 16
    (t,) = node_latency(zoo.single_conv(16, 64, 4, 3), measured_profile(multiple=8))
    assert t == pytest.approx(np.sqrt(1e-12 * 8e-12) * macs, rel=1e-9)
    # With 20 output channels (not a multiple of 8) the unaligned table applies (3x slower here).
    macs20 = 16 * 20 * 9 * 16
    frac = np.log(np.sqrt(16 * 20) / 15) / np.log(63 / 15)
    expected = np.exp((1 - frac) * np.log(3e-12) + frac * np.log(24e-12)) * macs20
    (t20,) = node_latency(zoo.single_conv(16, 20, 4, 3), measured_profile(multiple=8))
    assert t20 == pytest.approx(expected, rel=1e-9)
    (t24,) = node_latency(zoo.single_conv(16, 24, 4, 3), measured_profile(multiple=8))
    assert t20 > t24
    # Kinds without a table fall back to the roofline (here the 1x1 conv).
    (t1,) = node_latency(zoo.single_conv(16, 16, 32, 1), measured_profile())
    assert t1 == pytest.approx(13.2096e-6, rel=1e-9)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("peak_gflops"), "missing 'peak_gflops'"),
    (lambda d: d.update(memory_gbps=0), "'memory_gbps' must be a positive number"),
    (lambda d: d.update(memory_gbps="fast"), "'memory_gbps' must be a positive number"),
    (lambda d: d.update(dtype_bytes=3), "'dtype_bytes' must be 1, 2, 4 or 8"),
    (lambda d: d.update(channel_multiple=2.5), "'channel_multiple' must be an integer"),
    (lambda d: d.update(tables={"conv": {"channels": [8, 16], "sizes": [4], "seconds": [[1e-6]], "work": [[1]]}}),
     "'seconds' must be shape [2, 1]"),
    (lambda d: d.update(tables={"conv": {"channels": [16, 8], "sizes": [4], "seconds": [[1], [1]],
                                         "work": [[1], [1]]}}), "'channels' must be strictly increasing"),
    (lambda d: d.update(tables={"warp": {}}), "unknown table kind 'warp'"),
    (lambda d: d.update(schema=7), "unsupported schema 7"),
])
def test_malformed_profile_gets_one_clear_line(tmp_path, mutate, message):
    d = dict(ROOF)
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert isinstance(err.value, UsageError) and isinstance(err.value, OnnxMorphError)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unreadable_profiles(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{\"name\": \"x\", ")
    with pytest.raises(ProfileError, match="is not valid JSON"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such file"):
        load_profile(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match="unknown profile 'k81'"):
        load_profile("k81")
    with pytest.raises(UsageError, match="needs a hardware profile"):
        CostModel(analyze(load_model(zoo.single_conv(4, 4, 4, 1)))).total("latency")


def test_marginal_matches_removing_one_unit():
    a = analyze(load_model(ZOO["residual"]()))
    for prof in (ROOF, "desktop-avx2-core", None):
        cm = CostModel(a, prof)
        keep = random_keep(a, np.random.default_rng(0), 0.8)
        for metric in cm.metrics:
            m = cm.marginal(metric, keep)
            assert m.shape == (a.num_units,) and (m >= 0).all()
            base = cm.total(metric, keep)
            for u in np.flatnonzero(keep)[:12]:
                k2 = keep.copy()
                k2[u] = False
                exact = base - cm.total(metric, k2)
                # linearised: exact up to the roofline switching branch / bilinear cross terms
                assert m[u] == pytest.approx(exact, rel=0.05, abs=1e-12), (prof, metric, u)


def test_marginal_latency_uses_the_binding_branch():
    # 1x1 convs on a 32x32 map at 100 GFLOP/s / 10 GB/s are memory-bound: the marginal latency of a
    # channel is its bytes / bandwidth, not its FLOPs / peak.
    a = analyze(load_model(zoo.two_pointwise()))
    cm = CostModel(a, ROOF)
    m = cm.marginal("latency")
    # one middle channel: conv1 output (4·(16 + 1024) bytes) + conv2 input (4·(16 + 1024) bytes)
    assert m == pytest.approx(np.full(16, 2 * 4 * 1040 / 10e9))


@pytest.mark.parametrize("name", ["conv_chain", "residual", "mobile_block", "squeeze_excite", "concat_branches",
                                  "pool_resize_pad", "flatten_gemm", "channel_shuffle", "linear_layers"])
def test_latency_of_pruned_model_matches_prediction(name):
    """The bytes each handler declares scale with alive channels exactly as the emitted model shrinks."""
    a = analyze(load_model(ZOO[name]()))
    prof = dict(ROOF, fusion=True)
    cm = CostModel(a, prof)
    rng = np.random.default_rng(3)
    for _ in range(3):
        keep = random_keep(a, rng, 0.6)
        pruned = CostModel(analyze(load_model(emit_pruned(a, keep))), prof)
        assert pruned.total("latency") == pytest.approx(cm.total("latency", keep), rel=1e-9)
        assert pruned.total("bytes") == pytest.approx(cm.total("bytes", keep), rel=1e-9)


def test_fused_ops_cost_nothing_when_the_runtime_fuses():
    a = analyze(load_model(ZOO["residual"]()))
    fused = {c.node: c.extra.get("fused") for c in a.costs if c.extra.get("kind") in ("bn", "unary", "binary")}
    assert any(fused.values())
    on = CostModel(a, dict(ROOF, fusion=True))
    off = CostModel(a, dict(ROOF, fusion=False))
    assert on.total("latency") < off.total("latency")
    i, o = on.alive(None)
    t = on.per_node("latency", i, o)
    for k, c in enumerate(on.nodes):
        if c.extra.get("fused"):
            assert t[k] == 0.0


def test_profile_objects_round_trip():
    p = measured_profile(8)
    q = profile_from_dict(json.loads(json.dumps(p.to_json())))
    assert isinstance(q, HardwareProfile) and q.kind == "measured" and q.channel_multiple == 8
    assert q.tables["conv"].per_unit([32], [64]) == pytest.approx(p.tables["conv"].per_unit([32], [64]))
    assert q.tables["conv"].unaligned is not None


def test_fast_multiple_counts_read_as_padded():
    # fast_multiple 4, channel_multiple 8: 20 output channels run like 24 (ONNX Runtime pads to its
    # block), 21 leaves the fast kernels (unaligned table).
    prof = measured_profile(multiple=8)
    prof.fast_multiple = 4
    (t20,) = node_latency(zoo.single_conv(16, 20, 4, 3), prof)
    (t24,) = node_latency(zoo.single_conv(16, 24, 4, 3), prof)
    (t21,) = node_latency(zoo.single_conv(16, 21, 4, 3), prof)
    assert t20 == pytest.approx(t24, rel=0.01) and t20 < t24
    assert t21 > 2 * t24
