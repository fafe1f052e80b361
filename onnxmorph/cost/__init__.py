"""Per-node costs (MACs, params, bytes) as bilinear functions of alive channels, and totals."""

from ..analysis.node_cost import Bilinear, NodeCost
from .totals import CostModel, parse_target

__all__ = ["Bilinear", "NodeCost", "CostModel", "parse_target"]
