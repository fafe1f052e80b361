"""Torch-Pruning 1.6.1 baseline rows for tools/bench_accuracy.py (torch lives only in the tool venv).

One row: rebuild the torch module of an ONNX model and load its weights; prune it one-shot with Torch-Pruning's
group-L1 (`GroupMagnitudeImportance(p=1)`) or group-Taylor (`GroupTaylorImportance`) at one uniform per-layer
ratio, found by bisection as the smallest ratio whose Conv+Linear MACs are <= the target fraction; then
fine-tune for `steps` plain SGD steps (lr 0.01, momentum 0.9, batch 32, no weight decay, no augmentation)
with cross-entropy on the labels, or label-free with KL(teacher || student) to the unpruned model (T = 1).
Test accuracy is measured right after the cut and after fine-tuning.

Taylor importance needs a gradient at the cut: cross-entropy on 4 training batches, against the labels, or,
label-free, against the unpruned model's own predictions (its argmax; the KL to itself has no gradient).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo  # noqa: E402
import train_resnet_bn  # noqa: E402

TAYLOR_BATCHES = 4


def fold_bn(module: nn.Module) -> nn.Module:
    """Conv2d + BatchNorm2d pairs inside Sequentials become one Conv2d with a bias (what the exporter folded
    in models/demo_cnn.onnx), so that the module has exactly the ONNX graph's weights."""
    for child in module.children():
        fold_bn(child)
        if isinstance(child, nn.Sequential):
            mods = list(child)
            for i in range(len(mods) - 1):
                if isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
                    c = mods[i]
                    child[i] = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                                         groups=c.groups, bias=True)
                    child[i + 1] = nn.Identity()
    return module


def restore_bn(folded: nn.Module, x: np.ndarray) -> nn.Module:
    """train_demo.DemoCNN with its BatchNorm2d layers, computing the same function as the BN-folded `folded`:
    each BN gets the running mean/var of its conv's output (without the bias) on `x` and the affine
    gamma = sqrt(var + eps), beta = mean + bias, so that eval mode is exact and train mode (batch statistics,
    close to these) starts from nearly the same function. This is the module Torch-Pruning would normally
    be given: the training-time definition, BN and all."""
    model = train_demo.DemoCNN().eval()
    convs = {n: m for n, m in folded.named_modules() if isinstance(m, nn.Conv2d)}
    stats, hooks = {}, []
    for name, conv in convs.items():
        def hook(m, inp, out, name=name):
            z = out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()
            stats[name] = (z.mean(1), z.var(1, unbiased=False))
        hooks.append(conv.register_forward_hook(hook))
    with torch.no_grad():
        folded(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, conv in convs.items():
            target = mods[name]
            target.weight.copy_(conv.weight)
            parent, _, idx = name.rpartition(".")
            bn = mods.get(f"{parent}.{int(idx) + 1}") if idx.isdigit() else None
            if isinstance(bn, nn.BatchNorm2d):  # a folded conv_bn: move the bias and the scale into the BN
                mean, var = stats[name]
                mean = mean - conv.bias.double()
                bn.running_mean.copy_(mean.float())
                bn.running_var.copy_(var.float())
                bn.weight.copy_(torch.sqrt(var + bn.eps).float())
                bn.bias.copy_((mean + conv.bias.double()).float())
            else:
                target.bias.copy_(conv.bias)
        model.fc.weight.copy_(folded.fc.weight)
        model.fc.bias.copy_(folded.fc.bias)
    return model.eval()


def build_torch(kind: str, onnx_path: str, x_train: np.ndarray | None = None) -> nn.Module:
    """The torch module of `onnx_path` with its weights. `demo`: train_demo.DemoCNN with its BatchNorm2d
    layers restored from the folded convs and `x_train` (see restore_bn); `demo-folded`: the same with
    every Conv+BN as one biased Conv2d, exactly the ONNX graph; `resnet_bn`: train_resnet_bn.ResNetBN."""
    if kind in ("demo", "demo-folded"):
        model = train_resnet_bn.load_onnx_weights(fold_bn(train_demo.DemoCNN()), onnx_path).eval()
        return restore_bn(model, x_train) if kind == "demo" else model
    if kind == "resnet_bn":
        return train_resnet_bn.load_onnx_weights(train_resnet_bn.ResNetBN(), onnx_path).eval()
    raise ValueError(f"no torch definition for model kind '{kind}'")


def check_rebuild(model: nn.Module, onnx_path: str, x: np.ndarray) -> float:
    """Max |logit difference| between the rebuilt module and onnxruntime on `x`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        return float(np.abs(model(torch.from_numpy(x)).numpy() - ref).max())


def macs(model: nn.Module) -> int:
    return train_demo.count_macs(model)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return train_demo.evaluate(model, x, y)


def _last_linear(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _importance(criterion: str):
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"unknown Torch-Pruning criterion '{criterion}'")


def cut(model: nn.Module, criterion: str, ratio: float, xb=None, yb=None) -> nn.Module:
    """A pruned copy of `model`: every prunable group loses `ratio` of its channels (the classifier's
    outputs are kept). Taylor needs `xb`, `yb` (lists of batches) for its gradient."""
    m = copy.deepcopy(model).eval()
    example = torch.zeros(1, 1, 16, 16)
    pruner = tp.pruner.BasePruner(m, example, _importance(criterion), pruning_ratio=ratio,
                                  ignored_layers=[_last_linear(m)], global_pruning=False)
    if criterion == "taylor":
        m.zero_grad()
        for xi, yi in zip(xb, yb):
            (F.cross_entropy(m(xi), yi) / len(xb)).backward()
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m


def search_ratio(model: nn.Module, fraction: float, iters: int = 14) -> tuple[float, float]:
    """The smallest uniform per-layer ratio whose MACs are <= `fraction` of the original (L1 cut: the
    channel counts, so the MACs, do not depend on the criterion), and the MAC fraction it gives."""
    full = macs(model)
    lo, hi = 0.0, 0.99
    best = (hi, macs(cut(model, "l1", hi)) / full)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        got = macs(cut(model, "l1", mid)) / full
        if got <= fraction:
            hi, best = mid, (mid, got)
        else:
            lo = mid
    return best


def teacher_logits(teacher: nn.Module, x: np.ndarray) -> torch.Tensor:
    """The unpruned model's logits on the (never augmented) training set, computed once for all rows."""
    teacher.eval()
    with torch.no_grad():
        return torch.cat([teacher(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)])


def finetune(student: nn.Module, teacher: torch.Tensor, x: np.ndarray, y: np.ndarray, labels: bool, steps: int,
             batch: int, lr: float, seed: int) -> list[float]:
    """`steps` SGD steps on random batches (epochs of a seeded permutation), with cross-entropy on `y` or
    KL to the softmax of `teacher` (logits for `x`); returns the loss every 10 steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order, pos, curve = torch.randperm(len(yt), generator=gen), 0, []
    for step in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(yt), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        student.train()
        out = student(xt[idx])
        if labels:
            loss = F.cross_entropy(out, yt[idx])
        else:
            target = F.softmax(teacher[idx], dim=1)
            loss = F.kl_div(F.log_softmax(out, dim=1), target, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            curve.append(round(float(loss.detach()), 5))
    student.eval()
    return curve


class TorchPruningBaseline:
    """Rows for one model: the rebuilt module, its data and a cache of searched ratios."""

    def __init__(self, kind: str, onnx_path: str, x_train, y_train, x_test, y_test, seed: int = 0,
                 threads: int = 1):
        torch.set_num_threads(threads)  # 1 by default: 2-thread torch thrashes on the shared 2-core machine
        torch.manual_seed(seed)
        self.model = build_torch(kind, onnx_path, x_train)
        self.diff = check_rebuild(self.model, onnx_path, x_test)
        if self.diff > 1e-3:
            raise RuntimeError(f"the torch rebuild of {onnx_path} differs from onnxruntime by {self.diff:.3g}")
        self.data = (x_train, y_train, x_test, y_test)
        self.teacher = teacher_logits(self.model, x_train)
        self.seed = seed
        self.ratios: dict[float, tuple[float, float]] = {}

    def row(self, criterion: str, fraction: float, labels: bool, steps: int = 300, batch: int = 32,
            lr: float = 0.01) -> dict:
        x_train, y_train, x_test, y_test = self.data
        t0 = time.perf_counter()
        if fraction not in self.ratios:
            self.ratios[fraction] = search_ratio(self.model, fraction)
        ratio, achieved = self.ratios[fraction]
        t_search = time.perf_counter() - t0
        xb = yb = None
        if criterion == "taylor":
            rng = np.random.default_rng(self.seed)
            idx = [rng.choice(len(y_train), batch, replace=False) for _ in range(TAYLOR_BATCHES)]
            xb = [torch.from_numpy(x_train[i]) for i in idx]
            if labels:
                yb = [torch.from_numpy(y_train[i]) for i in idx]
            else:
                with torch.no_grad():
                    yb = [self.model(xi).argmax(1) for xi in xb]
        torch.manual_seed(self.seed)
        student = cut(self.model, criterion, ratio, xb, yb)
        got = macs(student) / macs(self.model)
        before = accuracy(student, x_test, y_test)
        t1 = time.perf_counter()
        curve = finetune(student, self.teacher, x_train, y_train, labels, steps, batch, lr, self.seed)
        t2 = time.perf_counter()
        kept = [m.out_channels for m in student.modules() if isinstance(m, nn.Conv2d)]
        full = [m.out_channels for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        return {"achieved": round(got, 4), "uniform_ratio": round(ratio, 4),
                "accuracy_after_cut": round(before, 4), "accuracy": round(accuracy(student, x_test, y_test), 4),
                "steps_used": steps, "finetune_loss_curve": curve, "conv_channels_kept": [
                    f"{k}/{f}" for k, f in zip(kept, full)],
                "params": round(sum(p.numel() for p in student.parameters())
                                / sum(p.numel() for p in self.model.parameters()), 4),
                "timings": {"search": round(t_search, 2), "cut": round(t1 - t0 - t_search, 2),
                            "finetune": round(t2 - t1, 2)},
                "torch_pruning": getattr(tp, "__version__", "?")}
