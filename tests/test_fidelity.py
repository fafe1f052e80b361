"""The fidelity figure and the output classification, checked against direct computations."""

import numpy as np

from onnxmorph.fidelity import compare_outputs
from onnxmorph.graph.outputs import classify_output


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_classify_outputs_by_values():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 10)).astype(np.float32)
    assert classify_output(logits).kind == "logits"
    assert classify_output(_softmax(logits, 1)) .kind == "probs"
    ctc = _softmax(rng.standard_normal((4, 20, 37)), 2).astype(np.float32)
    k = classify_output(ctc)
    assert (k.kind, k.class_axis) == ("probs", 2)
    seg = _softmax(rng.standard_normal((2, 3, 8, 8)), 1).astype(np.float32)
    assert classify_output(seg) == classify_output(seg) and classify_output(seg).class_axis == 1
    dbmap = rng.random((2, 1, 16, 16)).astype(np.float32)  # a sigmoid map: in [0, 1] but no class axis
    assert classify_output(dbmap).kind == "dense"
    assert classify_output(np.arange(6).reshape(2, 3)).kind == "skip"


def test_compare_outputs_matches_direct_computation():
    rng = np.random.default_rng(1)
    ref = {"logits": rng.standard_normal((50, 5)), "map": rng.standard_normal((50, 2, 4, 4))}
    cand = {"logits": ref["logits"] + 0.8 * rng.standard_normal((50, 5)),
            "map": ref["map"] + 0.3 * rng.standard_normal((50, 2, 4, 4))}
    block = compare_outputs(ref, cand)
    agree = np.mean(ref["logits"].argmax(1) == cand["logits"].argmax(1))
    assert 0.3 < agree < 1.0  # the perturbation flips some but not all
    assert abs(block["outputs"]["logits"]["top1_agreement"] - agree) < 1e-6
    r, c = ref["map"].reshape(50, -1), cand["map"].reshape(50, -1)
    cos = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(r, c)])
    assert abs(block["outputs"]["map"]["cosine"] - cos) < 1e-6
    rel = np.linalg.norm(c - r) / np.linalg.norm(r)
    assert abs(block["outputs"]["map"]["relative_error"] - rel) < 1e-6
    assert abs(block["agreement"] - min(agree, cos)) < 1e-6


def test_sequence_agreement_counts_every_position():
    rng = np.random.default_rng(2)
    ref = _softmax(rng.standard_normal((3, 10, 6)), 2)
    cand = ref.copy()
    cand[0, :4] = cand[0, :4, ::-1]  # 4 of 30 positions get another argmax (reversed class order)
    flips = np.sum(ref.argmax(2) != cand.argmax(2))
    block = compare_outputs({"y": ref}, {"y": cand})
    assert flips > 0 and abs(block["outputs"]["y"]["top1_agreement"] - (1 - flips / 30)) < 1e-6
    a, b = ref.argmax(2).ravel(), cand.argmax(2).ravel()
    ious = [np.sum((a == k) & (b == k)) / np.sum((a == k) | (b == k)) for k in range(6) if np.any((a == k) | (b == k))]
    assert abs(block["agreement"] - np.mean(ious)) < 1e-6 and block["agreement"] < 1 - flips / 30


def test_background_dominated_map_is_not_counted_as_agreement():
    """A 2-class map that is 98 % background: a candidate that misses 3 of the 4 objects agrees at 99 %
    of the positions, but its mean IoU (background 0.99, object 0.25) says what it lost."""
    ref = np.zeros((1, 2, 20, 20))
    ref[:, 0] = 1.0
    objects = [(2, 3), (10, 10), (15, 4), (6, 16)]
    for y, x in objects:
        ref[0, :, y:y + 1, x:x + 2] = [[[0.0, 0.0]], [[1.0, 1.0]]]
    cand = ref.copy()
    for y, x in objects[1:]:
        cand[0, :, y:y + 1, x:x + 2] = [[[1.0, 1.0]], [[0.0, 0.0]]]
    block = compare_outputs({"map": ref}, {"map": cand})
    out = block["outputs"]["map"]
    assert abs(out["top1_agreement"] - (1 - 6 / 400)) < 1e-6
    assert abs(out["mean_iou"] - ((392 / 398) + 2 / 8) / 2) < 1e-6
    assert block["agreement"] == out["mean_iou"]
