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
        """The root of every element (pointer jumping over the whole forest at once)."""
        parent = np.asarray(self.parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand


# --- multi-axis maps: keeping every kept set a rectangle -------------------------------------------
#
# A tensor whose channels lie on several axes (a Reshape into (heads, head_dim), a fused QKV split into
# (3, C), a channel shuffle) is emitted by slicing each axis on its own, so the kept positions must
# form a product of per-axis index sets for *every* keep-mask. That holds when the unit of a position
# depends on its index along one axis only. Handlers that know what an axis means tie it one way or
# the other (attention: a head is one unit, or a head dim is one unit across heads); grids nobody
# decided on get the default when the analysis ends (`resolve_rectangles`).


def tie_slices(table: ElementTable, ids: np.ndarray, axis: int) -> None:
    """Every index along `axis` becomes one unit (e.g. a whole attention head)."""
    moved = np.moveaxis(np.asarray(ids), axis, 0)
    for i in range(moved.shape[0]):
        table.union_all(moved[i])


def tie_fibers(table: ElementTable, ids: np.ndarray, axis: int) -> None:
    """Positions that differ only along `axis` go together: that axis never shrinks on its own."""
    moved = np.moveaxis(np.asarray(ids), axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    if flat.shape[1] > 1:
        table.union(np.repeat(flat[:, :1], flat.shape[1] - 1, axis=1), flat[:, 1:])


def is_rectangular(table: ElementTable, ids: np.ndarray) -> bool:
    """True when units vary along at most one axis of the grid (every keep-mask is a rectangle)."""
    ids = np.asarray(ids)
    if ids.ndim <= 1:
        return True
    roots = np.vectorize(table.find, otypes=[np.int64])(ids)
    for a in range(ids.ndim):
        index = tuple(slice(None) if k == a else slice(0, 1) for k in range(ids.ndim))
        if (roots == roots[index]).all():
            return True
    return False


def resolve_rectangles(table: ElementTable, grids: list[np.ndarray]) -> None:
    """Give every grid no handler decided on the default layout: positions sharing an index on the
    last axis go together (per-head-dim pruning, channel-shuffle pairs). Grids are taken in the order
    they were registered (topological), so a transposed copy of an earlier grid is already settled."""
    for ids in grids:
        if not is_rectangular(table, ids):
            flat = np.asarray(ids).reshape(-1, ids.shape[-1])
            for j in range(flat.shape[1]):
                table.union_all(flat[:, j])
