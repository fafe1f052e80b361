"""Transformer structure: a MatMul (or an Einsum written as a batched matrix product) between two
activations (Q·Kᵀ, attn·V) and the names of the groups it creates (attention heads, head dims, MLP
hidden channels).

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

from ..node_cost import Bilinear
from ..subnormal import subnormal_fraction
from ..channels import ChannelMap, tie_fibers, tie_slices
from .base import OpHandler, const_value, register
from .conv import F32
from ...ops import ELEMENTWISE

HEADS_PRIORITY = 2
MLP_PRIORITY = 1


def scope(name: str) -> str:
    """'/encoder/layer_0/attn/MatMul_1' -> '/encoder/layer_0/attn' (the module an exporter named)."""
    head, sep, _ = name.rpartition("/")
    return head if sep and head else name


def matmul_roles(sa, sb, ry) -> tuple[list[tuple], list[tuple], list[int]]:
    """The role of every axis of MatMul's operands: ('b', output axis) for batch axes (numpy
    broadcasting), ('f', output axis) for A's rows and B's columns, ('k', 0) for the contraction."""
    ra = [("b", i + ry - len(sa)) for i in range(len(sa) - 2)] + [("f", ry - 2), ("k", 0)]
    rb = [("b", i + ry - len(sb)) for i in range(len(sb) - 2)] + [("k", 0), ("f", ry - 1)]
    return ra, rb, [int(sa[-1])]


def einsum_roles(equation: str, sa, sb) -> tuple[list[tuple], list[tuple], list[int]]:
    """Roles for a two-operand Einsum that is a batched matrix product ('bhid,bhjd->bhij')."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "..." in eq:
        raise ValueError(f"Einsum '{equation}' is not an explicit batched product")
    lhs, out = eq.split("->")
    ins = lhs.split(",")
    if len(ins) != 2 or len(ins[0]) != len(sa) or len(ins[1]) != len(sb):
        raise ValueError(f"Einsum '{equation}' is not a product of two operands")
    a, b = ins
    if any(len(set(t)) != len(t) for t in (a, b, out)):
        raise ValueError(f"Einsum '{equation}' takes a diagonal")

    def role(letter, other):
        if letter in out:
            return ("b", out.index(letter)) if letter in other else ("f", out.index(letter))
        if letter in other:
            return ("k", letter)
        raise ValueError(f"Einsum '{equation}' sums an axis of one operand")

    ra = [role(c, b) for c in a]
    rb = [role(c, a) for c in b]
    return ra, rb, [int(sa[a.index(c)]) for c in a if c not in out]


def _expand(grid: np.ndarray, roles: list[tuple], joint: list[tuple]) -> np.ndarray:
    """`grid` transposed to the order of `joint`, with size-1 axes for the roles it lacks."""
    present = [r for r in joint if r in roles]
    g = np.transpose(grid, [roles.index(r) for r in present])
    return g.reshape([g.shape[present.index(r)] if r in roles else 1 for r in joint])


def _size(shape, roles: list[tuple], role: tuple) -> int:
    """An operand's size along `role` (1 when it broadcasts there)."""
    return int(shape[roles.index(role)]) if role in roles else 1


def propagate_product(node, ctx, roles_a, roles_b, contracted: list[int]) -> None:
    """A product of two activations with axis roles `roles_a`/`roles_b` (see `matmul_roles`)."""
    try:
        _propagate(node, ctx, roles_a, roles_b, contracted)
    except ValueError:
        # The node becomes a leaf (its channels frozen), but its MACs still count.
        if not any(c.node == node.name for c in ctx.costs):
            _declare_cost(node, ctx, None, node.outputs[0], 1, roles_a, roles_b, contracted)
        raise


def propagate_matmul_activations(node, ctx) -> None:
    sa, sb, sy = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1]), ctx.shape(node.outputs[0])
    if len(sa) < 2 or len(sb) < 2:
        raise ValueError("1-D operands of a MatMul between activations are not supported")
    propagate_product(node, ctx, *matmul_roles(sa, sb, len(sy)))


def _propagate(node, ctx, roles_a, roles_b, contracted) -> None:
    a, b = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    sa, sb = ctx.shape(a), ctx.shape(b)
    ma, mb = ctx.map(a), ctx.map(b)
    if ma is None and mb is None:
        _declare_cost(node, ctx, None, y, 1, roles_a, roles_b, contracted)
        return
    mode = ctx.options.attention
    if mode == "off":
        raise ValueError("pruning through a product of activations is off (attention='off')")

    ra = [roles_a[ax] for ax in ma.axes] if ma is not None else []
    rb = [roles_b[ax] for ax in mb.axes] if mb is not None else []
    ga = ma.ids if ma is not None else None
    gb = mb.ids if mb is not None else None
    free_a = [r for r in ra if r[0] == "f"]
    free_b = [r for r in rb if r[0] == "f"]
    if free_a and free_b:
        raise ValueError("both operands carry channels on their free axes")
    ka = {r for r in ra if r[0] == "k"}
    kb = {r for r in rb if r[0] == "k"}
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
        other_dim = _size(sb, roles_b, role) if in_a and not in_b else _size(sa, roles_a, role)
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

    # The output's channels: the free axes of one operand (V's head dims) with its batch axes, or
    # the carried batch axes alone (the heads of the attention scores).
    free = (ga, ra, free_a) if free_a else (gb, rb, free_b) if free_b else None
    out_map = None
    if free is not None:
        grid, roles, _ = free
        if any(r[0] == "k" for r in roles):
            raise ValueError("an operand carries channels on both its free and contracted axes")
        if any(("b", p) not in roles for p in carried):
            raise ValueError("the output's channels would combine both operands' channels")
        axes = [r[1] for r in roles]
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

    # MACs = prod(output) · prod(contracted) scale with the alive positions of the operand whose grid
    # spans every axis that can shrink (the carried heads, the contracted head dims, the free head dims).
    shrinkable = {("b", p) for p in carried} | ka | set(free[2] if free is not None else [])
    chosen = None
    for t, grid, roles in ((a, ga, ra), (b, gb, rb)):
        if grid is not None and shrinkable <= set(roles) and (chosen is None or grid.size > chosen[1].size):
            chosen = (t, grid)
    if chosen is None:
        _declare_cost(node, ctx, None, y, 1, roles_a, roles_b, contracted)
    else:
        _declare_cost(node, ctx, chosen[0], y, chosen[1].size, roles_a, roles_b, contracted)


def _declare_cost(node, ctx, in_t, y, positions: int, roles_a, roles_b, contracted) -> None:
    """MACs and bytes proportional to the alive positions of `in_t` (constant when None). The cost
    also records the product's shape as `batch` matrix products [m, k] x [k, n] (`matmul`), which
    measured profiles price with their batched-product formula (cost/batched_matmul.py)."""
    sa, sb, sy = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1]), ctx.shape(y)
    total = int(np.prod(sy)) * int(np.prod(contracted))
    m = int(np.prod([d for d, r in zip(sa, roles_a) if r[0] == "f"]))
    n = int(np.prod([d for d, r in zip(sb, roles_b) if r[0] == "f"]))
    k = int(np.prod(contracted))
    batch = float(np.prod(sy)) / max(m * n, 1)
    moved = F32 * float(np.prod(sa) + np.prod(sb) + np.prod(sy))
    if in_t is None:
        macs, nbytes = Bilinear(d=total), Bilinear(d=moved)
    else:
        coef = total // positions if total % positions == 0 else total / positions
        macs, nbytes = Bilinear(b=coef), Bilinear(b=moved / positions)
    extra = {"kind": "attention", "size": float(total), "matmul": (batch, float(m), float(k), float(n))}
    share = subnormal_fraction(node.inputs[0])  # attn·V after a softmax over a -100 mask
    if share > 0:
        extra["subnormal_share"] = share
    ctx.cost(node, in_t, y if in_t is not None and ctx.map(y) is not None else None, len(sa) - 1, len(sy) - 1,
             macs=macs, bytes=nbytes, extra=extra)


@register
class EinsumHandler(OpHandler):
    """Einsum of two activations written as a batched matrix product (MaxViT's attention:
    'BGHID,BGHJD->BGHIJ', 'BGHIJ,BGHJD->BGHID'), handled like MatMul."""

    op_types = ("Einsum",)

    def propagate(self, node, ctx) -> None:
        if len(node.inputs) != 2 or any(const_value(t) is not None for t in node.inputs):
            raise ValueError("only a product of two activations is supported")
        sa, sb = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1])
        propagate_product(node, ctx, *einsum_roles(str(node.attrs["equation"]), sa, sb))


# --- names -----------------------------------------------------------------------------------------


def _linear_producer(t, limit: int = 32):
    """The constant-weight MatMul/Gemm that `t` comes from through element-wise ops only (GELU,
    bias, activation), or None."""
    frontier, seen, found = [t], set(), {}
    while frontier and len(seen) < limit:
        cur = frontier.pop()
        if cur.name in seen or const_value(cur) is not None:
            continue
        seen.add(cur.name)
        if len(cur.inputs) != 1:
            return None  # a graph input
        node = cur.inputs[0]
        if node.op in ("MatMul", "Gemm") and const_value(node.inputs[1]) is not None:
            found[node.name] = node
        elif node.op in ELEMENTWISE:
            frontier.extend(node.inputs)
        else:
            return None
    return next(iter(found.values())) if len(found) == 1 and not frontier else None


def _only_feeds(t, node, limit: int = 64) -> bool:
    """True when everything computed from `t` through element-wise ops ends in `node` alone."""
    frontier, seen = [t], set()
    while frontier:
        cur = frontier.pop()
        if cur.name in seen:
            continue
        seen.add(cur.name)
        if len(seen) > limit or not cur.outputs:
            return False
        for consumer in cur.outputs:
            if consumer is node:
                continue
            if consumer.op not in ELEMENTWISE:
                return False
            frontier.extend(o for o in consumer.outputs if o.name)
    return True


def label_mlp_hidden(node, ctx, x) -> None:
    """Name the hidden channels of a token-wise MLP (fc1 → activation → fc2) after fc1."""
    cmap = ctx.map(x)
    if cmap is None or not cmap.is_1d or ctx.rank(x) < 3:
        return
    fc1 = _linear_producer(x)
    if fc1 is not None and fc1 is not node and _only_feeds(fc1.outputs[0], node):
        ctx.label(cmap.ids, f"MLP hidden of {fc1.name}", MLP_PRIORITY)
