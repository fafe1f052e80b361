"""Gemm, MatMul (batched, broadcast, 1-D operands) and Einsum."""

from __future__ import annotations

import string

from ..core import gradient


@gradient("Gemm")
def _gemm(ctx, node, dys):
    a, b = node.inputs[0], node.inputs[1]
    c = node.input(2)
    dy = dys[0]
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    ta, tb = node.attr("transA", 0), node.attr("transB", 0)
    da = db = dc = None
    if ctx.needs(a):  # dA' = alpha dY B'^T
        if ta:
            da = ctx.op("Gemm", [b, dy], alpha=alpha, transA=tb, transB=1)
        else:
            da = ctx.op("Gemm", [dy, b], alpha=alpha, transB=1 - tb)
    if ctx.needs(b):  # dB' = alpha A'^T dY
        if tb:
            db = ctx.op("Gemm", [dy, a], alpha=alpha, transA=1, transB=ta)
        else:
            db = ctx.op("Gemm", [a, dy], alpha=alpha, transA=1 - ta)
    if c and ctx.needs(c):
        dc = ctx.unbroadcast(ctx.scale(dy, beta), ctx.shape(node.outputs[0]), ctx.shape(c))
    return [da, db, dc]


def _swap_last(ctx, x, rank):
    return ctx.transpose(x, list(range(rank - 2)) + [rank - 1, rank - 2])


@gradient("MatMul")
def _matmul(ctx, node, dys):
    a, b = node.inputs
    dy = dys[0]
    sa, sb, sy = ctx.shape(a), ctx.shape(b), ctx.shape(node.outputs[0])
    # 1-D operands become matrices ([k] -> [1, k] on the left, [k, 1] on the right)
    a2 = ctx.reshape(a, [1] + sa) if len(sa) == 1 else a
    b2 = ctx.reshape(b, sb + [1]) if len(sb) == 1 else b
    sa2 = [1] + sa if len(sa) == 1 else sa
    sb2 = sb + [1] if len(sb) == 1 else sb
    rank = max(len(sa2), len(sb2))
    sy2 = list(sy)
    if len(sa) == 1:
        sy2.insert(len(sy2) - (0 if len(sb) == 1 else 1), 1)
    if len(sb) == 1:
        sy2.append(1)
    dy2 = ctx.reshape(dy, sy2) if sy2 != sy else dy
    da = db = None
    if ctx.needs(a):
        if len(sb2) == 2 and len(sa2) == rank:
            g = ctx.op("MatMul", [dy2, ctx.transpose(b2, [1, 0])])
        else:
            g = ctx.op("MatMul", [dy2, _swap_last(ctx, b2, len(sb2))])
        da = ctx.unbroadcast(g, sy2[:-1] + [sa2[-1]], sa2)
        da = ctx.reshape(da, sa) if len(sa) == 1 else da
    if ctx.needs(b):
        if len(sb2) == 2:
            # a weight matrix: fold every batch dimension into the rows, one product
            k, n = sb2
            a_rows = ctx.reshape(a2, [-1, k]) if len(sa2) > 2 else a2
            dy_rows = ctx.reshape(dy2, [-1, n]) if len(sy2) > 2 else dy2
            g = ctx.op("Gemm", [a_rows, dy_rows], transA=1)
        else:
            g = ctx.op("MatMul", [_swap_last(ctx, a2, len(sa2)), dy2])
            g = ctx.unbroadcast(g, sy2[:-2] + sb2[-2:], sb2)
        db = ctx.reshape(g, sb) if len(sb) == 1 else g
    return [da, db]


def _explicit(ctx, eq: str, shapes: list[list[int]]) -> tuple[list[str], str]:
    """Operand and output subscripts with '...' spelled out and the implicit output made explicit."""
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    used = set(eq) - set(".,->")
    spare = [c for c in string.ascii_letters if c not in used]
    ell_rank = max((len(s) - (len(t) - 3) for t, s in zip(terms, shapes) if "..." in t), default=0)
    ell = "".join(spare[:ell_rank])
    out_terms = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            n = len(s) - (len(t) - 3)
            t = t.replace("...", ell[ell_rank - n:])
        out_terms.append(t)
    if "->" not in eq:
        letters = "".join(out_terms)
        rhs = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    return out_terms, rhs


@gradient("Einsum")
def _einsum(ctx, node, dys):
    """d operand_i = einsum(dY, other operands -> operand_i's subscripts)."""
    shapes = [ctx.shape(x) for x in node.inputs]
    terms, rhs = _explicit(ctx, node.attr("equation"), shapes)
    out = []
    for i, x in enumerate(node.inputs):
        if not ctx.needs(x):
            out.append(None)
            continue
        t = terms[i]
        if len(set(t)) != len(t):
            ctx.fail("an operand with a repeated subscript (a diagonal) has no gradient rule")
        others = [(terms[j], node.inputs[j]) for j in range(len(terms)) if j != i]
        avail = set(rhs).union(*[set(o) for o, _ in others]) if others else set(rhs)
        missing = [c for c in t if c not in avail]
        eq = ",".join([rhs] + [o for o, _ in others]) + "->" + "".join(c for c in t if c not in missing)
        g = ctx.op("Einsum", [dys[0]] + [n for _, n in others], equation=eq)
        if missing:  # subscripts summed within operand i only: the gradient is constant along them
            dims = {c: shapes[i][k] for k, c in enumerate(t)}
            kept = [c for c in t if c not in missing]
            g = ctx.reshape(g, [dims[c] if c in kept else 1 for c in t])
            g = ctx.expand(g, shapes[i])
        out.append(g)
    return out

