#!/usr/bin/env python3
"""Do fisher and gates keep to their schedule? The MAC fraction at the end of training against the
target, and the test accuracy after the cut and recovery, on the demo model (issue 12, item 3).

For every method M and fraction F this runs::

    onnxmorph.prune(MODEL, method=M, target=f"flops={F}", data=TRAIN_NPZ, labels="labels", steps=STEPS,
                    batch_size=32, lr=3e-3, recover_steps=RECOVER, seed=0)

and prints the end-of-training cost (report["training"]["end_cost_fraction"], or for older code the
fraction in the training note), its ratio to the target, the achieved MACs and the test accuracy
(argmax of output 0 vs `labels` of the test set). To compare with another checkout, put its source
first on PYTHONPATH (the tool prints which onnxmorph it imported)::

    python tools/bench_schedule.py --methods fisher gates --fractions 0.125 0.25
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

import onnxmorph

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from bench_accuracy import accuracy  # noqa: E402


def end_cost(report: dict) -> float | None:
    if "training" in report:
        return report["training"]["end_cost_fraction"]
    for note in report.get("notes", []):  # before issue 12: only the note says it
        m = re.search(r"(?:left|reaching) ([0-9.]+) of the original", note)
        if m:
            return float(m.group(1))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models/demo_cnn.onnx"))
    ap.add_argument("--data", default=str(ROOT / "models/demo_cnn.npz"))
    ap.add_argument("--test", default=str(ROOT / "models/demo_cnn_test.npz"))
    ap.add_argument("--methods", nargs="+", default=["fisher", "gates"])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--recover-steps", type=int, default=150)
    ap.add_argument("--labels", default="labels", help="'' for label-free")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append one JSON line per row here")
    args = ap.parse_args()
    print(f"onnxmorph from {Path(onnxmorph.__file__).parent}")
    test = np.load(args.test)
    x, y = test["input"], test["labels"]
    print(f"{'method':<7} | {'target':>6} | {'end of training':>15} | {'/ target':>8} | {'MACs kept':>9} | "
          f"{'test acc':>8} | wall s")
    for method in args.methods:
        for f in args.fractions:
            t0 = time.perf_counter()
            res = onnxmorph.prune(args.model, method=method, target=f"flops={f:g}", data=args.data,
                                  labels=args.labels or None, steps=args.steps, batch_size=32, lr=3e-3,
                                  recover_steps=args.recover_steps, seed=args.seed)
            rep = res.report
            row = {"method": method, "target": f, "end_cost_fraction": end_cost(rep),
                   "achieved": rep["pruned"]["macs"] / rep["original"]["macs"],
                   "accuracy": accuracy(res.model, x, y), "wall_s": time.perf_counter() - t0,
                   "training": rep.get("training")}
            end = row["end_cost_fraction"]
            print(f"{method:<7} | {f:>6g} | {end:>15.3f} | {end / f:>8.2f} | {row['achieved']:>9.4f} | "
                  f"{100 * row['accuracy']:>7.1f}% | {row['wall_s']:.0f}", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
