"""Transformer structure: a MatMul between two activations (Q·Kᵀ, attn·V) and the names of the
groups it creates (attention heads, head dims, MLP hidden channels).

`MatMul(A[..., m, k], B[..., k, n])` (numpy broadcasting on the leading *batch* axes):

* the contraction axis `k` of A and of B must keep the same positions: when both carry channels
  (Q's and K's head dims) their grids are coupled position by position (broadcast where one of them
  has no channel axis, which then can never shrink); when only one does, it is frozen;
* a batch axis carrying channels (the heads axis of Q, Kᵀ, attn, V) either becomes whole units —
  every index one unit, coupled across A and B, and carried to the output (`attention="heads"`) —
  or never shrinks on its own (`attention="head-dims"`: a unit is one head-dim index across heads);
* the output carries the channels of A's free axis `m` or B's free axis `n` (V's head dims), plus the
  carried batch axes.

Either way every multi-axis grid keeps rectangles (see `channels.tie_slices/tie_fibers`), so
emission only slices axes and rewrites Reshape constants (the head count or the head dim).
"""

from __future__ import annotations

import numpy as np

from ...cost.node_cost import Bilinear
from ..channels import ChannelMap, tie_fibers, tie_slices
from .base import const_value
from .conv import F32
from .elementwise import BROADCASTING, UNARY

HEADS_PRIORITY = 2
MLP_PRIORITY = 1


def scope(name: str) -> str:
    """'/encoder/layer_0/attn/MatMul_1' -> '/encoder/layer_0/attn' (the module an exporter named)."""
    head, sep, _ = name.rpartition("/")
    return head if sep and head else name


def _roles(cmap: ChannelMap, rank: int, out_rank: int, is_a: bool) -> list[tuple]:
    """The role of each channel axis: ('b', output axis) for batch axes, ('m',), ('k',) or ('n',)."""
    roles = []
    for ax in cmap.axes:
        if ax < rank - 2:
            roles.append(("b", ax + out_rank - rank))
        elif ax == rank - 2:
            roles.append(("m",) if is_a else ("k",))
        else:
            roles.append(("k",) if is_a else ("n",))
    return roles


def _expand(grid: np.ndarray, roles: list[tuple], joint: list[tuple]) -> np.ndarray:
    """`grid` transposed to the order of `joint`, with size-1 axes for the roles it lacks."""
    present = [r for r in joint if r in roles]
    g = np.transpose(grid, [roles.index(r) for r in present])
    return g.reshape([g.shape[present.index(r)] if r in roles else 1 for r in joint])


def _dim(shape: tuple[int, ...], out_axis: int, out_rank: int) -> int:
    """An operand's size on the batch axis that is `out_axis` of the output (1 when broadcast)."""
    ax = out_axis - (out_rank - len(shape))
    return shape[ax] if ax >= 0 else 1


def propagate_matmul_activations(node, ctx) -> None:
    try:
        _propagate(node, ctx)
    except ValueError:
        # The node becomes a leaf (its channels frozen), but its MACs still count.
        if not any(c.node == node.name for c in ctx.costs):
            sa, sb, sy = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1]), ctx.shape(node.outputs[0])
            _declare_cost(node, ctx, None, node.outputs[0], int(np.prod(sy)) * int(sa[-1]), 1, sa, sb, sy)
        raise


def _propagate(node, ctx) -> None:
    a, b = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    sa, sb, sy = ctx.shape(a), ctx.shape(b), ctx.shape(y)
    if len(sa) < 2 or len(sb) < 2:
        raise ValueError("1-D operands of a MatMul between activations are not supported")
    ry = len(sy)
    total = int(np.prod(sy)) * int(sa[-1])
    ma, mb = ctx.map(a), ctx.map(b)
    if ma is None and mb is None:
        _declare_cost(node, ctx, None, y, total, 1, sa, sb, sy)
        return
    mode = ctx.options.attention
    if mode == "off":
        raise ValueError("pruning through a MatMul between activations is off (attention='off')")

    ra = _roles(ma, len(sa), ry, True) if ma is not None else []
    rb = _roles(mb, len(sb), ry, False) if mb is not None else []
    ga = ma.ids if ma is not None else None
    gb = mb.ids if mb is not None else None
    if ("m",) in ra and ("n",) in rb:
        raise ValueError("both operands carry channels on their free axes")
    ka, kb = ("k",) in ra, ("k",) in rb
    if ka != kb:
        raise ValueError("channels are contracted with an operand that does not track them")
    if ka:
        # Q's and K's head dims: the same positions on both sides (broadcast: that axis never shrinks).
        joint = list(dict.fromkeys(ra + rb))
        ea, eb = np.broadcast_arrays(_expand(ga, ra, joint), _expand(gb, rb, joint))
        ctx.table.union(ea, eb)

    carried: list[int] = []
    batch = sorted({r[1] for r in ra + rb if r[0] == "b"})
    for p in batch:
        role = ("b", p)
        in_a, in_b = role in ra, role in rb
        shared = in_a and in_b
        other_dim = _dim(sb, p, ry) if in_a and not in_b else _dim(sa, p, ry)
        if mode == "heads" and (shared or other_dim == 1):
            carried.append(p)
            if in_a:
                tie_slices(ctx.table, ga, ra.index(role))
            if in_b:
                tie_slices(ctx.table, gb, rb.index(role))
            if shared:
                sl_a = np.moveaxis(ga, ra.index(role), 0)
                sl_b = np.moveaxis(gb, rb.index(role), 0)
                for i in range(sl_a.shape[0]):
                    ctx.table.union_all(np.concatenate([sl_a[i].ravel(), sl_b[i].ravel()]))
        else:  # this axis never shrinks on its own
            if in_a:
                tie_fibers(ctx.table, ga, ra.index(role))
            if in_b:
                tie_fibers(ctx.table, gb, rb.index(role))

    # The output's channels: the free axis of one operand (V's head dims) with its batch axes, or
    # the carried batch axes alone (the heads of the attention scores).
    free = (ga, ra, "m") if ("m",) in ra else (gb, rb, "n") if ("n",) in rb else None
    out_map = None
    if free is not None:
        grid, roles, _ = free
        if ("k",) in roles:
            raise ValueError("an operand carries channels on both its free and contracted axes")
        if any(("b", p) not in roles for p in carried):
            raise ValueError("the output's channels would combine both operands' channels")
        axes = [r[1] if r[0] == "b" else (ry - 2 if r[0] == "m" else ry - 1) for r in roles]
        order = np.argsort(axes)
        out_map = ChannelMap(tuple(sorted(axes)), np.ascontiguousarray(np.transpose(grid, order)))
    elif carried:
        if len(carried) > 1:
            raise ValueError("more than one batch axis carries channels")
        p = carried[0]
        grid, roles = (ga, ra) if ("b", p) in ra else (gb, rb)
        j = roles.index(("b", p))
        rep = np.moveaxis(grid, j, 0).reshape(grid.shape[j], -1)[:, 0]
        out_map = ChannelMap((p,), np.ascontiguousarray(rep))
    ctx.set_map(y, out_map)
    if ka:
        ctx.gate(node, a)
        ctx.gate(node, b)

    if batch:
        what = "attention heads" if carried else "attention head dims"
        for grid in (ga, gb):
            if grid is not None:
                ctx.label(grid, f"{what} of {scope(node.name)}", HEADS_PRIORITY)

    # MACs = prod(output) · k scale with the alive positions of the operand whose grid spans every
    # axis that can shrink (the carried heads, the contracted head dims, the free head dims).
    shrinkable = {("b", p) for p in carried} | ({("k",)} if ka else set()) | \
        ({("m",) if free[2] == "m" else ("n",)} if free is not None else set())
    chosen = None
    for t, grid, roles in ((a, ga, ra), (b, gb, rb)):
        if grid is not None and shrinkable <= set(roles) and (chosen is None or grid.size > chosen[1].size):
            chosen = (t, grid)
    if chosen is None:
        _declare_cost(node, ctx, None, y, total, 1, sa, sb, sy)
    else:
        _declare_cost(node, ctx, chosen[0], y, total, chosen[1].size, sa, sb, sy)


def _declare_cost(node, ctx, in_t, y, total: int, positions: int, sa, sb, sy) -> None:
    """MACs and bytes proportional to the alive positions of `in_t` (constant when None)."""
    moved = F32 * float(np.prod(sa) + np.prod(sb) + np.prod(sy))
    if in_t is None:
        macs, nbytes = Bilinear(d=total), Bilinear(d=moved)
    else:
        coef = total // positions if total % positions == 0 else total / positions
        macs, nbytes = Bilinear(b=coef), Bilinear(b=moved / positions)
    ctx.cost(node, in_t, y if in_t is not None and ctx.map(y) is not None else None, len(sa) - 1, len(sy) - 1,
             macs=macs,
             bytes=nbytes, extra={"kind": "attention", "size": float(total)})


# --- names -----------------------------------------------------------------------------------------

_ELEMENTWISE = frozenset(UNARY) | frozenset(BROADCASTING)


def _linear_producer(t, limit: int = 32):
    """The constant-weight MatMul/Gemm that `t` comes from through element-wise ops only (GELU,
    bias, activation), or None."""
    frontier, seen, found = [t], set(), set()
    while frontier and len(seen) < limit:
        cur = frontier.pop()
        if cur.name in seen or const_value(cur) is not None:
            continue
        seen.add(cur.name)
        if len(cur.inputs) != 1:
            return None  # a graph input
        node = cur.inputs[0]
        if node.op in ("MatMul", "Gemm") and const_value(node.inputs[1]) is not None:
            found.add(node.name)
        elif node.op in _ELEMENTWISE:
            frontier.extend(node.inputs)
        else:
            return None
    return next(iter(found)) if len(found) == 1 and not frontier else None


def label_mlp_hidden(node, ctx, x) -> None:
    """Name the hidden channels of a token-wise MLP (fc1 → activation → fc2) after fc1."""
    cmap = ctx.map(x)
    if cmap is None or not cmap.is_1d or ctx.rank(x) < 3:
        return
    fc1 = _linear_producer(x)
    if fc1 is not None and fc1 != node.name:
        ctx.label(cmap.ids, f"MLP hidden of {fc1}", MLP_PRIORITY)
