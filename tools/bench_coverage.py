#!/usr/bin/env python3
"""Coverage benchmark: run onnxmorph.prune on every model of a zoo and tabulate the outcome.

Each model runs in its own subprocess (a crash, hang or OOM in one model does not
stop the run) with a timeout, calling the Python API in-process there:

    res = onnxmorph.prune(path, method="magnitude", target="flops=0.5")

Run it with the project environment (onnxmorph installed; torch is neither needed
nor imported):

    /work/.venv/bin/python tools/bench_coverage.py                       # every model in /work/zoo
    /work/.venv/bin/python tools/bench_coverage.py --models resnet18,swin_t --json cov.json
    /work/.venv/bin/python tools/bench_coverage.py --save-dir /work/zoo-pruned  # keep <name>.pruned.onnx

Result per model:
  PASS     prune returned and report["verify"]["passed"] is true
  FAIL     a typed onnxmorph.OnnxMorphError (the message is the reason), or verify not passed
  ERROR    any other exception inside prune (a bug: the reason names type and location)
  CRASH    the worker died without a result (signal, OOM kill, interpreter abort)
  TIMEOUT  still running after --timeout seconds (killed)
Exit status: 0, or 1 with --strict when any model is not PASS.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ZOO = "/work/zoo"
SKIP_SUFFIXES = (".pruned.onnx", ".masked.onnx")


def one_line(text: str, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def dig(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    if hasattr(d, "item") and callable(d.item):  # numpy scalars -> plain JSON numbers
        try:
            d = d.item()
        except (TypeError, ValueError):
            pass
    return d


def ratio(a, b):
    try:
        return float(b) / float(a) if a else None
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- worker

def worker(args: argparse.Namespace) -> int:
    """Runs in the child process: prune one model, write one JSON result file."""
    import resource
    import traceback

    row: dict = {"status": "error", "reason": "worker did not finish"}

    def write(row: dict) -> None:
        tmp = args.result + ".tmp"
        with open(tmp, "w") as f:
            json.dump(row, f, default=str)
        os.replace(tmp, args.result)

    t0 = time.perf_counter()
    try:
        import onnxmorph
    except BaseException as e:  # noqa: BLE001 - report, never raise
        write({"status": "error", "reason": one_line(f"import onnxmorph failed: {type(e).__name__}: {e}"),
               "exception_type": type(e).__name__})
        return 0
    row["import_seconds"] = round(time.perf_counter() - t0, 3)
    row["onnxmorph_version"] = getattr(onnxmorph, "__version__", None)
    base_error = getattr(onnxmorph, "OnnxMorphError", None)
    if not (isinstance(base_error, type) and issubclass(base_error, BaseException)):
        base_error = None

    kwargs = {"method": args.method, "target": args.target}
    t1 = time.perf_counter()
    try:
        res = onnxmorph.prune(args.worker, **kwargs)
        row["prune_seconds"] = round(time.perf_counter() - t1, 3)
        rep = getattr(res, "report", None) or {}
        row.update(extract(rep))
        if row["verify_passed"] is not None and bool(row["verify_passed"]):
            row["status"], row["reason"] = "pass", ""
        else:
            row["status"] = "fail"
            row["reason"] = (f"verify not passed (max_abs_diff={row['verify_max_abs_diff']})"
                             if row["verify_passed"] is False else "report has no verify.passed")
        if args.save and row["status"] == "pass":
            t2 = time.perf_counter()
            try:
                res.save(args.save)
                row["saved"] = args.save
                row["save_seconds"] = round(time.perf_counter() - t2, 3)
            except BaseException as e:  # noqa: BLE001
                if os.path.exists(args.save):
                    os.unlink(args.save)
                row["status"] = "error"
                row["reason"] = one_line(f"pruned OK but save failed: {type(e).__name__}: {e}")
    except BaseException as e:  # noqa: BLE001 - every failure becomes a row
        row["prune_seconds"] = round(time.perf_counter() - t1, 3)
        row["exception_type"] = type(e).__name__
        if base_error is not None and isinstance(e, base_error):
            row["status"] = "fail"
            row["reason"] = one_line(str(e) or type(e).__name__)
        else:
            tb = traceback.extract_tb(e.__traceback__)
            where = f" [{Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name}]" if tb else ""
            row["status"] = "error"
            row["reason"] = one_line(f"{type(e).__name__}: {e}{where}")
            row["traceback"] = traceback.format_exc()[-4000:]
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["torch_imported"] = "torch" in sys.modules
    write(row)
    return 0


def extract(rep: dict) -> dict:
    macs0, macs1 = dig(rep, "original", "macs"), dig(rep, "pruned", "macs")
    par0, par1 = dig(rep, "original", "params"), dig(rep, "pruned", "params")
    frozen = rep.get("frozen") if isinstance(rep, dict) else None
    groups = rep.get("groups") if isinstance(rep, dict) else None
    return {
        "macs_before": macs0,
        "macs_after": macs1,
        "mac_ratio": ratio(macs0, macs1),
        "params_before": par0,
        "params_after": par1,
        "params_ratio": ratio(par0, par1),
        "verify_max_abs_diff": dig(rep, "verify", "max_abs_diff"),
        "verify_passed": dig(rep, "verify", "passed"),
        "groups": len(groups) if isinstance(groups, (list, dict)) else None,
        "frozen": len(frozen) if isinstance(frozen, (list, dict)) else None,
    }


# --------------------------------------------------------------------------- parent

def find_models(zoo: Path, models: str | None) -> list[tuple[str, Path]]:
    if models:
        out = []
        for item in (m.strip() for m in models.split(",")):
            if not item:
                continue
            p = Path(item)
            if p.suffix == ".onnx" or os.sep in item:
                out.append((p.name.removesuffix(".onnx"), p))
            else:
                out.append((item, zoo / f"{item}.onnx"))
        return out
    files = [p for p in zoo.glob("*.onnx") if not p.name.endswith(SKIP_SUFFIXES) and not p.name.startswith(".")]
    return sorted(((p.name.removesuffix(".onnx"), p) for p in files), key=lambda t: t[0])


def run_one(name: str, path: Path, args: argparse.Namespace) -> dict:
    row: dict = {"model": name, "file": str(path)}
    if not path.exists():
        row.update(status="fail", reason=f"no such file: {path}")
        return row
    row["file_mb"] = round(path.stat().st_size / 2**20, 1)
    fd, result = tempfile.mkstemp(prefix=f"cov-{name}-", suffix=".json")
    os.close(fd)
    os.unlink(result)
    cmd = [args.python, os.path.abspath(__file__), "--worker", str(path), "--result", result,
           "--method", args.method, "--target", args.target]
    if args.save_dir:
        cmd += ["--save", str(Path(args.save_dir) / f"{name}.pruned.onnx")]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and its children only
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    row["wall_seconds"] = round(time.perf_counter() - t0, 2)
    try:
        if os.path.exists(result):
            with open(result) as f:
                row.update(json.load(f))
    finally:
        for p in (result, result + ".tmp"):
            if os.path.exists(p):
                os.unlink(p)
    if timed_out:
        row.update(status="timeout", reason=f"killed after {args.timeout:g}s")
    elif "status" not in row:
        rc = proc.returncode
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        tail = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        hint = "; possibly out of memory" if rc == -signal.SIGKILL else ""
        row.update(status="crash", reason=one_line(f"worker {how}{hint}" + crash_detail(tail)))
        row["stderr_tail"] = "\n".join(tail[-30:])
    return row


def crash_detail(lines: list[str]) -> str:
    """The most telling stderr line of a dead worker: faulthandler's error and innermost frame, else the last line."""
    for i, ln in enumerate(lines):
        if ln.startswith("Fatal Python error"):
            frames = [x.strip() for x in lines[i + 1:] if x.strip().startswith("File ")]
            return f": {ln.strip()}" + (f" at {frames[0]}" if frames else "")
    return f": {lines[-1]}" if lines else ""


def fmt(v, spec: str, scale: float = 1.0) -> str:
    if v is None:
        return "-"
    try:
        return format(float(v) / scale, spec)
    except (TypeError, ValueError):
        return str(v)


STATUS_STYLE = {"pass": "green", "fail": "yellow", "error": "red", "crash": "bold red", "timeout": "magenta"}


def render(rows: list[dict], args: argparse.Namespace) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain fallback
        for r in rows:
            print(f"{r['model']:24s} {r['status'].upper():8s} macs {fmt(r.get('macs_before'), '.1f', 1e6)}"
                  f" -> {fmt(r.get('macs_after'), '.1f', 1e6)} ({fmt(r.get('mac_ratio'), '.3f')})"
                  f" params {fmt(r.get('params_ratio'), '.3f')} diff {fmt(r.get('verify_max_abs_diff'), '.1e')}"
                  f" {fmt(r.get('prune_seconds'), '.1f')}s {r.get('reason', '')}")
        return
    table = Table(title=f"onnxmorph coverage: method={args.method} target={args.target}", show_lines=False)
    table.add_column("model", style="bold", no_wrap=True)
    for head in ("MACs\nbefore (M)", "MACs\nafter (M)", "MAC\nratio", "params\nratio", "frozen",
                 "verify\nmax diff", "prune\ntime (s)"):
        table.add_column(head, justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("reason", overflow="fold", min_width=30)
    for r in rows:
        st = r["status"]
        table.add_row(
            r["model"],
            fmt(r.get("macs_before"), ".1f", 1e6),
            fmt(r.get("macs_after"), ".1f", 1e6),
            fmt(r.get("mac_ratio"), ".3f"),
            fmt(r.get("params_ratio"), ".3f"),
            fmt(r.get("frozen"), ".0f"),
            fmt(r.get("verify_max_abs_diff"), ".1e"),
            fmt(r.get("prune_seconds", r.get("wall_seconds")), ".1f"),
            f"[{STATUS_STYLE.get(st, 'white')}]{st.upper()}[/]",
            r.get("reason") or "",
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_STYLE}
    console.print("  ".join(f"[{STATUS_STYLE[s]}]{s}: {n}[/]" for s, n in counts.items() if n) or "no models")
    bad = [r["model"] for r in rows if r.get("torch_imported")]
    if bad:
        console.print(f"[red]warning: torch was imported while pruning: {', '.join(bad)}[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=DEFAULT_ZOO, help=f"directory of <name>.onnx files (default {DEFAULT_ZOO})")
    ap.add_argument("--models", help="comma-separated model names (from --zoo) or .onnx paths")
    ap.add_argument("--method", default="magnitude")
    ap.add_argument("--target", default="flops=0.5")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model (default %(default)s)")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    ap.add_argument("--save-dir", help="save each pruned model as DIR/<name>.pruned.onnx (for bench_latency.py)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the workers (default: this one)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any model is not PASS")
    ap.add_argument("--quiet", action="store_true", help="no per-model progress lines")
    # worker mode (internal)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return worker(args)

    models = find_models(Path(args.zoo), args.models)
    if not models:
        print(f"error: no .onnx models in {args.zoo}", file=sys.stderr)
        return 2
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)

    rows = []
    t_all = time.perf_counter()
    for i, (name, path) in enumerate(models, 1):
        row = run_one(name, path, args)
        rows.append(row)
        if not args.quiet:
            print(f"[{i}/{len(models)}] {name}: {row['status'].upper()} in {row.get('wall_seconds', 0):.1f}s"
                  + (f" - {row['reason']}" if row.get("reason") else ""), file=sys.stderr, flush=True)
        if args.json:  # rewrite after every model so a killed run keeps what it had
            write_json(args.json, rows, args, time.perf_counter() - t_all)

    render(rows, args)
    if args.json:
        write_json(args.json, rows, args, time.perf_counter() - t_all)
    if args.strict and any(r["status"] != "pass" for r in rows):
        return 1
    return 0


def write_json(path: str, rows: list[dict], args: argparse.Namespace, seconds: float) -> None:
    doc = {
        "method": args.method,
        "target": args.target,
        "timeout": args.timeout,
        "python": args.python,
        "total_seconds": round(seconds, 1),
        "rows": rows,
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
