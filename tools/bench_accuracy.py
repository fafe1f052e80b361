#!/usr/bin/env python3
"""Accuracy vs MAC fraction: onnxmorph's methods and a Torch-Pruning 1.6.1 baseline at one equal budget.

Every row is one (model, method, MAC fraction, label mode) at a TOTAL budget of --steps optimizer steps
(default 300), batch 32, seed 0, evaluated on the model's test split (argmax of output 0 vs `labels`):

- `tp-l1`, `tp-taylor` (tools/tp_baseline.py; needs torch + torch-pruning): the torch module is rebuilt and
  loaded with the ONNX weights, pruned one-shot by Torch-Pruning with group-L1 / group-Taylor importance at one
  uniform per-layer ratio (searched so that the MACs are <= the fraction), then fine-tuned with --steps plain
  SGD steps (lr 0.01, momentum 0.9): cross-entropy with labels, KL to the unpruned model without. The test
  accuracy right after the cut is recorded too.
- onnxmorph methods (`magnitude`, `gates`, `fisher`, ...):
  `onnxmorph.prune(MODEL, method=M, target=f"flops={F}", data=TRAIN_NPZ, labels="labels" or None,
  steps=STEPS, batch_size=32, seed=0)`. `steps` is the total budget (training + recovery) in the API this
  tool was written for. An older API spent `steps` on training and `recover_steps` more on recovery: the tool
  probes which one it runs on (a 40-step prune: <= 40 or ~80 optimizer steps) and, on the older one, passes
  steps=STEPS/2 + recover_steps=STEPS/2 (magnitude: recover_steps=STEPS). Every row records the optimizer
  steps it actually used (from the report's training curve) and the split.

Models: `demo` (models/demo_cnn.onnx, BN folded by the exporter; Torch-Pruning gets train_demo.DemoCNN with
BatchNorm restored from the folded weights, see tp_baseline.restore_bn; `--tp-demo folded` gives it the
folded module instead, exactly the ONNX graph, recorded as model `demo-folded`) and `resnet_bn`
(models/resnet_bn.onnx from tools/train_resnet_bn.py, BatchNormalization kept). Both use the same
digits split: models/demo_cnn.npz (train) and models/demo_cnn_test.npz (test).

Rows can be run separately (--models, --methods, --fractions, --label-modes); with --json, rows already in
the file are kept, a rerun row replaces its old one, and the file is rewritten after every row.
`--replot JSON` prints the tables and draws the plot from such a file without running anything.

    nice -n 10 .venv/bin/python tools/bench_accuracy.py --methods tp-l1 tp-taylor \\
        --json docs/accuracy_vs_tp.json --plot docs/accuracy_vs_tp.png
    nice -n 10 .venv/bin/python tools/bench_accuracy.py --methods magnitude gates fisher --fractions 0.125 \\
        --models demo --json docs/accuracy_vs_tp.json --plot docs/accuracy_vs_tp.png
    .venv/bin/python tools/bench_accuracy.py --replot docs/accuracy_vs_tp.json --plot docs/accuracy_vs_tp.png

The plot needs matplotlib (`pip install -e ".[plot]"`); without it the plot is skipped with a note.
"""

from __future__ import annotations

import argparse
import inspect as pyinspect
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxmorph  # noqa: E402
from onnxmorph.methods import method_names  # noqa: E402
from onnxmorph.runtime import make_session  # noqa: E402

TP_METHODS = {"tp-l1": "l1", "tp-taylor": "taylor"}
METHODS = ["tp-l1", "tp-taylor", "magnitude", "gates", "fisher"]
FRACTIONS = [0.5, 0.25, 0.125, 0.0625, 0.03125]
LABEL_MODES = ["labels", "free"]
DATA = (str(ROOT / "models/demo_cnn.npz"), str(ROOT / "models/demo_cnn_test.npz"))
MODELS = {"demo": str(ROOT / "models/demo_cnn.onnx"), "resnet_bn": str(ROOT / "models/resnet_bn.onnx")}


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


def curve_steps(curve: list[dict]) -> int:
    """Optimizer steps in a report's training curve: the loop logs every 10th step and always the last, so
    each run (a phase, restarting at step 0) counts its last logged step + 1."""
    total, last = 0, None
    for point in curve:
        step = int(point.get("step", 0))
        if last is not None and (step <= last[1] or point.get("phase") != last[0]):
            total += last[1] + 1
        last = (point.get("phase"), step)
    return total + (last[1] + 1 if last else 0)


def probe_budget_api(model: str, data: str) -> str:
    """'total' if `steps` is the whole budget (training + recovery), 'split' if recovery comes on top
    (the older API): a 40-step gates prune uses at most 40 or about 80 optimizer steps."""
    res = onnxmorph.prune(model, method="gates", target="flops=0.9", data=data, steps=40, batch_size=8, seed=0)
    n = curve_steps(res.report.get("training_curve") or [])
    return "total" if n <= 40 else "split"


def probe_steps(rep: dict) -> int:
    """Optimizer steps a prune spent choosing its learning rate: in its budget, not in its curve."""
    budget = rep.get("budget") if isinstance(rep.get("budget"), dict) else {}
    return int(budget.get("probe") or rep.get("probe_steps") or 0)


def om_kwargs(api: str, method: str, steps: int) -> tuple[dict, str]:
    """prune() budget arguments for `steps` in total, and how they split it."""
    if api == "total":
        return {"steps": steps}, f"steps={steps} (total)"
    has_recover = "recover_steps" in pyinspect.signature(onnxmorph.prune).parameters
    if not has_recover:
        return {"steps": steps}, f"steps={steps}"
    if method == "magnitude":
        return {"recover_steps": steps}, f"recover_steps={steps}"
    train, recover = steps // 2, steps - steps // 2
    return {"steps": train, "recover_steps": recover}, f"steps={train} + recover_steps={recover}"


def run_om(args, model: str, method: str, fraction: float, labels: bool, x_test, y_test) -> dict:
    budget, split = om_kwargs(args.budget_api, method, args.steps)
    kw = dict(method=method, target=f"flops={fraction:g}", data=DATA[0], labels="labels" if labels else None,
              batch_size=args.batch_size, seed=args.seed, **budget)
    row = {"budget": split}
    t0 = time.perf_counter()
    try:
        res = onnxmorph.prune(model, **kw)
    except Exception as exc:  # a refusal (OnnxMorphError) or a failure: record it as a row and go on
        message = " ".join(str(exc).split())
        row.update(error=f"{type(exc).__name__}: {message}"[:400], refused=isinstance(exc, onnxmorph.OnnxMorphError),
                   wall_s=round(time.perf_counter() - t0, 2))
        return row
    wall = time.perf_counter() - t0
    rep = res.report
    curve = rep.get("training_curve") or []
    row.update(
        achieved=round(rep["pruned"]["macs"] / rep["original"]["macs"], 4),
        reached=bool(rep["target"].get("reached", True)),
        params=round(rep["pruned"]["params"] / rep["original"]["params"], 4),
        accuracy=round(accuracy(res.model, x_test, y_test, args.threads), 4),
        steps_used=curve_steps(curve) + probe_steps(rep),
        lr_probe_steps=probe_steps(rep),
        steps_by_phase={p: curve_steps([c for c in curve if c.get("phase") == p])
                        for p in dict.fromkeys(c.get("phase") for c in curve)},
        wall_s=round(wall, 2),
        timings=rep.get("timings", {}),
        final_task_loss=(curve or [{}])[-1].get("task_loss"),
        groups_kept=[f"{g['name']}: {g['kept']}/{g['channels']}" for g in rep.get("groups", [])],
        notes=rep.get("notes", []),
    )
    for key in ("fidelity", "budget", "schedule", "allocation"):  # whatever the report says about itself
        if key in rep:
            row[f"report_{key}"] = rep[key]
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        mode = "labels" if labels else "free"
        res.save(Path(args.save_dir) / f"{Path(model).stem}_{method}_{fraction:g}_{mode}.onnx")
    return row


def row_key(r: dict) -> tuple:
    return (r["model"], r["method"], float(r["fraction"]), r["labels"])


def label_of(r: dict) -> str:
    return f"{r['method']} ({'labels' if r['labels'] == 'labels' else 'label-free'})"


def print_rows(rows: list[dict]) -> None:
    head = (f"{'model':<11} | {'method':<10} | {'labels':<6} | {'target':>7} | {'MACs kept':>9} | {'steps':>5} | "
            f"{'after cut':>9} | {'test acc':>8} | {'wall s':>6} | budget / notes")
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["model"], -r["fraction"], r["method"], r["labels"])):
        lead = f"{r['model']:<11} | {r['method']:<10} | {r['labels']:<6} | {r['fraction']:>7g} | "
        if "error" in r:
            print(lead + f"{'ERROR':>9} | {'':>5} | {'':>9} | {'':>8} | {r['wall_s']:>6.1f} | {r['error']}")
            continue
        cut = f"{100 * r['accuracy_after_cut']:.1f}%" if "accuracy_after_cut" in r else "-"
        extra = r.get("budget", "")
        if isinstance(r.get("report_budget"), dict):  # the report's own split of the budget
            extra = ", ".join(f"{k} {v}" for k, v in r["report_budget"].items() if k != "steps")
        if r["method"] in TP_METHODS:
            extra = f"uniform ratio {r['uniform_ratio']:.3f}"
        print(lead + f"{r['achieved']:>9.4f} | {r['steps_used']:>5} | {cut:>9} | {100 * r['accuracy']:>7.1f}% | "
              f"{r['wall_s']:>6.1f} | {extra}{'' if r.get('reached', True) else ' (target not reached)'}")


def pivot(rows: list[dict], baselines: dict) -> str:
    """A markdown table per model: one line per fraction, one column per method and label mode."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        cols = sorted(dict.fromkeys((r["method"], r["labels"]) for r in rs),
                      key=lambda c: (c[0] not in TP_METHODS, METHODS.index(c[0]) if c[0] in METHODS else 99,
                                     c[1] != "labels"))
        base = baselines.get(model)
        out.append(f"\n{model}" + (f" (unpruned test accuracy {100 * base:.1f} %)" if base is not None else ""))
        out.append("| MACs | TP MACs | " + " | ".join(f"{m} {'labels' if lab == 'labels' else 'free'}"
                                                     for m, lab in cols) + " |")
        out.append("|---:|---:|" + "---:|" * len(cols))
        for frac in sorted({r["fraction"] for r in rs}, reverse=True):
            cells = []
            for m, lab in cols:
                r = next((r for r in rs if r["method"] == m and r["labels"] == lab and r["fraction"] == frac), None)
                if r is None:
                    cells.append("")
                elif "error" in r:
                    cells.append("error")
                else:
                    cut = f" ({100 * r['accuracy_after_cut']:.1f})" if "accuracy_after_cut" in r else ""
                    cells.append(f"{100 * r['accuracy']:.1f}{cut}")
            tp_macs = next((f"{r['achieved']:.3f}" for r in rs if r["method"] in TP_METHODS and r["fraction"] == frac
                            and "error" not in r), "")
            out.append(f"| 1/{round(1 / frac)} | {tp_macs} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows: list[dict], baselines: dict, path: str, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[plot]'): no plot written"
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6.2 * len(models), 4.6), dpi=100, squeeze=False)
    markers = {"tp-l1": "s", "tp-taylor": "^", "magnitude": "D", "gates": "o", "fisher": "v"}
    colors = {}
    for ax, model in zip(axes[0], models):
        rs = [r for r in rows if r["model"] == model and "error" not in r]
        for m, lab in sorted(dict.fromkeys((r["method"], r["labels"]) for r in rs)):
            pts = sorted((r["achieved"], 100 * r["accuracy"]) for r in rs if r["method"] == m and r["labels"] == lab)
            color = colors.setdefault(m, f"C{len(colors)}")
            ax.plot(*zip(*pts), marker=markers.get(m, "x"), color=color, ls="--" if m in TP_METHODS else "-",
                    mfc="none" if lab == "free" else color, alpha=0.9,
                    label=f"{m} {'labels' if lab == 'labels' else 'label-free'}")
        if model in baselines:
            ax.axhline(100 * baselines[model], color="grey", ls=":", lw=1,
                       label=f"unpruned ({100 * baselines[model]:.1f} %)")
        fr = sorted({r["fraction"] for r in rows if r["model"] == model})
        ax.set_xscale("log", base=2)
        ax.set_xticks(fr)
        ax.set_xticklabels([f"1/{round(1 / f)}" for f in fr])
        ax.set_ylim(0, 102)
        ax.set_xlabel("MACs kept (achieved)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def report(rows: list[dict], baselines: dict, args, title: str) -> None:
    print()
    print_rows(rows)
    print(pivot(rows, baselines))
    if args.plot:
        note = plot(rows, baselines, args.plot, title)
        print(note or f"plot: {args.plot} ({Path(args.plot).stat().st_size // 1024} KB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=list(TP_METHODS) + method_names(),
                    metavar="METHOD", help=f"tp-l1, tp-taylor or an onnxmorph method (default: {' '.join(METHODS)})")
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--label-modes", nargs="+", default=LABEL_MODES, choices=LABEL_MODES)
    ap.add_argument("--steps", type=int, default=300, help="total optimizer steps per row (training + recovery)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp-demo", choices=["bn", "folded"], default="bn",
                    help="Torch-Pruning's demo module: DemoCNN with BN restored (default) or the folded graph")
    ap.add_argument("--budget-api", choices=["probe", "total", "split"], default="probe",
                    help="how onnxmorph.prune counts `steps` (default: probe it)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the test evaluation")
    ap.add_argument("--json", help="rows are merged into this file after every row")
    ap.add_argument("--plot", default="", help="PNG path (all rows of the --json file)")
    ap.add_argument("--save-dir", help="also save every onnxmorph-pruned model here")
    ap.add_argument("--replot", metavar="JSON", help="no runs: print the tables and draw the plot from a --json file")
    args = ap.parse_args(argv)

    title = f"equal budget: {args.steps} optimizer steps, batch {args.batch_size}, seed {args.seed}"
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        rows = [r for r in saved["rows"] if r["method"] in args.methods and r["fraction"] in args.fractions
                and r["labels"] in args.label_modes]
        report(rows, saved.get("baselines", {}), args, title)
        return 0

    x_train, y_train = (np.load(DATA[0])[k] for k in ("input", "labels"))
    x_test, y_test = (np.load(DATA[1])[k] for k in ("input", "labels"))
    baselines: dict = {}
    try:
        # the last commit that changed onnxmorph/ (tools/ and docs/ commits don't change the rows)
        commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "onnxmorph"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "onnxmorph"], capture_output=True,
                               text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except OSError:
        commit = "?"
    om_methods = [m for m in args.methods if m not in TP_METHODS]
    if om_methods and args.budget_api == "probe":
        args.budget_api = probe_budget_api(MODELS["demo"], DATA[0])
    if om_methods:
        print(f"onnxmorph {onnxmorph.__version__} at commit {commit}: `steps` is "
              f"{'the total budget' if args.budget_api == 'total' else 'training only; recovery is on top'}",
              flush=True)

    mine: list[dict] = []  # this run's rows

    def write_json():
        """Merge into the file as it is now (another run may be writing other rows to it)."""
        if not args.json:
            return
        keys = {row_key(r) for r in mine}
        disk = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
        merged = [r for r in disk.get("rows", []) if row_key(r) not in keys] + mine
        out = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
               "baselines": {**disk.get("baselines", {}), **baselines}, "python": platform.python_version(),
               "rows": merged}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))

    t_all = time.perf_counter()
    for model_key in args.models:
        path = MODELS[model_key]
        baselines[model_key] = accuracy(onnx.load(path), x_test, y_test, args.threads)
        tp = None
        for method in args.methods:
            for fraction in args.fractions:
                for mode in args.label_modes:
                    labels = mode == "labels"
                    name = model_key
                    if method in TP_METHODS:
                        if tp is None:
                            import tp_baseline  # torch only here

                            kind = "demo-folded" if model_key == "demo" and args.tp_demo == "folded" else model_key
                            tp = tp_baseline.TorchPruningBaseline(kind, path, x_train, y_train, x_test, y_test,
                                                                  args.seed)
                        name = "demo-folded" if model_key == "demo" and args.tp_demo == "folded" else model_key
                        if name not in baselines:
                            baselines[name] = baselines[model_key]
                        t0 = time.perf_counter()
                        row = tp.row(TP_METHODS[method], fraction, labels, args.steps, args.batch_size)
                        row["wall_s"] = round(time.perf_counter() - t0, 2)
                    else:
                        row = run_om(args, path, method, fraction, labels, x_test, y_test)
                        row["commit"] = commit
                    row = {"model": name, "method": method, "fraction": fraction, "labels": mode, **row,
                           "command": " ".join(sys.argv), "load_avg": round(os.getloadavg()[0], 2)}
                    mine = [r for r in mine if row_key(r) != row_key(row)] + [row]
                    write_json()
                    status = row.get("error") or (
                        f"MACs {row['achieved']:.4f}, {row['steps_used']} steps, "
                        + (f"after cut {100 * row['accuracy_after_cut']:.1f} % -> " if "accuracy_after_cut" in row
                           else "") + f"acc {100 * row['accuracy']:.1f} %")
                    print(f"[{time.perf_counter() - t_all:7.1f} s] {name} {method} flops={fraction:g} {mode}: "
                          f"{status} ({row['wall_s']:.1f} s)", flush=True)
    if args.json:  # the table and plot show every row of the file, this run's and earlier ones
        saved = json.loads(Path(args.json).read_text())
        rows, baselines = saved["rows"], saved["baselines"]
    else:
        rows = mine
    report(rows, baselines, args, title)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
