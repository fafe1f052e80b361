"""Wall time of each prune stage (load, analyze, decide, emit, verify) for ONNX models.

    python tools/bench_speed.py /work/zoo/resnet50.onnx /work/zoo/vit_b_16.onnx [--target flops=0.5]
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

import onnxmorph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--repeats", type=int, default=2, help="runs per model; the fastest is reported")
    args = ap.parse_args()
    table = Table(title=f"prune stage wall times (s), magnitude, {args.target}")
    for col in ("model", "load", "analyze", "score", "decide", "emit", "analyze+emit", "verify", "total"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for path in args.models:
        best = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = onnxmorph.prune(path, target=args.target)
            t = dict(res.report["timings"], wall=time.perf_counter() - t0)
            if best is None or t["wall"] < best["wall"]:
                best = t
        name = path.rsplit("/", 1)[-1].removesuffix(".onnx")
        table.add_row(name, *(f"{best.get(k, 0):.2f}" for k in ("load", "analyze", "score", "decide", "emit")),
                      f"{best['analyze'] + best['emit']:.2f}", f"{best['verify']:.2f}", f"{best['wall']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
