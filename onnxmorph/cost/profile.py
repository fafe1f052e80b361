"""Hardware profiles: roofline numbers and, for measured profiles, per-op-kind latency tables.

A profile is one JSON object (the built-in ones live in `onnxmorph/profiles/*.json`):

    {
      "schema": 1,
      "name": "t4",                      # how `--profile` finds it (case-insensitive, '_' == '-')
      "description": "...",
      "kind": "roofline" | "measured",
      "peak_gflops": 8100,               # peak compute, GFLOP/s (1 MAC = 2 FLOPs)
      "memory_gbps": 300,                # memory bandwidth, GB/s
      "dtype_bytes": 4,                  # bytes per activation/weight element on this target
      "channel_multiple": 8,             # channel counts the target runs fastest at (--round-to default)
      "fast_multiple": 4,                # (measured profiles) counts that are multiples of this run as if
                                         # padded up to channel_multiple; others use `unaligned` tables
      "fusion": true,                    # BN/activations/residual adds folded into the conv before them
      "source": "...",                   # where the numbers come from
      "op_factors": {"Relu": 0.6, ...},  # optional: element-wise op types against their table's op
      "overheads": {"view": 3e-6, ...},  # optional: fixed seconds per event (see op_factors.py)
      "batched_matmul": {"call": ..., "pack": ..., "write": ..., "mac": ...},  # optional: seconds per
                                         # term of a product of two activations (batched_matmul.py)
      "tables": {                        # optional: measured latency tables (see `Table`)
        "conv": {"channels": [...], "sizes": [...], "seconds": [[...]], "work": [[...]],
                 "unaligned": {"channels": [...], "seconds": [[...]], "work": [[...]]}}
      }
    }

A node's latency is read from the table of its op kind when the profile has one, else it is the
roofline `max(flops / peak, bytes / bandwidth)`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ProfileError

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
SCHEMA = 1

# Op kinds a measured table can describe, and the work unit its `work` grid counts.
TABLE_KINDS = {
    "conv": "macs",        # dense KxK convolution (K > 1)
    "conv1x1": "macs",     # dense pointwise convolution
    "depthwise": "macs",   # depthwise convolution (group == channels)
    "grouped": "macs",     # grouped convolution (1 < group < channels); `channels` = channels per group
    "gemm": "macs",        # Gemm / MatMul with a constant weight; `sizes` = rows
    "unary": "bytes",      # element-wise op with one activation input (Relu, Sigmoid, HardSwish, ...)
    "binary": "bytes",     # element-wise op with two activation inputs (Add, Mul, ...)
    "pool": "bytes",       # MaxPool / AveragePool / global pooling
}


@dataclass
class Table:
    """Latency of one op kind measured on a grid of channel counts × sizes.

    `sizes` are output pixels per channel (H·W) for conv-like kinds, rows for gemm. `seconds[c][s]`
    is the median time of one node, `work[c][s]` its MACs or bytes (`[i][o][s]` with
    `out_channels`). Prediction interpolates the
    time per unit of work bilinearly in (log channels, log size), clamped at the grid's edges, and
    multiplies by the node's work. Channel counts that are multiples of the profile's
    `channel_multiple` read the table directly; multiples of its `fast_multiple` are read as if
    padded up to the next multiple of `channel_multiple` (runtimes pad to their SIMD/NCHWc block);
    other counts read `unaligned` (optional): the same measurement at counts that leave the fast
    kernels (odd counts). Nodes with another kernel area than `kernel` are scaled by
    (area / kernel)^(kernel_exponent - 1) on top of their MACs.
    """

    kind: str
    channels: np.ndarray
    sizes: np.ndarray
    seconds: np.ndarray
    work: np.ndarray
    unaligned: "Table | None" = None
    kernel: float = 1.0  # kernel area (k·k) of the benchmarked nodes (conv-like kinds)
    kernel_exponent: float = 1.0  # time ∝ (kernel area)^exponent at equal channels and size
    # With `out_channels`, `channels` are input channels and the grids are [in][out][size]: a
    # 16->96 conv and a 96->16 conv run at other speeds than a 39->39 one with the same MACs.
    out_channels: np.ndarray | None = None

    def __post_init__(self):
        self._lc = np.log(self.channels)
        self._ls = np.log(self.sizes)
        self._lo = None if self.out_channels is None else np.log(self.out_channels)
        self._lv = np.log(self.seconds / self.work)

    def per_unit(self, channels, sizes, out_channels=None) -> np.ndarray:
        """Seconds per unit of work at (channels, sizes), interpolated in log-log space; tables with
        an output-channel axis read (channels = inputs, out_channels), others sqrt(in·out)."""
        if self._lo is not None and out_channels is None:
            out_channels = channels
        if self._lo is None and out_channels is not None:
            channels = np.sqrt(np.maximum(np.asarray(channels, dtype=np.float64) * out_channels, 0.0))
        c = np.log(np.maximum(np.asarray(channels, dtype=np.float64), 1e-9))
        s = np.log(np.maximum(np.asarray(sizes, dtype=np.float64), 1e-9))
        axes = [_locate(self._lc, c)]
        if self._lo is not None:
            axes.append(_locate(self._lo, np.log(np.maximum(np.asarray(out_channels, dtype=np.float64), 1e-9))))
        axes.append(_locate(self._ls, s))
        out = 0.0
        for corner in np.ndindex(*(2,) * len(axes)):  # multilinear: 4 or 8 corners
            weight, index = 1.0, []
            for (i, t), bit, grid in zip(axes, corner, self._lv.shape):
                weight = weight * (t if bit else 1 - t)
                index.append(np.minimum(i + bit, grid - 1))
            out = out + weight * self._lv[tuple(index)]
        return np.exp(out)

    def to_json(self) -> dict:
        d = {"channels": _ints(self.channels), "sizes": _ints(self.sizes),
             "seconds": _nested(self.seconds, lambda v: float(f"{v:.5g}")),
             "work": _nested(self.work, lambda v: int(v) if float(v).is_integer() else float(v))}
        if self.out_channels is not None:
            d["out_channels"] = _ints(self.out_channels)
        if self.kernel != 1.0 or self.kernel_exponent != 1.0:
            d["kernel"], d["kernel_exponent"] = self.kernel, self.kernel_exponent
        if self.unaligned is not None:
            u = self.unaligned.to_json()
            d["unaligned"] = {k: u[k] for k in ("channels", "seconds", "work")}
        return d

    def kernel_factor(self, kernel) -> np.ndarray:
        """Time multiplier, on top of MACs, for nodes whose kernel area is `kernel`."""
        if self.kernel_exponent == 1.0:
            return np.ones(np.shape(kernel))
        return (np.asarray(kernel, dtype=np.float64) / self.kernel) ** (self.kernel_exponent - 1.0)


def _nested(a: np.ndarray, fmt) -> list:
    return [_nested(x, fmt) for x in a] if a.ndim > 1 else [fmt(v) for v in a.tolist()]


def _ints(values) -> list:
    return [int(v) if float(v).is_integer() else float(v) for v in np.asarray(values).tolist()]


def _locate(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and fraction of `x` in the sorted `grid` (clamped: no extrapolation)."""
    if len(grid) == 1:
        return np.zeros(np.shape(x), dtype=np.int64), np.zeros(np.shape(x))
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
    t = np.clip((x - grid[i]) / (grid[i + 1] - grid[i]), 0.0, 1.0)
    return i, t


@dataclass
class HardwareProfile:
    name: str
    peak_gflops: float
    memory_gbps: float
    dtype_bytes: int = 4
    channel_multiple: int = 1
    fast_multiple: int | None = None  # None: same as channel_multiple
    fusion: bool = True
    kind: str = "roofline"
    description: str = ""
    source: str = ""
    tables: dict[str, Table] = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    # runtime op type -> its time over a Sigmoid's on the same tensor (see op_factors.py)
    op_factors: dict[str, float] = field(default_factory=dict)
    # fixed seconds the runtime pays per event (see op_factors.py, subnormal.py): a kernel that only
    # re-labels a buffer ("view"), one span of a broadcasting element-wise op ("broadcast_span")
    overheads: dict[str, float] = field(default_factory=dict)
    # products of two activations (attention): seconds per term of batched_matmul's formula
    batched_matmul: dict[str, float] = field(default_factory=dict)
    path: str | None = None

    @property
    def peak_flops(self) -> float:
        return self.peak_gflops * 1e9

    @property
    def bandwidth(self) -> float:
        return self.memory_gbps * 1e9

    def roofline_seconds(self, flops, nbytes):
        """MorphNet's per-op latency: the slower of compute and memory traffic, in seconds.

        `nbytes` counts 4-byte elements (as the cost model does); it is rescaled to `dtype_bytes`.
        """
        return np.maximum(np.asarray(flops, dtype=np.float64) / self.peak_flops,
                          np.asarray(nbytes, dtype=np.float64) * (self.dtype_bytes / 4.0) / self.bandwidth)

    def to_json(self) -> dict:
        d = {"schema": SCHEMA, "name": self.name, "description": self.description, "kind": self.kind,
             "peak_gflops": self.peak_gflops, "memory_gbps": self.memory_gbps, "dtype_bytes": self.dtype_bytes,
             "channel_multiple": self.channel_multiple, "fusion": self.fusion, "source": self.source}
        if self.fast_multiple is not None:
            d["fast_multiple"] = self.fast_multiple
        if self.measured:
            d["measured"] = self.measured
        if self.tables:
            d["tables"] = {k: t.to_json() for k, t in self.tables.items()}
        if self.op_factors:
            d["op_factors"] = dict(self.op_factors)
        if self.overheads:
            d["overheads"] = dict(self.overheads)
        if self.batched_matmul:
            d["batched_matmul"] = dict(self.batched_matmul)
        return d


# --- loading and validation ---------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def builtin_profiles() -> dict[str, Path]:
    """Normalized name -> file of every built-in profile."""
    out = {}
    for path in sorted(PROFILE_DIR.glob("*.json")):
        try:
            name = json.loads(path.read_text()).get("name", path.stem)
        except (OSError, ValueError, AttributeError):
            name = path.stem
        out[_norm(str(name))] = path
    return out


def list_profiles() -> list[HardwareProfile]:
    return [load_profile_file(p) for p in builtin_profiles().values()]


def load_profile(spec) -> HardwareProfile:
    """A profile from a built-in name, a JSON file path, a dict, or a HardwareProfile (returned as is)."""
    if isinstance(spec, HardwareProfile):
        return spec
    if isinstance(spec, dict):
        return profile_from_dict(spec, "profile")
    if not isinstance(spec, (str, Path)):
        raise ProfileError(f"--profile: expected a profile name or a JSON file, got {type(spec).__name__}")
    text = str(spec)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".json" or path.exists() or "/" in text:
        return load_profile_file(path)
    builtins = builtin_profiles()
    if _norm(text) not in builtins:
        raise ProfileError(f"unknown profile '{text}': choose one of {', '.join(builtins)} or pass a JSON file")
    return load_profile_file(builtins[_norm(text)])


def load_profile_file(path: str | Path) -> HardwareProfile:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"profile {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {path}: cannot read it ({exc.__class__.__name__})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProfileError(f"profile {path} is not valid JSON: {exc}") from None
    profile = profile_from_dict(data, f"profile {path}")
    profile.path = str(path)
    return profile


def _number(data: dict, key: str, where: str, default=None, positive=True) -> float:
    if key not in data:
        if default is not None:
            return default
        raise ProfileError(f"{where}: missing '{key}'")
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise ProfileError(f"{where}: '{key}' must be a {'positive ' if positive else ''}number, got {json.dumps(v)}")
    return float(v)


def _grid(raw, key: str, where: str) -> np.ndarray:
    a = _array(raw, key, where, ndim=1)
    if len(a) > 1 and not np.all(np.diff(a) > 0):
        raise ProfileError(f"{where}: '{key}' must be strictly increasing")
    return a


def _array(raw: dict, key: str, where: str, ndim: int, shape=None) -> np.ndarray:
    if key not in raw:
        raise ProfileError(f"{where}: missing '{key}'")
    try:
        a = np.asarray(raw[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: '{key}' must be a {'list' if ndim == 1 else 'table'} of numbers") from None
    if a.ndim != ndim or a.size == 0 or (shape is not None and a.shape != shape):
        want = f"shape {list(shape)}" if shape is not None else f"a non-empty {ndim}-D list"
        raise ProfileError(f"{where}: '{key}' must be {want}, got shape {list(a.shape)}")
    if not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise ProfileError(f"{where}: '{key}' must hold positive finite numbers")
    return a


def _table(kind: str, raw, where: str, sizes=None) -> Table:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be an object")
    channels = _grid(raw, "channels", where)
    if sizes is None:
        sizes = _grid(raw, "sizes", where)
    out_channels = _grid(raw, "out_channels", where) if raw.get("out_channels") is not None else None
    shape = (len(channels),) + (() if out_channels is None else (len(out_channels),)) + (len(sizes),)
    seconds = _array(raw, "seconds", where, len(shape), shape)
    work = _array(raw, "work", where, len(shape), shape)
    kernel = _number(raw, "kernel", where, default=1.0)
    exponent = _number(raw, "kernel_exponent", where, default=1.0, positive=False)
    if not 0.0 <= exponent <= 2.0:
        raise ProfileError(f"{where}: 'kernel_exponent' must be between 0 and 2, got {exponent:g}")
    unaligned = None
    if raw.get("unaligned") is not None:
        unaligned = _table(kind, dict(raw["unaligned"], kernel=kernel, kernel_exponent=exponent),
                           f"{where}.unaligned", sizes)
    return Table(kind, channels, sizes, seconds, work, unaligned, kernel, exponent, out_channels)


def _number_map(raw, where: str, key: str, meaning: str, zero_ok: bool) -> dict[str, float]:
    """A JSON object of finite numbers (positive, or >= 0 with `zero_ok`) keyed by name."""
    if raw is None:
        return {}

    def ok(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
            v > 0 or (zero_ok and v == 0))

    if not isinstance(raw, dict) or not all(ok(v) for v in raw.values()):
        raise ProfileError(f"{where}: '{key}' must map {meaning}")
    return {str(k): float(v) for k, v in raw.items()}


# Fields of a measured profile's "measured" block that onnxmorph reads, and the type each must have.
MEASURED_FIELDS = {"cpu": str, "machine": str, "onnxruntime": str, "clock": str, "grid": str, "date": str,
                   "threads": int, "cores": int, "seconds": (int, float)}


def _check_measured(measured, where: str) -> None:
    if measured is None:
        return
    if not isinstance(measured, dict):
        raise ProfileError(f"{where}: 'measured' must be an object (how and where the profile was measured), "
                           f"got {json.dumps(measured)}")
    for key, kind in MEASURED_FIELDS.items():
        v = measured.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kind)):
            raise ProfileError(f"{where}: 'measured.{key}' must be a "
                               f"{'string' if kind is str else 'integer' if kind is int else 'number'}, got {json.dumps(v)}")
    if measured.get("threads") is not None and measured["threads"] < 1:
        raise ProfileError(f"{where}: 'measured.threads' must be >= 1, got {measured['threads']}")


def profile_from_dict(data, where: str = "profile") -> HardwareProfile:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise ProfileError(f"{where}: unsupported schema {json.dumps(schema)} (this onnxmorph reads {SCHEMA})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ProfileError(f"{where}: missing 'name' (a non-empty string)")
    peak = _number(data, "peak_gflops", where)
    bandwidth = _number(data, "memory_gbps", where)
    dtype_bytes = data.get("dtype_bytes", 4)
    if dtype_bytes not in (1, 2, 4, 8) or isinstance(dtype_bytes, bool):
        raise ProfileError(f"{where}: 'dtype_bytes' must be 1, 2, 4 or 8, got {json.dumps(dtype_bytes)}")
    multiple = data.get("channel_multiple", 1)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ProfileError(f"{where}: 'channel_multiple' must be an integer >= 1, got {json.dumps(multiple)}")
    fast = data.get("fast_multiple")
    if fast is not None and (isinstance(fast, bool) or not isinstance(fast, int) or fast < 1):
        raise ProfileError(f"{where}: 'fast_multiple' must be an integer >= 1, got {json.dumps(fast)}")
    fusion = data.get("fusion", True)
    if not isinstance(fusion, bool):
        raise ProfileError(f"{where}: 'fusion' must be true or false")
    kind = data.get("kind", "measured" if data.get("tables") else "roofline")
    if kind not in ("roofline", "measured"):
        raise ProfileError(f"{where}: 'kind' must be 'roofline' or 'measured', got {json.dumps(kind)}")
    raw_tables = data.get("tables") or {}
    if not isinstance(raw_tables, dict):
        raise ProfileError(f"{where}: 'tables' must be an object keyed by op kind")
    tables = {}
    for k, raw in raw_tables.items():
        if k not in TABLE_KINDS:
            raise ProfileError(f"{where}: unknown table kind '{k}' (known: {', '.join(TABLE_KINDS)})")
        tables[k] = _table(k, raw, f"{where}: tables.{k}")
    for key in ("description", "source"):
        if not isinstance(data.get(key, ""), str):
            raise ProfileError(f"{where}: '{key}' must be a string")
    _check_measured(data.get("measured"), where)
    return HardwareProfile(
        name=name.strip(), peak_gflops=peak, memory_gbps=bandwidth, dtype_bytes=int(dtype_bytes),
        channel_multiple=multiple, fast_multiple=fast, fusion=fusion, kind=kind, description=data.get("description", ""),
        source=data.get("source", ""), tables=tables, measured=data.get("measured") or {},
        op_factors=_number_map(data.get("op_factors"), where, "op_factors", "op types to positive numbers", False),
        overheads=_number_map(data.get("overheads"), where, "overheads", "event names to seconds (numbers >= 0)", True),
        batched_matmul=_number_map(data.get("batched_matmul"), where, "batched_matmul",
                                   "formula terms to seconds (numbers >= 0)", True),
    )
