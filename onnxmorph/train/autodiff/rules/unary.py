"""Unary element-wise ops: dx = dy * f'(x), with f' written from x or the forward output y."""

from __future__ import annotations

import math

from ..core import gradient


def _k(ctx, v, like):
    return ctx.const(v, like=like)


@gradient("Identity", "Dropout")
def _identity(ctx, node, dys):
    # Dropout trains as inference-mode dropout (identity): fine-tuning keeps the model as deployed
    if node.op == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
        v = ctx.const_value(node.inputs[2])
        if v is None or bool(v):
            ctx.fail("only inference-mode Dropout (training_mode false) is supported")
    return [dys[0]]


@gradient("Neg")
def _neg(ctx, node, dys):
    return [ctx.op("Neg", [dys[0]])]


@gradient("Relu")
def _relu(ctx, node, dys):
    y, dy = node.outputs[0], dys[0]
    return [ctx.masked(dy, ctx.op("Greater", [y, ctx.zeros([], like=y)]), y)]


@gradient("LeakyRelu")
def _leaky(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    alpha = node.attr("alpha", 0.01)
    pos = ctx.op("Cast", [ctx.op("Greater", [x, _k(ctx, 0.0, x)])], to=ctx.dtype(x))
    return [ctx.mul(dy, ctx.op("Add", [ctx.scale(pos, 1.0 - alpha), _k(ctx, alpha, x)]))]


@gradient("Elu", "Celu", "Selu")
def _exp_linear(ctx, node, dys):
    """Negative branch: d/dx alpha*(exp(x/c)-1)*g = (y/g + alpha)*g/c, positive branch g (g=gamma, c=alpha for Celu)."""
    x, y, dy = node.inputs[0], node.outputs[0], dys[0]
    alpha = node.attr("alpha", {"Elu": 1.0, "Celu": 1.0, "Selu": 1.67326319217681884765625}[node.op])
    gamma = node.attr("gamma", 1.05070102214813232421875) if node.op == "Selu" else 1.0
    if node.op == "Celu":
        neg = ctx.op("Add", [ctx.scale(y, 1.0 / alpha), _k(ctx, 1.0, x)])
    else:
        neg = ctx.op("Add", [y, _k(ctx, alpha * gamma, x)])
    return [ctx.where_positive(x, ctx.scale(dy, gamma), ctx.mul(dy, neg))]


@gradient("Sigmoid")
def _sigmoid(ctx, node, dys):
    y = node.outputs[0]
    return [ctx.mul(dys[0], ctx.mul(y, ctx.op("Sub", [_k(ctx, 1.0, y), y])))]


@gradient("Tanh")
def _tanh(ctx, node, dys):
    y = node.outputs[0]
    return [ctx.mul(dys[0], ctx.op("Sub", [_k(ctx, 1.0, y), ctx.mul(y, y)]))]


@gradient("HardSigmoid")
def _hard_sigmoid(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    lin = ctx.op("Add", [ctx.scale(x, alpha), _k(ctx, beta, x)])
    inside = ctx.op("And", [ctx.op("Greater", [lin, _k(ctx, 0.0, x)]), ctx.op("Less", [lin, _k(ctx, 1.0, x)])])
    return [ctx.masked(ctx.scale(dy, alpha), inside, x)]


@gradient("HardSwish")
def _hard_swish(ctx, node, dys):
    # y = x * clip(x/6 + 1/2, 0, 1): dy/dx = 0 below -3, 1 above 3, x/3 + 1/2 between
    x, dy = node.inputs[0], dys[0]
    mid = ctx.op("Add", [ctx.scale(x, 1.0 / 3.0), _k(ctx, 0.5, x)])
    inside = ctx.op("Less", [ctx.op("Abs", [x]), _k(ctx, 3.0, x)])
    above = ctx.op("Cast", [ctx.op("Greater", [x, _k(ctx, 3.0, x)])], to=ctx.dtype(x))
    return [ctx.mul(dy, ctx.op("Add", [ctx.masked(mid, inside, x), above]))]


@gradient("Exp")
def _exp(ctx, node, dys):
    return [ctx.mul(dys[0], node.outputs[0])]


@gradient("Log")
def _log(ctx, node, dys):
    return [ctx.op("Div", [dys[0], node.inputs[0]])]


@gradient("Sqrt")
def _sqrt(ctx, node, dys):
    return [ctx.op("Div", [ctx.scale(dys[0], 0.5), node.outputs[0]])]


@gradient("Reciprocal")
def _reciprocal(ctx, node, dys):
    y = node.outputs[0]
    return [ctx.op("Neg", [ctx.mul(dys[0], ctx.mul(y, y))])]


@gradient("Abs")
def _abs(ctx, node, dys):
    return [ctx.mul(dys[0], ctx.op("Sign", [node.inputs[0]]))]


@gradient("Erf")
def _erf(ctx, node, dys):
    x = node.inputs[0]
    e = ctx.op("Exp", [ctx.op("Neg", [ctx.mul(x, x)])])
    return [ctx.mul(dys[0], ctx.scale(e, 2.0 / math.sqrt(math.pi)))]


@gradient("Gelu")
def _gelu(ctx, node, dys):
    x, dy = node.inputs[0], dys[0]
    if node.attr("approximate", "none") == "tanh":
        # y = x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3): y' = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3*0.044715 x^2)
        c = math.sqrt(2.0 / math.pi)
        x2 = ctx.mul(x, x)
        u = ctx.scale(ctx.mul(x, ctx.op("Add", [_k(ctx, 1.0, x), ctx.scale(x2, 0.044715)])), c)
        t = ctx.op("Tanh", [u])
        du = ctx.op("Add", [_k(ctx, c, x), ctx.scale(x2, 3 * 0.044715 * c)])
        sech2 = ctx.op("Sub", [_k(ctx, 1.0, x), ctx.mul(t, t)])
        d = ctx.op("Add", [ctx.scale(ctx.op("Add", [_k(ctx, 1.0, x), t]), 0.5),
                           ctx.mul(ctx.scale(x, 0.5), ctx.mul(sech2, du))])
        return [ctx.mul(dy, d)]
    # y = x Phi(x): y' = Phi(x) + x phi(x)
    cdf = ctx.scale(ctx.op("Add", [_k(ctx, 1.0, x), ctx.op("Erf", [ctx.scale(x, 1 / math.sqrt(2))])]), 0.5)
    pdf = ctx.scale(ctx.op("Exp", [ctx.scale(ctx.mul(x, x), -0.5)]), 1 / math.sqrt(2 * math.pi))
    return [ctx.mul(dy, ctx.op("Add", [cdf, ctx.mul(x, pdf)]))]


@gradient("Softplus")
def _softplus(ctx, node, dys):
    return [ctx.mul(dys[0], ctx.op("Sigmoid", [node.inputs[0]]))]


@gradient("Softsign")
def _softsign(ctx, node, dys):
    x = node.inputs[0]
    d = ctx.op("Add", [ctx.op("Abs", [x]), _k(ctx, 1.0, x)])
    return [ctx.op("Div", [dys[0], ctx.mul(d, d)])]


@gradient("Mish")
def _mish(ctx, node, dys):
    # y = x tanh(softplus(x)): y' = t + x sigmoid(x) (1 - t^2)
    x = node.inputs[0]
    t = ctx.op("Tanh", [ctx.op("Softplus", [x])])
    sech2 = ctx.op("Sub", [_k(ctx, 1.0, x), ctx.mul(t, t)])
    d = ctx.op("Add", [t, ctx.mul(ctx.mul(x, ctx.op("Sigmoid", [x])), sech2)])
    return [ctx.mul(dys[0], d)]


@gradient("Sin")
def _sin(ctx, node, dys):
    return [ctx.mul(dys[0], ctx.op("Cos", [node.inputs[0]]))]


@gradient("Cos")
def _cos(ctx, node, dys):
    return [ctx.op("Neg", [ctx.mul(dys[0], ctx.op("Sin", [node.inputs[0]]))])]


@gradient("Floor", "Ceil", "Round", "Sign")
def _piecewise_constant(ctx, node, dys):
    return [None]  # zero almost everywhere


@gradient("Clip")
def _clip(ctx, node, dys):
    """Pass where min <= x <= max (as PyTorch); min/max (opset 11+ inputs) get what was clipped to them."""
    x, dy = node.inputs[0], dys[0]
    lo = node.input(1) or None
    hi = node.input(2) or None
    if "min" in node.attrs:
        lo = ctx.const(node.attr("min"), like=x)
    if "max" in node.attrs:
        hi = ctx.const(node.attr("max"), like=x)
    grads = [None, None, None]
    y = node.outputs[0]
    if lo is not None and ctx.needs(node.input(1)):
        grads[1] = ctx.unbroadcast(ctx.masked(dy, ctx.op("Less", [x, lo]), x), ctx.shape(x), ctx.shape(lo))
    if hi is not None and ctx.needs(node.input(2)):
        grads[2] = ctx.unbroadcast(ctx.masked(dy, ctx.op("Greater", [x, hi]), x), ctx.shape(x), ctx.shape(hi))
    # inside [min, max] exactly where the clip left x unchanged (one comparison instead of four)
    g = ctx.masked(dy, ctx.op("Equal", [x, y]), x) if lo is not None or hi is not None else dy
    grads[0] = g
    return grads


@gradient("PRelu")
def _prelu(ctx, node, dys):
    x, slope, dy = node.inputs[0], node.inputs[1], dys[0]
    zero = _k(ctx, 0.0, x)
    pos = ctx.op("Greater", [x, zero])
    dx = ctx.op("Where", [pos, dy, ctx.mul(dy, slope)]) if ctx.needs(x) else None
    ds = None
    if ctx.needs(slope):
        ds = ctx.unbroadcast(ctx.op("Where", [pos, zero, ctx.mul(dy, x)]), ctx.shape(x), ctx.shape(slope))
    return [dx, ds]
