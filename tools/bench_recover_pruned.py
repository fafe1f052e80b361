#!/usr/bin/env python3
"""Recovery fine-tuning of a pruned model already on disk, against its original, scored like
`bench_pretrained.py` (same cached data, same metric): what an optimizer and rate can still gain once
the cut and the refit are done, without redoing them.

The pruned model is trained whole (every unit kept) toward the original's outputs on the calibration
inputs; held-out rows, probe and guard are recovery's own (`Trainer.choose_lr`, `Trainer.run`). Example
(the refit-only ppocr-rec at flops=0.7, from `bench_pretrained.py --methods magnitude --train-steps 0`):

    python tools/bench_recover_pruned.py ppocr-rec /work/cache/bench_pretrained/ppocr-rec/wt5os/magnitude_f0.7/pruned.onnx \\
        --optimizer adamw --lr 1e-5 --steps 150 --mix
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pretrained as bp  # noqa: E402

from onnxmorph.analysis import analyze  # noqa: E402
from onnxmorph.graph import load_model, parse_input_shapes  # noqa: E402
from onnxmorph.train.engine import apply_params  # noqa: E402
from onnxmorph.train.instrument import FixedMask  # noqa: E402
from onnxmorph.train.loop import Trainer, held_out_rows  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=list(bp.MODELS))
    ap.add_argument("pruned", help="the pruned ONNX model to fine-tune")
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/pretrained"))
    ap.add_argument("--work", type=Path, default=Path("/work/cache/bench_pretrained"))
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--eval", type=int, default=512)
    ap.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    ap.add_argument("--lr", type=float, default=1e-3, help="the rate, or the probe's first rate with --probe")
    ap.add_argument("--probe", action="store_true", help="back the rate off as recovery's probe does")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--mix", action="store_true", help="distil on blends of the rows (label-free, gentle cuts)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    spec = bp.MODELS[args.model]
    calib, ev = bp.build_data(args.model, args.work, args.calib, args.eval)
    name = spec["input"]
    shape = parse_input_shapes([f"{name}={spec['shape']}"])
    original = args.cache / spec["file"]
    loaded = load_model(args.pruned, shape)
    analysis = analyze(loaded)
    x = np.load(calib)[name]
    keep = np.ones(analysis.num_units, bool)
    t0 = time.perf_counter()
    trainer = Trainer(FixedMask(), analysis, data={name: x}, batch_size=args.batch_size, seed=0, lr=args.lr,
                      optimizer=args.optimizer, teacher=load_model(original, shape).model,
                      val_rows=held_out_rows(len(x), 0)[0], mix_inputs=args.mix)
    try:
        spent = trainer.choose_lr(args.lr, 10, keep)[1] if args.probe else 0
        curve = trainer.run(args.steps - spent, reg_weights=lambda k: np.zeros(len(k)), strength=0.0, unit_mask=keep,
                            label="recovery", guard_every=max(5, args.steps // 10))
        params = trainer.session.params()
    finally:
        trainer.close()
    for c in curve:
        if "held_out_loss" in c:
            print(f"  step {c['step']}: held-out loss {c['held_out_loss']:.4g}, top-1 {c.get('held_out_top1')}, lr {c['lr']:.2e}")
    print("\n".join(trainer.notes))
    x_eval = np.load(ev)[name]
    ref = bp.run_model(original, x_eval, name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tuned.onnx"
        onnx.save(apply_params(loaded.model, params), path)
        before, after = bp.run_model(Path(args.pruned), x_eval, name), bp.run_model(path, x_eval, name)
    scores = {k: bp.agreement(args.model, ref, out) for k, out in (("before", before), ("after", after))}
    print(" | ".join(f"{k}: {v['metric']} {v['value']:.4f} ± {v.get('se', float('nan')):.4f}" for k, v in scores.items())
          + f" | {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
