"""Give a pruned model back its original graph interface where the analysis changed it (a symbolic
batch dim fixed to 1), when it provably still works."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import onnx

from ..runtime import make_session


def restore_interface(pruned: onnx.ModelProto, loaded, sample: Callable[[], list[dict]]
                      ) -> tuple[onnx.ModelProto, str | None]:
    """Give a pruned model back its original symbolic batch dim when it provably still works: the
    model with that dim runs the inputs `sample()` gives (single-example feeds) stacked as one batch
    and gives what it gives each of them alone."""
    if not loaded.dynamic:
        return pruned, None
    specs = {s.name: s for s in loaded.inputs + loaded.outputs}
    if any(not isinstance(d, int) for s in specs.values() for d in s.dims[1:]):
        return pruned, "the pruned model keeps the static input shapes used for the analysis"
    candidate = copy.deepcopy(pruned)
    del candidate.graph.value_info[:]
    for vi in list(candidate.graph.input) + list(candidate.graph.output):
        spec = specs.get(vi.name)
        if spec is None or not spec.dims or isinstance(spec.dims[0], int):
            continue
        vi.type.tensor_type.shape.dim[0].Clear()
        vi.type.tensor_type.shape.dim[0].dim_param = str(spec.dims[0])
    try:
        candidate = onnx.shape_inference.infer_shapes(candidate, strict_mode=False)
        feeds1 = sample()
        for k, v in feeds1[0].items():
            if np.ndim(v) == 0:  # a scalar input is shared by the whole batch
                feeds1[1][k] = v
        batched = {k: v if np.ndim(v) == 0 else np.concatenate([f[k] for f in feeds1])
                   for k, v in feeds1[0].items()}
        single = make_session(pruned)
        stacked = make_session(candidate).run(None, batched)
        singles = [single.run(None, f) for f in feeds1]
        for j, out in enumerate(stacked):
            ref = np.concatenate([s[j] for s in singles])
            if out.shape != ref.shape or not np.allclose(out, ref, rtol=1e-4, atol=1e-5):
                raise ValueError("batched outputs differ")
    except Exception:
        return pruned, "the pruned model has a fixed batch size of 1 (the dynamic batch did not survive folding)"
    return candidate, None
