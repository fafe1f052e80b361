"""A folder of images as model inputs (optional: needs Pillow, `pip install onnxmorph[images]`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_image_folder(folder: Path, shape: tuple[int, ...] | None = None, input_name: str = "input",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, limit: int = 10000) -> dict[str, np.ndarray]:
    """Images under `folder` (recursively, sorted), resized to `shape` = (N, C, H, W) and normalized."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{folder}: reading a folder of images needs Pillow "
                        "(pip install 'onnxmorph[images]'), or pass an .npz") from None
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)[:limit]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(EXTENSIONS))}) found")
    if shape is None or len(shape) != 4:
        raise DataError(f"{folder}: a folder of images needs a model with one [N, C, H, W] input")
    _, c, h, w = shape
    if c not in (1, 3):
        raise DataError(f"{folder}: images can feed 1- or 3-channel inputs, the model wants {c}")
    m = np.asarray(mean[:c] if c == 3 else [float(np.mean(mean))], np.float32).reshape(c, 1, 1)
    s = np.asarray(std[:c] if c == 3 else [float(np.mean(std))], np.float32).reshape(c, 1, 1)
    out = np.empty((len(files), c, h, w), np.float32)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if c == 3 else "L").resize((w, h), Image.BILINEAR)
                arr = np.asarray(img, np.float32) / 255.0
        except Exception as exc:
            raise DataError(f"{path}: cannot read the image ({type(exc).__name__})") from None
        arr = arr.reshape(h, w, -1).transpose(2, 0, 1)
        out[i] = (arr - m) / s
    return {input_name: out}
