"""The verifier catches emission mistakes: a pruned model that mixes up channels fails."""

import numpy as np
from onnx import numpy_helper

from conftest import random_keep
from onnxmorph.analysis import analyze
from onnxmorph.emit import emit_pruned
from onnxmorph.gates import build_masked
from onnxmorph.graph import load_model
from onnxmorph.verify import compare, sample_inputs
from zoo import ZOO


def _conv_weights(model):
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {i.name: i for i in model.graph.initializer}
    return [inits[n.input[1]] for n in convs if n.input[1] in inits]


def test_swapped_or_scaled_channels_fail_verification(rng):
    analysis = analyze(load_model(ZOO["residual"]()))
    keep = random_keep(analysis, rng, 0.6)
    pruned = emit_pruned(analysis, keep)
    masked = build_masked(analysis, keep)
    feeds = sample_inputs(analysis.loaded, 2, 0)
    assert compare(masked, pruned, feeds).passed
    for mutate in ("swap", "scale"):
        broken = type(pruned)()
        broken.CopyFrom(pruned)
        w_init = _conv_weights(broken)[2]
        w = numpy_helper.to_array(w_init).copy()
        if mutate == "swap":  # two output channels exchanged: what a wrong index map would do
            w[[0, 1]] = w[[1, 0]]
        else:  # one channel of a middle conv 10 % off (a wrong slice is far worse)
            w[0] *= 1.1
        w_init.CopyFrom(numpy_helper.from_array(w, w_init.name))
        result = compare(masked, broken, feeds)
        assert not result.passed, mutate
