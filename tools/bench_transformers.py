#!/usr/bin/env python3
"""Transformer pruning benchmark (issue #6): prune ViT/Swin/MaxViT/BERT-style exports to a MAC target
under each attention mode, verify, count the heads / MLP channels / embedding width kept, and time the
pruned model against the original in ONNX Runtime (tools/bench_latency.py, 1 thread, interleaved).

    python tools/bench_transformers.py                       # the default set below, into /tmp/bench6
    python tools/bench_transformers.py --only vit_b_16 --variants heads,head-dims --out /tmp/b

Models come from /work/zoo (tools/export_zoo.py, tools/export_transformers.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "heads": {},
    "head-dims": {"attention": "head-dims"},
    "heads+emb": {"prune_embedding": True},
    "heads round8": {"round_to": 8},
}
DEFAULT = [
    ("vit_b_16", ["heads", "head-dims", "heads+emb", "heads round8"]),
    ("swin_t", ["heads", "head-dims", "heads+emb", "heads round8"]),
    ("maxvit_t", ["heads"]),
    ("mini_bert", ["heads"]),
    ("torch_encoder", ["heads"]),
]


def count(groups, prefix):
    sel = [g for g in groups if g["name"].startswith(prefix)]
    return sum(g["kept"] for g in sel), sum(g["channels"] for g in sel)


def main() -> None:
    import onnxmorph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="/work/zoo")
    ap.add_argument("--out", default="/tmp/bench6")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--variants", help="comma-separated variants (default: per model)")
    ap.add_argument("--latency-seconds", type=float, default=100.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [(m, args.variants.split(",") if args.variants else v) for m, v in DEFAULT
            if not args.only or m in args.only.split(",")]
    rows = []
    for name, variants in plan:
        src = Path(args.zoo) / f"{name}.onnx"
        for tag in variants:
            t0 = time.time()
            res = onnxmorph.prune(src, target=args.target, **VARIANTS[tag])
            wall = time.time() - t0
            dst = out / f"{name}.{tag.replace(' ', '_').replace('+', '_')}.onnx"
            res.save(dst)
            rep = res.report
            row = {"model": name, "variant": tag, "wall_s": round(wall, 1),
                   "macs": [rep["original"]["macs"], rep["pruned"]["macs"]],
                   "params": [rep["original"]["params"], rep["pruned"]["params"]],
                   "verify_max_abs_diff": rep["verify"]["max_abs_diff"], "passed": rep["verify"]["passed"],
                   "heads": count(rep["groups"], "attention head"), "mlp": count(rep["groups"], "MLP hidden"),
                   "embedding": count(rep["groups"], "embedding width")}
            lat = out / (dst.name + ".lat.json")
            subprocess.run([sys.executable, str(Path(__file__).parent / "bench_latency.py"), str(src), str(dst),
                            "--mac-ratio", f"{row['macs'][1] / row['macs'][0]:.4f}", "--warmup", "3", "--iters", "30",
                            "--min-iters", "8", "--max-seconds", str(args.latency_seconds), "--json", str(lat)],
                           check=True, capture_output=True)
            lrow = json.loads(lat.read_text())["rows"][0]
            row["latency_ms"] = [round(lrow["original_ms"], 1), round(lrow["pruned_ms"], 1)]
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | attention units | MACs before → after (M) | ratio | params (M) | heads kept | MLP kept "
          "| embedding kept | verify max diff | ORT ms (1 thread) | latency ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (m0, m1), (p0, p1), (l0, l1) = r["macs"], r["params"], r["latency_ms"]
        emb = f"{r['embedding'][0]}/{r['embedding'][1]}" if r["embedding"][1] else "frozen"
        print(f"| {r['model']} | {r['variant']} | {m0 / 1e6:,.1f} → {m1 / 1e6:,.1f} | {m1 / m0:.3f} "
              f"| {p0 / 1e6:.2f} → {p1 / 1e6:.2f} | {r['heads'][0]}/{r['heads'][1]} | {r['mlp'][0]}/{r['mlp'][1]} "
              f"| {emb} | {r['verify_max_abs_diff']:.1e} | {l0} → {l1} | {l1 / l0:.3f} |")


if __name__ == "__main__":
    main()
