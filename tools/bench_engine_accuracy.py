#!/usr/bin/env python3
"""Accuracy vs MACs with both training engines: onnxmorph's own (default) and onnxruntime-training 1.19.2.

The two engines live in different environments (onnxruntime-training replaces the `onnxruntime` module), so
each run of this tool measures ONE engine in the interpreter that runs it and merges its rows into its own
--json file; `--table FILE...` prints the side-by-side table from those files without running anything.

Every row: `onnxmorph.prune(models/demo_cnn.onnx, method=M, target=f"flops={F}", data=<demo_cnn.npz inputs,
label-free distillation>, steps=STEPS, seed=S, engine=E)`, test accuracy (argmax vs labels) on
models/demo_cnn_test.npz, MAC fraction, wall time. `magnitude` trains only in its recovery, so it compares the
engines' fine-tuning; gates and fisher compare the whole method.

    nice -n 10 .venv/bin/python tools/bench_engine_accuracy.py --engine onnxmorph \\
        --json docs/engine_accuracy_onnxmorph.json
    nice -n 10 .venv-ort/bin/python tools/bench_engine_accuracy.py --engine ort-training \\
        --json docs/engine_accuracy_ort.json
    .venv/bin/python tools/bench_engine_accuracy.py --table docs/engine_accuracy_*.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ["magnitude", "gates", "fisher"]
FRACTIONS = [0.5, 0.25, 0.125]
SEEDS = [0, 1]
ENGINES = ["onnxmorph", "ort-training"]


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _save(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows}, indent=1))
    os.replace(tmp, path)


def _key(r: dict) -> tuple:
    return (r["engine"], r["method"], r["fraction"], r["seed"], r["steps"])


def run_row(engine: str, method: str, fraction: float, seed: int, steps: int) -> dict:
    import onnxruntime

    import onnxmorph
    from onnxmorph.runtime import run_model

    data = dict(np.load(ROOT / "models" / "demo_cnn.npz"))
    test = dict(np.load(ROOT / "models" / "demo_cnn_test.npz"))
    t0 = time.perf_counter()
    row = {"engine": engine, "method": method, "fraction": fraction, "seed": seed, "steps": steps,
           "onnxruntime": onnxruntime.__version__}
    try:
        res = onnxmorph.prune(ROOT / "models" / "demo_cnn.onnx", method=method, target=f"flops={fraction}",
                              data={"input": data["input"]}, steps=steps, seed=seed, engine=engine)
    except Exception as exc:  # recorded, not fatal: the table says which row failed
        row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return row
    logits = run_model(res.model, {"input": test["input"]})[0]
    row.update(accuracy=float((logits.argmax(1) == test["labels"]).mean()),
               macs=res.report["pruned"]["macs"] / res.report["original"]["macs"],
               wall_s=round(time.perf_counter() - t0, 1), verify=res.report["verify"]["max_abs_diff"])
    return row


def table(rows: list[dict]) -> str:
    cells = {}
    for r in rows:
        cells.setdefault((r["method"], r["fraction"], r["steps"]), {})[(r["engine"], r["seed"])] = r
    out = ["| method | flops | steps | " + " | ".join(f"{e} s{s}" for e in ENGINES for s in SEEDS)
           + " | mean onnxmorph | mean ort-training | Δ |", "|" + "---|" * (6 + 2 * len(SEEDS))]
    for (m, f, st), c in sorted(cells.items(), key=lambda kv: (METHODS.index(kv[0][0])
                                                                 if kv[0][0] in METHODS else 9, -kv[0][1])):
        vals, means = [], {}
        for e in ENGINES:
            accs = []
            for s in SEEDS:
                r = c.get((e, s))
                if r is None:
                    vals.append("–")
                elif "error" in r:
                    vals.append("error")
                else:
                    vals.append(f"{r['accuracy']:.3f} ({r['macs']:.3f}×, {r['wall_s']:.0f} s)")
                    accs.append(r["accuracy"])
            means[e] = float(np.mean(accs)) if accs else None
        a, b = means["onnxmorph"], means["ort-training"]
        delta = f"{a - b:+.3f}" if a is not None and b is not None else "–"
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        out.append(f"| {m} | {f} | {st} | " + " | ".join(vals) + f" | {fmt(a)} | {fmt(b)} | {delta} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=ENGINES)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", type=Path, help="this engine's rows are merged into this file after every row")
    ap.add_argument("--table", type=Path, nargs="+", help="print the table from these files and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table([r for p in args.table for r in _load(p)]))
        return 0
    if args.engine is None or args.json is None:
        ap.error("--engine and --json are required unless --table")
    for seed in args.seeds:
        for method in args.methods:
            for fraction in args.fractions:
                row = run_row(args.engine, method, fraction, seed, args.steps)
                rows = [r for r in _load(args.json) if _key(r) != _key(row)] + [row]
                _save(args.json, rows)
                print(json.dumps(row), flush=True)
    print(table(_load(args.json)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
