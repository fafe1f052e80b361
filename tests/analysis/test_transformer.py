"""Transformer structure (issue #6): attention heads, head dims, MLP hidden channels and the embedding
width of small encoders built with onnx.helper (ViT with torch- and timm-style fused QKV, BERT-style
post-norm with separate Q/K/V, decomposed LayerNorm with heads folded into the batch axis, a Swin
stage with window partitions)."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import onnxmorph
from conftest import random_keep
from helpers import check_pruned_equals_masked
from onnxmorph.analysis import AnalysisOptions, analyze
from onnxmorph.analysis.channels import ElementTable, is_rectangular, resolve_rectangles, tie_fibers, tie_slices
from onnxmorph.cost import CostModel
from onnxmorph.emit import emit_pruned
from onnxmorph.errors import UsageError
from onnxmorph.graph import load_model
from zoo import ZOO, TRANSFORMERS

NAMES = [f.__name__ for f in TRANSFORMERS]
# pattern -> (heads per attention, MLP hidden sizes)
EXPECTED = {
    "vit_encoder": ([4, 4], [48, 40]),
    "bert_encoder": ([4, 4], [64, 64]),
    "decomposed_ln_encoder": ([3, 3], [36, 36]),
    "swin_block": ([2], [32]),
    "einsum_attention": ([3], []),
    "cosine_attention": ([3], []),
}
MODES = [AnalysisOptions("head-dims"), AnalysisOptions("heads", prune_embedding=True),
         AnalysisOptions("head-dims", prune_embedding=True), AnalysisOptions("off", prune_embedding=True)]


def _analyze(name, options=None):
    return analyze(load_model(ZOO[name]()), options)


def _groups(a, prefix):
    return [g for g in a.groups if g.name.startswith(prefix)]


def _shapes(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    return {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}


def _softmax_heads(model):
    """Head count at every Softmax over attention scores ([.., heads, N, N])."""
    shapes = _shapes(model)
    return [shapes[n.input[0]][-3] for n in model.graph.node if n.op_type == "Softmax"]


@pytest.mark.parametrize("name", NAMES)
def test_heads_and_mlp_are_named_units(name):
    a = _analyze(name)
    heads, hidden = EXPECTED[name]
    assert sorted(g.channels for g in _groups(a, "attention heads of ")) == sorted(heads)
    assert sorted(g.channels for g in _groups(a, "MLP hidden of ")) == sorted(hidden)
    # one unit per head: every element of a head (its Q, K and V columns) sits in one unit
    for g in _groups(a, "attention heads of "):
        assert len({len(a.units[u]) for u in g.units}) == 1 and len(a.units[g.units[0]]) > 1
    # by default the residual stream is frozen (LayerNorm / ReduceMean over channels, or the input)
    assert not _groups(a, "embedding width")


@pytest.mark.parametrize("options", MODES, ids=lambda o: f"{o.attention}{'+emb' if o.prune_embedding else ''}")
@pytest.mark.parametrize("name", NAMES)
def test_random_masks_every_mode(name, options, rng):
    a = _analyze(name, options)
    for trial in range(2):
        keep = random_keep(a, rng, 0.5)
        check_pruned_equals_masked(a, keep, seed=trial)


def _keep_heads(a, removed: dict[int, list[int]]):
    """Keep-mask removing heads `removed[i]` of the i-th heads group."""
    keep = np.ones(a.num_units, dtype=bool)
    for gi, heads in removed.items():
        g = _groups(a, "attention heads of ")[gi]
        keep[[g.units[h] for h in heads]] = False
    return keep


def test_heads_physically_removed_vit():
    a = _analyze("vit_encoder")
    keep = _keep_heads(a, {0: [1, 3], 1: [0]})
    pruned, _, _ = check_pruned_equals_masked(a, keep)
    assert _softmax_heads(pruned) == [2, 3]
    shapes = {tuple(t.dims) for t in pruned.graph.initializer}
    assert (32, 3 * 2 * 8) in shapes and (32, 3 * 3 * 8) in shapes  # fused QKV weights: kept heads only
    assert (32, 16) in shapes  # block 1 out_proj (Gemm, transB): 2 heads x 8 dims in
    assert (24, 32) in shapes  # block 2 proj: 3 heads x 8 dims in
    reshapes = [tuple(numpy_value(pruned, n.input[1])) for n in pruned.graph.node if n.op_type == "Reshape"]
    assert (17, 2, 8) in reshapes and (1, 2, 17, 8) in reshapes and (1, 17, 3, 3, 8) in reshapes


def numpy_value(model, name):
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["bert_encoder", "swin_block", "decomposed_ln_encoder", "einsum_attention",
                                  "cosine_attention"])
def test_heads_physically_removed(name):
    a = _analyze(name)
    n_groups = len(EXPECTED[name][0])
    keep = _keep_heads(a, {i: [0] for i in range(n_groups)})
    pruned, _, _ = check_pruned_equals_masked(a, keep)
    assert _softmax_heads(pruned) == [h - 1 for h in EXPECTED[name][0]]


def test_head_dims_mode_keeps_heads_and_removes_dims():
    a = _analyze("bert_encoder", AnalysisOptions("head-dims"))
    assert not _groups(a, "attention heads of ")
    dims = _groups(a, "attention head dims of ")
    assert sorted(g.channels for g in dims) == [8, 8, 8, 8]  # Q·K dims and V dims of each layer
    keep = np.ones(a.num_units, dtype=bool)
    for g in dims:
        keep[g.units[:3]] = False
    pruned, _, _ = check_pruned_equals_masked(a, keep)
    assert _softmax_heads(pruned) == [4, 4]
    shapes = _shapes(pruned)
    qk = [n for n in pruned.graph.node if n.op_type == "MatMul" and shapes.get(n.output[0], [0])[-1:] == [12]
          and len(shapes.get(n.output[0], [])) == 4]
    assert qk and all(shapes[n.input[0]] == [1, 4, 12, 5] for n in qk)


def test_attention_macs_scale_with_heads_and_dims():
    a = _analyze("vit_encoder")
    cm = CostModel(a)
    att = [k for k, c in enumerate(cm.nodes) if c.extra.get("kind") == "attention"]
    assert len(att) == 4  # Q·Kᵀ and attn·V of two blocks
    i, o = cm.alive(None)
    full = cm.per_node("macs", i, o)[att]
    assert np.allclose(full, 1 * 4 * 17 * 17 * 8)
    keep = _keep_heads(a, {0: [0]})
    i, o = cm.alive(keep)
    after = cm.per_node("macs", i, o)[att]
    assert np.allclose(after, [3 * 17 * 17 * 8] * 2 + [4 * 17 * 17 * 8] * 2)
    d = _analyze("vit_encoder", AnalysisOptions("head-dims"))
    cmd = CostModel(d)
    g = _groups(d, "attention head dims of ")[0]
    keep = np.ones(d.num_units, dtype=bool)
    keep[g.units[:2]] = False  # 2 of 8 dims in every head
    i, o = cmd.alive(keep)
    att = [k for k, c in enumerate(cmd.nodes) if c.extra.get("kind") == "attention"]
    assert np.allclose(cmd.per_node("macs", i, o)[att][:2], 4 * 17 * 17 * 6)


def test_prune_api_removes_heads_and_mlp_channels():
    res = onnxmorph.prune(ZOO["vit_encoder"](), target="flops=0.5")
    rep = res.report
    assert rep["verify"]["passed"] and rep["pruned"]["macs"] <= 0.5 * rep["original"]["macs"]
    kept = {g["name"]: (g["kept"], g["channels"]) for g in rep["groups"]}
    assert any(k < c for n, (k, c) in kept.items() if n.startswith("attention heads of "))
    assert any(k < c for n, (k, c) in kept.items() if n.startswith("MLP hidden of "))
    assert rep["analysis"] == {"attention": "heads", "prune_embedding": False}


def test_prune_embedding_is_one_group_through_layernorm():
    for name, width in (("vit_encoder", 32), ("bert_encoder", 32), ("decomposed_ln_encoder", 24)):
        default = _analyze(name)
        assert not _groups(default, "embedding width")
        a = _analyze(name, AnalysisOptions(prune_embedding=True))
        (stream,) = _groups(a, "embedding width")
        assert stream.channels == width
    a = _analyze("bert_encoder", AnalysisOptions(prune_embedding=True))
    (stream,) = _groups(a, "embedding width")
    keep = np.ones(a.num_units, dtype=bool)
    keep[stream.units[::2]] = False
    pruned, _, _ = check_pruned_equals_masked(a, keep)
    shapes = {tuple(t.dims) for t in pruned.graph.initializer}
    assert (16, 16) in shapes  # the token-embedding table keeps 16 of 32 columns
    ops = [n.op_type for n in pruned.graph.node]
    # each LayerNorm normalizes over the original width (zeros for removed channels), exactly as masked
    assert ops.count("Pad") == ops.count("LayerNormalization") == 5


def test_swin_prune_embedding_two_stages():
    a = _analyze("swin_block", AnalysisOptions(prune_embedding=True))
    assert sorted(g.channels for g in _groups(a, "embedding width")) == [16, 32]


def test_attention_off_freezes_heads():
    a = _analyze("vit_encoder", AnalysisOptions("off"))
    assert not _groups(a, "attention ")
    assert any("attention='off'" in g.frozen_reason for g in a.frozen_groups)
    assert sorted(g.channels for g in _groups(a, "MLP hidden of ")) == [40, 48]
    # its MACs still count
    assert CostModel(a).total("macs") == CostModel(_analyze("vit_encoder")).total("macs")


def test_bad_attention_mode():
    with pytest.raises(UsageError):
        AnalysisOptions("everything")


def test_rectangles_default_and_decided_layouts():
    table = ElementTable()
    grid = table.new(12, "x").reshape(3, 4)
    assert not is_rectangular(table, grid)
    tie_slices(table, grid, 0)  # rows are units (whole heads)
    assert is_rectangular(table, grid)
    resolve_rectangles(table, [grid])
    assert len(set(table.roots()[grid.ravel()].tolist())) == 3  # left alone: 3 heads
    other = table.new(12, "y").reshape(3, 4)
    resolve_rectangles(table, [other])  # nobody decided: the default ties the last axis' index
    assert len(set(table.roots()[other.ravel()].tolist())) == 4
    third = table.new(6, "z").reshape(2, 3)
    tie_fibers(table, third, 0)
    assert is_rectangular(table, third) and len(set(table.roots()[third.ravel()].tolist())) == 3


def test_emitted_model_runs_with_fewer_heads_in_onnxruntime():
    """The pruned graph is a plain ONNX model: fewer heads, same interface, runs in ORT."""
    a = _analyze("swin_block")
    keep = _keep_heads(a, {0: [1]})
    pruned = emit_pruned(a, keep)
    g = gs.import_onnx(pruned)
    assert [t.name for t in g.inputs] == ["input"]
    assert _softmax_heads(pruned) == [1]


def test_cli_flags(tmp_path):
    path = tmp_path / "vit.onnx"
    onnx.save(ZOO["vit_encoder"](), path)
    cli = [sys.executable, "-m", "onnxmorph.cli"]
    proc = subprocess.run(cli + ["inspect", str(path), "--json", "--prune-embedding", "--attention", "head-dims"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = [g["name"] for g in json.loads(proc.stdout)["groups"] if g["prunable"]]
    assert any(n.startswith("attention head dims of ") for n in names)
    assert any(n.startswith("embedding width") for n in names)
    proc = subprocess.run(cli + ["prune", str(path), "--attention", "bogus", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "attention" in proc.stderr


def test_round_to_counts_head_width():
    """--round-to 8 keeps channel counts multiples of 8: whole heads of 8 dims already are, so heads
    are still removed one at a time; MLP hidden counts stay multiples of 8."""
    res = onnxmorph.prune(ZOO["vit_encoder"](), target="flops=0.5", round_to=8)
    groups = res.report["groups"]
    heads = [g for g in groups if g["name"].startswith("attention heads of ")]
    assert any(g["kept"] not in (0, g["channels"]) and g["kept"] % 8 != 0 for g in heads)
    assert all(g["kept"] % 8 == 0 for g in groups if g["name"].startswith("MLP hidden of "))
