"""The error boundary of the API and the CLI: failures of the machine, of onnx and of ONNX Runtime
become typed errors whose message is one line naming what went wrong (and in which stage)."""

from __future__ import annotations

import contextvars
import errno
import functools

from .errors import ModelLoadError, OnnxMorphError, ResourceError, VerificationError

# The pipeline stage running now ("load", "train", "emit", ...), set by the API's stage timer.
STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("onnxmorph_stage", default=None)

_ORT_PREFIXES = ("[ONNXRuntimeError] : ",)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for prefix in _ORT_PREFIXES:  # "[ONNXRuntimeError] : 1 : FAIL : message"
        if text.startswith(prefix):
            text = text[len(prefix):].split(" : ", 2)[-1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line or type(exc).__name__


def _where(stage: str | None) -> str:
    return f" while {_STAGE_WORDS.get(stage, stage)}" if stage else ""


_STAGE_WORDS = {"load": "loading the model", "analyze": "analyzing it", "train": "training", "score": "scoring channels",
                "decide": "choosing channels", "reconstruct": "reconstructing the cut layers",
                "recover": "fine-tuning the pruned model", "emit": "emitting the pruned model",
                "verify": "verifying the pruned model", "measure": "measuring latency",
                "fidelity": "measuring fidelity"}


def _is_ort(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def _is_onnx(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnx.") or type(exc).__module__ == "onnx"


def translate(exc: BaseException, stage: str | None = None) -> OnnxMorphError | None:
    """The typed error for `exc`, or None for an exception that is not a known kind of failure."""
    stage = stage if stage is not None else STAGE.get()
    if isinstance(exc, OnnxMorphError):
        return exc
    if isinstance(exc, MemoryError):
        detail = first_line(exc) if str(exc) else "memory exhausted"
        return ResourceError(f"out of memory{_where(stage)} ({detail}); try a smaller --batch-size or input shape")
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else "a file"
        what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EFBIG: "the file is larger than this process may write"}.get(exc.errno, exc.strerror
                                                                                   or first_line(exc))
        return ResourceError(f"{name}: {what}{_where(stage)}")
    if _is_ort(exc):
        if stage in (None, "load", "analyze"):
            return ModelLoadError(f"ONNX Runtime cannot run the model{_where(stage)}: {first_line(exc)}")
        if stage in ("emit", "verify"):
            return VerificationError(f"ONNX Runtime refused the pruned model{_where(stage)}: {first_line(exc)}; "
                                     "nothing written — please report this model")
        return OnnxMorphError(f"ONNX Runtime failed{_where(stage)}: {first_line(exc)}")
    if _is_onnx(exc):  # checker ValidationError, shape inference InferenceError, converter errors
        if stage in (None, "load", "analyze"):
            return ModelLoadError(f"the model is not valid ONNX{_where(stage)}: {first_line(exc)}")
        return VerificationError(f"onnx rejects the model{_where(stage)}: {first_line(exc)}; "
                                 "nothing written — please report this model")
    return None


def boundary(fn):
    """Decorate an API entry point: known failures leave it as typed errors (see `translate`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = STAGE.set(None)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            typed = translate(exc)
            if typed is None or typed is exc:
                raise
            raise typed from exc
        finally:
            STAGE.reset(token)

    return wrapper
