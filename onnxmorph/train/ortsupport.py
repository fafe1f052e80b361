"""Import onnxruntime-training's `artifacts` and `api` without running its torch-importing __init__."""

from __future__ import annotations

import logging
import os
import sys
import types

from ..errors import OnnxMorphError


def training_modules():
    """(artifacts, api, onnxblock) from onnxruntime-training, torch-free."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a broken install
        raise OnnxMorphError(f"onnxruntime-training is not installed ({exc})") from None
    name = "onnxruntime.training"
    if name not in sys.modules:
        pkg_dir = os.path.join(os.path.dirname(onnxruntime.__file__), "training")
        if not os.path.isdir(pkg_dir):
            raise OnnxMorphError("--engine ort-training needs onnxruntime-training-cpu==1.19.2 in an environment "
                                 "of its own (pip install 'onnxmorph[ort-training]'); the default --engine "
                                 "onnxmorph trains on plain onnxruntime")
        stub = types.ModuleType(name)
        stub.__path__ = [pkg_dir]  # lets submodules import; skips __init__ (which imports torch)
        sys.modules[name] = stub
    onnxruntime.set_default_logger_severity(3)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    from onnxruntime.training import api, artifacts, onnxblock

    return artifacts, api, onnxblock
