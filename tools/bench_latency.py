#!/usr/bin/env python3
"""Latency benchmark: original vs pruned ONNX model on ONNX Runtime CPU.

Both models get the same random input. Runs are interleaved (A, B, A, B, ...)
after a warmup, so drift in machine load hits both alike; the result is the
median latency of each and the ratio pruned / original. Uses only onnxruntime,
onnx and numpy (no torch, no onnxmorph).

    # one pair
    python tools/bench_latency.py /work/zoo/resnet18.onnx resnet18.pruned.onnx --mac-ratio 0.49
    # every <name>.onnx in a zoo that has DIR/<name>.pruned.onnx, MAC ratios from bench_coverage --json
    python tools/bench_latency.py --zoo /work/zoo --pruned-dir /work/zoo-pruned --coverage-json cov.json --json lat.json

Defaults: 1 intra-op and 1 inter-op thread, sequential execution, all graph
optimizations, 10 warmup runs of each, up to 50 measured runs of each, at most
--max-seconds per pair (but never fewer than --min-iters runs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def parse_shapes(items: list[str] | None) -> dict[str, list[int]]:
    out = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        if not dims:
            raise SystemExit(f"error: --input-shape wants NAME=DxDxD, got {item!r}")
        out[name] = [int(d) for d in dims.lower().split("x")]
    return out


def make_session(path: Path, args):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[args.opt_level]
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def input_specs(sess, shapes: dict[str, list[int]]) -> dict[str, tuple[list[int], str]]:
    specs = {}
    for i in sess.get_inputs():
        if i.name in shapes:
            shape = shapes[i.name]
        else:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]  # dynamic dims -> 1
        specs[i.name] = (shape, ORT_TYPES.get(i.type, "float32"))
    return specs


def make_feed(specs, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for name, (shape, dtype) in specs.items():
        if dtype.startswith("float"):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            feed[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feed[name] = rng.integers(0, 10, shape).astype(dtype)
    return feed


def bench_pair(name: str, orig: Path, pruned: Path, args, mac_ratio: float | None) -> dict:
    row: dict = {"model": name, "original": str(orig), "pruned": str(pruned), "mac_ratio": mac_ratio}
    try:
        sa, sb = make_session(orig, args), make_session(pruned, args)
        specs = input_specs(sa, parse_shapes(args.input_shape))
        specs_b = input_specs(sb, parse_shapes(args.input_shape))
        if specs != specs_b:
            show = lambda sp: ", ".join(f"{k}:{'x'.join(map(str, s))}/{t}" for k, (s, t) in sp.items())  # noqa: E731
            raise ValueError(f"graph inputs differ: original {show(specs)} vs pruned {show(specs_b)}")
        feed = make_feed(specs, args.seed)
        outs_a = [(o.name, o.shape) for o in sa.get_outputs()]
        outs_b = [(o.name, o.shape) for o in sb.get_outputs()]
        if outs_a != outs_b:
            row["warning"] = f"outputs differ: {outs_a} vs {outs_b}"
        row["input_shapes"] = {k: v[0] for k, v in specs.items()}

        run_a = lambda: sa.run(None, feed)  # noqa: E731
        run_b = lambda: sb.run(None, feed)  # noqa: E731
        for _ in range(args.warmup):
            run_a()
            run_b()
        ta: list[float] = []
        tb: list[float] = []
        clock = time.perf_counter
        t_start = clock()
        for i in range(args.iters):
            t0 = clock()
            run_a()
            t1 = clock()
            run_b()
            t2 = clock()
            ta.append((t1 - t0) * 1e3)
            tb.append((t2 - t1) * 1e3)
            if i + 1 >= args.min_iters and clock() - t_start > args.max_seconds:
                break
        med_a, med_b = statistics.median(ta), statistics.median(tb)
        row.update(
            status="ok",
            iters=len(ta),
            original_ms=med_a,
            pruned_ms=med_b,
            latency_ratio=med_b / med_a if med_a else None,
            original_p10_p90_ms=quantiles(ta),
            pruned_p10_p90_ms=quantiles(tb),
            speedup=med_a / med_b if med_b else None,
        )
    except Exception as e:  # one bad pair does not stop the rest
        row.update(status="error", reason=" ".join(f"{type(e).__name__}: {e}".split())[:400])
    return row


def quantiles(xs: list[float]) -> list[float]:
    if len(xs) < 2:
        return [xs[0], xs[0]] if xs else []
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return [q[0], q[-1]]


def load_mac_ratios(path: str | None) -> dict[str, float]:
    """Accepts bench_coverage.py --json output, or a plain {name: ratio} mapping."""
    if not path:
        return {}
    doc = json.loads(Path(path).read_text())
    if isinstance(doc, dict) and "rows" in doc:
        return {r["model"]: r["mac_ratio"] for r in doc["rows"] if r.get("mac_ratio") is not None}
    if isinstance(doc, list):
        return {r["model"]: r["mac_ratio"] for r in doc if r.get("mac_ratio") is not None}
    return {k: float(v) for k, v in doc.items()}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def render(rows: list[dict], args) -> None:
    import onnxruntime as ort

    title = (f"ORT {ort.__version__} CPU latency, {args.threads} intra-op thread(s), "
             f"opt={args.opt_level}, interleaved A/B, median")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for r in rows:
            print(f"{r['model']:24s} {fmt(r.get('original_ms'), '.2f')} ms -> {fmt(r.get('pruned_ms'), '.2f')} ms "
                  f"ratio {fmt(r.get('latency_ratio'), '.3f')} MAC ratio {fmt(r.get('mac_ratio'), '.3f')} "
                  f"{r.get('reason', '')}")
        return
    table = Table(title=title)
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("input", no_wrap=True)
    for head in ("original\nms", "pruned\nms", "latency ratio\n(pruned/orig)", "MAC\nratio", "runs"):
        table.add_column(head, justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for r in rows:
        lr, mr = r.get("latency_ratio"), r.get("mac_ratio")
        style = ""
        if lr is not None:
            style = "red" if lr >= 1.0 else ("yellow" if mr is not None and lr > mr * 1.5 else "green")
        shapes = r.get("input_shapes") or {}
        table.add_row(
            r["model"],
            ",".join("x".join(map(str, s)) for s in shapes.values()),
            fmt(r.get("original_ms"), ".2f"),
            fmt(r.get("pruned_ms"), ".2f"),
            f"[{style}]{fmt(lr, '.3f')}[/]" if style else fmt(lr, ".3f"),
            fmt(mr, ".3f"),
            str(r.get("iters", "-")),
            r.get("reason") or r.get("warning") or "",
        )
    Console(width=max(140, Console().width)).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("original", nargs="?", help="original .onnx (with PRUNED)")
    ap.add_argument("pruned", nargs="?", help="pruned .onnx")
    ap.add_argument("--zoo", help="directory of <name>.onnx originals (with --pruned-dir)")
    ap.add_argument("--pruned-dir", help="directory of <name>.pruned.onnx (default: --zoo)")
    ap.add_argument("--models", help="comma-separated names to take from --zoo (default: all with a pruned file)")
    ap.add_argument("--mac-ratio", type=float, help="MAC ratio pruned/original to show (single pair)")
    ap.add_argument("--coverage-json", help="bench_coverage.py --json output (or {name: ratio}) for MAC ratios")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--opt-level", choices=["disabled", "basic", "extended", "all"], default="all")
    ap.add_argument("--warmup", type=int, default=10, help="warmup runs of each model (default 10)")
    ap.add_argument("--iters", type=int, default=50, help="measured runs of each model, at most (default 50)")
    ap.add_argument("--min-iters", type=int, default=5, help="measured runs of each, at least (default 5)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time budget per pair (default 60)")
    ap.add_argument("--input-shape", action="append", metavar="NAME=DxDxD", help="shape for a dynamic input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)

    pairs: list[tuple[str, Path, Path]] = []
    if args.original or args.pruned:
        if not (args.original and args.pruned) or args.zoo:
            ap.error("give ORIGINAL PRUNED, or --zoo DIR [--pruned-dir DIR]")
        o, p = Path(args.original), Path(args.pruned)
        pairs.append((o.name.removesuffix(".onnx"), o, p))
    elif args.zoo:
        zoo = Path(args.zoo)
        pdir = Path(args.pruned_dir or args.zoo)
        if args.models:
            names = [m.strip() for m in args.models.split(",") if m.strip()]
        else:
            names = sorted(p.name.removesuffix(".onnx") for p in zoo.glob("*.onnx")
                           if not p.name.endswith((".pruned.onnx", ".masked.onnx"))
                           and (pdir / p.name.replace(".onnx", ".pruned.onnx")).exists())
        pairs = [(n, zoo / f"{n}.onnx", pdir / f"{n}.pruned.onnx") for n in names]
    else:
        ap.error("give ORIGINAL PRUNED, or --zoo DIR [--pruned-dir DIR]")
    if not pairs:
        print("error: no model pairs found", file=sys.stderr)
        return 2

    ratios = load_mac_ratios(args.coverage_json)
    rows = []
    for name, orig, pruned in pairs:
        missing = [str(p) for p in (orig, pruned) if not p.exists()]
        if missing:
            rows.append({"model": name, "status": "error", "reason": f"missing: {', '.join(missing)}"})
            continue
        mr = args.mac_ratio if args.mac_ratio is not None and len(pairs) == 1 else ratios.get(name)
        row = bench_pair(name, orig, pruned, args, mr)
        rows.append(row)
        print(f"{name}: " + (f"{row['original_ms']:.2f} ms -> {row['pruned_ms']:.2f} ms "
                             f"(x{row['latency_ratio']:.3f}, {row['iters']} runs)"
                             if row["status"] == "ok" else row["reason"]), file=sys.stderr, flush=True)

    render(rows, args)
    if args.json:
        import onnxruntime as ort

        doc = {
            "onnxruntime": ort.__version__,
            "threads": args.threads,
            "opt_level": args.opt_level,
            "warmup": args.warmup,
            "iters": args.iters,
            "cpu_count": os.cpu_count(),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
