"""Latency per node from a hardware profile: pricing the costs handlers declared.

Per node: the profile's measured table for the node's op kind when it has one, else MorphNet's
roofline `max(2·MACs / peak, bytes / bandwidth)`. Nodes that inference runtimes fold into the
convolution before them (BatchNorm, simple activations, a residual Add into the conv that feeds
it) cost nothing when the profile says its runtime fuses (`fusion: true`); which ones those are
was declared during analysis (`analysis/memory_cost.py`).
"""

from __future__ import annotations

import numpy as np

from ..ops import VIEW_KERNELS
from . import batched_matmul
from .op_factors import relative
from .profile import TABLE_KINDS, HardwareProfile

# --- the latency model --------------------------------------------------------------------------

PAD_SLOPE = 0.02

# node kind -> (table kind, channel feature, alignment rule)
#   feature "io": sqrt(i·o) (both channel counts matter), "o": the output's channel count,
#   "group": sqrt(i·o) / groups (a grouped conv runs as `groups` convs that size)
#   alignment "io": i (unless below the multiple, e.g. an RGB input) and o multiples; "o": o only
_TABLE_OF = {
    "conv": ("conv", "io", "io"),
    "conv1x1": ("conv1x1", "io", "io"),
    "depthwise": ("depthwise", "o", "o"),
    "gemm": ("gemm", "io", None),
    "unary": ("unary", "o", None),
    "bn": ("unary", "o", None),
    "binary": ("binary", "o", None),
    "pool": ("pool", "o", "o"),
    "reorder": ("unary", "o", None),  # a layout copy, priced like a unary op per byte
    "other": ("unary", "o", None),  # copies and shuffles (Concat, Split, Transpose, ...): per byte
    "view": ("unary", "o", None),  # Reshape/Flatten/... when the runtime runs them as a copy
    "grouped": ("conv", "group", None),  # without a grouped table: g small convs at the per-group channels
}
_GROUPED = ("grouped", "width", None)  # the grouped table, read at the channels per group


def _ratio(padded, raw) -> np.ndarray:
    return np.divide(padded, raw, out=np.ones_like(padded, dtype=np.float64), where=raw > 0)


def _bilinear(c: np.ndarray, i, o) -> np.ndarray:
    return c[:, 0] * i * o + c[:, 1] * i + c[:, 2] * o + c[:, 3]


MEMORY_KINDS = frozenset({"unary", "binary", "bn", "pool", "other", "view"})


def _charge(cost, profile: HardwareProfile, plan) -> float:
    """How many times the runtime pays a declared cost, each pass weighted by how fast the op it
    runs as is against the op its table was measured with (`op_factors.relative`): per the
    runtime's plan when there is one, else per the built-in fusion rules. NCHWc reorders are ONNX
    Runtime CPU specifics: only measured profiles (with tables) pay them."""
    kind = str(cost.extra.get("kind", "other"))
    factors = profile.op_factors
    if kind == "reorder":
        if not profile.tables:
            return 0.0
        paid = cost.extra.get("tensor") in plan.reordered if plan is not None else cost.extra.get("rule", True)
        return float(paid) * factors.get("Reorder", 1.0)
    if kind not in MEMORY_KINDS:
        return 1.0
    row = cost.extra.get("row")
    how = cost.extra.get("transpose")

    def factor(op: str) -> float:
        key = f"{op}@{how}" if how else op
        return relative(factors, key if key in factors else op, kind, row)

    if plan is not None:
        # e.g. HardSwish runs as HardSigmoid + Mul; a view kernel re-labels its buffer (a fixed cost)
        ops = plan.ops.get(cost.node)
        if ops:
            return sum(factor(op) for op in ops)
        if cost.node in plan.activation_pass and kind != "view":
            return factor(cost.op)
        return 0.0
    if kind == "view" or (profile.fusion and cost.extra.get("fused", False)):
        return 0.0
    return factor(cost.op)


def _fixed_seconds(nodes, profile: HardwareProfile, plan) -> np.ndarray:
    """Seconds per declared cost that do not depend on channel counts: the view kernels a node
    runs as (a Reshape, or the Squeeze ONNX Runtime makes of a Gather), once per node, and the
    subnormal outputs of a softmax over a constant mask (`subnormal.py`)."""
    out = np.zeros(len(nodes), dtype=np.float64)
    if not profile.tables:
        return out
    view = profile.overheads.get("view", 0.0)
    per_subnormal = profile.overheads.get("subnormal_exp", 0.0)
    seen, subnormal = set(), set()
    for k, c in enumerate(nodes):
        if per_subnormal and "subnormal_outputs" in c.extra and c.node not in subnormal:
            subnormal.add(c.node)
            out[k] += per_subnormal * float(c.extra["subnormal_outputs"])
        if not view or c.node in seen:
            continue
        seen.add(c.node)
        if plan is not None:
            out[k] += view * plan.views.get(c.node, 0)
        elif str(c.extra.get("kind")) == "view" and c.op in VIEW_KERNELS:
            out[k] += view
    return out


def _product_rates(nodes, profile: HardwareProfile) -> np.ndarray:
    """Per declared cost: seconds per MAC of a product of two activations at its full shape, from
    the profile's batched-product formula (0 where the roofline or a table prices the node). The
    time then scales with the alive MACs, as pruning heads removes whole matrices of the batch."""
    out = np.zeros(len(nodes), dtype=np.float64)
    coef = profile.batched_matmul if profile.tables else {}
    if not coef:
        return out
    per_subnormal = profile.overheads.get("subnormal_mac", 0.0)  # per subnormal MAC (a softmax's output)
    for k, c in enumerate(nodes):
        shape = c.extra.get("matmul")
        if c.extra.get("kind") == "attention" and shape:
            b, m, kk, n = (float(v) for v in shape)
            macs = b * m * kk * n
            if macs > 0:
                out[k] = float(batched_matmul.seconds(coef, b, m, kk, n, op=c.op)) / macs
                out[k] += per_subnormal * float(c.extra.get("subnormal_share", 0.0))
    return out


class LatencyModel:
    """Seconds per node at alive channel positions (i, o), for one profile."""

    def __init__(self, nodes, coef: dict[str, np.ndarray], profile: HardwareProfile, plan=None):
        self.profile = profile
        self.plan = plan
        self.macs = coef["macs"]
        self.bytes = coef["bytes"]
        n = len(nodes)
        self.kinds = [str(c.extra.get("kind", "other")) for c in nodes]
        self.size = np.array([float(c.extra.get("size", 1.0)) for c in nodes], dtype=np.float64)
        self.kernel = np.array([float(c.extra.get("kernel", 1.0)) for c in nodes], dtype=np.float64)
        self.groups = np.array([float(c.extra.get("groups", 1.0)) for c in nodes], dtype=np.float64)
        self.width = np.array([float(c.extra.get("width", 0.0)) for c in nodes], dtype=np.float64)
        # how many times each declared cost is paid: 0 when folded into another kernel
        self.charge = np.array([_charge(c, profile, plan) for c in nodes], dtype=np.float64)
        self.fixed = _fixed_seconds(nodes, profile, plan)
        # once per inference, whatever the nodes (measured profiles: the session run with cold caches)
        self.run_seconds = profile.overheads.get("run", 0.0) if profile.tables else 0.0
        # spans of broadcasting element-wise ops (per alive channel position, and constant)
        span = profile.overheads.get("broadcast_span", 0.0) if profile.tables else 0.0
        self.spans = span * (self.charge > 0)[:, None] * np.array(
            [[float(c.extra.get("spans_c", 0.0)), float(c.extra.get("spans_d", 0.0))] for c in nodes],
            dtype=np.float64).reshape(n, 2)
        # products of two activations (attention) on measured profiles: seconds per MAC at full size
        self.product_rate = _product_rates(nodes, profile)
        self.tables = []
        self.node_table = np.full(n, -1, dtype=np.int64)
        self.feature_io = np.zeros(n, dtype=bool)
        self.feature_width = np.zeros(n, dtype=bool)
        self.align = np.zeros(n, dtype=np.int64)  # 0: none, 1: i and o, 2: o
        self.work_is_macs = np.zeros(n, dtype=bool)
        index = {}
        for k, kind in enumerate(self.kinds):
            spec = _GROUPED if kind == "grouped" and "grouped" in profile.tables else _TABLE_OF.get(kind)
            if spec is None or spec[0] not in profile.tables:
                continue
            table_kind, feature, align = spec
            if table_kind not in index:
                index[table_kind] = len(self.tables)
                self.tables.append(profile.tables[table_kind])
            self.node_table[k] = index[table_kind]
            self.feature_io[k] = feature in ("io", "group")
            self.feature_width[k] = feature == "width"
            self.align[k] = {"io": 1, "o": 2}.get(align, 0)
            self.work_is_macs[k] = TABLE_KINDS[table_kind] == "macs"

    def _alignment(self, idx, i, o):
        """Per node: (odd, i_padded, o_padded). `odd`: a channel count is not a multiple of the
        profile's fast multiple (the unaligned table applies); otherwise counts are read padded up to
        the channel multiple (inputs below it, like an RGB image, are left as they are)."""
        p = self.profile
        m = p.channel_multiple
        fast = p.fast_multiple or m
        rule = self.align[idx]

        def multiple_of(x, k):
            r = np.mod(x, k)
            return np.isclose(r, 0) | np.isclose(r, k)

        if fast > 1:
            o_odd = ~multiple_of(o, fast)
            i_odd = ~(multiple_of(i, fast) | (i < m))
            odd = np.where(rule == 1, o_odd | i_odd, np.where(rule == 2, o_odd, False))
        else:
            odd = np.zeros(len(idx), dtype=bool)
        if m > 1:
            o_pad = np.where(rule > 0, np.ceil(o / m - 1e-9) * m, o)
            i_pad = np.where((rule == 1) & (i >= m), np.ceil(i / m - 1e-9) * m, i)
        else:
            o_pad, i_pad = o, i
        return odd, i_pad, o_pad

    def per_node(self, i, o, nodes=None, force_aligned: bool = False) -> np.ndarray:
        idx = np.arange(len(self.kinds)) if nodes is None else np.asarray(nodes, dtype=np.int64)
        i = np.broadcast_to(np.asarray(i, dtype=np.float64), idx.shape)
        o = np.broadcast_to(np.asarray(o, dtype=np.float64), idx.shape)
        macs = _bilinear(self.macs[idx], i, o)
        nbytes = _bilinear(self.bytes[idx], i, o)
        t = self.profile.roofline_seconds(2.0 * macs, nbytes)
        tab = self.node_table[idx]
        if (tab >= 0).any():
            if force_aligned:
                odd, i_pad, o_pad = np.zeros(len(idx), dtype=bool), i, o
            else:
                odd, i_pad, o_pad = self._alignment(idx, i, o)
            for ti in np.unique(tab[tab >= 0]).tolist():
                sel = tab == ti
                table = self.tables[ti]
                io = self.feature_io[idx[sel]]
                bad = odd[sel] & (table.unaligned is not None)
                # fast counts: as if padded to the channel multiple; odd counts: the unaligned table
                ci = np.where(bad, i[sel], i_pad[sel])
                co = np.where(bad, o[sel], o_pad[sel])
                g = self.groups[idx[sel]]
                # grouped convs whose per-group channels are whole blocks run as one blocked conv
                # (ONNX Runtime's NCHWc grouped kernel); others as `g` small convs
                m = self.profile.channel_multiple
                whole = (np.mod(ci / g, m) == 0) & (np.mod(co / g, m) == 0)
                per_group = np.where(whole, 1.0, g)
                ch_in = np.where(io, ci / per_group, co)
                ch_out = np.where(io, co / per_group, co)
                # grouped table: whole groups are pruned together, so the width per group stays
                wide = self.feature_width[idx[sel]]
                width = np.where(self.width[idx[sel]] > 0, self.width[idx[sel]], ci / g)
                ch_in, ch_out = np.where(wide, width, ch_in), np.where(wide, width, ch_out)
                size = self.size[idx[sel]]
                per_unit = table.per_unit(ch_in, size, ch_out)
                if bad.any():
                    per_unit[bad] = table.unaligned.per_unit(ch_in[bad], size[bad], ch_out[bad])
                scale = np.where(io, _ratio(ci, i[sel]) * _ratio(co, o[sel]), _ratio(co, o[sel]))
                # A sliver of the unpadded work keeps every removed channel worth something, so the
                # greedy decision can walk through the plateaus between multiples (< 0.5 % of a node).
                scale = (1.0 - PAD_SLOPE) * scale + PAD_SLOPE
                work = np.where(self.work_is_macs[idx[sel]], macs[sel], nbytes[sel]) * scale
                t[sel] = per_unit * work * table.kernel_factor(self.kernel[idx[sel]])
        rate = self.product_rate[idx]
        t = np.where(rate > 0, macs * rate, t)
        spans = self.spans[idx]
        return t * self.charge[idx] + spans[:, 0] * o + spans[:, 1] + self.fixed[idx]

    def gradients(self, i, o) -> tuple[np.ndarray, np.ndarray]:
        """Linearised seconds saved per input / output channel position removed, per node.

        Roofline nodes: the derivative of the binding branch (MorphNet's latency regularizer).
        Table nodes: a one-channel finite difference on the aligned table (the smooth part;
        alignment steps are left to the decision). Never negative.
        """
        i = np.asarray(i, dtype=np.float64)
        o = np.asarray(o, dtype=np.float64)
        p = self.profile
        m, b = self.macs, self.bytes
        flops = 2.0 * _bilinear(m, i, o)
        nbytes = _bilinear(b, i, o)
        scale = p.dtype_bytes / 4.0
        compute_bound = flops / p.peak_flops >= nbytes * scale / p.bandwidth
        di = np.where(compute_bound, 2.0 * (m[:, 0] * o + m[:, 1]) / p.peak_flops,
                      scale * (b[:, 0] * o + b[:, 1]) / p.bandwidth)
        do = np.where(compute_bound, 2.0 * (m[:, 0] * i + m[:, 2]) / p.peak_flops,
                      scale * (b[:, 0] * i + b[:, 2]) / p.bandwidth)
        rate = self.product_rate
        di = np.where(rate > 0, rate * (m[:, 0] * o + m[:, 1]), di)
        do = np.where(rate > 0, rate * (m[:, 0] * i + m[:, 2]), do)
        di, do = di * self.charge, do * self.charge + self.spans[:, 0]
        tab = self.node_table >= 0
        if tab.any():
            idx = np.flatnonzero(tab)
            base = self.per_node(i[idx], o[idx], idx, force_aligned=True)
            di[idx] = base - self.per_node(np.maximum(i[idx] - 1, 0), o[idx], idx, force_aligned=True)
            do[idx] = base - self.per_node(i[idx], np.maximum(o[idx] - 1, 0), idx, force_aligned=True)
        return np.maximum(di, 0.0), np.maximum(do, 0.0)

    def breakdown(self, i, o) -> dict[str, float]:
        """Seconds per node kind (for reports)."""
        t = self.per_node(i, o)
        out: dict[str, float] = {}
        for kind, v in zip(self.kinds, t.tolist()):
            out[kind] = out.get(kind, 0.0) + v
        return out
