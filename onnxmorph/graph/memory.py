"""Refuse, before allocating anything, a model whose declared shapes cannot fit in this machine's
memory (an input of 1x3x65536x65536 is 48 GiB): one line naming the tensor and its size instead of
a MemoryError deep inside sample inputs or ONNX Runtime."""

from __future__ import annotations

import math
import os
import resource

import numpy as np
import onnx

from ..errors import ShapeError

# Copies of one sample input alive at once: random float64 draws cast to the input's dtype, the
# feeds of the masked and the pruned runs. An activation: the tensor and ONNX Runtime's output copy.
INPUT_COPIES = 4
ACTIVATION_COPIES = 2


def available_bytes() -> int:
    """Memory this process may still use: MemAvailable, capped by the cgroup limit and RLIMIT_AS."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        if cap != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                limits.append(int(cap) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return 1 << 62
    return max(0, min(limits))


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def _itemsize(elem_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 4


def _dims(vi: onnx.ValueInfoProto) -> list[int] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
    return dims if all(d > 0 for d in dims) else None


def check_fits(model: onnx.ModelProto, static: dict[str, tuple[int, ...]], source: str,
               available: int | None = None) -> None:
    """Raise ShapeError when one sample of an input, or one activation of the shape-inferred
    `model`, would not fit in memory (`available` bytes; default: what this machine has left)."""
    available = available_bytes() if available is None else available
    kinds = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    for name, dims in static.items():
        size = math.prod(dims) * _itemsize(kinds.get(name, onnx.TensorProto.FLOAT))
        if size * INPUT_COPIES > available:
            raise ShapeError(f"{source}: input '{name}' of shape {'x'.join(map(str, dims))} takes {_gib(size)} per "
                             f"sample, too much for the {_gib(available)} of memory available; pass a smaller "
                             f"--input-shape")
    largest, where = 0, None
    for vi in list(model.graph.value_info) + list(model.graph.output):
        dims = _dims(vi)
        if dims is not None:
            size = math.prod(dims) * _itemsize(vi.type.tensor_type.elem_type)
            if size > largest:
                largest, where = size, (vi.name, dims)
    if where is not None and largest * ACTIVATION_COPIES > available:
        name, dims = where
        raise ShapeError(f"{source}: tensor '{name}' of shape {'x'.join(map(str, dims))} takes {_gib(largest)} "
                         f"per sample, too much for the {_gib(available)} of memory available; pass a smaller "
                         f"--input-shape")
