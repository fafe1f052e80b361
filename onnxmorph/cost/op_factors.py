"""How much slower or faster each runtime op is than the op its table was measured with: the
pure part of the op factors a measured profile holds (`bench/op_factors.py` measures them).

A node priced with table K that the runtime runs as ops X, Y (`RuntimePlan.ops`, e.g. HardSwish as
HardSigmoid + Mul) costs table time x (f(X) + f(Y)) / f(base of K).
"""

from __future__ import annotations

# the op each table was measured with: a node priced with that table divides by its factor
TABLE_BASE = {"unary": "Sigmoid", "bn": "Sigmoid", "other": "Sigmoid", "view": "Sigmoid", "reorder": "Sigmoid",
              "binary": "Add", "pool": "MaxPool"}
# ops the runtime fuses into one kernel that an ONNX graph writes as several nodes
ALIASES = {"SkipLayerNormalization": "LayerNormalization", "FastGelu": "Gelu", "SimplifiedLayerNormalization":
           "LayerNormalization"}
# ops that work row by row (or move rows): a fixed part per row, so the factor is a + b / row length,
# fitted from two row lengths (b is stored as "<op>@row")
ROW_OPS = frozenset({"Softmax", "LayerNormalization", "BiasGelu", "Transpose"})


def relative(factors: dict[str, float], op: str, kind: str, row: float | None = None) -> float:
    """The time of `op` over that of the op table `kind` was measured with, on the same tensor
    (1 when the profile has no factor for `op`: it runs like the table's own op). `row`: the
    length of the rows a row-wise op works on (None: long rows)."""
    op = op if op in factors else ALIASES.get(op, op)
    if op not in factors and op != "Sigmoid":
        return 1.0
    base = TABLE_BASE.get(kind, "Sigmoid")
    f = 1.0 if op == "Sigmoid" else factors[op]
    if row:
        f += factors.get(f"{op}@row", 0.0) / max(float(row), 1.0)
    return f / (1.0 if base == "Sigmoid" else factors.get(base, 1.0))
