"""Held-out fidelity: how closely a pruned model follows the original on inputs it was not tuned on.

Per output (kinds from `graph.outputs`): top-1 agreement along the class axis for logits and
probabilities, relative error and cosine for dense outputs. A class output with positions (a CTC
recognizer's [N, T, C], a segmentation or face map's [N, C, H, W]) also gets the mean IoU over classes
of the two argmax maps, pooled over every position: per-position agreement would count a map that is
99 % background as 99 % right whatever it does to the rest. The headline `agreement` is the worst
output's: mean IoU for positional class outputs, top-1 agreement for [N, C] ones, cosine for dense
outputs. With labels, also the accuracy of both models.
"""

from __future__ import annotations

import numpy as np
import onnx

from .graph.outputs import OutputKind, classify_outputs
from .runtime import make_session


def run_batched(model: onnx.ModelProto, inputs: dict[str, np.ndarray], batch: int | None = None,
                session=None) -> dict[str, np.ndarray]:
    """All outputs of `model` over `inputs` (arrays with a common first axis), `batch` rows at a time.

    A model with a fixed batch size is fed exactly that many rows (the last chunk wraps around)."""
    session = session or make_session(model)
    first = session.get_inputs()[0].shape[0]
    fixed = first if isinstance(first, int) and first > 0 else None
    step = fixed or batch or 64
    names = [o.name for o in session.get_outputs()]
    n = next(iter(inputs.values())).shape[0]
    chunks: dict[str, list] = {k: [] for k in names}
    for start in range(0, n, step):
        idx = np.arange(start, start + step) % n if fixed else np.arange(start, min(n, start + step))
        outs = session.run(names, {k: v[idx] for k, v in inputs.items()})
        keep = min(step, n - start)
        for k, o in zip(names, outs):
            chunks[k].append(np.asarray(o)[:keep])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                    kinds: dict[str, OutputKind] | None = None) -> dict:
    """Per-output fidelity of `candidate` against `reference` (same names, same shapes)."""
    kinds = kinds or classify_outputs(reference)
    per_output, headline = {}, []
    for name, ref in reference.items():
        kind = kinds[name]
        if kind.kind == "skip":
            continue
        out = candidate[name]
        r, c = np.asarray(ref, np.float64), np.asarray(out, np.float64)
        entry: dict = {"kind": kind.kind}
        if kind.is_class:
            agree = float(np.mean(r.argmax(axis=kind.class_axis) == c.argmax(axis=kind.class_axis)))
            entry["top1_agreement"] = round(agree, 6)
            if r.ndim > 2:
                agree = mean_iou(r.argmax(axis=kind.class_axis), c.argmax(axis=kind.class_axis))
                entry["mean_iou"] = round(agree, 6)
            headline.append(agree)
        rf, cf = r.reshape(len(r), -1), c.reshape(len(c), -1)
        entry["relative_error"] = round(float(np.linalg.norm(cf - rf) / max(np.linalg.norm(rf), 1e-30)), 6)
        norms = np.linalg.norm(rf, axis=1) * np.linalg.norm(cf, axis=1)
        cos = np.where(norms > 0, (rf * cf).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
        entry["cosine"] = round(float(cos.mean()), 6)
        if not kind.is_class:
            headline.append(float(cos.mean()))
        per_output[name] = entry
    return {"agreement": round(min(headline), 6) if headline else None, "outputs": per_output}


def mean_iou(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over the classes either label map uses of |ref = c and cand = c| / |ref = c or cand = c|."""
    r, c = reference.ravel().astype(np.int64), candidate.ravel().astype(np.int64)
    n = int(max(r.max(), c.max())) + 1
    inter = np.bincount(r[r == c], minlength=n)
    union = np.bincount(r, minlength=n) + np.bincount(c, minlength=n) - inter
    used = union > 0
    return float(np.mean(inter[used] / union[used]))


def fidelity(original: onnx.ModelProto, candidate: onnx.ModelProto, inputs: dict[str, np.ndarray], *,
             labels: np.ndarray | None = None, label_output: str | None = None,
             reference: dict[str, np.ndarray] | None = None) -> dict:
    """The report's "fidelity" block: `candidate` against `original` on held-out `inputs`.

    `reference`: the original's outputs on `inputs`, when already computed. With `labels`, adds the
    accuracy of both models on `label_output` (default: the first class output)."""
    reference = reference if reference is not None else run_batched(original, inputs)
    produced = run_batched(candidate, inputs)
    kinds = classify_outputs(reference)
    block = compare_outputs(reference, produced, kinds)
    block["samples"] = int(next(iter(inputs.values())).shape[0])
    if labels is not None:
        name = label_output or next((k for k, v in kinds.items() if v.is_class), None)
        if name is not None:
            axis = kinds[name].class_axis
            y = np.asarray(labels).astype(np.int64)
            block["accuracy"] = round(float(np.mean(produced[name].argmax(axis=axis) == y)), 6)
            block["original_accuracy"] = round(float(np.mean(reference[name].argmax(axis=axis) == y)), 6)
    return block
