#!/usr/bin/env python3
"""Fine-tune step time: onnxmorph's ONNX Runtime training engine vs PyTorch eager, same model and batch.

Run with the torch tool venv (it imports torch; onnxmorph's own training path stays torch-free). It
imports onnxmorph from this checkout, so that venv also needs onnxmorph's pure-Python dependencies
(``/work/.venv-torch/bin/pip install onnx-graphsurgeon==0.6.1 typer``)::

    /work/.venv-torch/bin/python tools/bench_train_speed.py [--threads 1 2] [--steps 50] [--json out.json]

What is timed, per thread count n (ORT intra-op threads = torch.set_num_threads = n; inter-op 1):

* **ORT gated** -- exactly what `onnxmorph.prune` runs when it fine-tunes: the training graph built by
  `onnxmorph.train.loop.Trainer` for `FixedMask()` (all weights trainable, the per-unit 0/1 gate `Mul`s
  of the masked model in place, unit mask of ones), label-free KL distillation (T=4) to the original
  model's logits, AdamW. One step = forward + backward + optimizer step + gradient reset.
* **ORT plain** -- the same loss/optimizer on the same lowered graph without the gate `Mul`s (the
  engine's overhead alone).
* **torch** -- the PyTorch twin: `DemoCNN` from tools/train_demo.py with each Conv+BN fused (the ONNX
  export has BN folded into the convs, and onnxmorph trains BN with its stored statistics), loaded with the
  ONNX weights when they map one-to-one (checked against onnxruntime inference), same KL(T=4) loss on the
  same precomputed teacher probabilities, `torch.optim.AdamW` (same defaults as ORT's AdamW). One step =
  zero_grad + forward + loss + backward + step.

Batches (32 samples of models/demo_cnn.npz) are prepared before timing. After a warm-up, ORT and torch
steps are interleaved in blocks (ORT gated, ORT plain, torch, repeat) so drift in machine load hits all
alike; the first table gives the median wall-clock ms/step of each (and the 10th percentile) and the ratio
ORT/torch, the second the median process CPU time per step, which on a shared machine is the less
load-sensitive figure at 1 thread (at 2 threads it adds up both threads' work, spinning included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import onnxmorph  # noqa: E402
from onnxmorph.methods.trained import FixedMask, Instrumented  # noqa: E402
from onnxmorph.train.graph import REG_STRENGTH, REG_WEIGHTS, UNIT_MASK  # noqa: E402
from onnxmorph.train.loop import Trainer  # noqa: E402
from onnxmorph.train.ortsupport import training_modules  # noqa: E402

TEMPERATURE = 4.0


class NoGates(FixedMask):
    """FixedMask without the gate Muls: the plain model under the same loss and optimizer."""

    name = "no-gates"

    def instrument(self, graph, analysis, b):
        return Instrumented({}, b.const(np.zeros(analysis.num_units)))


# ---------------------------------------------------------------------------- ORT
class OrtStepper:
    """A Trainer's artifacts, reopened with a given thread count."""

    def __init__(self, trainer: Trainer, threads: int, lr: float):
        import onnxruntime as ort

        _, api, _ = training_modules()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        d = trainer.session.dir
        self.state = api.CheckpointState.load_checkpoint(str(d / "checkpoint"))
        self.module = api.Module(str(d / "training_model.onnx"), self.state, str(d / "eval_model.onnx"),
                                 session_options=so)
        self.optimizer = api.Optimizer(str(d / "optimizer_model.onnx"), self.module)
        self.optimizer.set_learning_rate(lr)
        self.names = list(self.module.input_names())
        self.module.train()

    def step(self, args) -> float:
        outs = self.module(*args)
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return float(outs[0])


def ort_feeds(trainer: Trainer, batches: list[np.ndarray], teacher_p, teacher_logp, idx_list) -> list[list]:
    u = trainer.analysis.num_units
    names = list(trainer.session.input_names)
    out = []
    for x, idx in zip(batches, idx_list):
        feeds = {trainer.analysis.loaded.inputs[0].name: x, REG_WEIGHTS: np.zeros(u, np.float32),
                 REG_STRENGTH: np.array(0.0, np.float32), UNIT_MASK: np.ones(u, np.float32)}
        for key, tname in trainer.tg.targets.items():
            feeds[tname] = teacher_logp[idx] if key.endswith("::logp") else teacher_p[idx]
        out.append([feeds[n] for n in names])
    return out


# ---------------------------------------------------------------------------- torch
def fused_twin(onnx_path: Path):
    """DemoCNN with Conv+BN fused; ONNX weights loaded if they map one-to-one. Returns (model, loaded?)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from train_demo import DemoCNN

    torch.manual_seed(0)
    model = DemoCNN().eval()

    def fuse(module):
        for name, child in module.named_children():
            if isinstance(child, nn.Sequential) and len(child) >= 2 and isinstance(child[0], nn.Conv2d) \
                    and isinstance(child[1], nn.BatchNorm2d):
                child[1].running_var.uniform_(0.5, 2.0)  # not identity stats: fusion does real work
                layers = [fuse_conv_bn_eval(child[0], child[1])] + list(child[2:])
                setattr(module, name, nn.Sequential(*layers))
            else:
                fuse(child)

    fuse(model)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    m = onnx.load(str(onnx_path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    layers = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    loaded = len(layers) == len(convs) and all(
        inits.get(n.input[1]) is not None and inits[n.input[1]].shape == tuple(c.weight.shape)
        for n, c in zip(layers, convs))
    if loaded:
        with torch.no_grad():
            for n, c in zip(layers, convs):
                c.weight.copy_(torch.from_numpy(np.array(inits[n.input[1]])))
                if len(n.input) > 2 and n.input[2] in inits:
                    c.bias.copy_(torch.from_numpy(np.array(inits[n.input[2]])))
    for p in model.parameters():
        p.requires_grad_(True)
    return model, loaded


def torch_step(model, opt, x, p, logp) -> float:
    opt.zero_grad(set_to_none=True)
    logq = F.log_softmax(model(x) / TEMPERATURE, dim=1)
    loss = (p * (logp - logq)).sum() * (TEMPERATURE ** 2 / x.shape[0])
    loss.backward()
    opt.step()
    return float(loss.detach())


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/demo_cnn.onnx"))
    ap.add_argument("--data", default=str(ROOT / "models/demo_cnn.npz"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50, help="measured steps per engine and thread count")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--block", type=int, default=5, help="steps per interleaved block")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    torch.set_num_interop_threads(1)
    data = dict(np.load(args.data))
    analysis = onnxmorph.inspect(args.model)
    t0 = time.perf_counter()
    gated = Trainer(FixedMask(), analysis, data=data, batch_size=args.batch_size, lr=args.lr, seed=0)
    plain = Trainer(NoGates(), analysis, data=data, batch_size=args.batch_size, lr=args.lr, seed=0)
    build_s = time.perf_counter() - t0
    if gated.micro != args.batch_size:
        print(f"note: ORT trains with micro-batch {gated.micro} (accumulating); the comparison is not per batch")

    # teacher probabilities from the original model (as the Trainer computes them) and fixed batches
    logit_key = next(k for k in gated.targets if not k.endswith("::logp"))
    teacher_p, teacher_logp = gated.targets[logit_key], gated.targets[f"{logit_key}::logp"]
    x_all = gated.inputs[analysis.loaded.inputs[0].name]
    rng = np.random.default_rng(0)
    n_batches = 16
    idx_list = [rng.choice(len(x_all), args.batch_size, replace=False) for _ in range(n_batches)]
    batches = [np.ascontiguousarray(x_all[i]) for i in idx_list]
    feeds_gated = ort_feeds(gated, batches, teacher_p, teacher_logp, idx_list)
    feeds_plain = ort_feeds(plain, batches, teacher_p, teacher_logp, idx_list)
    tx = [torch.from_numpy(b) for b in batches]
    tp = [torch.from_numpy(teacher_p[i]) for i in idx_list]
    tlogp = [torch.from_numpy(teacher_logp[i]) for i in idx_list]

    model, loaded = fused_twin(Path(args.model))
    with torch.no_grad():
        err = float(np.abs(model(tx[0]).numpy() - gated_logits(args.model, batches[0])).max())
    print(f"torch twin: {'ONNX weights loaded' if loaded else 'random weights'}; max |torch - ORT| on a batch "
          f"= {err:.2e}; ORT artifacts built in {build_s:.1f} s")

    rows = []
    for n in args.threads:
        torch.set_num_threads(n)
        engines = {"ort_gated": OrtStepper(gated, n, args.lr), "ort_plain": OrtStepper(plain, n, args.lr)}
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        runners = {
            "ort_gated": lambda i: engines["ort_gated"].step(feeds_gated[i % n_batches]),
            "ort_plain": lambda i: engines["ort_plain"].step(feeds_plain[i % n_batches]),
            "torch": lambda i: torch_step(model, opt, tx[i % n_batches], tp[i % n_batches],
                                          tlogp[i % n_batches]),
        }
        for run in runners.values():
            for i in range(args.warmup):
                run(i)
        times = {k: [] for k in runners}
        cpu = {k: [] for k in runners}
        i = 0
        while len(times["torch"]) < args.steps:
            for k, run in runners.items():
                for j in range(min(args.block, args.steps - len(times[k]))):
                    c, t = time.process_time(), time.perf_counter()
                    run(i + j)
                    times[k].append(1e3 * (time.perf_counter() - t))
                    cpu[k].append(1e3 * (time.process_time() - c))
            i += args.block
        med = {k: statistics.median(v) for k, v in times.items()}
        cmed = {k: statistics.median(v) for k, v in cpu.items()}
        row = {"threads": n, **{f"{k}_ms": round(v, 3) for k, v in med.items()},
               **{f"{k}_p10_ms": round(float(np.percentile(times[k], 10)), 3) for k in times},
               **{f"{k}_cpu_ms": round(v, 3) for k, v in cmed.items()},
               "ratio_gated": round(med["ort_gated"] / med["torch"], 3),
               "ratio_plain": round(med["ort_plain"] / med["torch"], 3),
               "cpu_ratio_gated": round(cmed["ort_gated"] / cmed["torch"], 3),
               "cpu_ratio_plain": round(cmed["ort_plain"] / cmed["torch"], 3), "steps": args.steps}
        rows.append(row)

    print()
    print(f"batch {args.batch_size}, median of {args.steps} steps after {args.warmup} warm-up (ms/step; p10 in "
          f"brackets)")
    print(f"{'threads':>7} | {'ORT gated':>16} | {'ORT plain':>16} | {'torch':>16} | {'gated/torch':>11} | "
          f"{'plain/torch':>11}")
    print("-" * 94)
    for r in rows:
        cell = lambda k: f"{r[k + '_ms']:7.2f} ({r[k + '_p10_ms']:6.2f})"  # noqa: E731
        print(f"{r['threads']:>7} | {cell('ort_gated'):>16} | {cell('ort_plain'):>16} | {cell('torch'):>16} | "
              f"{r['ratio_gated']:>11.2f} | {r['ratio_plain']:>11.2f}")
    print(f"\nprocess CPU time per step (median; all threads of this process, so with n > 1 it counts the "
          f"worker threads' work and spinning -- at 1 thread it is the load-independent cost)")
    print(f"{'threads':>7} | {'ORT gated':>9} | {'ORT plain':>9} | {'torch':>9} | {'gated/torch':>11} | "
          f"{'plain/torch':>11}")
    print("-" * 70)
    for r in rows:
        print(f"{r['threads']:>7} | {r['ort_gated_cpu_ms']:9.2f} | {r['ort_plain_cpu_ms']:9.2f} | "
              f"{r['torch_cpu_ms']:9.2f} | {r['cpu_ratio_gated']:>11.2f} | {r['cpu_ratio_plain']:>11.2f}")
    result = {"model": args.model, "batch_size": args.batch_size, "rows": rows, "torch_weights_from_onnx": loaded,
              "torch_vs_ort_max_abs_diff": err, "torch": torch.__version__,
              "onnxruntime": __import__("onnxruntime").__version__, "python": platform.python_version(),
              "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}
    print(f"\ntorch {result['torch']}, onnxruntime {result['onnxruntime']}, {result['cpus']} CPUs, "
          f"load average {', '.join(f'{v:.2f}' for v in result['loadavg'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    gated.close()
    plain.close()
    return 0


def gated_logits(model_path: str, x: np.ndarray) -> np.ndarray:
    from onnxmorph.runtime import make_session

    return make_session(onnx.load(model_path), threads=1).run(None, {"input": x})[0]


if __name__ == "__main__":
    sys.exit(main())
