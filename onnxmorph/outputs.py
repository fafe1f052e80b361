"""Output files, written all together or not at all.

Every location is checked before any work starts (`check_file`, `check_folder`), so a typo in
`--report` does not cost a training run. `write_all` writes each file to a temp file in its target
folder, and only when every one of them is complete renames them into place; on any failure (disk
full, a signal) the temp files are removed and files that did not exist before are taken back, so
a failed run never leaves a partial set behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import ResourceError, UsageError


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _probe(folder: Path, flag: str, path: Path) -> None:
    """Create and remove an empty file in `folder`: the one check that knows about read-only mounts,
    permissions (root without CAP_DAC_OVERRIDE included) and ACLs alike."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".onnxmorph-probe-")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write in folder {folder} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_file(flag: str, path: str | os.PathLike) -> Path:
    """Refuse an output file path that cannot be written: its folder is missing, not a folder or not
    writable, or the path is an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path")
    folder = _folder(path)
    if not folder.exists():
        raise UsageError(f"{flag} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: {folder} is not a folder")
    _probe(folder, flag, path)
    return path


def check_folder(flag: str, path: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot be written (it is created later if missing, so its
    nearest existing parent must be a writable folder)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is not a folder")
    _probe(existing, flag, path)
    return path


def check_distinct(paths: Iterable[tuple[str, Path | None]]) -> None:
    """Two outputs on one path would overwrite each other."""
    seen: dict[Path, str] = {}
    for flag, path in paths:
        if path is None:
            continue
        key = Path(os.path.abspath(path))
        if key in seen:
            raise UsageError(f"{flag} and {seen[key]} name the same file {path}")
        seen[key] = flag


def write_error(path: Path, exc: OSError) -> ResourceError:
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file is larger than this process may write"}.get(exc.errno, exc.strerror)
    return ResourceError(f"cannot write {path}: {what}; nothing was written")


def write_all(files: dict[str | os.PathLike, bytes]) -> None:
    """Write every (path: contents) or none: temp files in the target folders first, then renames."""
    items = [(check_file("output", p), data) for p, data in files.items()]
    check_distinct((str(p), p) for p, _ in items)
    umask = os.umask(0)
    os.umask(umask)
    temps: list[tuple[str, Path]] = []
    renamed: list[Path] = []
    existed = {p for p, _ in items if p.exists()}
    current = items[0][0] if items else None
    try:
        for path, data in items:
            current = path
            fd, tmp = tempfile.mkstemp(dir=_folder(path), prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, path in temps:
            current = path
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException as exc:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        # a rename that failed half-way: take back the files this call created (an overwritten
        # file cannot be restored, but renames fail only on broken file systems)
        for path in renamed:
            if path not in existed and path.exists():
                path.unlink()
        if isinstance(exc, OSError):
            raise write_error(current, exc) from None
        raise
