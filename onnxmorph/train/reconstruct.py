"""Closed-form reconstruction after the cut (ThiNet / He et al. 2017 channel pruning), label-free.

Every Conv, Gemm and MatMul with a constant weight whose input the cut changed is refit by ridge
least squares so that, fed the masked model's own activations (earlier refits applied, so errors
do not pile up), it reproduces the original model's pre-activations:

    W' = argmin ||A W' - Y||^2 + lam ||W' - W||^2,   lam = ridge * mean(diag(A'A))

where A holds the masked input (im2col patches for a Conv, one system per group) plus a ones column
for the bias and Y the original output. Removed channels are zero columns of A, so their weights keep
their old values and emit drops them: pruned == masked still holds. A Conv without a bias that feeds a
BatchNormalization gets its fitted bias folded into the BN mean. A refit is kept only where it lowers
the error on held-out calibration rows. Where the graph keeps BatchNormalization, the statistics can
also be re-estimated on the masked model's activations (`bn_stats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..ops import LINEAR_OPS, conv_pads
from .waves import Forward, runner, wave_of

MAX_FEATURES = 6144  # one solve of D x D in float64; wider layers are left as they are
# calibration rows the refit uses at most: on ppocr-rec at flops=0.7, one-shot, 128 / 256 / 461 rows kept
# 0.940 / 0.967 / 0.976 of the characters of 512 new lines (ridge 1e-3; 1e-2: 0.958, 1e-4: 0.932)
SAMPLES = 512
MIN_SAMPLES = 64  # below this the work budget skips late waves instead of taking fewer rows
# The refit's budget, in seconds of a 2-core reference machine, estimated from the layers' sizes
# before it starts: fewer rows where it would not fit. A wall-clock budget made the result depend on
# the machine's load (ppocr-rec at load 7 stopped after 25 of 46 waves and kept 2 % of its characters).
WORK_SECONDS = 900.0
# reference seconds per unit of work, from a profile of ppocr-rec's refit on 256 rows (ONNX Runtime
# 32 s for 2 x 256 x 0.7 GMACs, gathering 2.5e9 patch values 44 s, normal equations of 2.6e11 MACs 28 s).
# The gather has since become twice as fast, yet the whole estimate still reads low (ppocr-rec: 169 s
# estimated, 216 s on a quiet machine), so the constants stay as measured. Not counted: the runs that
# restart from the inputs once the kept tensors pass FRONTIER_BYTES.
SECONDS_PER_MAC = 8.8e-11
SECONDS_PER_GATHERED = 1.8e-8
SECONDS_PER_GRAM_MAC = 1.1e-10
ROWS_PER_BATCH = 4096  # positions sampled per batch and layer (a 56x56 map has 3136 per image)


@dataclass
class Layer:
    node: str
    op: str
    x: str  # input in the masked model (gated)
    x_orig: str  # the same input in the original model
    y: str  # the pre-activation to reproduce (the output, or its bias Add's)
    weight: str
    bias: str | None = None  # initializer holding the bias, if any
    bn_mean: str | None = None  # a BN mean that absorbs the fitted bias of a bias-free Conv
    attrs: dict = field(default_factory=dict)
    transposed: bool = False  # Gemm transB: weight stored [out, in]


@dataclass
class Reconstruction:
    params: dict[str, np.ndarray]
    layers: list[dict]  # per refit layer: name, error before/after (relative, held-out)
    seconds: float

    def note(self) -> str:
        bn = next((r["re_estimated"] for r in self.layers if "re_estimated" in r), None)
        tail = f"; re-estimated the statistics of {bn} BatchNormalization nodes" if bn else ""
        return self._refit_note() + tail

    def _refit_note(self) -> str:
        plan = next((r for r in self.layers if "of_waves" in r), None)
        on = ""
        if plan is not None:
            on = f" on {plan['rows']} calibration rows"
            if plan["waves"] < plan["of_waves"]:
                on += (f" (stopped after {plan['waves']} of {plan['of_waves']} waves: work budget "
                       f"{plan['budget_seconds']:g} reference s)")
        refit = [r for r in self.layers if "kept" in r]
        kept = [r for r in refit if r["kept"]]
        if not refit:
            return f"least-squares reconstruction{on}: no layer refit (left as cut)"
        if not kept:
            return f"least-squares reconstruction{on}: no layer improved (left as cut)"
        before = np.median([r["error_before"] for r in kept])
        after = np.median([r["error_after"] for r in kept])
        took = f" in {self.seconds:.1f} s"
        if plan is not None:
            estimate = plan["estimated_seconds"]
            took += f" (estimated {f'{estimate:.0f} s' if estimate >= 1 else 'under 1 s'} on the reference machine)"
        return (f"least-squares reconstruction refit {len(kept)} of {len(refit)} affected layers{on}{took}: "
                f"held-out pre-activation error {before:.3f} -> {after:.3f} (median relative)")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def find_layers(masked: onnx.ModelProto, original: onnx.ModelProto) -> list[Layer]:
    """The refittable linear layers of `masked`, in topological order."""
    inits = {t.name: t for t in masked.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in masked.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    orig_nodes = {n.name: n for n in original.graph.node}
    layers = []
    for n in masked.graph.node:
        if n.op_type not in LINEAR_OPS or len(n.input) < 2 or n.input[1] not in inits or n.input[0] in inits:
            continue
        w = inits[n.input[1]]
        if w.data_type != onnx.TensorProto.FLOAT or n.name not in orig_nodes:
            continue
        attrs = _attrs(n)
        layer = Layer(n.name, n.op_type, n.input[0], orig_nodes[n.name].input[0], n.output[0], n.input[1],
                      attrs=attrs)
        if n.op_type == "Conv":
            if len(w.dims) not in (3, 4):
                continue
            if len(n.input) > 2 and n.input[2] in inits:
                layer.bias = n.input[2]
            else:
                nxt = consumers.get(n.output[0], [])
                if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization" and nxt[0].input[3] in inits:
                    layer.bn_mean = nxt[0].input[3]
        elif n.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                continue
            layer.transposed = bool(attrs.get("transB", 0))
            if len(n.input) > 2 and n.input[2] in inits and len(inits[n.input[2]].dims) == 1:
                layer.bias = n.input[2]
        else:  # MatMul: x [..., K] @ W [K, N], often followed by its bias Add (torch's Linear)
            if len(w.dims) != 2:
                continue
            nxt = consumers.get(n.output[0], [])
            if len(nxt) == 1 and nxt[0].op_type == "Add":
                other = [i for i in nxt[0].input if i != n.output[0]]
                if len(other) == 1 and other[0] in inits and list(inits[other[0]].dims) == [w.dims[1]]:
                    layer.bias, layer.y = other[0], nxt[0].output[0]
        layers.append(layer)
    return layers


def _sample(total: int, rng, limit: int | None) -> np.ndarray | None:
    """Row indices to keep of `total` (None: all of them)."""
    if limit is None or total <= limit or rng is None:
        return None
    return rng.choice(total, limit, replace=False)


def _patches(x: np.ndarray, layer: Layer, w_shape: tuple, rows: np.ndarray | None = None) -> np.ndarray:
    """im2col: [n, C, H, W] -> [rows, group, kh * kw * C/group] (float64) for the layer's Conv, where a row
    is an (image, output position) in row-major order and the columns run (kh, kw, channel); `rows` picks
    some of them (default: all). Only the picked patches are gathered, one kernel tap at a time from a
    channels-last copy: twice as fast as gathering [c, kh, kw] windows, which took 44 of the refit's 112 s
    on ppocr-rec."""
    if x.ndim == 3:  # Conv1d
        x = x[:, :, None, :]
    kh, kw = (1, w_shape[2]) if len(w_shape) == 3 else (w_shape[2], w_shape[3])
    a = layer.attrs
    nd = 2 if len(w_shape) == 4 else 1
    begin, end = conv_pads(a, x.shape[-nd:], w_shape[2:])  # auto_pad too (keras exports say VALID / SAME)
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    if nd == 1:
        begin, end, strides, dil = [0] + begin, [0] + end, [1, strides[0]], [1, dil[0]]
    x = np.pad(x, ((0, 0), (0, 0), (begin[0], end[0]), (begin[1], end[1])))
    n, c, h, w = x.shape
    ho = (h - (kh - 1) * dil[0] - 1) // strides[0] + 1
    wo = (w - (kw - 1) * dil[1] - 1) // strides[1] + 1
    if rows is None:
        rows = np.arange(n * ho * wo)
    img, oy, ox = np.unravel_index(rows, (n, ho, wo))
    oy, ox = oy * strides[0], ox * strides[1]
    last = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # [n, h, w, c]: a tap gathers whole rows of c
    out = np.empty((len(rows), kh, kw, c))
    for dy in range(kh):
        for dx in range(kw):
            out[:, dy, dx] = last[img, oy + dy * dil[0], ox + dx * dil[1]]
    g = int(a.get("group", 1))
    if g > 1:
        out = out.reshape(len(rows), kh, kw, g, c // g).transpose(0, 3, 1, 2, 4)
    return out.reshape(len(rows), g, kh * kw * (c // g))


def design(x: np.ndarray, y: np.ndarray, layer: Layer, w_shape: tuple, rng=None, limit: int | None = None):
    """(A [rows, G, D], Y [rows, G, out/G]) for one batch; at most `limit` rows, drawn with `rng`."""
    if layer.op == "Conv":
        yy = y if y.ndim == 4 else y[:, :, None, :]
        n, out, ho, wo = yy.shape
        rows = _sample(n * ho * wo, rng, limit)
        a = _patches(x, layer, w_shape, rows)
        if rows is None:
            yy = yy.transpose(0, 2, 3, 1).reshape(-1, out)
        else:
            img, oy, ox = np.unravel_index(rows, (n, ho, wo))
            yy = yy[img, :, oy, ox]
        g = a.shape[1]
        yy = yy.reshape(len(yy), g, -1)
    else:
        a = x.reshape(-1, x.shape[-1])
        yy = y.reshape(-1, y.shape[-1])
        rows = _sample(len(a), rng, limit)
        if rows is not None:
            a, yy = a[rows], yy[rows]
        a, yy = a[:, None, :], yy[:, None, :]
    return a.astype(np.float64, copy=False), yy.astype(np.float64)


def weights_as_system(w: np.ndarray, layer: Layer, groups: int) -> np.ndarray:
    """The weight as [G, D, out/G] matching `design`'s columns ((kh, kw, channel) for a Conv)."""
    if layer.op == "Conv":
        out, cg = w.shape[:2]
        w = w.reshape(groups, out // groups, cg, -1)  # [G, o, c, taps]
        return w.transpose(0, 3, 2, 1).reshape(groups, -1, out // groups)
    return (w.T if layer.transposed else w)[None]


def system_to_weights(sol: np.ndarray, layer: Layer, w_shape: tuple) -> np.ndarray:
    """The inverse of `weights_as_system`."""
    if layer.op == "Conv":
        groups, out, cg = sol.shape[0], w_shape[0], w_shape[1]
        taps = sol.reshape(groups, -1, cg, out // groups)  # [G, taps, c, o]
        return taps.transpose(0, 3, 2, 1).reshape(w_shape)
    return sol[0].T if layer.transposed else sol[0]


class _Accumulator:
    """A'A and A'Y per group, plus held-out rows for the keep/reject check."""

    def __init__(self, groups: int, d: int, outs: int, bias: bool):
        d1 = d + (1 if bias else 0)
        self.bias = bias
        self.ata = np.zeros((groups, d1, d1))
        self.aty = np.zeros((groups, d1, outs))
        self.held: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, a: np.ndarray, y: np.ndarray, hold: bool) -> None:
        if self.bias:
            a = np.concatenate([a, np.ones(a.shape[:2] + (1,))], axis=2)
        if hold:
            self.held.append((a, y))
            return
        at = a.transpose(1, 2, 0)  # [G, D, rows]: matmul goes to BLAS, einsum here did not (17 s on ppocr-rec)
        self.ata += at @ a.transpose(1, 0, 2)
        self.aty += at @ y.transpose(1, 0, 2)

    def solve(self, w0: np.ndarray, b0: np.ndarray | None, ridge: float) -> np.ndarray:
        prior = w0 if not self.bias else np.concatenate([w0, b0[:, None, :]], axis=1)
        d1 = self.ata.shape[1]
        lam = ridge * np.trace(self.ata, axis1=1, axis2=2) / d1 + 1e-12
        lhs = self.ata + lam[:, None, None] * np.eye(d1)[None]
        return np.linalg.solve(lhs, self.aty + lam[:, None, None] * prior)

    def error(self, sol: np.ndarray) -> float:
        num = sum(float(np.square(np.einsum("rgi,gio->rgo", a, sol) - y).sum()) for a, y in self.held)
        den = sum(float(np.square(y).sum()) for _, y in self.held)
        return float(np.sqrt(num / max(den, 1e-30)))


@dataclass
class RefitCost:
    """A refit's estimated cost in reference seconds: per calibration row, and once."""
    per_row: float
    fixed: float

    def rows_within(self, seconds: float) -> int:
        return int(max(seconds - self.fixed, 0.0) / self.per_row) if self.per_row > 0 else 1 << 30


def _system_size(layer: Layer, x: np.ndarray, y: np.ndarray, w_shape: tuple) -> tuple[int, int, int, int]:
    """(positions per row, groups, features, outputs per group) of the layer's least-squares system."""
    if layer.op == "Conv":
        groups = int(layer.attrs.get("group", 1))
        return int(np.prod(y.shape[2:])), groups, int(np.prod(w_shape[1:])), w_shape[0] // groups
    return int(np.prod(x.shape[1:-1])), 1, x.shape[-1], y.shape[-1]


def refit_work(layers: list[Layer], refit: list[Layer], xs: dict, ys: dict, shapes: dict,
               batch: int) -> dict[str, RefitCost]:
    """Each refit layer's estimated cost (the forward runs of both models charged to the first wave's
    layers), from one batch of `batch` rows: `xs` / `ys` hold every layer's input and output on it."""
    forward = sum(2 * pos * g * d * o for pos, g, d, o in  # MACs per row of both models' linear layers
                  (_system_size(l, xs[l.x], ys[l.y], shapes[l.node]) for l in layers))
    work = {}
    for layer in refit:
        pos, g, d, o = _system_size(layer, xs[layer.x], ys[layer.y], shapes[layer.node])
        if d > MAX_FEATURES:
            continue
        d1 = d + 1
        sampled = min(batch * pos, ROWS_PER_BATCH) / batch  # design rows per calibration row
        per_row = sampled * g * (d * SECONDS_PER_GATHERED + (d1 * d1 + d1 * o) * SECONDS_PER_GRAM_MAC)
        work[layer.node] = RefitCost(per_row, g * d1 ** 3 / 3 * SECONDS_PER_GRAM_MAC)
    if work:
        first = next(iter(work))
        work[first] = RefitCost(work[first].per_row + forward * SECONDS_PER_MAC, work[first].fixed)
    return work


def plan_rows(work: dict[str, RefitCost], wave: dict[str, int], rows: int, seconds: float) -> tuple[int, int]:
    """(calibration rows, waves) the refit takes within `seconds`: every row up to SAMPLES, fewer rows
    down to MIN_SAMPLES, then only the waves that fit, in order."""
    total = RefitCost(sum(w.per_row for w in work.values()), sum(w.fixed for w in work.values()))
    rows = min(rows, max(total.rows_within(seconds), min(rows, MIN_SAMPLES)))
    spent, waves = 0.0, max(wave.values(), default=-1) + 1
    for k in range(waves):
        spent += sum(w.per_row * rows + w.fixed for node, w in work.items() if wave[node] == k)
        if spent > seconds:
            return rows, k
    return rows, waves


def reconstruct(masked: onnx.ModelProto, original: onnx.ModelProto, inputs: dict[str, np.ndarray], *,
                ridge: float = 1e-3, batch: int = 32, fixed_batch: int = 1, seed: int = 0,
                progress=None, refit: bool = True, bn_stats: bool = False,
                max_seconds: float | None = None) -> Reconstruction:
    """Refit the linear layers of `masked` (the cut model, 0/1 gates in place) to reproduce
    `original`'s pre-activations on calibration `inputs`. Returns the changed initializers.

    `max_seconds`: the refit's work budget (estimated reference seconds, not wall time): fewer rows
    of `inputs`, then fewer waves, where the whole would not fit."""
    say = progress or (lambda msg, **info: None)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    layers = find_layers(masked, original)
    work = onnx.ModelProto()
    work.CopyFrom(masked)
    inits = {t.name: t for t in work.graph.initializer}
    shapes = {l.node: tuple(inits[l.weight].dims) for l in layers}

    # Which layers see a changed input, and the waves in which they can be refit together: a layer
    # waits for every refit layer upstream of it.
    first = {k: v[:batch] for k, v in inputs.items()}
    got_m = runner(work, [l.x for l in layers], fixed_batch)(first)
    got_o = runner(original, [l.x_orig for l in layers] + [l.y for l in layers], fixed_batch)(first)
    affected = [l for l in layers if refit and not np.array_equal(got_m[l.x], got_o[l.x_orig])]
    wave = wave_of(work, [(l.node, l.x) for l in affected])
    waves = max(wave.values(), default=-1) + 1
    rows, planned = next(iter(inputs.values())).shape[0], waves
    results: list[dict] = []
    rows_in = inputs
    if max_seconds is not None and affected:
        cost = refit_work(layers, affected, got_m, got_o, shapes, next(iter(first.values())).shape[0])
        rows, planned = plan_rows(cost, wave, rows, max_seconds)
        rows_in = {k: v[:rows] for k, v in inputs.items()}
        estimate = sum(w.per_row * rows + w.fixed for n, w in cost.items() if wave[n] < planned)
        results.append({"layer": "work budget", "rows": rows, "waves": planned, "of_waves": waves,
                        "estimated_seconds": round(estimate, 1), "budget_seconds": max_seconds})
    # one batch is held out to judge each refit: the first, a full one, where two fit; else the ragged
    # last (4 held-out rows rejected a good refit; 32 of 36 would leave almost nothing to fit)
    n_batches = -(-rows // batch)
    hold = 0 if rows >= 2 * batch else (n_batches - 1 if n_batches > 1 else None)
    forward_m, forward_o = Forward(rows_in, fixed_batch), Forward(rows_in, fixed_batch)
    params = {}
    for k in range(planned):
        todo = [l for l in affected if wave[l.node] == k]
        say(f"reconstructing layers (wave {k + 1}/{planned})")
        accs = {}
        # a batch at a time: refits change only what later waves read
        pairs = zip(forward_m.run(work, [l.x for l in todo], batch), forward_o.run(original, [l.y for l in todo], batch))
        for bi, (xm, yo) in enumerate(pairs):
            for layer in todo:
                # positions sampled: a large map has thousands per image
                a, y = design(xm[layer.x], yo[layer.y], layer, shapes[layer.node], rng, ROWS_PER_BATCH)
                if a.shape[2] > MAX_FEATURES:
                    continue
                fit_bias = layer.bias is not None or layer.bn_mean is not None
                acc = accs.setdefault(layer.node, _Accumulator(a.shape[1], a.shape[2], y.shape[2], fit_bias))
                acc.add(a, y, bi == hold)
        for layer in todo:
            acc = accs.get(layer.node)
            if acc is not None:
                results.append(_refit(layer, acc, inits, ridge, params))
    if bn_stats:
        say("re-estimating BatchNorm statistics")
        bn = reestimate_bn(work, inputs, batch=batch, fixed_batch=fixed_batch)
        params.update(bn)
        results.append({"layer": "BatchNormalization statistics", "re_estimated": len(bn) // 2})
    return Reconstruction(params, results, time.perf_counter() - t0)


def _refit(layer: Layer, acc: _Accumulator, inits: dict, ridge: float, params: dict) -> dict:
    """Solve one layer's system; keep the solution (in `inits` and `params`) if it lowers the held-out error."""
    w = numpy_helper.to_array(inits[layer.weight]).astype(np.float64)
    groups = acc.ata.shape[0]
    w0 = weights_as_system(w, layer, groups)
    b0 = None
    if acc.bias:
        b = numpy_helper.to_array(inits[layer.bias]) if layer.bias else np.zeros(w0.shape[0] * w0.shape[2])
        b0 = b.astype(np.float64).reshape(groups, -1)
    sol = acc.solve(w0, b0, ridge)
    if acc.held:
        prior = w0 if b0 is None else np.concatenate([w0, b0[:, None, :]], axis=1)
        before, after = acc.error(prior), acc.error(sol)
    else:
        before, after = 1.0, 0.0
    keep = after < before
    result = {"layer": layer.node, "error_before": round(before, 6), "error_after": round(after, 6),
              "kept": bool(keep)}
    if not keep:
        return result
    new_w = system_to_weights(sol[:, :w0.shape[1], :], layer, w.shape).astype(np.float32)
    _set(inits[layer.weight], new_w, params)
    if acc.bias:
        fitted = sol[:, -1, :].reshape(-1).astype(np.float32)
        if layer.bias:
            _set(inits[layer.bias], fitted.reshape(numpy_helper.to_array(inits[layer.bias]).shape), params)
        else:  # BN(y + b) with mean m equals BN(y) with mean m - b
            mean = numpy_helper.to_array(inits[layer.bn_mean])
            _set(inits[layer.bn_mean], (mean - fitted).astype(mean.dtype), params)
    return result


def reestimate_bn(model: onnx.ModelProto, inputs: dict[str, np.ndarray], *, batch: int = 32,
                  fixed_batch: int = 1) -> dict[str, np.ndarray]:
    """Set every BatchNormalization's stored mean and variance to its input's statistics in `model`
    (modified in place) on calibration `inputs`, upstream ones first. Returns the changed values."""
    inits = {t.name: t for t in model.graph.initializer}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization" and len(n.input) >= 5
           and n.input[3] in inits and n.input[4] in inits]
    wave = wave_of(model, [(n.name, n.input[0]) for n in bns])
    forward = Forward(inputs, fixed_batch)
    params: dict[str, np.ndarray] = {}
    for k in range(max(wave.values(), default=-1) + 1):
        todo = [n for n in bns if wave[n.name] == k]
        sums: dict[str, list] = {}
        for got in forward.run(model, [n.input[0] for n in todo], batch):
            for n in todo:
                x = got[n.input[0]].astype(np.float64)
                axes = tuple(a for a in range(x.ndim) if a != 1)
                acc = sums.setdefault(n.name, [0.0, 0.0, 0])
                acc[0] += x.sum(axis=axes)
                acc[1] += np.square(x).sum(axis=axes)
                acc[2] += x.size // x.shape[1]
        for n in todo:
            total, squares, count = sums[n.name]
            mean = total / count
            var = np.maximum(squares / count - mean ** 2, 0.0)
            dtype = numpy_helper.to_array(inits[n.input[3]]).dtype
            _set(inits[n.input[3]], mean.astype(dtype), params)
            _set(inits[n.input[4]], var.astype(dtype), params)
    return params


def _set(init: onnx.TensorProto, value: np.ndarray, params: dict) -> None:
    init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    params[init.name] = value


def reconstruct_cut(analysis, keep_units: np.ndarray, inputs: dict[str, np.ndarray], *, teacher=None,
                    samples: int = SAMPLES, ridge: float = 1e-3, seed: int = 0, progress=None, refit: bool = True,
                    bn_stats: bool = False) -> Reconstruction:
    """`reconstruct` for the cut `keep_units` of `analysis` (its current weights), against `teacher`
    (the untouched model; default `analysis.loaded.model`), on at most `samples` calibration rows."""
    from ..gates import build_masked
    from .batched import at_batch

    n = next(iter(inputs.values())).shape[0]
    rows = np.random.default_rng(seed).permutation(n)[:samples]
    calib = {k: np.ascontiguousarray(v[rows]) for k, v in inputs.items()}
    batch = min(32, len(rows))
    batched, size, batched_teacher = at_batch(analysis, batch)
    reference = batched_teacher if batched_teacher is not None else (teacher or analysis.loaded.model)
    if batched_teacher is None:  # the static model: its own batch size
        size = int(next(iter(analysis.loaded.static_inputs.values()))[0])
    # the model runs `size` rows at a time: the training batch, or the static model's own batch size
    return reconstruct(build_masked(batched, keep_units), reference, calib, ridge=ridge, batch=batch,
                       fixed_batch=size, seed=seed, progress=progress, refit=refit, bn_stats=bn_stats,
                       max_seconds=WORK_SECONDS)
