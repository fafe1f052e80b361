#!/usr/bin/env python3
"""How much a few optimizer steps cost a model that already matches its teacher, against random steps of
the same size, side by side in one process.

Recovery starts next to the original model. Where the distillation loss is sharp there, Adam (which moves
every weight by about its rate, however small the gradient) climbs out of the minimum, and no rate lowers
the held-out loss. This starts from the intact model (student = teacher, held-out KL 0) and prints the
held-out loss after `--steps` warmed-up steps at each rate, and after a random step of the same size per
tensor (each weight moved by the same RMS, random signs). A ratio far above 1 means the optimizer's steps
go where the loss is sharp. Example:

    python tools/bench_sharpness.py /work/cache/pretrained/rapidocr-onnxruntime__ch_PP-OCRv4_rec_infer.onnx \\
        /work/cache/bench_pretrained/ppocr-rec/calib512_s0.npz --input-shape x=1x3x48x320 --batch-size 8
"""

from __future__ import annotations

import argparse

import numpy as np

from onnxmorph.analysis import analyze
from onnxmorph.graph import load_model, parse_input_shapes
from onnxmorph.train.instrument import FixedMask
from onnxmorph.train.graph import weight_initializers
from onnxmorph.train.loop import Trainer, weight_scaled_lr


def run(trainer: Trainer, lr: float, steps: int, units: int) -> dict[str, np.ndarray]:
    """`steps` steps warmed up to `lr` (as the recovery probe takes them); returns the weights they reach."""
    ones = np.ones(units, np.float32)
    for k in range(steps):
        trainer.session.set_lr(lr * (k + 1) / steps)
        trainer._step(np.zeros(units, np.float32), 0.0, ones, ones.astype(bool))
    return trainer.session.params()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data", help=".npz of inputs named after the model's inputs")
    ap.add_argument("--input-shape", action="append", help="NAME=1x3x48x320 for symbolic dims (repeatable)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rows", type=int, default=200, help="rows of --data used (a tenth held out)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    ap.add_argument("--lrs", type=float, nargs="*", help="rates (default: the weight-scaled rate, then /3, /9, /27, /81)")
    args = ap.parse_args(argv)
    analysis = analyze(load_model(args.model, input_shapes=parse_input_shapes(args.input_shape) or None))
    data = {k: v[:args.rows] for k, v in np.load(args.data).items()}
    units = analysis.num_units
    lrs = args.lrs or [weight_scaled_lr(analysis.loaded.model, weight_initializers(analysis.loaded.graph())) / 3 ** k
                       for k in range(5)]
    trainer = Trainer(FixedMask(), analysis, data=data, batch_size=args.batch_size, seed=0, optimizer=args.optimizer)
    rng = np.random.default_rng(0)
    print(f"{len(trainer.val_rows)} held-out rows; held-out loss of the intact model {trainer.validation_loss():.3g}")
    print(f"| rate | {args.optimizer} {args.steps} steps | random step of the same size | ratio | RMS step / RMS weight (median tensor) |")
    print("|---:|---:|---:|---:|---:|")
    try:
        start = trainer.session.params()
        for lr in lrs:
            moved = run(trainer, lr, args.steps, units)
            stepped = trainer.validation_loss()
            rms = {k: float(np.sqrt(np.mean(np.square(moved[k].astype(np.float64) - start[k])))) for k in start}
            rand = {k: (v + rms[k] * rng.choice([-1.0, 1.0], v.shape)).astype(v.dtype) for k, v in start.items()}
            trainer.session.load_params(rand)
            random = trainer.validation_loss()
            trainer.session.load_params(start)
            trainer.session.reset_optimizer()  # each rate from the intact model with fresh moments
            share = np.median([rms[k] / max(float(np.sqrt(np.mean(np.square(v.astype(np.float64))))), 1e-12)
                               for k, v in start.items() if v.ndim >= 2])
            print(f"| {lr:.3g} | {stepped:.4g} | {random:.4g} | {stepped / max(random, 1e-12):.1f} | {share:.2e} |",
                  flush=True)
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
