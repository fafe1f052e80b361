#!/usr/bin/env python3
"""Train and export the shipped demo model (models/demo_cnn.onnx).

This is a *tool*, not part of onnxmorph's runtime: it is the only place in the
repository that imports torch.  It needs torch, scikit-learn, onnx<1.18,
onnxruntime and numpy, e.g.::

    python3 -m venv /work/.venv-torch
    /work/.venv-torch/bin/pip install torch==2.13.0 scikit-learn "onnx<1.18" \
        onnxruntime-training-cpu==1.19.2 numpy
    /work/.venv-torch/bin/python tools/train_demo.py

Data: scikit-learn's bundled ``load_digits`` (8x8 grayscale digits, 1797
samples, no download), upsampled bilinearly to 16x16, normalised with the
train-split mean/std, float32 [N,1,16,16].  Deterministic split with seed 0:
1300 train / 497 test.

Model: a small CNN (~2.3 M MACs) chosen to exercise many channel-pruning
patterns: a plain stem, a ResNet basic block (residual Add), a MobileNetV2
inverted residual with stride 2 and squeeze-excitation (GlobalAveragePool ->
1x1 -> ReLU -> 1x1 -> Sigmoid -> Mul), a MobileNetV3-style inverted residual
with HardSwish and a residual Add, a two-branch (3x3 || 1x1) Concat block, a
1x1 head, global average pooling, Flatten and a Linear classifier.

Outputs (relative to the repository root, or --out-dir):
    models/demo_cnn.onnx       opset 17, ir_version <= 9, dynamic batch
    models/demo_cnn.npz        input float32 [1300,1,16,16], labels int64 [1300]
    models/demo_cnn_test.npz   input float32 [497,1,16,16],  labels int64 [497]

The npz files are written with np.savez_compressed (np.load reads them as usual).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0
N_TEST = 497
EPOCHS = 30
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def load_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0          # [1797, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)                   # [1797]
    xt = torch.from_numpy(x)[:, None]                    # [N, 1, 8, 8]
    xt = F.interpolate(xt, size=(16, 16), mode="bilinear", align_corners=False)
    x = xt.numpy().astype(np.float32)                    # [N, 1, 16, 16]

    perm = np.random.default_rng(SEED).permutation(len(y))
    test_idx, train_idx = perm[:N_TEST], perm[N_TEST:]
    x_train, y_train = x[train_idx], y[train_idx]
    x_test, y_test = x[test_idx], y[test_idx]

    mean = float(x_train.mean())
    std = float(x_train.std())
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    return (np.ascontiguousarray(x_train), y_train,
            np.ascontiguousarray(x_test), y_test, mean, std)


# ----------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------
def conv_bn(cin, cout, k, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = conv_bn(c, c, 3, act=nn.ReLU)
        self.conv2 = conv_bn(c, c, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + x)


class SqueezeExcite(nn.Module):
    """GlobalAvgPool -> 1x1 (reduce) -> ReLU -> 1x1 (expand) -> Sigmoid -> Mul."""

    def __init__(self, c, r):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, r, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(r, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: 1x1 expand, depthwise 3x3, optional SE, 1x1 project."""

    def __init__(self, cin, cexp, cout, stride, act, se_ch=0):
        super().__init__()
        self.expand = conv_bn(cin, cexp, 1, act=act)
        self.dw = conv_bn(cexp, cexp, 3, stride=stride, groups=cexp, act=act)
        self.se = SqueezeExcite(cexp, se_ch) if se_ch else nn.Identity()
        self.project = conv_bn(cexp, cout, 1)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.use_res else y


class ConcatBlock(nn.Module):
    """Two parallel branches (3x3 and 1x1) concatenated on channels, then 1x1."""

    def __init__(self, cin, cb, cout):
        super().__init__()
        self.b3 = conv_bn(cin, cb, 3, act=nn.ReLU)
        self.b1 = conv_bn(cin, cb, 1, act=nn.ReLU)
        self.fuse = conv_bn(2 * cb, cout, 1, act=nn.ReLU)

    def forward(self, x):
        return self.fuse(torch.cat([self.b3(x), self.b1(x)], dim=1))


class DemoCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv_bn(1, 16, 3, act=nn.ReLU)                          # 16x16x16
        self.res = BasicBlock(16)                                           # 16x16x16
        self.ir1 = InvertedResidual(16, 48, 24, 2, nn.ReLU6, se_ch=12)      # 24x8x8
        self.ir2 = InvertedResidual(24, 72, 24, 1, nn.Hardswish)            # 24x8x8 (+res)
        self.cat = ConcatBlock(24, 16, 32)                                  # 32x8x8
        self.head = conv_bn(32, 64, 1, act=nn.ReLU)                         # 64x8x8
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.res(x)
        x = self.ir1(x)
        x = self.ir2(x)
        x = self.cat(x)
        x = self.head(x)
        return self.fc(self.flatten(self.pool(x)))


def count_macs(model, shape=(1, 1, 16, 16)):
    """MACs of Conv2d and Linear layers (multiply-accumulates, batch 1)."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def lin_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model.eval()
        model(torch.zeros(shape))
    for h in hooks:
        h.remove()
    return total


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------
def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def evaluate(model, x, y, batch=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            logits = model(torch.from_numpy(x[i:i + batch]))
            correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(y)


def augment(xb, gen):
    """Random +-1 pixel shifts (train only), deterministic via `gen`."""
    n = xb.shape[0]
    pad = F.pad(xb, (1, 1, 1, 1), mode="replicate")
    dx = torch.randint(0, 3, (n,), generator=gen)
    dy = torch.randint(0, 3, (n,), generator=gen)
    out = torch.empty_like(xb)
    for sy in range(3):
        for sx in range(3):
            sel = (dy == sy) & (dx == sx)
            out[sel] = pad[sel, :, sy:sy + 16, sx:sx + 16]
    return out


def train(model, x_train, y_train, x_test, y_test, epochs):
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(y_train) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, epochs=epochs, steps_per_epoch=steps_per_epoch)
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        tot_loss = 0.0
        for i in range(0, len(yt), BATCH):
            idx = perm[i:i + BATCH]
            xb = augment(xt[idx], gen)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
        if ep % 5 == 4 or ep == epochs - 1:
            print(f"epoch {ep + 1:3d}/{epochs}  loss {tot_loss / len(yt):.4f}  "
                  f"test acc {evaluate(model, x_test, y_test):.4f}", flush=True)


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------
def export_onnx(model, path, mean, std):
    import onnx

    model.eval()
    dummy = torch.zeros(1, 1, 16, 16)
    torch.onnx.export(
        model, (dummy,), path,
        dynamo=False,
        opset_version=17,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load(path)
    if m.ir_version > 9:
        m.ir_version = 9
    m.producer_name = "onnxmorph-tools-train_demo"
    m.doc_string = ("Demo CNN for onnxmorph, trained on sklearn load_digits upsampled to "
                    "16x16; input normalised as (x/16 - mean)/std.")
    for k, v in (("input_mean", f"{mean:.8f}"), ("input_std", f"{std:.8f}"),
                 ("dataset", "sklearn.datasets.load_digits 8x8->16x16 bilinear")):
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return m


def ort_accuracy(path, x, y):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(1) == y).mean()), logits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out-dir", default=os.path.join(root, "models"))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)

    t0 = time.time()
    torch.set_num_threads(2)
    seed_everything(SEED)

    x_train, y_train, x_test, y_test, mean, std = load_data()
    print(f"data: train {x_train.shape} test {x_test.shape}  mean {mean:.4f} std {std:.4f}")

    model = DemoCNN()
    n_params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model)
    print(f"model: {n_params} parameters, {macs} MACs ({macs / 1e6:.2f} M) per image")

    train(model, x_train, y_train, x_test, y_test, args.epochs)
    model.eval()
    acc_train = evaluate(model, x_train, y_train)
    acc_test = evaluate(model, x_test, y_test)
    print(f"torch: train acc {acc_train:.4f}  test acc {acc_test:.4f}")

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "demo_cnn.onnx")
    m = export_onnx(model, onnx_path, mean, std)
    np.savez_compressed(os.path.join(args.out_dir, "demo_cnn.npz"),
                        input=x_train, labels=y_train)
    np.savez_compressed(os.path.join(args.out_dir, "demo_cnn_test.npz"),
                        input=x_test, labels=y_test)

    ort_train, _ = ort_accuracy(onnx_path, x_train, y_train)
    ort_test, ort_logits = ort_accuracy(onnx_path, x_test, y_test)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    max_diff = float(np.abs(torch_logits - ort_logits).max())
    print(f"onnxruntime: train acc {ort_train:.4f}  test acc {ort_test:.4f}  "
          f"max |logit diff| vs torch {max_diff:.2e}")

    ops = Counter(n.op_type for n in m.graph.node)
    print(f"onnx: ir_version {m.ir_version}, opset "
          f"{[(o.domain or 'ai.onnx', o.version) for o in m.opset_import]}, "
          f"{len(m.graph.node)} nodes")
    for op, c in sorted(ops.items()):
        print(f"  {op:20s} {c}")
    for name in ("demo_cnn.onnx", "demo_cnn.npz", "demo_cnn_test.npz"):
        p = os.path.join(args.out_dir, name)
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")
    print(f"total time {time.time() - t0:.1f} s")

    ok = True
    if acc_test < 0.95:
        print("ERROR: torch test accuracy below 0.95", file=sys.stderr)
        ok = False
    if abs(ort_test - acc_test) > 1e-9 or abs(ort_train - acc_train) > 1e-9:
        print("ERROR: onnxruntime and torch accuracies disagree", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
