"""End to end on the demo model: gates and fisher reach the same test accuracy with the onnxmorph
engine as with onnxruntime-training, at the same budget (flops=0.5, 150 + 150 steps) and seed."""

from __future__ import annotations

import numpy as np
import pytest

import onnxmorph
from onnxmorph.runtime import run_model


def _accuracy(model, test) -> float:
    logits = run_model(model, {"input": test["input"]})[0]
    return float((logits.argmax(1) == test["labels"]).mean())


@pytest.mark.parametrize("method", ["gates", "fisher"])
def test_engines_land_in_the_same_accuracy_band(method):
    from conftest import REPO

    data = dict(np.load(REPO / "models" / "demo_cnn.npz"))
    test = dict(np.load(REPO / "models" / "demo_cnn_test.npz"))
    acc = {}
    for engine in ("onnxmorph", "ort-training"):
        res = onnxmorph.prune(REPO / "models" / "demo_cnn.onnx", method=method, target="flops=0.5",
                              data={"input": data["input"]}, steps=300, recover_steps=150, seed=0, engine=engine)
        assert res.report["budget"]["training"] == 150  # --steps is the whole budget
        assert res.report["pruned"]["macs"] <= 0.5 * res.report["original"]["macs"]
        acc[engine] = _accuracy(res.model, test)
    print(method, acc)
    assert min(acc.values()) >= 0.85  # the seed model is at 0.99; chance is 0.1
    assert abs(acc["onnxmorph"] - acc["ort-training"]) <= 0.04
