#!/usr/bin/env python3
"""Fine-tune step time and peak memory: onnxmorph's engine vs onnxruntime-training vs PyTorch eager.

The three cannot share a process (onnxruntime-training replaces the `onnxruntime` module; torch stays
out of onnxmorph's environments), so each runs in a worker process of its own venv, and this driver
interleaves them: blocks of steps go round the three workers in turn, so drift in machine load hits
all alike. Run it with any python::

    python tools/bench_train_speed.py --onnxmorph-python .venv/bin/python \\
        --ort-python .venv-ort/bin/python --torch-python .venv-torch/bin/python \\
        [--models demo resnet26m vit] [--threads 1 2] [--steps 30] [--json out.json]

(.venv: current onnxruntime + onnxmorph; .venv-ort: onnxruntime-training-cpu 1.19.2 + onnx<1.18 +
onnxmorph; .venv-torch: torch + onnx + onnxmorph's pure-Python deps; see docs/BENCHMARKS.md.)

Models: *demo* = models/demo_cnn.onnx at batch 32 (torch twin: tools/train_demo.py's DemoCNN with
Conv+BN fused, loaded with the ONNX weights); *resnet26m* = a residual CNN (16/32/64 channels, two
basic blocks per stage, 3x32x32 input, ~27 M MACs per sample) at batch 64; *vit* = a ViT-style
encoder (4x4 patches of 32x32, width 64, 4 heads, 2 pre-norm blocks, MLP 128) at batch 32. The last
two are defined here in torch and exported to ONNX (opset 17), so both sides hold the same weights.

One step = forward + KL distillation loss (T=4, fixed teacher probabilities) + backward + AdamW step,
all weights trainable. ONNX engines train `onnxmorph.train.loop.Trainer`'s graph for `FixedMask()`
(what `prune` runs in recovery: gates in place, unit mask of ones); BatchNorm trains with its stored
statistics on all three (torch in eval mode). Each worker times its steps (wall and process CPU time)
and reports its peak RSS above the RSS it had before building its session.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("ONNXMORPH_BENCH_CACHE", "/work/cache/bench_train"))
TEMPERATURE = 4.0
BATCH = {"demo": 32, "resnet26m": 64, "vit": 32}
INPUT = {"demo": (1, 16, 16), "resnet26m": (3, 32, 32), "vit": (3, 32, 32)}
CLASSES = 10
N_BATCHES = 4


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_path(name: str) -> Path:
    return ROOT / "models" / "demo_cnn.onnx" if name == "demo" else CACHE / f"{name}.onnx"


def batches(name: str):
    """Fixed inputs and teacher probabilities, identical in every worker."""
    import numpy as np

    rng = np.random.default_rng(0)
    b = BATCH[name]
    if name == "demo":
        data = np.load(ROOT / "models" / "demo_cnn.npz")["input"]
        xs = [data[rng.choice(len(data), b, replace=False)] for _ in range(N_BATCHES)]
    else:
        xs = [rng.standard_normal((b, *INPUT[name])).astype(np.float32) for _ in range(N_BATCHES)]
    ps = []
    for _ in range(N_BATCHES):
        z = rng.standard_normal((b, CLASSES))
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        ps.append(p.astype(np.float32))
    return xs, ps


# ------------------------------------------------------------------------------------------ torch side
def torch_models():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
            self.c2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.down = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.c2(self.c1(x)) + (x if self.down is None else self.down(x)))

    class ResNet26M(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            layers, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, CLASSES))

        def forward(self, x):
            return self.head(self.layers(self.stem(x)))

    class EncoderBlock(nn.Module):
        def __init__(self, dim, heads, hidden):
            super().__init__()
            self.heads = heads
            self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(self.n1(x)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, c))
            return x + self.mlp(self.n2(x))

    class ViT(nn.Module):
        def __init__(self, dim=64, heads=4, hidden=128, depth=2):
            super().__init__()
            import torch

            self.patch = nn.Conv2d(3, dim, 4, 4)
            self.pos = nn.Parameter(torch.randn(1, 64, dim) * 0.02)
            self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, hidden) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.fc = nn.Linear(dim, CLASSES)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
            return self.fc(self.norm(self.blocks(x)).mean(1))

    return {"resnet26m": ResNet26M, "vit": ViT}


def torch_model(name: str):
    import numpy as np
    import torch

    torch.manual_seed(0)
    if name == "demo":
        sys.path.insert(0, str(ROOT / "tools"))
        from torch.nn.utils.fusion import fuse_conv_bn_eval
        from train_demo import DemoCNN

        import onnx

        model = DemoCNN().eval()

        def fuse(module):
            for key, child in module.named_children():
                if isinstance(child, torch.nn.Sequential) and len(child) >= 2 and \
                        isinstance(child[0], torch.nn.Conv2d) and isinstance(child[1], torch.nn.BatchNorm2d):
                    setattr(module, key, torch.nn.Sequential(fuse_conv_bn_eval(child[0], child[1]), *child[2:]))
                else:
                    fuse(child)

        fuse(model)
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        proto = onnx.load(str(model_path("demo")))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
        with torch.no_grad():
            for n, c in zip(nodes, layers):
                c.weight.copy_(torch.from_numpy(np.array(inits[n.input[1]])))
                if len(n.input) > 2 and n.input[2] in inits:
                    c.bias.copy_(torch.from_numpy(np.array(inits[n.input[2]])))
        return model
    model = torch_models()[name]().eval()
    for m in model.modules():  # non-trivial stored statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.2, 0.2)
    return model


def export(name: str) -> None:
    import torch

    path = model_path(name)
    if path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    model = torch_model(name)
    x = torch.zeros((BATCH[name], *INPUT[name]))
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


class TorchWorker:
    def __init__(self, name: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        self.torch = torch
        xs, ps = batches(name)
        self.xs = [torch.from_numpy(x) for x in xs]
        self.ps = [torch.from_numpy(p) for p in ps]
        self.logps = [torch.log(p) for p in self.ps]
        self.base = rss_mb()
        self.model = torch_model(name)  # eval(): BatchNorm with its stored statistics, as onnxmorph trains it
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.0)

    def step(self, i: int) -> None:
        F = self.torch.nn.functional
        k = i % N_BATCHES
        self.opt.zero_grad(set_to_none=True)
        logq = F.log_softmax(self.model(self.xs[k]) / TEMPERATURE, dim=1)
        loss = (self.ps[k] * (self.logps[k] - logq)).sum() * (TEMPERATURE ** 2 / self.xs[k].shape[0])
        loss.backward()
        self.opt.step()


# ------------------------------------------------------------------------------------------ ONNX side
class OnnxWorker:
    def __init__(self, name: str, threads: int, engine: str):
        sys.path.insert(0, str(ROOT))
        import numpy as np

        import onnxmorph
        from onnxmorph.train.instrument import FixedMask
        from onnxmorph.train.graph import REG_STRENGTH, REG_WEIGHTS, UNIT_MASK
        from onnxmorph.train.loop import Trainer

        xs, ps = batches(name)
        analysis = onnxmorph.inspect(str(model_path(name)))
        self.base = rss_mb()
        trainer = Trainer(FixedMask(), analysis, data={"input": np.concatenate(xs)}, batch_size=BATCH[name],
                          lr=1e-4, seed=0, engine=engine)
        tg = trainer.tg
        u = analysis.num_units
        self.feeds = []
        for x, p in zip(xs, ps):
            feeds = {"input": x, REG_WEIGHTS: np.zeros(u, np.float32), REG_STRENGTH: np.array(0.0, np.float32),
                     UNIT_MASK: np.ones(u, np.float32)}
            for key, tname in tg.targets.items():
                feeds[tname] = np.log(p) if key.endswith("::logp") else p
            self.feeds.append(feeds)
        if engine == "onnxmorph":
            from onnxmorph.train.native_engine import NativeSession

            trainer.close()
            self.session = NativeSession(tg, threads=threads)
            self.session.set_lr(1e-4)
            self.run = lambda f: self.session.train_step(f)
        else:
            self.run = self._ort_training(trainer, threads)

    def _ort_training(self, trainer, threads):
        """The Trainer's artifacts reopened with `threads` intra-op threads."""
        import onnxruntime as ort

        from onnxmorph.train.ortsupport import training_modules

        _, api, _ = training_modules()
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        d = trainer.session.dir
        state = api.CheckpointState.load_checkpoint(str(d / "checkpoint"))
        module = api.Module(str(d / "training_model.onnx"), state, str(d / "eval_model.onnx"), session_options=so)
        optimizer = api.Optimizer(str(d / "optimizer_model.onnx"), module)
        optimizer.set_learning_rate(1e-4)
        names = list(module.input_names())
        module.train()
        self._keep = (trainer, state, module, optimizer)

        def run(feeds):
            module(*[feeds[n] for n in names])
            optimizer.step()
            module.lazy_reset_grad()

        return run

    def step(self, i: int) -> None:
        self.run(self.feeds[i % N_BATCHES])


def worker(engine: str, name: str, threads: int) -> int:
    """Serve `K` lines: run K steps, answer one JSON line of per-step wall/CPU ms and the peak RSS."""
    w = TorchWorker(name, threads) if engine == "torch" else OnnxWorker(name, threads, engine)
    print(json.dumps({"ready": True}), flush=True)
    i = 0
    for line in sys.stdin:
        k = int(line)
        wall, cpu = [], []
        for _ in range(k):
            c, t = time.process_time(), time.perf_counter()
            w.step(i)
            wall.append(1e3 * (time.perf_counter() - t))
            cpu.append(1e3 * (time.process_time() - c))
            i += 1
        print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": rss_mb() - w.base}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------ driver
def drive(args) -> int:
    pythons = {"onnxmorph": args.onnxmorph_python, "ort-training": args.ort_python, "torch": args.torch_python}
    for name in args.models:
        if name != "demo":
            subprocess.run([args.torch_python, __file__, "--export", name], check=True)
    rows = []
    for name in args.models:
        for n in args.threads:
            env = dict(os.environ, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
            procs = {e: subprocess.Popen([py, __file__, "--worker", e, "--model", name, "--threads", str(n)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                     for e, py in pythons.items()}
            for e, p in procs.items():
                line = p.stdout.readline()
                if not line:
                    raise SystemExit(f"worker {e} ({name}) failed to start")

            def ask(e, k):
                procs[e].stdin.write(f"{k}\n")
                procs[e].stdin.flush()
                return json.loads(procs[e].stdout.readline())

            for e in procs:
                ask(e, args.warmup)
            wall = {e: [] for e in procs}
            cpu = {e: [] for e in procs}
            peak = {}
            while len(wall["torch"]) < args.steps:
                for e in procs:
                    r = ask(e, min(args.block, args.steps - len(wall[e])))
                    wall[e] += r["wall"]
                    cpu[e] += r["cpu"]
                    peak[e] = r["peak_mb"]
            for p in procs.values():
                p.stdin.close()
                p.wait()
            med = {e: statistics.median(v) for e, v in wall.items()}
            cmed = {e: statistics.median(v) for e, v in cpu.items()}
            row = {"model": name, "batch": BATCH[name], "threads": n,
                   **{f"{e}_ms": round(med[e], 2) for e in procs}, **{f"{e}_cpu_ms": round(cmed[e], 2) for e in procs},
                   **{f"{e}_peak_mb": round(peak[e], 1) for e in procs},
                   "cpu_ratio_vs_torch": round(cmed["onnxmorph"] / cmed["torch"], 3),
                   "cpu_ratio_vs_ort_training": round(cmed["onnxmorph"] / cmed["ort-training"], 3),
                   "wall_ratio_vs_torch": round(med["onnxmorph"] / med["torch"], 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nmedian of {args.steps} steps after {args.warmup} warm-up, blocks of {args.block} interleaved; "
          f"ms per step (process CPU time in brackets); peak RSS above each worker's baseline")
    print(f"{'model':>9} {'batch':>5} {'thr':>3} | {'onnxmorph':>15} | {'ort-training':>15} | {'torch':>15} | "
          f"{'om/torch cpu':>12} | {'om/ortt cpu':>11} | {'peak MB om / ortt / torch':>25}")
    for r in rows:
        cell = lambda e: f"{r[e + '_ms']:6.1f} ({r[e + '_cpu_ms']:6.1f})"  # noqa: E731
        print(f"{r['model']:>9} {r['batch']:>5} {r['threads']:>3} | {cell('onnxmorph'):>15} | "
              f"{cell('ort-training'):>15} | {cell('torch'):>15} | {r['cpu_ratio_vs_torch']:>12.2f} | "
              f"{r['cpu_ratio_vs_ort_training']:>11.2f} | {r['onnxmorph_peak_mb']:7.0f} / "
              f"{r['ort-training_peak_mb']:5.0f} / {r['torch_peak_mb']:5.0f}")
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}
    print(f"\n{meta}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, **meta}, indent=2))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnxmorph-python", default=str(ROOT / ".venv/bin/python"))
    ap.add_argument("--ort-python", default=str(ROOT / ".venv-ort/bin/python"))
    ap.add_argument("--torch-python", default=str(ROOT / ".venv-torch/bin/python"))
    ap.add_argument("--models", nargs="+", default=["demo", "resnet26m", "vit"], choices=sorted(BATCH))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--export", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.export:
        export(args.export)
        return 0
    if args.worker:
        return worker(args.worker, args.model, args.threads[0])
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
