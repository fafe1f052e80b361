"""Shared checks: prune a model under a keep-mask and assert invariant 1 and the cost accounting."""

import numpy as np
import onnx

from onnxmorph.analysis import analyze
from onnxmorph.cost import CostModel
from onnxmorph.emit import emit_pruned
from onnxmorph.gates import build_masked
from onnxmorph.graph import load_model
from onnxmorph.runtime import run_model
from onnxmorph.verify import compare, sample_inputs


def check_pruned_equals_masked(analysis, keep, seed=0):
    """Emit + mask under `keep`; assert pruned == masked, checker passes, MACs as predicted."""
    pruned = emit_pruned(analysis, keep)
    masked = build_masked(analysis, keep)
    onnx.checker.check_model(pruned, full_check=True)
    result = compare(masked, pruned, sample_inputs(analysis.loaded, 3, seed))
    assert result.passed, f"pruned != masked: max abs diff {result.max_abs_diff}"
    cm = CostModel(analysis)
    re_analysed = analyze(load_model(pruned))
    assert CostModel(re_analysed).total("macs") == cm.total("macs", keep)
    # Same interface: input/output names and shapes.
    for a, b in ((analysis.loaded.model.graph.input, pruned.graph.input),
                 (analysis.loaded.model.graph.output, pruned.graph.output)):
        assert [v.name for v in a] == [v.name for v in b]
    outs = run_model(pruned, sample_inputs(analysis.loaded, 1, seed)[0])
    ref = run_model(analysis.loaded.model, sample_inputs(analysis.loaded, 1, seed)[0])
    assert [o.shape for o in outs] == [r.shape for r in ref]
    return pruned, masked, result


def latency_per_op(cm, keep=None) -> dict[str, float]:
    """Predicted seconds per op type under `keep` (layout reorders left out: they belong to no op)."""
    i, o = cm.alive(keep)
    out: dict[str, float] = {}
    for c, v in zip(cm.nodes, cm.per_node("latency", i, o)):
        if c.extra.get("kind") != "reorder":
            out[c.op] = out.get(c.op, 0.0) + float(v)
    return out


def param_count(model):
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))
