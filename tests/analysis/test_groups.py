"""Structural facts the analysis must get right, pattern by pattern."""

import numpy as np

from onnxmorph.analysis import analyze
from onnxmorph.graph import load_model
from zoo import ZOO


def _analyze(name):
    return analyze(load_model(ZOO[name]()))


def _group_sizes(analysis):
    return sorted(g.channels for g in analysis.groups)


def test_conv_chain_one_group_per_conv():
    a = _analyze("conv_chain")
    assert _group_sizes(a) == [8, 16, 24]
    assert [g.frozen_reason for g in a.frozen_groups] == ["graph output 'gemm33'"] or \
        all("graph output" in g.frozen_reason for g in a.frozen_groups)


def test_residual_add_couples_producers():
    a = _analyze("residual")
    # the stem and the two convs added to it form one 16-channel group; the downsample
    # shortcut and the branch that meets it form one 24-channel group
    coupled = sorted((g.name.count("+") + 1, g.channels) for g in a.groups if "+" in g.name)
    assert coupled == [(2, 24), (3, 16)]
    assert len(a.groups) == 5


def test_grouped_conv_units_are_whole_groups():
    a = _analyze("grouped_and_depthwise")
    # each of the 4 conv groups ties 4 stem channels, its 4 outputs, the 4 depthwise outputs
    # after them and the 8 outputs of the multiplier-2 depthwise conv: 20 elements per unit
    sizes = sorted(len(u) for u in a.units)
    assert sizes == [1] * 12 + [20] * 4


def test_depthwise_multiplier_ties_input_to_its_outputs():
    a = _analyze("mobile_block")
    big = max(a.groups, key=lambda g: g.channels)
    assert big.channels == 48  # expand + depthwise + SE expand conv share 48 units


def test_concat_offsets_and_split():
    a = _analyze("concat_branches")
    assert _group_sizes(a).count(12) == 1  # the stem feeds the final concat directly: still prunable
    assert a.num_units > 50


def test_channel_shuffle_pairs_halves():
    a = _analyze("channel_shuffle")
    # the shuffle's Reshape(2, 8) ties position j of the passed-through half (stem channel j)
    # to position j of the branch output: 8 units hold one element of each
    space = lambda e: a.table.spaces[a.table.space[e]]  # noqa: E731
    stem, branch = space(a.units[0][0]), "Conv_38"
    paired = [u for u in a.units if {stem, branch} <= {space(e) for e in u}]
    assert len(paired) == 8
    assert sorted(g.channels for g in a.groups) == [4, 4, 8, 8, 8]


def test_graph_output_freezes_intermediate():
    a = _analyze("extra_output")
    reasons = [g.frozen_reason for g in a.frozen_groups]
    assert any("relu" in r and "graph output" in r for r in reasons)
    assert _group_sizes(a) == [12]


def test_unsupported_op_frozen_with_reason():
    a = _analyze("unsupported_op")
    assert any("LRN" in g.frozen_reason and "not supported" in g.frozen_reason for g in a.frozen_groups)
    assert _group_sizes(a) == [12]  # the conv after LRN is still prunable


def test_softmax_over_channels_is_frozen():
    a = _analyze("old_opset")
    assert any("Softmax" in g.frozen_reason for g in a.frozen_groups)


def test_flatten_gemm_positions():
    a = _analyze("flatten_gemm")
    # every unit of the flattened conv owns H*W=16 positions on the Gemm input
    gemm_in = [t for t, c in a.gates.items() if a.maps[t].ids.size == 128]
    assert gemm_in
    units, counts = a.unit_counts(gemm_in[0])
    assert len(units) == 8 and np.all(counts == 16)
