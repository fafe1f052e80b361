"""onnxmorph: exact channel pruning of ONNX graphs with hardware-aware costs."""

__version__ = "0.1.0"

from .api import PruneResult, inspect, prune, summarize  # noqa: E402
from .errors import OnnxMorphError  # noqa: E402

__all__ = ["OnnxMorphError", "PruneResult", "inspect", "prune", "summarize", "__version__"]
