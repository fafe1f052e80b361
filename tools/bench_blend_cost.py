#!/usr/bin/env python3
"""Seconds per recovery step with and without blended inputs, side by side in one process.

Blends (`Trainer(mix_inputs=True)`, label-free recovery at targets of 0.5 and up) run the original model
on every batch. This times `--steps` optimizer steps of each trainer in alternation, `--rounds` times, on
the same model and data, and prints the median ratio (blends / rows). Example:

    python tools/bench_blend_cost.py /work/cache/pretrained/rapidocr-onnxruntime__ch_ppocr_mobile_v2.0_cls_infer.onnx \\
        /work/cache/bench_pretrained/ppocr-cls/calib512_s0.npz --input-shape x=1x3x48x192
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onnxmorph.analysis import analyze
from onnxmorph.graph import load_model, parse_input_shapes
from onnxmorph.train.instrument import FixedMask
from onnxmorph.train.loop import Trainer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data", help=".npz of inputs named after the model's inputs")
    ap.add_argument("--input-shape", action="append", help="NAME=1x3x48x192 for symbolic dims (repeatable)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    analysis = analyze(load_model(args.model, input_shapes=parse_input_shapes(args.input_shape) or None))
    data = dict(np.load(args.data))
    u = analysis.num_units
    trainers = {mix: Trainer(FixedMask(), analysis, data=data, batch_size=args.batch_size, lr=1e-4, seed=0,
                             mix_inputs=mix) for mix in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for mix, trainer in trainers.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer._step(np.zeros(u, np.float32), 0.0, np.ones(u, np.float32), None)
                times[mix].append((time.perf_counter() - t0) / args.steps)
    finally:
        for trainer in trainers.values():
            trainer.close()
    ratio = float(np.median(np.array(times[True]) / np.array(times[False])))
    print(f"s/step rows {[round(t, 3) for t in times[False]]}, blends {[round(t, 3) for t in times[True]]}; "
          f"median ratio blends/rows {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
