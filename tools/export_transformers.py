#!/usr/bin/env python3
"""Export small transformer encoders written in plain torch to ONNX (random weights).

A developer tool for issue #6 (attention heads, MLP dims, embedding width): it needs torch, which
onnxmorph itself never imports, so run it from the torchvision environment, e.g.

    /work/.venv-tv/bin/python tools/export_transformers.py            # -> /work/zoo/{mini_bert,torch_encoder}.onnx

* ``mini_bert``: a BERT-style encoder as HuggingFace writes it (word/position/token-type embeddings +
  LayerNorm, separate Q/K/V Linear layers, view/permute into heads, ``/ sqrt(d)``, an additive mask
  from ``attention_mask``, softmax, post-norm residuals, GELU MLP, tanh pooler). Inputs
  ``input_ids`` and ``attention_mask`` ([1, 128]), output ``logits``.
* ``torch_encoder``: ``nn.TransformerEncoder`` (pre-norm, fused in_proj, ``batch_first``) over an
  ``nn.Embedding``, mean-pooled into a Linear head. Input ``input_ids``.

Both use the TorchScript exporter (``dynamo=False``), opset 17, static shapes, eval mode; every
norm weight and bias is drawn at random so outputs are not degenerate. The file is checked against
torch's output in ONNX Runtime.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def build(name: str, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class BertLayer(nn.Module):
        def __init__(self, c, heads, hidden):
            super().__init__()
            self.h, self.d = heads, c // heads
            self.q, self.k, self.v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
            self.o, self.ln1 = nn.Linear(c, c), nn.LayerNorm(c, eps=1e-12)
            self.fc1, self.fc2, self.ln2 = nn.Linear(c, hidden), nn.Linear(hidden, c), nn.LayerNorm(c, eps=1e-12)

        def split(self, x):
            b, t, _ = x.shape
            return x.view(b, t, self.h, self.d).permute(0, 2, 1, 3)

        def forward(self, x, mask):
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask
            a = torch.matmul(torch.softmax(s, dim=-1), v).permute(0, 2, 1, 3).contiguous()
            a = a.view(x.shape[0], x.shape[1], -1)
            x = self.ln1(self.o(a) + x)
            return self.ln2(self.fc2(nn.functional.gelu(self.fc1(x))) + x)

    class MiniBert(nn.Module):
        def __init__(self, vocab=1000, c=256, heads=4, hidden=1024, layers=4, t=128, classes=3):
            super().__init__()
            self.word, self.pos, self.token_type = nn.Embedding(vocab, c), nn.Embedding(t, c), nn.Embedding(2, c)
            self.ln = nn.LayerNorm(c, eps=1e-12)
            self.layers = nn.ModuleList(BertLayer(c, heads, hidden) for _ in range(layers))
            self.pool, self.cls = nn.Linear(c, c), nn.Linear(c, classes)
            self.register_buffer("positions", torch.arange(t)[None])

        def forward(self, input_ids, attention_mask):
            x = self.word(input_ids) + self.pos(self.positions) + self.token_type(torch.zeros_like(input_ids))
            x = self.ln(x)
            mask = (1.0 - attention_mask[:, None, None, :]) * -10000.0
            for layer in self.layers:
                x = layer(x, mask)
            return self.cls(torch.tanh(self.pool(x[:, 0])))

    class TorchEncoder(nn.Module):
        def __init__(self, vocab=1000, c=256, heads=8, hidden=1024, layers=4, classes=3):
            super().__init__()
            self.emb = nn.Embedding(vocab, c)
            layer = nn.TransformerEncoderLayer(c, heads, hidden, dropout=0.0, batch_first=True, norm_first=True,
                                               activation="gelu")
            self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(c, classes)

        def forward(self, input_ids):
            return self.head(self.enc(self.emb(input_ids)).mean(dim=1))

    model = {"mini_bert": MiniBert, "torch_encoder": TorchEncoder}[name]().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.05)
    t = 128
    ids = torch.randint(0, 1000, (1, t), generator=gen)
    if name == "mini_bert":
        mask = torch.ones(1, t)
        mask[:, t - 16:] = 0
        return model, (ids, mask), ["input_ids", "attention_mask"]
    return model, (ids,), ["input_ids"]


def export(name: str, out_dir: Path) -> Path:
    import onnx
    import onnxruntime as ort
    import torch

    model, args, names = build(name)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused encoder-layer kernel has no ONNX export
    path = out_dir / f"{name}.onnx"
    with torch.no_grad():
        ref = model(*args).numpy()
        torch.onnx.export(model, args, str(path), input_names=names, output_names=["logits"], opset_version=17,
                          dynamo=False, do_constant_folding=True)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    assert np.allclose(got, ref, atol=1e-4, rtol=1e-3), np.abs(got - ref).max()
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB), ops: {', '.join(ops)}")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/work/zoo")
    ap.add_argument("--models", default="mini_bert,torch_encoder")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        export(name.strip(), out)


if __name__ == "__main__":
    main()
