"""Channel-dependency analysis: which channels can be removed together."""

from .analyzer import Analysis, ChannelGroup, analyze
from .channels import ChannelMap

__all__ = ["Analysis", "ChannelGroup", "ChannelMap", "analyze"]
