"""Sweep wall time on the demo model: local pool with 1 and 2 workers, and Ray with 2 CPUs.

Two parts, each run on all three backends in one process, configurations interleaved per repeat
so that a change of machine load hits all of them:
  1. training sweep: fisher at flops=0.25,0.4,0.55,0.7 with --steps S (4 trials: even for 2 slots;
     S optimizer steps in all per trial, plus the least-squares reconstruction);
     wall time of the whole sweep (loading, reference outputs, pool or Ray start, trials, page)
     and the speed-ups of 2 workers and of Ray against 1 worker;
  2. overhead sweep: magnitude at 8 targets, --steps 0, no reconstruction (one-shot trials of
     ~0.1 s, so that what is not the trial shows): per-trial overhead = the driver's submit-to-result time minus the trial's own
     run time in its worker (shipping arguments and results, scheduling), median over trials.
Ray's own start (ray.init with 2 CPUs) is timed separately and not in the sweep walls.

  python tools/bench_sweep.py [--steps 100] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxmorph

REPO = Path(__file__).resolve().parent.parent
MODEL, DATA, TEST = (REPO / "models" / n for n in ("demo_cnn.onnx", "demo_cnn.npz", "demo_cnn_test.npz"))
CONFIGS = (("local, 1 worker", dict(workers=1)), ("local, 2 workers", dict(workers=2)),
           ("ray, 2 CPUs", dict(ray=True, trial_cpus=1)))


def one(kind: str, cfg: dict, steps: int, root: Path) -> dict:
    if kind == "train":
        spec = dict(methods="fisher", targets="flops=0.25,0.4,0.55,0.7", steps=steps)
    else:
        spec = dict(methods="magnitude", targets="flops=0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", steps=0, reconstruct=False)
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    r = onnxmorph.sweep(MODEL, data=DATA, eval_data=TEST, outdir=out, **spec, **cfg)
    wall = time.perf_counter() - t0
    assert not r.failed, [t.error for t in r.failed]
    over = [t.wall - t.seconds for t in r.trials]
    return {"wall": wall, "trial_seconds": sum(t.seconds for t in r.trials),
            "overhead_median": statistics.median(over), "overhead_mean": statistics.fmean(over),
            "agreement": [t.value("agreement") for t in r.trials], "threads": r.summary["backend"]["threads_per_trial"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import ray

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    rows: dict = {name: {"train": [], "overhead": []} for name, _ in CONFIGS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for kind in ("train", "overhead"):
                    for name, cfg in CONFIGS:
                        rows[name][kind].append(one(kind, cfg, args.steps, Path(tmp)))
    finally:
        ray.shutdown()
    load1 = os.getloadavg()
    base = statistics.median(r["wall"] for r in rows[CONFIGS[0][0]]["train"])
    print(f"cores {len(os.sched_getaffinity(0))} · load average {load0[0]:.2f} before, {load1[0]:.2f} after · "
          f"ray.init(num_cpus=2) {ray_start:.2f} s · fisher --steps {args.steps} · repeats {args.repeats}")
    print(f"{'backend':18} {'threads':>7} {'train sweep s':>13} {'speed-up':>8} {'trial s (sum)':>13} "
          f"{'overhead sweep s':>16} {'overhead/trial ms (median, mean)':>33}")
    result = {"ray_init_s": ray_start, "load": [load0[0], load1[0]], "steps": args.steps, "configs": {}}
    for name, _ in CONFIGS:
        tr, ov = rows[name]["train"], rows[name]["overhead"]
        wall = statistics.median(r["wall"] for r in tr)
        med = statistics.median(r["overhead_median"] for r in ov)
        mean = statistics.median(r["overhead_mean"] for r in ov)
        print(f"{name:18} {tr[0]['threads']:>7} {wall:>13.2f} {base / wall:>8.2f} "
              f"{statistics.median(r['trial_seconds'] for r in tr):>13.2f} "
              f"{statistics.median(r['wall'] for r in ov):>16.2f} {1e3 * med:>16.1f}, {1e3 * mean:>8.1f}")
        result["configs"][name] = {"train": tr, "overhead": ov, "speedup": base / wall}
    agree = {name: rows[name]["train"][0]["agreement"] for name, _ in CONFIGS}
    print("same held-out agreement on every backend:", len({json.dumps(v) for v in agree.values()}) == 1, agree)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
