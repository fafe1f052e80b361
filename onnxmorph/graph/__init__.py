"""Load ONNX models into a static-shaped, constant-folded graph-surgeon IR."""

from .load import LoadedModel, load_model, parse_input_shapes

__all__ = ["LoadedModel", "load_model", "parse_input_shapes"]
