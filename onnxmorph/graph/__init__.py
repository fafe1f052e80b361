"""Load ONNX models into a static-shaped, constant-folded graph-surgeon IR."""

from onnx_graphsurgeon.logger import G_LOGGER

from .load import LoadedModel, load_model, parse_input_shapes

# graph-surgeon print()s its log on stdout, which `inspect --json` owns: keep only its errors (load.py
# sends those to stderr); its warnings ("Inference failed" on custom ops...) repeat what notes say.
G_LOGGER.severity = G_LOGGER.ERROR

__all__ = ["LoadedModel", "load_model", "parse_input_shapes"]
