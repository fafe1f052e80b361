"""If / Loop (zoo patterns if_outer_read, if_constant_condition, loop_accumulate): tensors a subgraph
reads by name are consumers, a constant-condition If keeps every output, and pruning around control
flow verifies."""

import numpy as np
import onnx

import onnxmorph
from onnxmorph.analysis import analyze
from onnxmorph.graph import load_model
from zoo import ZOO


def _frozen_convs(analysis):
    return {g.name: g.frozen_reason for g in analysis.frozen_groups if g.name.startswith("Conv")}


def test_if_branch_reads_freeze_the_channels_they_read():
    a = analyze(load_model(ZOO["if_outer_read"]()))
    frozen = _frozen_convs(a)
    # a (Conv_3) is read by the then branch, c (Conv_14) by the else branch
    assert "read inside a subgraph of If" in frozen["Conv_3"] and "read inside a subgraph of If" in frozen["Conv_14"]
    assert a.num_units > 0  # the conv path beside the If stays prunable


def test_if_outer_read_prunes_and_verifies():
    res = onnxmorph.prune(ZOO["if_outer_read"](), target="flops=0.7")
    rep = res.report
    assert rep["verify"]["passed"] and rep["pruned"]["macs"] < rep["original"]["macs"]
    onnx.checker.check_model(res.model, full_check=True)
    assert [i.name for i in res.model.graph.input] == ["input", "flag"]


def test_constant_condition_if_keeps_every_output():
    model = ZOO["if_constant_condition"]()
    loaded = load_model(model)
    g = loaded.model.graph
    produced = {o for n in g.node for o in n.output}
    assert [o.name for o in g.output] == [o.name for o in model.graph.output]
    assert all(o.name in produced for o in g.output)
    assert "If" not in [n.op_type for n in g.node]  # the branch taken was inlined
    onnx.checker.check_model(loaded.model, full_check=True)
    res = onnxmorph.prune(model, target="flops=0.8")
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] < res.report["original"]["macs"]
    # the folded If computes the then branch: output 2 is Neg(a)
    from onnxmorph.runtime import run_model
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_model(res.model, {"input": x})[1], run_model(model, {"input": x})[1], atol=1e-5)


def test_loop_body_reads_freeze_and_verify():
    a = analyze(load_model(ZOO["loop_accumulate"]()))
    frozen = _frozen_convs(a)
    assert "read inside a subgraph of Loop" in frozen["Conv_14"]
    assert "control flow" in frozen["Conv_3"]  # the loop-carried input
    res = onnxmorph.prune(ZOO["loop_accumulate"](), target="flops=0.8")
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] < res.report["original"]["macs"]


def test_scan_body_reads_freeze_and_verify():
    a = analyze(load_model(ZOO["scan_outer_read"]()))
    frozen = _frozen_convs(a)
    assert "read inside a subgraph of Scan" in frozen["Conv_19"]  # c, pooled, is read by the body
    assert "control flow" in frozen["Conv_3"]  # the scanned sequence
    res = onnxmorph.prune(ZOO["scan_outer_read"](), target="flops=0.8")
    assert res.report["verify"]["passed"] and res.report["pruned"]["macs"] < res.report["original"]["macs"]


def test_constant_condition_if_inside_a_branch_is_inlined():
    """A branch's own If on a constant (as exporters write shape tests that become constant once shapes
    are static) is replaced by the branch it takes, even when the outer If stays."""
    from onnx import TensorProto, helper

    from zoo import GraphBuilder, _branch

    b = GraphBuilder("nested_if")
    x = b.input([1, 3, 8, 8])
    flag = b.input([], name="flag", dtype=TensorProto.BOOL)
    a = b.cbr(x, 3, 8)
    inner = helper.make_node(
        "If", ["inner_cond"], ["inner_out"], name="inner_if",
        then_branch=_branch("inner_then", [helper.make_node("Relu", [a], ["it"])], "it"),
        else_branch=_branch("inner_else", [helper.make_node("Neg", [a], ["ie"])], "ie"))
    cond = helper.make_node("Constant", [], ["inner_cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [False]))
    then_g = _branch("then", [cond, inner], "inner_out")
    else_g = _branch("else", [helper.make_node("Sigmoid", [a], ["eo"])], "eo")
    y = b.op("If", [flag], then_branch=then_g, else_branch=else_g)
    model = b.build(b.head(y, 8))
    loaded = load_model(model)
    outer = next(n for n in loaded.model.graph.node if n.op_type == "If")
    then_ops = [n.op_type for n in next(a for a in outer.attribute if a.name == "then_branch").g.node]
    assert "If" not in then_ops and "Neg" in then_ops and "Relu" not in then_ops
    from onnxmorph.runtime import run_model
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32),
            "flag": np.array(True)}
    np.testing.assert_allclose(run_model(loaded.model, feed)[0], run_model(model, feed)[0], rtol=1e-5, atol=1e-6)
