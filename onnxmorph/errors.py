"""Typed errors. Each message is the one line the CLI prints."""


class OnnxMorphError(Exception):
    """Base class of every error onnxmorph raises on purpose."""

    exit_code = 1


class UsageError(OnnxMorphError):
    """Bad arguments: unknown method, malformed target, -o equal to the input."""

    exit_code = 2


class ModelLoadError(OnnxMorphError):
    """Missing, unreadable, corrupt or unsupported model file."""


class ShapeError(OnnxMorphError):
    """Input shapes that cannot be made static, or that contradict the model."""


class DataError(OnnxMorphError):
    """Data whose names, shapes or dtypes don't match the model, or hold NaN/Inf."""


class TargetUnreachable(OnnxMorphError):
    """The requested cost cannot be reached by removing prunable channels."""


class VerificationError(OnnxMorphError):
    """The pruned model does not compute what the masked model computes."""


class ProfileError(UsageError):
    """A hardware profile that is unknown, unreadable or malformed."""


class ResourceError(OnnxMorphError):
    """The machine, not the input, failed: out of memory, disk full, an I/O error."""


class RuntimeMissing(OnnxMorphError):
    """No package provides the `onnxruntime` module (onnxmorph requires none by name: see runtime.py)."""
