#!/usr/bin/env python3
"""Every method end to end with the default training engine on the demo and on exported torchvision models.

For each (model, method) this runs the CLI exactly as a user would, in a subprocess of the interpreter running
this tool (a venv with the current onnx and onnxruntime and no onnxruntime-training):

    onnxmorph prune MODEL --method M --target flops=F --steps S --batch-size B --data DATA --no-reconstruct
                    --seed 0 -o OUT --report REPORT --quiet

and records: ok (exit 0 and the report's verify passed) with the verify max abs diff, the optimizer steps the
report counts (training + recovery) and the wall time; or the CLI's one-line refusal and its exit code.
`--no-reconstruct` keeps the least-squares refit (which never runs the training engine and has its own
120 s budget) out of the timing. DATA: the demo's own npz for the demo; for a zoo model an npz of
N(0, 1) inputs of its input shape (`--samples` rows, seed 0), written next to the outputs.

Zoo models come from tools/export_zoo.py (`--zoo DIR` holds its index.json); `<name>_bn` files are the
`--keep-bn` exports whose BatchNormalization nodes `--method gamma` needs (on the folded exports gamma has no
BN scale to read, and the CLI says so).

    /work/venv-tv/bin/python tools/export_zoo.py --out /work/cache/engine/zoo \\
        --models resnet18,mobilenet_v3_small,shufflenet_v2_x0_5,efficientnet_b0,regnet_y_400mf,vit_tiny
    /work/venv-tv/bin/python tools/export_zoo.py --out /work/cache/engine/zoo --keep-bn \\
        --models resnet18,mobilenet_v3_small,efficientnet_b0
    nice -n 10 .venv/bin/python tools/bench_engine_zoo.py --zoo /work/cache/engine/zoo \\
        --json /work/cache/engine/zoo_runs.json
    .venv/bin/python tools/bench_engine_zoo.py --table /work/cache/engine/zoo_runs*.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["magnitude", "gates", "group-lasso", "fisher", "gamma"]
MODELS = ["demo", "resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf",
          "vit_tiny", "mobilenet_v2", "convnext_tiny", "resnet18_bn", "mobilenet_v3_small_bn", "efficientnet_b0_bn"]


def _model_and_data(name: str, zoo: Path, out: Path, samples: int) -> tuple[Path, Path]:
    if name == "demo":
        return ROOT / "models" / "demo_cnn.onnx", ROOT / "models" / "demo_cnn.npz"
    import onnx

    path = zoo / f"{name}.onnx"
    m = onnx.load(str(path), load_external_data=False)
    inp = m.graph.input[0]
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    data = out / f"data_{'x'.join(map(str, shape[1:]))}.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, **{inp.name: rng.standard_normal([samples] + shape[1:]).astype(np.float32)})
    return path, data


def run_one(name: str, method: str, args) -> dict:
    out = args.out
    model, data = _model_and_data(name, args.zoo, out, args.samples)
    stem = f"{name}.{method}"
    report = out / f"{stem}.json"
    if report.exists():
        report.unlink()
    cmd = ["onnxmorph", "prune", str(model), "--method", method, "--target", f"flops={args.flops}",
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--data", str(data),
           "--no-reconstruct", "--seed", "0", "-o", str(out / f"{stem}.onnx"), "--report", str(report), "--quiet"]
    exe = [sys.executable, "-m", "onnxmorph.cli"] + cmd[1:]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(exe, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
        rc, err = proc.returncode, (proc.stderr.strip().splitlines() or [""])
    except subprocess.TimeoutExpired:
        rc, err = None, [f"timed out after {args.timeout} s"]
    row = {"model": name, "method": method, "command": shlex.join(cmd), "rc": rc,
           "wall_s": round(time.perf_counter() - t0, 1)}
    if rc == 0 and report.exists():
        r = json.loads(report.read_text())
        row.update(ok=bool(r["verify"]["passed"]), verify=r["verify"]["max_abs_diff"],
                   macs=r["pruned"]["macs"] / r["original"]["macs"],
                   steps=(r.get("budget") or {}).get("steps"),
                   training=(r.get("budget") or {}).get("training"),
                   recovery=(r.get("budget") or {}).get("recovery"),
                   train_s=round((r.get("timings") or {}).get("train", 0) + (r.get("timings") or {}).get(
                       "recover", 0), 1))
    else:
        # the CLI's one line (a traceback's last line if it ever printed one: that is a bug to fix)
        row.update(ok=False, refusal=err[-1][:300], traceback=any("Traceback" in e for e in err))
    return row


def table(rows: list[dict]) -> str:
    out = ["| model | method | result | verify max abs diff | MACs kept | optimizer steps (train + recover) "
           "| train+recover s | wall s |", "|---|---|---|---|---|---|---|---|"]
    order = {m: i for i, m in enumerate(MODELS)}
    for r in sorted(rows, key=lambda r: (order.get(r["model"], 99), METHODS.index(r["method"]))):
        if r.get("ok"):
            st = f"{r['training']} + {r['recovery']}" if r.get("training") is not None else str(r.get("steps"))
            out.append(f"| {r['model']} | {r['method']} | ok | {r['verify']:.1e} | {r['macs']:.3f} | {st} "
                       f"| {r['train_s']:.0f} | {r['wall_s']:.0f} |")
        else:
            out.append(f"| {r['model']} | {r['method']} | exit {r['rc']}: {r.get('refusal', '?')} | | | | "
                       f"| {r['wall_s']:.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("/work/cache/engine/zoo"))
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--flops", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--samples", type=int, default=32, help="rows of generated data per zoo model")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per run")
    ap.add_argument("--out", type=Path, help="outputs, reports, data (default: <zoo>/engine_runs)")
    ap.add_argument("--json", type=Path, help="rows are merged into this file after every run")
    ap.add_argument("--table", type=Path, nargs="+", help="print the table of these files and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table([r for p in args.table for r in json.loads(p.read_text())["rows"]]))
        return 0
    args.out = args.out or args.zoo / "engine_runs"
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        for method in args.methods:
            row = run_one(name, method, args)
            print(json.dumps(row), flush=True)
            if args.json:
                rows = json.loads(args.json.read_text())["rows"] if args.json.exists() else []
                rows = [r for r in rows if (r["model"], r["method"]) != (name, method)] + [row]
                tmp = args.json.with_suffix(".tmp")
                tmp.write_text(json.dumps({"rows": rows}, indent=1))
                os.replace(tmp, args.json)
    if args.json:
        print(table(json.loads(args.json.read_text())["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
