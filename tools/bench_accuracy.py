#!/usr/bin/env python3
"""Accuracy vs MAC fraction on the demo model for onnxmorph's pruning methods (no torch).

For every method and MAC fraction F this runs::

    onnxmorph.prune(MODEL, method=M, target=f"flops={F}", data=TRAIN_NPZ, steps=STEPS, batch_size=32,
                    lr=3e-3, recover_steps=RECOVER, seed=0)

(`magnitude` has no regularized phase, so it gets no `steps`: it is one-shot magnitude ranking followed
by the same RECOVER steps of distillation fine-tuning as the trained methods; `fisher` spends its STEPS
pruning one channel at a time while training, then the same RECOVER steps), then evaluates the pruned
model on the test set with onnxruntime (argmax of output 0 vs `labels`). A failing combination (e.g.
`gamma` refusing a model without BatchNormalization) is recorded as a row with its error message instead
of stopping the run. With --json the file is rewritten after every row, so an interrupted run keeps what
it finished; `--replot JSON` redraws the table and plot from such a file without training.

    /work/.venv/bin/python tools/bench_accuracy.py --json docs/accuracy_vs_macs.json \\
        --plot docs/accuracy_vs_macs.png
    # smaller
    /work/.venv/bin/python tools/bench_accuracy.py --steps 60 --recover-steps 30 --fractions 0.5 0.25 \\
        --methods gates fisher magnitude

The plot needs matplotlib (`pip install -e ".[plot]"`); without it the plot is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxmorph  # noqa: E402
from onnxmorph.methods.base import method_names  # noqa: E402
from onnxmorph.runtime import make_session  # noqa: E402

METHODS = ["gates", "fisher", "group-lasso", "gamma", "magnitude"]
FRACTIONS = [0.5, 0.25, 0.125, 0.0625]


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, threads: int = 0) -> float:
    session = make_session(model, threads)
    inp = session.get_inputs()[0]
    fixed = isinstance(inp.shape[0], int)
    step = inp.shape[0] if fixed else 256
    preds = []
    for start in range(0, len(x), step):
        xb = x[start:start + step]
        if fixed and len(xb) < step:  # pad the last batch of a fixed-batch model
            xb = np.concatenate([xb, np.repeat(xb[-1:], step - len(xb), axis=0)])
        preds.append(session.run(None, {inp.name: xb})[0].argmax(1)[: len(x) - start])
    return float((np.concatenate(preds)[: len(y)] == y).mean())


def reg_phase_alive(notes: list[str]) -> float | None:
    """The MAC fraction alive at the end of the training phase, from the report's notes: what the
    regularizer left ("the gates left X of the original macs alive") or what fisher's removals reached
    ("fisher: removed N channels ..., reaching X of the original macs")."""
    for note in notes:
        m = re.search(r"(?:left|reaching) ([0-9.]+) of the original", note)
        if m:
            return float(m.group(1))
    return None


def run_one(args, method: str, fraction: float, x_test, y_test) -> dict:
    kw = dict(method=method, target=f"flops={fraction:g}", data=args.data, batch_size=args.batch_size, lr=args.lr,
              recover_steps=args.recover_steps, seed=args.seed)
    if method != "magnitude":
        kw["steps"] = args.steps
    row = {"method": method, "fraction": fraction}
    t0 = time.perf_counter()
    try:
        res = onnxmorph.prune(args.model, **kw)
    except Exception as exc:  # a refusal (OnnxMorphError) or a failure: record it as a row and go on
        message = " ".join(str(exc).split())
        row.update(error=f"{type(exc).__name__}: {message}"[:400], refused=isinstance(exc, onnxmorph.OnnxMorphError),
                   wall_s=round(time.perf_counter() - t0, 2))
        return row
    wall = time.perf_counter() - t0
    rep = res.report
    row.update(
        achieved=round(rep["pruned"]["macs"] / rep["original"]["macs"], 4),
        reached=bool(rep["target"].get("reached", True)),
        params=round(rep["pruned"]["params"] / rep["original"]["params"], 4),
        accuracy=round(accuracy(res.model, x_test, y_test, args.threads), 4),
        wall_s=round(wall, 2),
        timings=rep.get("timings", {}),
        reg_phase_alive=reg_phase_alive(rep.get("notes", [])),
        final_task_loss=(rep.get("training_curve") or [{}])[-1].get("task_loss"),
        notes=rep.get("notes", []),
    )
    if "pruning_order" in rep:  # fisher: channels removed during training
        row["channels_removed_in_training"] = len(rep["pruning_order"])
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        res.save(Path(args.save_dir) / f"demo_{method}_{fraction:g}.onnx")
    return row


def print_table(rows: list[dict], baseline: float) -> None:
    print(f"\nunpruned test accuracy: {100 * baseline:.1f} %")
    head = (f"{'method':<12} | {'target':>6} | {'MACs kept':>9} | {'reg. phase':>10} | {'test acc':>8} | "
            f"{'wall s':>6} | train / recover s")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['method']:<12} | {r['fraction']:>6g} | {'ERROR':>9} | {'':>10} | {'':>8} | "
                  f"{r['wall_s']:>6.1f} | {r['error']}")
            continue
        t = r["timings"]
        reg = "-" if r["reg_phase_alive"] is None else f"{r['reg_phase_alive']:.3f}"
        miss = "" if r["reached"] else " (target not reached)"
        print(f"{r['method']:<12} | {r['fraction']:>6g} | {r['achieved']:>9.4f} | {reg:>10} | "
              f"{100 * r['accuracy']:>7.1f}% | {r['wall_s']:>6.1f} | "
              f"{t.get('train', t.get('score', 0)):.1f} / {t.get('recover', 0):.1f}{miss}")


def plot(rows: list[dict], baseline: float, path: str, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[plot]'): no plot written"
    fig, ax = plt.subplots(figsize=(8.6, 4.2), dpi=100)
    markers = {"gates": "o", "fisher": "v", "gamma": "s", "group-lasso": "^", "magnitude": "D"}
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["achieved"], 100 * r["accuracy"]) for r in rows if r["method"] == method and "error" not in r)
        if pts:
            ax.plot(*zip(*pts), marker=markers.get(method, "x"), label=method)
    failed = [m for m in dict.fromkeys(r["method"] for r in rows)
              if all("error" in r for r in rows if r["method"] == m)]
    for m in failed:  # a legend entry without points, saying why
        err = next(r["error"] for r in rows if r["method"] == m)
        kind, _, msg = err.partition(": ")
        short = msg.split(" (")[0].replace(f"method '{m}' ", "")
        ax.plot([], [], ls="none", marker=markers.get(m, "x"), mfc="none", color="grey",
                label=f"{m}: refused\n({short})" if len(short) < 45 else f"{m}: {kind}")
    ax.axhline(100 * baseline, color="grey", ls="--", lw=1, label=f"unpruned ({100 * baseline:.1f} %)")
    ax.set_xscale("log", base=2)
    fr = sorted({r["fraction"] for r in rows})
    ax.set_xticks(fr)
    ax.set_xticklabels([f"{f:g}" for f in fr])
    ax.set_xlabel("MACs kept (fraction of the original, achieved)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/demo_cnn.onnx"))
    ap.add_argument("--data", default=str(ROOT / "models/demo_cnn.npz"))
    ap.add_argument("--test", default=str(ROOT / "models/demo_cnn_test.npz"))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=method_names(), metavar="METHOD",
                    help=f"any of {', '.join(method_names())} (default: {' '.join(METHODS)})")
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--steps", type=int, default=300, help="regularized training steps (not magnitude)")
    ap.add_argument("--recover-steps", type=int, default=150, help="recovery fine-tuning steps (all methods)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads for the test evaluation")
    ap.add_argument("--json", help="write all rows (with timings and notes) here")
    ap.add_argument("--plot", default=str(ROOT / "docs/accuracy_vs_macs.png"), help="PNG path ('' for none)")
    ap.add_argument("--save-dir", help="also save every pruned model here")
    ap.add_argument("--replot", metavar="JSON", help="no training: print the table and draw the plot from a --json file")
    args = ap.parse_args(argv)

    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        rows = [r for r in saved["rows"] if r["method"] in args.methods and r["fraction"] in args.fractions]
        print_table(rows, saved["baseline_accuracy"])
        if args.plot:
            title = (f"demo CNN: steps {saved['steps']} + recover {saved['recover_steps']} "
                     f"(magnitude: recover only), seed {saved['seed']}")
            note = plot(rows, saved["baseline_accuracy"], args.plot, title)
            print(note or f"plot: {args.plot} ({Path(args.plot).stat().st_size // 1024} KB)")
        return 0

    test = np.load(args.test)
    x_test, y_test = test["input"], test["labels"]
    baseline = accuracy(onnx.load(args.model), x_test, y_test, args.threads)
    rows = []
    t_all = time.perf_counter()

    def write_json():
        out = {"model": args.model, "baseline_accuracy": baseline, "steps": args.steps,
               "recover_steps": args.recover_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "command": " ".join(sys.argv), "python": platform.python_version(),
               "onnxmorph": onnxmorph.__version__, "rows": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))

    for method in args.methods:
        for fraction in args.fractions:
            row = run_one(args, method, fraction, x_test, y_test)
            rows.append(row)
            if args.json:
                write_json()
            status = row.get("error") or (f"MACs {row['achieved']:.4f}, acc {100 * row['accuracy']:.1f} %")
            print(f"[{time.perf_counter() - t_all:7.1f} s] {method} flops={fraction:g}: {status} "
                  f"({row['wall_s']:.1f} s)", flush=True)
    print_table(rows, baseline)
    print(f"\nsteps {args.steps} (regularized; not magnitude) + recover {args.recover_steps}, batch {args.batch_size}, "
          f"lr {args.lr:g}, seed {args.seed}; total {time.perf_counter() - t_all:.0f} s; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.plot:
        title = (f"demo CNN: steps {args.steps} + recover {args.recover_steps} "
                 f"(magnitude: recover only), seed {args.seed}")
        note = plot(rows, baseline, args.plot, title)
        print(note or f"plot: {args.plot} ({Path(args.plot).stat().st_size // 1024} KB)")
    if args.json:
        write_json()
    return 0


if __name__ == "__main__":
    sys.exit(main())
