"""Every zoo pattern: random legal masks -> the pruned model computes what the masked model computes,
and its MACs (re-analysed from the emitted file) equal the cost model's prediction."""

import numpy as np
import pytest

from conftest import random_keep
from helpers import check_pruned_equals_masked, param_count
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.graph import load_model
from zoo import ZOO


@pytest.mark.parametrize("pattern", sorted(ZOO))
@pytest.mark.parametrize("p_keep", [0.3, 0.7])
def test_random_masks_pruned_equals_masked(pattern, p_keep, rng):
    analysis = analyze(load_model(ZOO[pattern]()))
    assert analysis.num_units > 0, f"{pattern}: nothing prunable"
    for trial in range(3):
        keep = random_keep(analysis, rng, p_keep)
        assert not keep.all()
        pruned, _, _ = check_pruned_equals_masked(analysis, keep, seed=trial)
        cm = CostModel(analysis)
        assert cm.total("macs", keep) < cm.total("macs")
        assert param_count(pruned) < param_count(analysis.loaded.model)


@pytest.mark.parametrize("pattern", sorted(ZOO))
def test_remove_all_but_one_channel_per_axis(pattern, rng):
    """The most aggressive legal mask: one unit left in every constraint."""
    analysis = analyze(load_model(ZOO[pattern]()))
    keep = np.zeros(analysis.num_units, dtype=bool)
    for c in analysis.constraints:
        if not keep[c].any():
            keep[c[0]] = True
    check_pruned_equals_masked(analysis, keep)
