"""`onnxmorph` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 failed prune (bad model/data, unreachable target,
verification failure), 2 bad usage. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import OnnxMorphError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Exact channel pruning of ONNX models with hardware-aware costs.")
profiles_app = typer.Typer(no_args_is_help=True, help="Hardware profiles for latency costs.")
app.add_typer(profiles_app, name="profiles")

out = Console()
err = Console(stderr=True)


def fail(exc: OnnxMorphError) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _shapes(specs):
    from .graph import parse_input_shapes

    return parse_input_shapes(specs)


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX model to analyse."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 for symbolic dims."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Hardware profile for latency totals."),
    as_json: bool = typer.Option(False, "--json", help="Print the analysis as JSON."),
    all_groups: bool = typer.Option(False, "--all", help="List every group (default: the 40 largest)."),
):
    """Show the channel groups of MODEL: channels, share of MACs, prunable or frozen and why."""
    from . import api

    try:
        if profile is not None:
            raise UsageError("--profile: hardware profiles are not available yet")
        summary = api.summarize(api.inspect(model, input_shapes=_shapes(input_shape)))
    except OnnxMorphError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"{summary['model']} — channel groups", show_lines=False)
    table.add_column("group", overflow="fold")
    table.add_column("channels", justify="right")
    table.add_column("MACs share", justify="right")
    table.add_column("status")
    groups = sorted(summary["groups"], key=lambda g: (not g["prunable"], -(g["macs_share"] or 0)))
    shown = groups if all_groups else groups[:40]
    for g in shown:
        share = f"{100 * g['macs_share']:.1f} %" if g["macs_share"] is not None else "-"
        status = "[green]prunable[/]" if g["prunable"] else f"[yellow]frozen[/]: {g['reason']}"
        table.add_row(g["name"], str(g["channels"]), share, status)
    out.print(table)
    if len(shown) < len(groups):
        out.print(f"... {len(groups) - len(shown)} more groups (use --all)")
    out.print(f"MACs {summary['macs'] / 1e6:,.2f} M · params {summary['params'] / 1e6:,.3f} M · "
              f"prunable channels {summary['prunable_channels']} · frozen channels {summary['frozen_channels']}")
    for note in summary["notes"]:
        out.print(f"note: {note}")


@app.command()
def prune(
    model: Path = typer.Argument(..., help="ONNX model to prune (never modified)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output path (default: <stem>.pruned.onnx here)."),
    method: str = typer.Option("magnitude", "--method", help="magnitude | gates | gamma | group-lasso | fisher"),
    target: str = typer.Option("flops=0.5", "--target", help="flops=F | params=F | latency=F: fraction to keep."),
    data: Optional[Path] = typer.Option(None, "--data", help=".npz of inputs named after the graph inputs, or an image folder."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Name of the label array in the .npz."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (training methods)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Hardware profile (name or JSON file)."),
    round_to: int = typer.Option(1, "--round-to", help="Keep channel counts multiples of N."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 for symbolic dims."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same output)."),
    save_masked: Optional[Path] = typer.Option(None, "--save-masked", help="Also write the masked model."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a JSON report."),
    best_effort: bool = typer.Option(False, "--best-effort", help="If the target is unreachable, write the best legal model."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
):
    """Prune MODEL to a cost target and write a verified, physically smaller ONNX model."""
    from . import api

    try:
        if not model.exists():
            raise OnnxMorphError(f"{model}: no such file")
        output = output or Path.cwd() / f"{model.stem}.pruned.onnx"
        for path, what in ((output, "-o"), (save_masked, "--save-masked"), (report, "--report")):
            if path is not None and _same_file(path, model):
                raise UsageError(f"{what} {path} is the input model; onnxmorph never overwrites its input")
        if profile is not None:
            raise UsageError("--profile: hardware profiles are not available yet")
        options = {k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("lr", lr)) if v is not None}
        status = err.status("pruning", spinner="dots") if not quiet else None
        if status:
            status.start()
        try:
            result = api.prune(
                model, method=method, target=target, data=data, labels=labels, round_to=round_to,
                input_shapes=_shapes(input_shape), seed=seed, best_effort=best_effort,
                progress=(lambda msg: status.update(msg)) if status else None, **options,
            )
        finally:
            if status:
                status.stop()
        result.save(output)
        if save_masked is not None:
            result.save_masked(save_masked)
        if report is not None:
            result.report["output"] = str(output)
            result.save_report(report)
    except OnnxMorphError as exc:
        fail(exc)
    if not quiet:
        _print_summary(result.report, output)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _print_summary(rep: dict, output: Path) -> None:
    o, p = rep["original"], rep["pruned"]
    table = Table(title=f"onnxmorph prune · {rep['method']} · target {rep['target']['spec']}")
    table.add_column("")
    table.add_column("original", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("ratio", justify="right")
    for key, scale, unit in (("macs", 1e6, "M"), ("params", 1e6, "M")):
        ratio = p[key] / o[key] if o[key] else 1.0
        table.add_row(key.upper() if key == "macs" else key, f"{o[key] / scale:,.3f} {unit}",
                      f"{p[key] / scale:,.3f} {unit}", f"{ratio:.3f}")
    out.print(table)
    v = rep["verify"]
    out.print(f"verified pruned == masked on {v['inputs_used']} inputs (max abs diff {v['max_abs_diff']:.2e})")
    if not rep["target"]["reached"]:
        out.print(f"[yellow]target not reached[/]: best legal result keeps {rep['target']['achieved']:.3f}")
    for note in rep["notes"]:
        out.print(f"note: {note}")
    out.print(f"wrote {output}")


@profiles_app.command("list")
def profiles_list():
    """List the built-in hardware profiles."""
    fail(UsageError("hardware profiles are not available yet"))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
