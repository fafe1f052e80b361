#!/usr/bin/env python3
"""Train and export a ResNet-style digits CNN that KEEPS BatchNormalization nodes (models/resnet_bn.onnx).

A tool, not part of onnxmorph's runtime (torch lives only in tool venvs)::

    python3 -m venv .venv && .venv/bin/pip install --find-links /opt/wheels torch==2.13.0 scikit-learn \\
        && .venv/bin/pip install -e ".[test,plot]"
    nice -n 10 .venv/bin/python tools/train_resnet_bn.py

Data: exactly tools/train_demo.py's split and normalisation (sklearn digits 8x8 -> 16x16 bilinear, seed 0,
1300 train / 497 test, train-split mean/std), so models/demo_cnn.npz and models/demo_cnn_test.npz are this
model's data too; the tool checks that they match before it writes anything and does not write copies.

Model (ResNetBN, ~21.6 M MACs, ~0.5 M parameters): stem conv3x3 1->32 + BN + ReLU; stage 1: two basic
blocks at 32 channels, 16x16; stage 2: two basic blocks at 64 channels, 8x8 (the first with stride 2 and a
1x1 conv + BN shortcut); stage 3: one basic block at 128 channels, 4x4 (stride 2, 1x1 shortcut); global
average pool, Linear 128 -> 10. Every conv is followed by a BatchNorm2d, and the export keeps them as
BatchNormalization nodes (TrainingMode.PRESERVE on a model in eval mode: no Conv+BN folding).

Torch-Pruning's baseline (tools/tp_baseline.py) rebuilds this module with `ResNetBN()` and loads the weights
back from the ONNX file (`load_onnx_weights`), so nothing torch-specific is committed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo  # noqa: E402  (data split, augmentation, training loop, MAC count)

EPOCHS = 20


class Block(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + shortcut (identity or 1x1 conv-BN), ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNetBN(nn.Module):
    def __init__(self, num_classes=10, widths=(32, 64, 128), blocks=(2, 2, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(Block(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def load_onnx_weights(model: nn.Module, onnx_path: str) -> nn.Module:
    """Copy an exported model's weights back into `model` (same architecture): Conv/BatchNormalization/Gemm
    nodes in graph order are matched with the module's Conv2d/BatchNorm2d/Linear in definition order."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(onnx_path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    nodes = {op: [n for n in m.graph.node if n.op_type == op] for op in ("Conv", "BatchNormalization", "Gemm")}
    mods = {"Conv": [x for x in model.modules() if isinstance(x, nn.Conv2d)],
            "BatchNormalization": [x for x in model.modules() if isinstance(x, nn.BatchNorm2d)],
            "Gemm": [x for x in model.modules() if isinstance(x, nn.Linear)]}
    for op in nodes:
        if len(nodes[op]) != len(mods[op]):
            raise ValueError(f"{onnx_path}: {len(nodes[op])} {op} nodes but {len(mods[op])} matching modules")
    with torch.no_grad():
        for node, mod in zip(nodes["Conv"] + nodes["Gemm"], mods["Conv"] + mods["Gemm"]):
            w = inits[node.input[1]]
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
                w = w.T
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            if len(node.input) > 2:
                if mod.bias is None:
                    raise ValueError(f"{node.name} has a bias but its module has none")
                mod.bias.copy_(torch.from_numpy(inits[node.input[2]]))
        for node, mod in zip(nodes["BatchNormalization"], mods["BatchNormalization"]):
            scale, bias, mean, var = (torch.from_numpy(inits[n]) for n in node.input[1:5])
            mod.weight.copy_(scale)
            mod.bias.copy_(bias)
            mod.running_mean.copy_(mean)
            mod.running_var.copy_(var)
            mod.eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    return model


def export_onnx(model, path, mean, std):
    import onnx

    model.eval()
    torch.onnx.export(
        model, (torch.zeros(1, 1, 16, 16),), path, dynamo=False, opset_version=17,
        training=torch.onnx.TrainingMode.PRESERVE,  # eval model, but no Conv+BN folding
        do_constant_folding=True, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(path)
    # The exporter shares equal initializers through Identity nodes (e.g. two BN biases): give each
    # consumer its own initializer so that every weight is a plain constant of its node.
    inits = {i.name: i for i in m.graph.initializer}
    for node in [n for n in m.graph.node if n.op_type == "Identity" and n.input[0] in inits]:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        m.graph.initializer.append(copy)
        m.graph.node.remove(node)
    m.ir_version = min(m.ir_version, 9)
    m.producer_name = "onnxmorph-tools-train_resnet_bn"
    m.doc_string = ("ResNet-style CNN with BatchNormalization nodes, trained on sklearn load_digits upsampled to "
                    "16x16; input normalised as (x/16 - mean)/std (data: models/demo_cnn*.npz).")
    for k, v in (("input_mean", f"{mean:.8f}"), ("input_std", f"{std:.8f}"),
                 ("dataset", "sklearn.datasets.load_digits 8x8->16x16 bilinear")):
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--out", default=str(root / "models/resnet_bn.onnx"))
    ap.add_argument("--data-dir", default=str(root / "models"), help="where demo_cnn.npz / demo_cnn_test.npz are")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(2)
    train_demo.seed_everything(train_demo.SEED)
    x_train, y_train, x_test, y_test, mean, std = train_demo.load_data()
    for name, x, y in (("demo_cnn.npz", x_train, y_train), ("demo_cnn_test.npz", x_test, y_test)):
        saved = np.load(os.path.join(args.data_dir, name))
        if not (np.array_equal(saved["labels"], y) and np.allclose(saved["input"], x, atol=1e-6)):
            print(f"ERROR: {name} is not train_demo.py's split: regenerate it first", file=sys.stderr)
            return 1
    print(f"data: train {x_train.shape} test {x_test.shape} (== models/demo_cnn*.npz)")

    model = ResNetBN()
    macs = train_demo.count_macs(model)
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters, {macs / 1e6:.2f} M MACs per image")
    train_demo.train(model, x_train, y_train, x_test, y_test, args.epochs)
    model.eval()
    acc_test = train_demo.evaluate(model, x_test, y_test)
    print(f"torch: train acc {train_demo.evaluate(model, x_train, y_train):.4f}  test acc {acc_test:.4f}")

    m = export_onnx(model, args.out, mean, std)
    ort_test, ort_logits = train_demo.ort_accuracy(args.out, x_test, y_test)
    with torch.no_grad():
        diff = float(np.abs(model(torch.from_numpy(x_test)).numpy() - ort_logits).max())
    rebuilt = load_onnx_weights(ResNetBN(), args.out).eval()
    with torch.no_grad():
        diff_rebuilt = float(np.abs(rebuilt(torch.from_numpy(x_test)).numpy() - ort_logits).max())
    print(f"onnxruntime: test acc {ort_test:.4f}; max |logit diff| vs torch {diff:.2e}, "
          f"vs the module rebuilt from the ONNX weights {diff_rebuilt:.2e}")
    ops = Counter(n.op_type for n in m.graph.node)
    print("onnx ops: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes); total time {time.time() - t0:.0f} s")
    ok = acc_test >= 0.98 and abs(ort_test - acc_test) < 1e-9 and diff_rebuilt < 1e-4 and ops["BatchNormalization"]
    if not ok:
        print("ERROR: accuracy < 0.98, ORT/torch disagree, no BatchNormalization kept, or the rebuild differs",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
