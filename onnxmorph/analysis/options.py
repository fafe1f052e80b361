"""Analysis options: how transformer structure is turned into prunable units."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

ATTENTION_MODES = ("heads", "head-dims", "off")


@dataclass(frozen=True)
class AnalysisOptions:
    """`attention`: what a MatMul between two activations (Q·Kᵀ, attn·V) lets you prune:
      - "heads": whole heads (the Q, K, V columns and output-projection rows of a head go together);
      - "head-dims": one head-dim index across every head (the same dims removed from each head);
      - "off": nothing — channels reaching such a MatMul are frozen.
    `prune_embedding`: couple the residual stream through LayerNorm (and the ReduceMean/Sub/Pow/Sqrt/Div
    form of it) so the embedding width becomes one prunable group. The emitted LayerNorm keeps the
    masked model's statistics exactly (it normalizes over the original width, removed channels as 0).
    """

    attention: str = "heads"
    prune_embedding: bool = False

    def __post_init__(self):
        if self.attention not in ATTENTION_MODES:
            raise UsageError(f"bad attention mode '{self.attention}': choose one of {', '.join(ATTENTION_MODES)}")

    def as_dict(self) -> dict:
        return {"attention": self.attention, "prune_embedding": self.prune_embedding}
