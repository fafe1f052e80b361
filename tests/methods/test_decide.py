"""The greedy decision: meets the target, respects --round-to, never empties a channel axis."""

import numpy as np
import pytest

import onnxmorph
from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.errors import TargetUnreachable
from onnxmorph.graph import load_model
from onnxmorph.methods import select_units
from onnxmorph.methods.magnitude import weight_magnitudes
from zoo import ZOO


@pytest.mark.parametrize("fraction", [0.8, 0.5, 0.3])
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_target_met(metric, fraction):
    a = analyze(load_model(ZOO["residual"]()))
    cm = CostModel(a)
    sel = select_units(a, cm, weight_magnitudes(a), metric, fraction)
    assert sel.reached
    assert cm.total(metric, sel.keep_units) <= fraction * cm.total(metric)
    assert np.isclose(sel.cost_after, cm.total(metric, sel.keep_units))
    for c in a.constraints:
        assert sel.keep_units[c].any()


def test_round_to_keeps_multiples():
    res = onnxmorph.prune(ZOO["mobile_block"](), target="flops=0.5", round_to=8)
    for g in res.report["groups"]:
        if g["kept"] != g["channels"]:
            assert g["kept"] % 8 == 0 and g["kept"] >= 8, g


def test_least_important_channels_go_first():
    a = analyze(load_model(ZOO["conv_chain"]()))
    cm = CostModel(a)
    imp = np.arange(a.num_units, dtype=float)  # within each group, earlier units matter less
    sel = select_units(a, cm, imp, "macs", 0.7)
    for g in a.groups:
        kept = sel.keep_units[g.units]
        # a kept prefix after a removed unit would mean a more important unit was removed first
        assert not (kept[:-1] & ~kept[1:]).any()


def test_unreachable_raises_with_best_reachable():
    a = analyze(load_model(ZOO["extra_output"]()))
    with pytest.raises(TargetUnreachable, match="reaches 0\\.[0-9]+"):
        select_units(a, CostModel(a), weight_magnitudes(a), "macs", 0.01)
    sel = select_units(a, CostModel(a), weight_magnitudes(a), "macs", 0.01, best_effort=True)
    assert not sel.reached and sel.cost_after < sel.cost_before
