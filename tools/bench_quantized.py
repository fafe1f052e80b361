#!/usr/bin/env python3
"""Quantized demo: prune onnxruntime-quantized models, time them against the unpruned quantized model and
score them against the fp32 original.

The demo (models/demo_cnn.onnx) is quantized with onnxruntime's own quantizer, as a user would:
`quant_pre_process` then `quantize_static` (uint8 activations, int8 weights, MinMax calibration on the
first --calib images of models/demo_cnn.npz), in the QDQ format (per-channel and per-tensor weights) and
the QOperator format. Rows:

- `qdq-pc magnitude`, `qdq-pt magnitude`: `onnxmorph.prune(QUANTIZED, target="flops=F")` (one-shot, no data).
- `qdq-pc magnitude --data`: the same with `data=TRAIN_NPZ, labels="labels"`: quantized weights cannot be
  trained (onnxmorph refuses --steps on them), so the data only serves the held-out check; the row records
  that the least-squares refit and recovery are skipped.
- `fp32 prune+recover -> qdq-pc`: the path for accuracy: prune the fp32 model with recovery
  (`magnitude`, `data=TRAIN_NPZ`, labels, the default 300 steps), then quantize the pruned model the same way.
- `qoperator-pc magnitude`: refused (its integer-domain channels are frozen): the one-line error is recorded.

Latency: ONNX Runtime CPU, 1 thread, the unpruned quantized model and the pruned one timed interleaved in
the same run (`onnxmorph.measure.measured_ratio`: median of pairs, bootstrap relative standard error).
Accuracy: argmax of the logits vs `labels` on models/demo_cnn_test.npz (497 images, one image = 0.2 points).

    nice -n 10 .venv/bin/python tools/bench_quantized.py --json docs/bench_quantized.json
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

MODEL = ROOT / "models" / "demo_cnn.onnx"
TRAIN = ROOT / "models" / "demo_cnn.npz"
TEST = ROOT / "models" / "demo_cnn_test.npz"


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
    m = measured_ratio(onnx.load(str(quantized)), pruned, threads=1, feeds={"input": x[:1]})
    out = {"row": name, "macs_fraction": round(macs(pruned) / macs(onnx.load(str(quantized))), 4),
           "latency_ms": [m["original_ms"], m["pruned_ms"]], "latency_ratio": round(m["ratio"], 3),
           "ratio_rel_se": round(m["ratio_rel_se"], 4), "pairs": m["pairs"],
           "accuracy_fp32": round(100 * fp32_acc, 1), "accuracy_quantized": round(100 * accuracy(quantized, x, y), 1),
           "accuracy_pruned": round(100 * accuracy(pruned, x, y), 1), "note": note}
    if report is not None:
        q = report["verify"].get("quantized") or {}
        out["verify_steps"] = [q.get("reference_max_diff_steps"), q.get("optimized_max_diff_steps")]
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--calib", type=int, default=200, help="calibration images (the first of demo_cnn.npz)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    train, test = np.load(TRAIN), np.load(TEST)
    x, y = test["input"], test["labels"]
    target = f"flops={args.fraction:g}"
    fp32_acc = accuracy(MODEL, x, y)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        calib = train["input"][:args.calib]
        q = {name: quantize(MODEL, tmp / f"{name}.onnx", fmt, pc, calib)
             for name, fmt, pc in (("qdq-pc", "QDQ", True), ("qdq-pt", "QDQ", False),
                                   ("qoperator-pc", "QOperator", True))}
        for name in ("qdq-pc", "qdq-pt"):
            t0 = time.perf_counter()
            res = onnxmorph.prune(str(q[name]), target=target)
            rows.append(row(f"{name} magnitude", q[name], res.model, x, y, fp32_acc, res.report,
                            f"prune {time.perf_counter() - t0:.1f} s"))
        res = onnxmorph.prune(str(q["qdq-pc"]), target=target, data=str(TRAIN), labels="labels")
        rows.append(row("qdq-pc magnitude --data", q["qdq-pc"], res.model, x, y, fp32_acc, res.report,
                        "; ".join(n for n in res.report["notes"] if "custom domain" not in n)))
        fp32 = onnxmorph.prune(str(MODEL), target=target, data=str(TRAIN), labels="labels")
        fp32.save(tmp / "fp32_pruned.onnx")
        requant = quantize(tmp / "fp32_pruned.onnx", tmp / "fp32_pruned_qdq.onnx", "QDQ", True, calib)
        rows.append(row("fp32 prune+recover -> qdq-pc", q["qdq-pc"], onnx.load(str(requant)), x, y, fp32_acc,
                        note=f"fp32 pruned accuracy {100 * accuracy(fp32.model, x, y):.1f} %"))
        try:
            onnxmorph.prune(str(q["qoperator-pc"]), target=target)
            rows.append({"row": "qoperator-pc magnitude", "note": "pruned (unexpected)"})
        except OnnxMorphError as exc:
            rows.append({"row": "qoperator-pc magnitude", "note": f"refused: {exc}"})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| row | MACs | latency ms (quantized → pruned) | ratio (±se) | accuracy % fp32 / quantized / pruned |"
          f" verify steps (ref / opt) |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "latency_ms" not in r:
            print(f"| {r['row']} | | | | | {r['note']} |")
            continue
        steps = r.get("verify_steps") or ["", ""]
        print(f"| {r['row']} | {r['macs_fraction']:.3f} | {r['latency_ms'][0]:.3f} → {r['latency_ms'][1]:.3f} | "
              f"{r['latency_ratio']:.3f} (±{100 * r['ratio_rel_se']:.1f} %) | {r['accuracy_fp32']} / "
              f"{r['accuracy_quantized']} / {r['accuracy_pruned']} | {steps[0]} / {steps[1]} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
