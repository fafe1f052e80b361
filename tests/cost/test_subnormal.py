"""Subnormal floats in attention: a softmax over a -100 mask (Swin's shifted windows) and the product after it."""

import numpy as np
import pytest
from onnx import numpy_helper

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.analysis import subnormal
from onnxmorph.bench import subnormal as subnormal_probe
from onnxmorph.cost.profile import profile_from_dict
from onnxmorph.graph import load_model

from zoo import swin_block, vit_encoder

TABLE = {"channels": [8, 64], "sizes": [1, 256], "seconds": [[1e-6, 1e-5], [1e-5, 1e-4]],
         "work": [[100, 1000], [1000, 10000]]}
PRODUCTS = {"columns": 16.0, "call": 2e-7, "pack": 2e-10, "read": 1e-10, "write": 5e-10, "mac": 1.3e-11}


def profile(overheads=None):
    return profile_from_dict({"name": "m", "kind": "measured", "peak_gflops": 100, "memory_gbps": 10,
                              "channel_multiple": 1, "overheads": overheads or {}, "batched_matmul": PRODUCTS,
                              "tables": {k: TABLE for k in ("conv", "conv1x1", "unary", "binary", "pool", "gemm")}})


def _mask_share(model) -> float:
    masks = [numpy_helper.to_array(t) for t in model.graph.initializer if numpy_helper.to_array(t).min() <= -100]
    assert len(masks) == 1
    return float(np.mean(masks[0] == -100))


def test_a_masked_softmax_and_the_product_after_it_pay_for_subnormals():
    model = swin_block()
    share = _mask_share(model)
    assert 0.1 < share < 0.3
    a = analyze(load_model(model))
    over = {"subnormal_exp": 2e-8, "subnormal_mac": 4e-9}
    plain, masked = CostModel(a, profile()), CostModel(a, profile(over))
    outputs = {c.node: c.extra["subnormal_outputs"] for c in masked.nodes if "subnormal_outputs" in c.extra}
    shares = {c.node: c.extra["subnormal_share"] for c in masked.nodes if "subnormal_share" in c.extra}
    softmax_numel = 4 * 2 * 16 * 16  # [windows, heads, tokens, tokens]
    assert len(outputs) == 1 and list(outputs.values()) == [pytest.approx(share * softmax_numel)]
    assert len(shares) == 1 and list(shares.values()) == [pytest.approx(share)]  # attn·V, after the softmax
    t0, t1 = (cm.per_node("latency", *cm.alive(None)) for cm in (plain, masked))
    extra = float(np.sum(t1 - t0))
    product_macs = 4 * 2 * 16 * 16 * 8  # batch 8 x [16, 16] x [16, 8]
    assert extra == pytest.approx(2e-8 * share * softmax_numel + 4e-9 * share * product_macs, rel=1e-6)


def test_no_mask_no_subnormals():
    a = analyze(load_model(vit_encoder()))
    cm = CostModel(a, profile({"subnormal_exp": 2e-8, "subnormal_mac": 4e-9}))
    assert not any(k.startswith("subnormal") for c in cm.nodes for k in c.extra)


def test_only_mask_values_that_put_exp_in_the_subnormal_range_count():
    assert subnormal.mask_share([0.0, -100.0, -90.0, -1e4, -float("inf"), -50.0]) == pytest.approx(2 / 6)


def test_overheads_from_probe_timings():
    """Per-element costs from the probe timed without and with its mask (a hardware fact: Intel cores
    run subnormal products ~50x slower, AMD EPYC hosts barely slower, so the timings are synthetic
    here and the real probe is a benchmark: tools/bench_latency_model.py)."""
    b, t, d = subnormal_probe.PROBE
    count = b * t * int(round(subnormal_probe.PROBE_MASKED * t))
    plain = {"softmax": 1e-4, "product": 2e-4}
    masked = {"softmax": 1e-4 + count * 1.4e-8, "product": 2e-4 + count * d * 3.9e-9}
    over = subnormal_probe.overheads(plain, masked)
    assert over["subnormal_exp"] == pytest.approx(1.4e-8) and over["subnormal_mac"] == pytest.approx(3.9e-9)
    # a host without the penalty (or a noisy run) prices nothing extra, never a negative cost
    assert subnormal_probe.overheads(masked, plain) == {"subnormal_exp": 0.0, "subnormal_mac": 0.0}
    assert set(subnormal_probe.probe_seconds(0.0, threads=1, runs=2, flush=False)) == {"softmax", "product"}
