"""onnxmorph: exact channel pruning of ONNX graphs with hardware-aware costs."""

from .version import __version__  # noqa: E402
from .api import PruneResult, inspect, prune, summarize  # noqa: E402
from .errors import OnnxMorphError  # noqa: E402
from .sweep import SweepResult, sweep  # noqa: E402  (the function shadows the subpackage's name here)

__all__ = ["OnnxMorphError", "PruneResult", "SweepResult", "inspect", "prune", "summarize", "sweep",
           "__version__"]
