"""LSTM, GRU, RNN (zoo patterns lstm_stack, gru_bidirectional, rnn_reverse): their MACs are counted per
gate, direction and time step, and their hidden units prune with pruned == masked."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxmorph
from helpers import check_pruned_equals_masked
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.graph import load_model
from zoo import ZOO, GraphBuilder, _recurrent


def _node_macs(analysis, op):
    """Full MACs declared for every node of type `op`, by node name."""
    out = {}
    for c in analysis.costs:
        if c.op == op:
            out[c.node] = out.get(c.node, 0.0) + c.macs(c.in_full, c.out_full)
    return out


def _nodes(model, op):
    return [n for n in model.graph.node if n.op_type == op]


def test_lstm_macs_per_gate_direction_and_step():
    a = analyze(load_model(ZOO["lstm_stack"]()))
    macs = sorted(_node_macs(a, "LSTM").values())
    # T=6 steps, 4 gates, one direction: input (I x H) + recurrent (H x H) products
    assert macs == sorted([6 * 4 * (8 * 10 + 10 * 10), 6 * 4 * (10 * 7 + 7 * 7)])
    assert CostModel(a).total("macs") >= sum(macs)


def test_bidirectional_gru_macs_and_one_unit_per_hidden_index():
    a = analyze(load_model(ZOO["gru_bidirectional"]()))
    assert list(_node_macs(a, "GRU").values()) == [5 * 2 * 3 * (8 * 6 + 6 * 6)]
    gru = next(g for g in a.groups if g.name.startswith("GRU"))
    assert gru.channels == 6  # both directions' unit j go together: hidden_size is one attribute


def test_rnn_macs():
    a = analyze(load_model(ZOO["rnn_reverse"]()))
    assert list(_node_macs(a, "RNN").values()) == [4 * 1 * (5 * 8 + 8 * 8)]


@pytest.mark.parametrize("pattern", ["lstm_stack", "gru_bidirectional", "rnn_reverse"])
def test_prune_hidden_units_end_to_end(pattern):
    model = ZOO[pattern]()
    res = onnxmorph.prune(model, target="flops=0.5")
    rep = res.report
    assert rep["verify"]["passed"] and rep["verify"]["max_abs_diff"] < 1e-4
    assert rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
    op = pattern.split("_")[0].upper()
    before = [helper.get_attribute_value(next(a for a in n.attribute if a.name == "hidden_size"))
              for n in _nodes(model, op)]
    after = [helper.get_attribute_value(next(a for a in n.attribute if a.name == "hidden_size"))
             for n in _nodes(res.model, op)]
    assert sum(after) < sum(before)
    onnx.checker.check_model(res.model, full_check=True)
    # the interface stays: initial_h given as a graph input keeps its shape (a Gather picks the units left)
    assert [onnx.helper.printable_type(i.type) for i in res.model.graph.input] == \
        [onnx.helper.printable_type(i.type) for i in model.graph.input]


def test_masked_model_gates_the_recurrent_weight(rng):
    """Zeroing a unit's outputs alone would still let it feed the other units through R: the masked
    model zeroes R's columns too, so it equals the pruned model (here with every other unit removed)."""
    a = analyze(load_model(ZOO["rnn_reverse"]()))
    keep = np.ones(a.num_units, bool)
    rnn_units = next(g for g in a.groups if g.name.startswith("RNN")).units
    keep[rnn_units[::2]] = False
    _, masked, result = check_pruned_equals_masked(a, keep)
    r_name = _nodes(a.loaded.model, "RNN")[0].input[2]
    assert any(n.op_type == "Mul" and r_name in n.input for n in masked.graph.node)
    assert result.max_abs_diff < 1e-5


def test_non_constant_weights_are_frozen_with_the_reason():
    b = GraphBuilder("lstm_computed_w")
    x = b.matmul(b.input([4, 1, 3]), 3, 5)
    y, _, _ = _recurrent(b, "LSTM", x, 5, 6)
    lstm = b.nodes.pop()
    lstm.input[1] = b.op("Mul", [lstm.input[1], b.input([], name="gain")])  # W computed from an input
    b.nodes.append(lstm)
    m = b.build(b.matmul(b.op("Squeeze", [y, b.const(np.array([1], np.int64))]), 6, 2))
    a = analyze(load_model(m))
    reasons = [g.frozen_reason for g in a.frozen_groups]
    assert any("LSTM" in r and "not constant" in r for r in reasons), reasons
    assert not any(g.name.startswith("LSTM") for g in a.groups)


def test_initial_state_from_an_encoder_couples_units(rng):
    """A decoder LSTM started from an encoder's Y_h keeps the encoder's units in line with its own."""
    b = GraphBuilder("encoder_decoder")
    x = b.matmul(b.input([4, 1, 3]), 3, 5)
    _, yh, yc = _recurrent(b, "LSTM", x, 5, 6)
    y, _, _ = _recurrent(b, "LSTM", x, 5, 6, inputs=["", yh, yc])
    m = b.build(b.matmul(b.op("Squeeze", [y, b.const(np.array([1], np.int64))]), 6, 2))
    a = analyze(load_model(m))
    lstm_groups = [g for g in a.groups if "LSTM" in g.name]
    assert len(lstm_groups) == 1 and lstm_groups[0].channels == 6
    for p in (0.3, 0.7):
        keep = rng.random(a.num_units) < p
        for c in a.constraints:
            if not keep[c].any():
                keep[c[0]] = True
        check_pruned_equals_masked(a, keep)


def test_peepholes_and_bias_are_sliced_per_gate():
    model = ZOO["lstm_stack"]()
    a = analyze(load_model(model))
    keep = np.ones(a.num_units, bool)
    first = next(g for g in a.groups if g.name.startswith("LSTM"))
    keep[first.units[:4]] = False  # remove hidden units 0-3 of the first LSTM
    pruned, _, _ = check_pruned_equals_masked(a, keep)
    inits = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    orig = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = _nodes(pruned, "LSTM")[0]
    src = _nodes(model, "LSTM")[0]
    p_new, p_old = inits[node.input[7]], orig[src.input[7]]
    assert p_new.shape == (1, 18)
    np.testing.assert_array_equal(p_new.reshape(3, 6), p_old.reshape(3, 10)[:, 4:])
    b_new, b_old = inits[node.input[3]], orig[src.input[3]]
    np.testing.assert_array_equal(b_new.reshape(8, 6), b_old.reshape(8, 10)[:, 4:])


@pytest.mark.parametrize("op,attrs", [
    ("GRU", {"linear_before_reset": 0}),
    ("LSTM", {"direction": "bidirectional", "input_forget": 1}),
    ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Relu"]}),
])
def test_variants_prune_equal_to_masked(op, attrs, rng):
    """Gate layouts and activations that change how a unit's state enters its own gates."""
    b = GraphBuilder(f"{op}_variant")
    T, H = 5, 7
    d = 2 if attrs.get("direction") == "bidirectional" else 1
    x = b.op("Transpose", [b.matmul(b.input([1, T, 4]), 4, 6)], perm=[1, 0, 2])
    y = _recurrent(b, op, x, 6, H, directions=d, **attrs)[0]
    y = b.op("Reshape", [b.op("Transpose", [y], perm=[2, 0, 1, 3]), b.const(np.array([1, T, d * H], np.int64))])
    a = analyze(load_model(b.build(b.matmul(y, d * H, 3))))
    hidden = next(g for g in a.groups if g.name.startswith(op))
    assert hidden.channels == H
    for p in (0.3, 0.7):
        keep = rng.random(a.num_units) < p
        keep[hidden.units[::2]] = False  # always remove hidden units 0, 2, 4, 6
        for c in a.constraints:
            if not keep[c].any():
                keep[c[0]] = True
        check_pruned_equals_masked(a, keep)
