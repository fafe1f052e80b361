"""`--target latency=F` with a profile prunes differently from `flops=F` where memory traffic and
compute disagree, meets its target, and `--round-to` follows the profile's channel multiple."""

import json

import numpy as np
import onnx
import pytest

import onnxmorph
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.errors import UsageError
from onnxmorph.graph import load_model

import zoo

# 100 GFLOP/s and 10 GB/s: ridge at 10 FLOP/byte. Activation maps on 96x96 are memory-bound, a 3x3
# conv with 64 channels on 8x8 is compute-bound.
PROFILE = {"name": "ridge10", "peak_gflops": 100, "memory_gbps": 10, "dtype_bytes": 4, "channel_multiple": 1,
           "fusion": True, "source": "test"}


def kept_by_layer(report):
    return {g["name"]: g["kept"] for g in report["groups"]}


def test_latency_and_flops_targets_remove_different_channels(tmp_path):
    model = zoo.memory_vs_compute()
    profile_path = tmp_path / "ridge10.json"
    profile_path.write_text(json.dumps(PROFILE))
    # both ranked per unit of their own cost (the default for latency targets; flops default to uniform)
    by_flops = onnxmorph.prune(model, target="flops=0.5", profile=str(profile_path), round_to=1, allocation="cost")
    by_latency = onnxmorph.prune(model, target="latency=0.5", profile=str(profile_path), round_to=1)
    f, lat = kept_by_layer(by_flops.report), kept_by_layer(by_latency.report)
    names = list(f)
    assert len(names) == 3 and [by_flops.report["groups"][k]["channels"] for k in range(3)] == [16, 64, 64]
    g1, g2, g3 = names
    # FLOPs live in the 8x8 layers; latency lives in the 96x96 memory traffic.
    assert lat[g1] <= f[g1] - 6, (f, lat)
    assert f[g2] + f[g3] <= lat[g2] + lat[g3] - 16, (f, lat)
    assert f != lat
    # Each meets its own target.
    ro, rp = by_latency.report["original"], by_latency.report["pruned"]
    assert rp["latency_ms"] <= 0.5 * ro["latency_ms"] * (1 + 1e-9)
    assert by_flops.report["pruned"]["macs"] <= 0.5 * by_flops.report["original"]["macs"]
    # ... and not the other's: halving FLOPs leaves most of the latency, halving latency most of the FLOPs.
    assert by_flops.report["pruned"]["latency_ms"] > 0.6 * ro["latency_ms"]
    assert rp["macs"] > 0.6 * ro["macs"]
    assert by_latency.report["target"]["metric"] == "latency"
    assert by_latency.report["profile"]["name"] == "ridge10"
    # The predicted latency of the emitted model agrees with the report.
    re = CostModel(analyze(load_model(by_latency.model)), PROFILE)
    assert 1e3 * re.total("latency") == pytest.approx(rp["latency_ms"], rel=1e-5)


def test_latency_target_without_profile_is_a_usage_error():
    with pytest.raises(UsageError, match="needs a hardware profile"):
        onnxmorph.prune(zoo.memory_vs_compute(), target="latency=0.5")


def test_round_to_defaults_to_the_profile_channel_multiple():
    model = zoo.memory_vs_compute()
    res = onnxmorph.prune(model, target="flops=0.5", profile=dict(PROFILE, channel_multiple=8))
    assert res.report["target"]["round_to"] == 8
    for g in res.report["groups"]:
        assert g["kept"] % 8 == 0 or g["kept"] == g["channels"], g
    assert "latency_ms" in res.report["original"] and "latency_ms" in res.report["pruned"]
    # An explicit --round-to wins; no profile means 1.
    assert onnxmorph.prune(model, target="flops=0.5", profile=dict(PROFILE, channel_multiple=8),
                           round_to=2).report["target"]["round_to"] == 2
    plain = onnxmorph.prune(model, target="flops=0.5")
    assert plain.report["target"]["round_to"] == 1 and "latency_ms" not in plain.report["original"]


def test_inspect_summary_has_latency(tmp_path):
    summary = onnxmorph.summarize(onnxmorph.inspect(zoo.memory_vs_compute()), "t4")
    assert summary["profile"] == "t4" and summary["latency_ms"] > 0
    shares = [g["latency_share"] for g in summary["groups"] if g["prunable"]]
    assert len(shares) == 3 and all(0 <= s <= 1 for s in shares)
    assert "latency_ms" not in onnxmorph.summarize(onnxmorph.inspect(zoo.memory_vs_compute()))
    onnx.checker.check_model(zoo.memory_vs_compute())
    assert np.isfinite(summary["latency_ms"])
