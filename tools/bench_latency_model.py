#!/usr/bin/env python3
"""How well does a hardware profile predict ONNX Runtime latency? Predicted vs measured, per model.

For every ONNX model in a zoo folder (its index.json if there is one, else *.onnx): the latency the
profile predicts (onnxmorph's cost model) and the latency measured with ONNX Runtime on this machine
(1 intra-op thread, sequential, all graph optimizations; median of the runs after warm-up), for the
original and for the model pruned with `onnxmorph.prune(..., target=--prune-target, profile=...)`.
Prints the error per model and the share of models within ±10 %. For the --compare models it also
prunes to flops=0.5 and latency=0.5 and reports the measured latency ratio against the MAC ratio.

With one thread the clock is the calling thread's CPU time (ONNX Runtime runs a single-threaded
session on the caller; it does not count time spent preempted by other processes); the wall-clock
median is reported alongside. The profile's reference workload runs after every run of a model:
shared machines switch between a quiet and a loaded state (here models run 1.3x slower for tens of
seconds at a time), and only runs on the quiet machine count, as in calibration.

    python tools/bench_latency_model.py --profile host.json --zoo /work/zoo --json lat_model.json
    python tools/bench_latency_model.py --profile host.json --models resnet18,mobilenet_v2 --no-prune
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxmorph  # noqa: E402
from onnxmorph.analysis import analyze  # noqa: E402
from onnxmorph.cost import CostModel  # noqa: E402
from onnxmorph.bench.quiet import MachineSpeed  # noqa: E402
from onnxmorph.bench.timing import flush_caches, reference_model  # noqa: E402
from onnxmorph.cost.profile import load_profile  # noqa: E402
from onnxmorph.graph import load_model  # noqa: E402
from onnxmorph.runtime import make_session  # noqa: E402


REFERENCE = reference_model()


def session(model_bytes: bytes, threads: int):
    return make_session(model_bytes, threads)


def measure(model_bytes: bytes, shapes: dict, args) -> dict:
    """Median latency (ms) by thread CPU time and by wall clock, after warm-up.

    With the reference interleaved (default), only runs whose reference says the machine is quiet
    count (MachineSpeed.LOADED of the fastest reference seen, the calibration's included), as the
    profile was calibrated on the quiet machine; measuring goes on up to 3x --max-seconds to get
    --min-runs quiet runs, else all runs count and the row says `loaded`."""
    sess = session(model_bytes, args.threads)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64}.get(i.type, np.float32)
        shape = shapes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    for _ in range(args.warmup):
        sess.run(None, feeds)
    cpu, wall, ref = [], [], []
    ref_sess = session(REFERENCE.SerializeToString(), args.threads) if args.reference else None
    ref_feeds = {"x": rng.standard_normal([1, 64, 32, 32]).astype(np.float32)}

    def quiet() -> list[int]:
        if not ref:
            return list(range(len(cpu)))
        args.fastest_ref = min([args.fastest_ref, *ref])
        return [k for k, r in enumerate(ref) if r <= MachineSpeed.LOADED * args.fastest_ref]

    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        n_quiet = len(quiet())
        if len(cpu) >= args.runs and (n_quiet >= args.min_runs or not ref):
            break
        if len(cpu) >= args.min_runs and (elapsed > args.max_seconds * (3 if ref else 1)
                                          or (elapsed > args.max_seconds and n_quiet >= args.min_runs)):
            break
        if args.flush:
            flush_caches()
        w0, c0 = time.perf_counter(), time.thread_time()
        sess.run(None, feeds)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        if ref_sess is not None:  # interleaved: is the machine quiet or loaded during this model's runs
            if args.flush:
                flush_caches()
            c0 = time.thread_time()
            ref_sess.run(None, ref_feeds)
            ref.append(time.thread_time() - c0)
    keep = quiet()
    loaded = len(keep) < 3
    if loaded:
        keep = list(range(len(cpu)))
    pick = lambda xs: [xs[k] for k in keep]  # noqa: E731
    return {"cpu_ms": 1e3 * float(np.median(pick(cpu))), "wall_ms": 1e3 * float(np.median(pick(wall))),
            "min_ms": 1e3 * float(np.min(wall)), "runs": len(cpu), "quiet_runs": len(keep) if not loaded else 0,
            "loaded": loaded, "reference_ms": 1e3 * float(np.median(pick(ref))) if ref else None}


def measured_ms(m: dict, args) -> float:
    return m["cpu_ms"] if args.clock == "cpu" else m["wall_ms"]


def zoo_models(zoo: Path, only: list[str], skip: list[str]) -> list[tuple[str, Path]]:
    index = zoo / "index.json"
    if index.exists():
        entries = [(name, zoo / e["file"]) for name, e in json.loads(index.read_text()).items()]
    else:
        entries = [(p.stem, p) for p in sorted(zoo.glob("*.onnx")) if not p.name.endswith(".pruned.onnx")]
    return [(n, p) for n, p in entries if (not only or n in only) and n not in skip and p.exists()]


def err(pred: float, meas: float) -> float:
    return (pred - meas) / meas


def bench_model(name: str, path: Path, profile, args) -> dict:
    row: dict = {"model": name}
    t0 = time.perf_counter()
    loaded = load_model(str(path))
    shapes = {k: list(v) for k, v in loaded.static_inputs.items()}
    cm = CostModel(analyze(loaded), profile)
    row["predicted_ms"] = cm.latency_ms()
    row["macs"] = cm.totals()["macs"]
    m = measure(path.read_bytes(), shapes, args)
    row["measured"] = m
    row["measured_ms"] = measured_ms(m, args)
    row["error"] = err(row["predicted_ms"], row["measured_ms"])
    cal = profile.measured.get("reference_ms")
    if m.get("reference_ms") and cal:
        # the machine's speed now against calibration time: prediction scaled to the current speed
        row["speed"] = m["reference_ms"] / cal
        row["error_at_speed"] = err(row["predicted_ms"] * row["speed"], row["measured_ms"])
    targets = [] if args.no_prune else [(args.prune_target, None)]
    if name in args.compare:
        targets += [(t, None) for t in ("flops=0.5", "latency=0.5") if t != args.prune_target]
    for target, round_to in targets:
        key = f"pruned[{target}]"
        try:
            res = onnxmorph.prune(str(path), target=target, profile=profile, round_to=round_to)
        except onnxmorph.OnnxMorphError as exc:
            row[key] = {"error": str(exc)}
            continue
        rep = res.report
        pm = measure(res.model.SerializeToString(), shapes, args)
        row[key] = {
            "round_to": rep["target"]["round_to"],
            "predicted_ms": rep["pruned"]["latency_ms"],
            "measured": pm,
            "measured_ms": measured_ms(pm, args),
            "error": err(rep["pruned"]["latency_ms"], measured_ms(pm, args)),
            "mac_ratio": rep["pruned"]["macs"] / rep["original"]["macs"],
            "latency_ratio": measured_ms(pm, args) / row["measured_ms"],
            "predicted_ratio": rep["pruned"]["latency_ms"] / rep["original"]["latency_ms"],
        }
    # The same original again, minutes later: how far apart two measurements of one model are here.
    again = measure(path.read_bytes(), shapes, args)
    row["remeasured_ms"] = measured_ms(again, args)
    row["repeat_diff"] = (row["remeasured_ms"] - row["measured_ms"]) / row["measured_ms"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="profile name or JSON (e.g. one from `profiles calibrate`)")
    ap.add_argument("--zoo", default="/work/zoo", type=Path)
    ap.add_argument("--models", default="", help="comma-separated names (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--prune-target", default="flops=0.5")
    ap.add_argument("--no-prune", action="store_true")
    ap.add_argument("--compare", default="resnet18,mobilenet_v2",
                    help="models also pruned to flops=0.5 and latency=0.5 for the ratio table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None,
                    help="cpu: thread CPU time (default with 1 thread); wall: wall clock")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--min-runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=8.0, help="per measurement (min-runs always done)")
    ap.add_argument("--no-flush", dest="flush", action="store_false",
                    help="keep caches warm between runs (default: flush before each run, as calibration does, so "
                         "a model's weights are as cold as a neighbour's cache pressure could make them)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="do not interleave the profile's reference workload (which reports the machine's speed "
                         "against calibration time and the error of the prediction scaled to it)")
    ap.add_argument("--json", type=Path, help="write all rows here")
    args = ap.parse_args()
    args.clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    args.compare = [c for c in args.compare.split(",") if c]
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    profile = load_profile(args.profile)
    args.fastest_ref = profile.measured.get("reference_ms", np.inf) / 1e3
    models = zoo_models(args.zoo, [m for m in args.models.split(",") if m], [m for m in args.skip.split(",") if m])
    print(f"profile {profile.name} ({profile.kind}, channel multiple {profile.channel_multiple}); "
          f"{len(models)} models; clock {args.clock}, {args.threads} thread(s)", flush=True)
    rows = []
    for name, path in models:
        try:
            row = bench_model(name, path, profile, args)
        except Exception as exc:  # one broken model must not stop the benchmark
            row = {"model": name, "failed": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            if args.json is None:
                traceback.print_exc()
        rows.append(row)
        if "failed" in row:
            print(f"{name:22s} FAILED {row['failed']}", flush=True)
            continue
        line = (f"{name:22s} pred {row['predicted_ms']:8.3f} ms  meas {row['measured_ms']:8.3f} ms  "
                f"err {100 * row['error']:+6.1f} %")
        if "speed" in row:
            line += f" (reference x{row['speed']:.2f}: err {100 * row['error_at_speed']:+6.1f} %)"
        pr = row.get(f"pruned[{args.prune_target}]")
        if pr and "error" in pr and isinstance(pr["error"], float):
            line += (f" | pruned pred {pr['predicted_ms']:8.3f} meas {pr['measured_ms']:8.3f} "
                     f"err {100 * pr['error']:+6.1f} %")
        elif pr:
            line += f" | pruned: {pr['error']}"
        print(line + f"  (re-measured {100 * row['repeat_diff']:+.1f} %, {row['seconds']} s)", flush=True)
    ok = [r for r in rows if "failed" not in r]
    errs = [r["error"] for r in ok]
    perr = [r[k]["error"] for r in ok for k in r if k.startswith("pruned[") and isinstance(r[k].get("error"), float)]
    summary = {
        "profile": profile.name, "clock": args.clock, "threads": args.threads, "models": len(rows),
        "measured": len(ok), "failed": [r["model"] for r in rows if "failed" in r],
        "within_10pct_original": float(np.mean([abs(e) <= 0.10 for e in errs])) if errs else None,
        "within_10pct_pruned": float(np.mean([abs(e) <= 0.10 for e in perr])) if perr else None,
        "within_10pct_all": float(np.mean([abs(e) <= 0.10 for e in errs + perr])) if errs + perr else None,
        "within_10pct_original_at_reference_speed": float(np.mean([abs(r["error_at_speed"]) <= 0.10 for r in ok
                                                                   if "error_at_speed" in r]))
        if any("error_at_speed" in r for r in ok) else None,
        "median_abs_error_at_reference_speed": float(np.median([abs(r["error_at_speed"]) for r in ok
                                                                if "error_at_speed" in r]))
        if any("error_at_speed" in r for r in ok) else None,
        "reference_speed_range": [float(min(r["speed"] for r in ok if "speed" in r)),
                                  float(max(r["speed"] for r in ok if "speed" in r))]
        if any("speed" in r for r in ok) else None,
        "median_abs_error": float(np.median(np.abs(errs + perr))) if errs + perr else None,
        "median_abs_repeat_diff": float(np.median([abs(r["repeat_diff"]) for r in ok])) if ok else None,
        "within_10pct_original_vs_remeasured": float(np.mean([abs(r["predicted_ms"] - r["remeasured_ms"])
                                                              <= 0.10 * r["remeasured_ms"] for r in ok]))
        if ok else None,
    }
    print("\nsummary:", json.dumps(summary))
    comp = [r for r in ok if r["model"] in args.compare]
    if comp:
        print("\nmodel              target        round_to  MAC ratio  measured latency ratio  predicted ratio")
        for r in comp:
            for k, v in r.items():
                if k.startswith("pruned[") and "mac_ratio" in v:
                    print(f"{r['model']:18s} {k[7:-1]:13s} {v['round_to']:8d}  {v['mac_ratio']:9.3f}  "
                          f"{v['latency_ratio']:22.3f}  {v['predicted_ratio']:15.3f}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows, "argv": sys.argv}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
