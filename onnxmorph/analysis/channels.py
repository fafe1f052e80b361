"""Channel elements, their coupling (union-find) and the channel maps of tensors.

Every output channel a producer (Conv, Gemm, MatMul...) creates is an *element*.
A tensor's `ChannelMap` says, for each position along its channel axes, which
element lives there. Ops that tie channels together (a residual `Add`, a grouped
conv) union elements; the union-find classes are the prunable *units*: removing a
unit removes every position of every tensor where one of its elements lives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelMap:
    """Element ids along the channel axes of one tensor.

    `axes` is sorted; `ids.shape` equals the tensor's dims on those axes. Most maps
    have one axis; a Reshape that splits channels (channel shuffle, heads) gives two.
    """

    axes: tuple[int, ...]
    ids: np.ndarray

    def __post_init__(self):
        assert self.ids.ndim == len(self.axes), (self.axes, self.ids.shape)
        assert list(self.axes) == sorted(self.axes)

    @property
    def axis(self) -> int:
        """The single channel axis (only for one-axis maps)."""
        assert len(self.axes) == 1
        return self.axes[0]

    @property
    def is_1d(self) -> bool:
        return len(self.axes) == 1

    def shifted(self, offset: int) -> "ChannelMap":
        return ChannelMap(tuple(a + offset for a in self.axes), self.ids)

    def full(self, shape: tuple[int, ...]) -> np.ndarray:
        """Broadcast the ids to a whole tensor of `shape` (for reshape analysis)."""
        view = [1] * len(shape)
        for a, n in zip(self.axes, self.ids.shape):
            view[a] = n
        return np.broadcast_to(self.ids.reshape(view), shape)


class ElementTable:
    """Allocates elements, unions them and records which are frozen (and why)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.space: list[int] = []  # index into `spaces` for each element
        self.spaces: list[str] = []  # name of the tensor/op that created the elements
        self.frozen: dict[int, str] = {}  # element -> first reason

    def new(self, n: int, space_name: str) -> np.ndarray:
        start = len(self.parent)
        sid = len(self.spaces)
        self.spaces.append(space_name)
        self.parent.extend(range(start, start + n))
        self.space.extend([sid] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.parent)

    def find(self, e: int) -> int:
        parent = self.parent
        root = e
        while parent[root] != root:
            root = parent[root]
        while parent[e] != root:
            parent[e], e = root, parent[e]
        return root

    def union(self, a, b) -> None:
        """Union elementwise (arrays of equal size) or every element of both (scalars ok)."""
        a = np.asarray(a).ravel()
        b = np.asarray(b).ravel()
        if a.size != b.size:
            raise ValueError("union of element arrays with different sizes")
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def union_all(self, ids) -> None:
        flat = np.unique(np.asarray(ids).ravel())
        if flat.size > 1:
            self.union(flat[:-1], flat[1:])

    def freeze(self, ids, reason: str) -> None:
        for e in np.unique(np.asarray(ids).ravel()).tolist():
            self.frozen.setdefault(e, reason)

    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(e) for e in range(len(self.parent))), dtype=np.int64,
                           count=len(self.parent))
