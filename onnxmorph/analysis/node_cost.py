"""What one node costs as a function of its alive input and output channel positions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bilinear:
    """f(i, o) = a·i·o + b·i + c·o + d, with i/o the alive channel positions of the node's in/out tensor."""

    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0

    def __call__(self, i: float, o: float) -> float:
        return self.a * i * o + self.b * i + self.c * o + self.d

    def __add__(self, other: "Bilinear") -> "Bilinear":
        return Bilinear(self.a + other.a, self.b + other.b, self.c + other.c, self.d + other.d)

    def scaled(self, k: float) -> "Bilinear":
        return Bilinear(self.a * k, self.b * k, self.c * k, self.d * k)


ZERO = Bilinear()


@dataclass
class NodeCost:
    """Cost terms of one node. `in_tensor`/`out_tensor` name the tensors whose alive channel
    positions are `i` and `o`; `in_full`/`out_full` are their unpruned position counts."""

    node: str
    op: str
    in_tensor: str | None
    out_tensor: str | None
    in_full: int
    out_full: int
    macs: Bilinear = ZERO
    params: Bilinear = ZERO
    bytes: Bilinear = ZERO  # activations read + written + weights, in bytes
    extra: dict = field(default_factory=dict)

    def at(self, i: float, o: float) -> dict[str, float]:
        return {"macs": self.macs(i, o), "params": self.params(i, o), "bytes": self.bytes(i, o)}
