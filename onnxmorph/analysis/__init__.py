"""Channel-dependency analysis: which channels can be removed together."""

from .analyzer import Analysis, ChannelGroup, analyze
from .channels import ChannelMap
from .options import ATTENTION_MODES, AnalysisOptions

__all__ = ["ATTENTION_MODES", "Analysis", "AnalysisOptions", "ChannelGroup", "ChannelMap", "analyze"]
