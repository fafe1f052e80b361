#!/usr/bin/env python3
"""Quantized demo: prune onnxruntime-quantized models, time them against the unpruned quantized model and
score them against the fp32 original.

The demo (models/demo_cnn.onnx) is quantized with onnxruntime's own quantizer, as a user would:
`quant_pre_process` then `quantize_static` (uint8 activations, int8 weights, MinMax calibration on the
first --calib images of models/demo_cnn.npz), in the QDQ format (per-channel and per-tensor weights) and
the QOperator format. Rows:

- `qdq-pc magnitude`, `qdq-pt magnitude`: `onnxmorph.prune(QUANTIZED, target="flops=F")` (one-shot, no data).
- `qdq-pc magnitude --data`, `qdq-pt magnitude --data`: the same with `data=TRAIN_NPZ, labels="labels"`:
  quantized weights cannot take gradient steps (onnxmorph refuses --steps on them), so the recovery is the
  least-squares refit alone, computed on the dequantized weights and stored back as int8.
- `fp32 magnitude --data`: the fp32 model pruned the usual way (refit + 300 recovery steps), timed against
  the fp32 original: the reference for what the cut itself buys. `-> quantize qdq-pc`: that pruned model
  quantized like qdq-pc and timed against the unpruned qdq-pc (prune first, quantize after).
- `qoperator-pc magnitude`: QLinearConv prunes, the com.microsoft ops onnxruntime writes around it
  (QLinearAdd, QLinearMul, QLinearConcat, QGemm, ...) freeze the channels they touch; the one-line error
  of an unreachable target is recorded, then the `--best-effort` result.

Latency: ONNX Runtime CPU, 1 thread, the unpruned quantized model and the pruned one timed interleaved in
the same run (`onnxmorph.measure.measured_ratio`: median of pairs, bootstrap relative standard error).
Accuracy: argmax of the logits vs `labels` on models/demo_cnn_test.npz (497 images, one image = 0.2 points).
`--model resnet_bn` runs the same on models/resnet_bn.onnx (same digits data; BatchNormalization kept in
the fp32 file, folded by the quantizer's pre-processing).

    nice -n 10 .venv/bin/python tools/bench_quantized.py                  # the demo, channels as they fall
    nice -n 10 .venv/bin/python tools/bench_quantized.py --round-to 8     # channel counts multiples of 8
    nice -n 10 .venv/bin/python tools/bench_quantized.py --model resnet_bn
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxmorph  # noqa: E402
from onnxmorph.errors import OnnxMorphError  # noqa: E402
from onnxmorph.measure import measured_ratio  # noqa: E402
from onnxmorph.runtime import make_session  # noqa: E402

MODELS = {"demo": ROOT / "models" / "demo_cnn.onnx", "resnet_bn": ROOT / "models" / "resnet_bn.onnx"}
TRAIN = ROOT / "models" / "demo_cnn.npz"
TEST = ROOT / "models" / "demo_cnn_test.npz"
BATCHES = (1, 32)


def quantize(fp32_path: Path, out: Path, fmt: str, per_channel: bool, calib: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def accuracy(model: onnx.ModelProto | Path, x: np.ndarray, y: np.ndarray) -> float:
    s = make_session(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))
    name = s.get_inputs()[0].name
    batch = s.get_inputs()[0].shape[0]
    step = len(x) if not isinstance(batch, int) else batch
    preds = np.concatenate([np.argmax(s.run(None, {name: x[i:i + step]})[0], axis=1) for i in range(0, len(x), step)])
    return float((preds == y).mean())


def macs(model) -> int:
    return onnxmorph.api.summarize(onnxmorph.inspect(model))["macs"]


def row(name, quantized, pruned, x, y, fp32_acc, report=None, note=""):
    base = onnx.load(str(quantized))
    out = {"row": name, "macs_fraction": round(macs(pruned) / macs(base), 4)}
    for batch in BATCHES:
        m = measured_ratio(base, pruned, threads=1, feeds={"input": x[:batch]})
        out[f"batch{batch}"] = {"latency_ms": [m["original_ms"], m["pruned_ms"]], "ratio": round(m["ratio"], 3),
                                "ratio_rel_se": round(m["ratio_rel_se"], 4), "pairs": m["pairs"]}
    out.update({"accuracy_fp32": round(100 * fp32_acc, 1), "accuracy_quantized": round(100 * accuracy(base, x, y), 1),
                "accuracy_pruned": round(100 * accuracy(pruned, x, y), 1), "note": note})
    if report is not None:
        q = report["verify"].get("quantized") or {}
        out["verify_steps"] = [q.get("reference_max_diff_steps"), q.get("optimized_max_diff_steps")]
    print(json.dumps(out), flush=True)
    return out


def _notes(report) -> str:
    return "; ".join(n for n in report["notes"] if "custom domain" not in n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="demo")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=1, help="channel multiple for every prune (onnxmorph's --round-to)")
    ap.add_argument("--calib", type=int, default=200, help="calibration images (the first of demo_cnn.npz)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    train, test = np.load(TRAIN), np.load(TEST)
    x, y = test["input"], test["labels"]
    target = f"flops={args.fraction:g}"
    model_path = MODELS[args.model]
    opts = {"target": target, "round_to": args.round_to}
    fp32_acc = accuracy(model_path, x, y)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = train["input"][:args.calib]
        q = {name: quantize(model_path, tmp / f"{name}.onnx", fmt, pc, calib)
             for name, fmt, pc in (("qdq-pc", "QDQ", True), ("qdq-pt", "QDQ", False),
                                   ("qoperator-pc", "QOperator", True))}
        for name in ("qdq-pc", "qdq-pt"):
            t0 = time.perf_counter()
            res = onnxmorph.prune(str(q[name]), **opts)
            rows.append(row(f"{name} magnitude", q[name], res.model, x, y, fp32_acc, res.report,
                            f"prune {time.perf_counter() - t0:.1f} s"))
        for name in ("qdq-pc", "qdq-pt"):
            t0 = time.perf_counter()
            res = onnxmorph.prune(str(q[name]), data=str(TRAIN), labels="labels", **opts)
            rows.append(row(f"{name} magnitude --data", q[name], res.model, x, y, fp32_acc, res.report,
                            f"prune {time.perf_counter() - t0:.1f} s; {_notes(res.report)}"))
        t0 = time.perf_counter()
        fp32 = onnxmorph.prune(str(model_path), data=str(TRAIN), labels="labels", **opts)
        seconds = time.perf_counter() - t0
        fp32.save(tmp / "fp32_pruned.onnx")
        rows.append(row("fp32 magnitude --data (reference, vs fp32)", model_path, fp32.model, x, y, fp32_acc, None,
                        f"prune {seconds:.1f} s (refit + 300 recovery steps)"))
        requant = quantize(tmp / "fp32_pruned.onnx", tmp / "fp32_pruned_qdq.onnx", "QDQ", True, calib)
        rows.append(row("fp32 magnitude --data -> quantize qdq-pc", q["qdq-pc"], onnx.load(str(requant)), x, y,
                        fp32_acc, None, "the fp32 row's model, quantized like qdq-pc"))
        for extra in ({}, {"best_effort": True}):
            label = "qoperator-pc magnitude" + (" --best-effort" if extra else "")
            try:
                res = onnxmorph.prune(str(q["qoperator-pc"]), **opts, **extra)
                reached = "reached" if res.report["target"]["reached"] else "not reached"
                rows.append(row(label, q["qoperator-pc"], res.model, x, y, fp32_acc, res.report,
                                f"target {reached}: {res.report['target']['achieved']:.3f}; "
                                f"{len(res.report['frozen'])} frozen groups"))
            except OnnxMorphError as exc:
                rows.append({"row": label, "note": f"refused: {exc}"})
                print(json.dumps(rows[-1]), flush=True)
    print("\n| row | MACs | ms batch 1 (before → after) | ratio (±se) | ms batch 32 | ratio (±se) | "
          "accuracy % fp32 / before / after | verify steps (ref / opt) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "batch1" not in r:
            print(f"| {r['row']} | | | | | | | {r['note']} |")
            continue
        steps = r.get("verify_steps") or ["", ""]
        cells = []
        for b in BATCHES:
            m = r[f"batch{b}"]
            cells += [f"{m['latency_ms'][0]:.3f} → {m['latency_ms'][1]:.3f}",
                      f"{m['ratio']:.3f} (±{100 * m['ratio_rel_se']:.1f} %)"]
        print(f"| {r['row']} | {r['macs_fraction']:.3f} | {' | '.join(cells)} | {r['accuracy_fp32']} / "
              f"{r['accuracy_quantized']} / {r['accuracy_pruned']} | {steps[0]} / {steps[1]} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
