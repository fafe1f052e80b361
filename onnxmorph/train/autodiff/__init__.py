"""onnxmorph's own reverse-mode autodiff of ONNX graphs: one rule module per op family in `rules/`."""

from .core import GRAD_PREFIX, differentiate, gradient, registered_gradients

__all__ = ["GRAD_PREFIX", "differentiate", "gradient", "registered_gradients"]
