"""Known-answer checks of the metrics in tools/bench_pretrained.py (issue 12's pretrained-model benchmark).

Pure numpy functions only: no downloaded model is needed, so these run in CI."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "bench_pretrained.py"
_spec = importlib.util.spec_from_file_location("bench_pretrained", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def one_hot_steps(indices, classes=6):
    probs = np.full((len(indices), classes), 0.01)
    probs[np.arange(len(indices)), indices] = 0.95
    return probs


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    # best path 0 3 3 0 3 5 5 0 0 2 -> 3, 3 (a blank separates the repeat), 5, 2
    assert bench.ctc_greedy_decode(one_hot_steps([0, 3, 3, 0, 3, 5, 5, 0, 0, 2])) == [3, 3, 5, 2]
    assert bench.ctc_greedy_decode(one_hot_steps([0, 0, 0])) == []
    assert bench.ctc_greedy_decode(one_hot_steps([4, 4, 4])) == [4]


def test_char_agreement_is_one_minus_normalized_edit_distance():
    assert bench.edit_distance("kitten", "sitting") == 3
    assert bench.char_agreement("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert bench.char_agreement("abc", "abc") == 1.0
    assert bench.char_agreement("", "") == 1.0
    assert bench.char_agreement("abcd", "") == 0.0
    assert bench.char_agreement([1, 2, 3, 4], [1, 3, 4]) == pytest.approx(0.75)


def test_components_and_box_f1_on_a_synthetic_map():
    prob = np.zeros((40, 60))
    prob[2:8, 3:30] = 0.9          # box A: x 3..29, y 2..7
    prob[20:26, 10:50] = 0.8       # box B: x 10..49, y 20..25
    prob[35, 55] = 0.9             # a one-pixel speck: below the minimum area
    boxes = bench.components_boxes(prob, thresh=0.3, min_area=4)
    assert sorted(boxes.tolist()) == [[3, 2, 29, 7], [10, 20, 49, 25]]

    # the other map finds A exactly, B shifted by half its width (IoU 1/3, no match) and an extra box
    other = np.zeros_like(prob)
    other[2:8, 3:30] = 0.9
    other[20:26, 30:60] = 0.9
    other[30:34, 0:10] = 0.9
    pred = bench.components_boxes(other, thresh=0.3, min_area=4)
    assert len(pred) == 3
    assert bench.box_iou([[10, 20, 49, 25]], [[30, 20, 59, 25]])[0, 0] == pytest.approx(20 / 50)
    assert bench.box_f1(boxes, pred) == pytest.approx(2 * 1 / (2 + 3))
    assert bench.box_f1(boxes, boxes) == 1.0
    assert bench.box_f1(np.zeros((0, 4)), np.zeros((0, 4))) == 1.0
    assert bench.box_f1(boxes, np.zeros((0, 4))) == 0.0


def test_label_components_separates_touching_diagonals_and_follows_a_spiral():
    mask = np.array([[1, 0, 1],
                     [0, 1, 0],
                     [1, 0, 1]], bool)
    _, n = bench.label_components(mask)
    assert n == 5                          # 4-connectivity: diagonal neighbours are separate
    spiral = np.zeros((9, 9), bool)        # one long winding component
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = spiral[2, :7] = spiral[2:7, 6] = True
    spiral[6, 2:7] = spiral[4:7, 2] = True
    labels, n = bench.label_components(spiral)
    assert n == 1 and set(np.unique(labels[spiral])) == {1}


def test_map_iou_and_top1_agreement():
    a = np.zeros((2, 10, 10))
    b = np.zeros((2, 10, 10))
    a[0, :5, :] = 0.9                      # 50 pixels
    b[0, :5, :5] = 0.9                     # 25 of them
    b[1, 0, :] = 0.9                       # 10 more, only in b
    assert bench.map_iou(a, b, 0.5) == pytest.approx(25 / 60)
    assert bench.map_iou(a, a, 0.5) == 1.0
    assert bench.map_iou(np.zeros(5), np.zeros(5), 0.5) == 1.0
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    out = np.array([[0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.9, 0.1]])
    assert bench.top1_agreement(ref, out) == 0.75


def test_standard_error_of_the_mean():
    assert bench.standard_error([1.0, 0.0, 1.0, 0.0]) == pytest.approx(np.sqrt(1 / 3) / 2)
    assert bench.standard_error(np.ones(10)) == 0.0
    assert np.isnan(bench.standard_error([0.5]))
