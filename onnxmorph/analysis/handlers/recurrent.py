"""LSTM, GRU and RNN: their hidden units are new channels (one element per hidden index).

A hidden unit lives in the last axis of Y ([seq, D, batch, H] or, with layout=1, [batch, seq, D, H]),
Y_h and Y_c ([D, batch, H] / [batch, D, H]). Both directions of a bidirectional layer share one
`hidden_size`, so index j of either direction is one unit: the channel map of Y lies on the hidden axis
alone. The layer also sums over its own hidden units through the recurrent weight R, so the masked
model gates R's columns (a gate on a constant) besides the usual gate on X: with R[..., j] zeroed,
unit j no longer reaches any other unit, which is exactly what removing it does. Emit slices W, R, B
and the peepholes P gate by gate, and the initial states on their hidden axis.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..node_cost import Bilinear
from ..channels import ChannelMap
from .base import OpHandler, const_value, is_present, register
from .conv import F32

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STATE_INPUTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}  # initial_h (and initial_c)
PEEPHOLES = 7  # LSTM's P input: [D, 3H]


def _present_outputs(node):
    """(tensor, hidden axis) of every output the graph uses: Y on axis 3, Y_h / Y_c on axis 2."""
    return [(t, 3 if k == 0 else 2) for k, t in enumerate(node.outputs) if t.name]


def _directions(node) -> int:
    return 2 if node.attrs.get("direction", "forward") == "bidirectional" else 1


@register
class RecurrentHandler(OpHandler):
    op_types = tuple(GATES)

    def propagate(self, node, ctx) -> None:
        x, w_t, r_t = node.inputs[0], node.inputs[1], node.inputs[2]
        w, r = const_value(w_t), const_value(r_t)
        if w is None or r is None:
            raise ValueError("the W and R weights are not constant")
        if len(r_t.outputs) > 1:
            raise ValueError(f"its recurrent weight '{r_t.name}' is shared with another node")
        outs = _present_outputs(node)
        if not outs:
            return
        gates, d = GATES[node.op], _directions(node)
        hidden = int(r.shape[-1])
        layout = int(node.attrs.get("layout", 0))
        xshape = ctx.shape(x)
        seq, batch = (xshape[1], xshape[0]) if layout else (xshape[0], xshape[1])

        xmap = ctx.map(x)
        if xmap is not None and not (xmap.is_1d and xmap.axis == 2):
            ctx.freeze(xmap, f"{node.op} '{node.name}' input channels are not on the feature axis")
            xmap = None
        units = ctx.table.new(hidden, node.name)
        for t, axis in outs:
            ctx.set_map(t, ChannelMap((axis,), units))
        y, y_axis = outs[0]
        # The recurrence sums over hidden units through R's last axis: gate it there.
        ctx.maps[r_t.name] = ChannelMap((2,), units)
        ctx.gates.setdefault(r_t.name, []).append(node.name)
        ctx.gate(node, x)
        self._initial_states(node, ctx, units)

        # Importance: the rows of W and R that make each unit (gate by gate), and the columns of W.
        ctx.weight(node, w_t, 2, x)
        for const in (w, r):
            ctx.weight_values(node, const.reshape(d, gates, hidden, -1), 2, y, True)

        # Per time step and direction, every gate multiplies the input (I x H) and the state (H x H).
        steps = seq * batch * d * gates
        has_bias = is_present(node, 3)
        peep = 3 * d if node.op == "LSTM" and is_present(node, PEEPHOLES) else 0
        in_params = Bilinear(a=d * gates, c=(2 * d * gates if has_bias else 0) + peep)
        rec_params = Bilinear(a=d * gates)
        io_bytes = Bilinear(b=seq * batch, c=seq * batch * d)
        extra = {"kind": "gemm", "size": float(seq * batch)}
        ctx.cost(node, x, y, 2, y_axis, macs=Bilinear(a=steps), params=in_params,
                 bytes=(in_params + io_bytes).scaled(F32), extra=extra)
        ctx.cost(node, y, y, y_axis, y_axis, macs=Bilinear(a=steps), params=rec_params,
                 bytes=rec_params.scaled(F32), extra=extra)

    @staticmethod
    def _initial_states(node, ctx, units) -> None:
        """Constant states and graph inputs are sliced at emit; a state computed by a layer whose
        channels are tracked (a decoder started from an encoder's Y_h) must keep the same units."""
        for i in STATE_INPUTS[node.op]:
            if not is_present(node, i):
                continue
            smap = ctx.map(node.inputs[i])
            if smap is None:
                continue
            if smap.is_1d and smap.axis == 2 and smap.ids.size == units.size:
                ctx.table.union(smap.ids, units)
            else:
                reason = f"{node.op} '{node.name}' initial state channels do not line up with its hidden units"
                ctx.freeze(smap, reason)
                ctx.table.freeze(units, reason)

    def emit(self, node, ctx) -> None:
        outs = _present_outputs(node)
        if not outs:
            return
        kin, kh = ctx.kept(node.inputs[0]), ctx.kept(outs[0][0])
        if kin is None and kh is None:
            return
        gates, d = GATES[node.op], _directions(node)
        w, r = const_value(node.inputs[1]), const_value(node.inputs[2])
        hidden = int(r.shape[-1])
        keep_h = np.arange(hidden) if kh is None else kh
        w = w.reshape(d, gates, hidden, -1)[:, :, keep_h]
        if kin is not None:
            w = w[..., kin]
        ctx.set_input(node, 1, w.reshape(d, gates * len(keep_h), -1))
        if kh is None:
            return
        r = r.reshape(d, gates, hidden, hidden)[:, :, kh][..., kh]
        ctx.set_input(node, 2, r.reshape(d, gates * len(kh), len(kh)))
        if is_present(node, 3):
            b = const_value(node.inputs[3])
            ctx.set_input(node, 3, b.reshape(d, 2 * gates, hidden)[:, :, kh].reshape(d, -1))
        if node.op == "LSTM" and is_present(node, PEEPHOLES):
            p = const_value(node.inputs[PEEPHOLES])
            ctx.set_input(node, PEEPHOLES, p.reshape(d, 3, hidden)[:, :, kh].reshape(d, -1))
        for i in STATE_INPUTS[node.op]:
            if not is_present(node, i):
                continue
            state = node.inputs[i]
            if isinstance(state, gs.Constant):
                ctx.set_input(node, i, np.take(const_value(state), kh, axis=2))
            elif ctx.map(state) is None:  # a graph input (or untracked tensor): keep the units left
                ctx.wrap_input(node, i, "Gather", [ctx.constant(kh.astype(np.int64), f"{node.name}__kept_hidden")],
                               "kept_hidden", axis=2)
        node.attrs["hidden_size"] = len(kh)
