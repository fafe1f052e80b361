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
from rich.markup import escape
from rich.table import Table

from .errors import OnnxMorphError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Exact channel pruning of ONNX models with hardware-aware costs.")
profiles_app = typer.Typer(no_args_is_help=True, help="Hardware profiles for latency costs.")
app.add_typer(profiles_app, name="profiles")

out = Console()
err = Console(stderr=True)


ATTENTION_HELP = ("Transformer attention units: heads (whole heads) | head-dims (the same head dims in "
                  "every head) | off (freeze channels reaching Q·Kᵀ / attn·V).")
MEASURE_HELP = ("measure the pruned model's latency with ONNX Runtime on this machine; with --target latency=F, "
                "re-target until the measured ratio is <= F (up to --measure-rounds)")
EMBEDDING_HELP = ("Also prune the embedding width (the residual stream through every LayerNorm and Add) "
                  "as one group; emitted LayerNorms keep the masked model's statistics.")


def fail(exc: OnnxMorphError) -> None:
    # escaped: a message's own brackets ('onnxmorph[cpu]', shapes) are text, not rich markup
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
    attention: str = typer.Option("heads", "--attention", help=ATTENTION_HELP),
    prune_embedding: bool = typer.Option(False, "--prune-embedding", help=EMBEDDING_HELP),
):
    """Show the channel groups of MODEL: channels, share of MACs, prunable or frozen and why."""
    from . import api

    try:
        if profile is not None:
            from .cost.profile import load_profile

            profile = load_profile(profile)
        summary = api.summarize(api.inspect(model, input_shapes=_shapes(input_shape), attention=attention,
                                            prune_embedding=prune_embedding), profile)
    except OnnxMorphError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"{summary['model']} — channel groups", show_lines=False)
    table.add_column("group", overflow="fold")
    table.add_column("channels", justify="right")
    table.add_column("MACs share", justify="right")
    if "latency_ms" in summary:
        table.add_column("latency share", justify="right")
    table.add_column("status")
    groups = sorted(summary["groups"], key=lambda g: (not g["prunable"], -(g["macs_share"] or 0)))
    shown = groups if all_groups else groups[:40]
    for g in shown:
        share = f"{100 * g['macs_share']:.1f} %" if g["macs_share"] is not None else "-"
        status = "[green]prunable[/]" if g["prunable"] else f"[yellow]frozen[/]: {g['reason']}"
        lat = [f"{100 * g['latency_share']:.1f} %" if g.get("latency_share") is not None else "-"] \
            if "latency_ms" in summary else []
        table.add_row(g["name"], str(g["channels"]), share, *lat, status)
    out.print(table)
    if len(shown) < len(groups):
        out.print(f"... {len(groups) - len(shown)} more groups (use --all)")
    out.print(f"MACs {summary['macs'] / 1e6:,.2f} M · params {summary['params'] / 1e6:,.3f} M · "
              f"prunable channels {summary['prunable_channels']} · frozen channels {summary['frozen_channels']}")
    if "latency_ms" in summary:
        out.print(f"predicted latency on {summary['profile']}: {summary['latency_ms']:,.3f} ms")
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
    mean: Optional[str] = typer.Option(None, "--mean", help="Image folders: per-channel mean, e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, "--std", help="Image folders: per-channel std, e.g. 0.229,0.224,0.225."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps in all, training + recovery (default "
                                                              "300 with --data; training methods split it in half)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out inputs for the fidelity figure "
                                                                       "(default: 10 %% of --data kept out)."),
    allocation: Optional[str] = typer.Option(None, "--allocation", help="One-shot cut across groups: uniform "
                                             "(same share of every group; default) | global (normalized scores) | "
                                             "cost (score per unit of cost; default for latency targets)."),
    no_reconstruct: bool = typer.Option(False, "--no-reconstruct", help="Skip the least-squares refit of the "
                                        "cut layers (done by default with --data)."),
    bn_stats: bool = typer.Option(False, "--bn-stats", help="Also re-estimate BatchNorm statistics on --data "
                                  "after the cut (off by default: it undoes the refit, see docs/BENCHMARKS.md)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate (default: scaled to the model's "
                                                          "weights, backed off by a short probe)."),
    recover_steps: Optional[int] = typer.Option(
        None, "--recover-steps", help="How many of --steps fine-tune the cut model (default: half for training "
                                      "methods, all for magnitude)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Fixed regularizer strength "
                                                                      "(default: controlled to reach the target)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Distillation temperature (default 4)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw (default) or sgd."),
    engine: Optional[str] = typer.Option(None, "--engine", help="Training engine: onnxmorph (default: its own "
                                         "gradient graphs on onnxruntime) or ort-training (onnxruntime-training)."),
    device: Optional[str] = typer.Option(None, "--device", help="Training device: cpu (default) or cuda "
                                         "(needs onnxruntime-gpu)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Save training state every N steps."),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Where --checkpoint-every writes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume training from a --checkpoint-dir."),
    fisher_decay: Optional[float] = typer.Option(None, "--fisher-decay", help="fisher: EMA decay of the signal (0.96)."),
    burn_in: Optional[int] = typer.Option(None, "--burn-in", help="fisher: steps before the first removal."),
    prune_every: Optional[int] = typer.Option(None, "--prune-every", help="fisher: steps between removals."),
    prune_per_event: Optional[int] = typer.Option(None, "--prune-per-event",
                                                  help="fisher: at most N channels per event (default: as many "
                                                       "as a cost schedule falling to the target by 85 %% of "
                                                       "the steps asks)."),
    flops_weight: Optional[str] = typer.Option(None, "--flops-weight",
                                               help="fisher: 'auto' (signal per cost) or a float w (signal - w*cost)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Hardware profile (name or JSON file)."),
    round_to: Optional[int] = typer.Option(None, "--round-to",
                                           help="Keep channel counts multiples of N (default: the profile's "
                                                "channel multiple, else 1)."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 for symbolic dims."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same output)."),
    save_masked: Optional[Path] = typer.Option(None, "--save-masked", help="Also write the masked model."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a JSON report."),
    best_effort: bool = typer.Option(False, "--best-effort", help="If the target is unreachable, write the best legal model."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    attention: str = typer.Option("heads", "--attention", help=ATTENTION_HELP),
    prune_embedding: bool = typer.Option(False, "--prune-embedding", help=EMBEDDING_HELP),
    measure: bool = typer.Option(False, "--measure", help=MEASURE_HELP),
    measure_rounds: Optional[int] = typer.Option(None, "--measure-rounds",
                                                 help="With --measure: selections measured at most (default 3)."),
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
        options = {k: v for k, v in (
            ("steps", steps), ("batch_size", batch_size), ("lr", lr), ("strength", strength),
            ("temperature", temperature), ("optimizer", optimizer), ("checkpoint_every", checkpoint_every),
            ("checkpoint_dir", checkpoint_dir), ("resume", resume), ("fisher_decay", fisher_decay),
            ("burn_in", burn_in), ("prune_every", prune_every), ("prune_per_event", prune_per_event),
            ("flops_weight", flops_weight), ("engine", engine), ("device", device)) if v is not None}
        if checkpoint_every and not checkpoint_dir:
            raise UsageError("--checkpoint-every needs --checkpoint-dir")
        if measure_rounds is not None and not measure:
            raise UsageError("--measure-rounds needs --measure")
        reporter = _Reporter(quiet)
        try:
            result = api.prune(
                model, method=method, target=target, data=data, labels=labels, round_to=round_to, profile=profile,
                input_shapes=_shapes(input_shape), seed=seed, best_effort=best_effort, attention=attention,
                prune_embedding=prune_embedding, recover_steps=recover_steps, progress=reporter, measure=measure,
                measure_rounds=3 if measure_rounds is None else measure_rounds,
                image_mean=_floats(mean, "--mean"), image_std=_floats(std, "--std"), eval_data=eval_data,
                allocation=allocation, reconstruct=not no_reconstruct, bn_stats=bn_stats, **options,
            )
        finally:
            reporter.close()
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


@app.command()
def sweep(
    model: Path = typer.Argument(..., help="ONNX model to prune (never modified)."),
    data: Path = typer.Option(..., "--data", help="Inputs (.npz or image folder); trials train on it."),
    targets: str = typer.Option(..., "--targets", help="e.g. flops=0.25,0.5,0.75 or 'flops=0.5|latency=0.3,0.4'."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Held-out inputs for the fidelity figure "
                                             "(default: the rows prune keeps out of --data; trials don't train on them)."),
    methods: str = typer.Option("fisher", "--methods", help="Comma-separated methods, e.g. fisher,gates,magnitude."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Hardware profile (predicted latency, latency=F)."),
    measure: bool = typer.Option(False, "--measure", help="Measure each pruned model's ORT latency here."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps per trial (as prune --steps)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Label array in the data: accuracy, cross-entropy."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local trials at a time (default: cores); "
                                          "with --ray and no address, the local Ray's CPUs."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                      help="Run trials as Ray tasks: on the cluster at ADDRESS (host:port, "
                                           "ray://host:port, auto), or on a local Ray without one."),
    trial_cpus: Optional[float] = typer.Option(None, "--trial-cpus", help="CPUs (ORT threads) per trial "
                                               "(default: cores / workers; with --ray 1, as Ray CPUs per task)."),
    trial_gpus: float = typer.Option(0.0, "--trial-gpus", help="--ray: GPUs per trial."),
    resume: bool = typer.Option(False, "--resume", help="Skip trials an earlier run of this sweep finished."),
    pick: Optional[str] = typer.Option(None, "--pick", help="e.g. 'agreement>=0.99': copy the cheapest "
                                       "qualifying model to OUTDIR/best.onnx."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (default: <stem>.sweep here)."),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="As prune --round-to (default: the profile's)."),
    no_reconstruct: bool = typer.Option(False, "--no-reconstruct", help="As prune --no-reconstruct."),
    seed: int = typer.Option(0, "--seed", help="Random seed of every trial and of the held-out split."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
):
    """Prune MODEL once per (method, target); write each trial, the Pareto front page and the pick."""
    from .sweep import sweep as run_sweep
    from .sweep.display import SweepProgress, print_summary

    display = SweepProgress(err, quiet)
    try:
        try:
            result = run_sweep(model, data=data, targets=targets, outdir=output, eval_data=eval_data,
                               methods=methods, profile=profile, measure=measure, steps=steps, labels=labels,
                               workers=workers, ray=ray, trial_cpus=trial_cpus, trial_gpus=trial_gpus,
                               resume=resume, pick=pick, seed=seed, progress=display,
                               **({} if round_to is None else {"round_to": round_to}),
                               **({"reconstruct": False} if no_reconstruct else {}))
        finally:
            display.close()
    except OnnxMorphError as exc:
        fail(exc)
    if not quiet:
        print_summary(out, result)
    if result.pick is not None and result.pick.chosen is None:
        fail(OnnxMorphError(result.pick.message))


def _floats(text: str | None, flag: str):
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got '{text}'") from None
    if flag == "--std" and any(v <= 0 for v in values):
        raise UsageError("--std values must be positive")
    return values


class _Reporter:
    """Stage messages on a spinner; training steps on a progress bar (step, loss, cost, alive)."""

    def __init__(self, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.quiet = quiet
        self.status = None if quiet else err.status("pruning", spinner="dots")
        if self.status:
            self.status.start()
        self._columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[info]}"), TimeRemainingColumn())
        self._progress_cls = Progress
        self.bar = None
        self.task = None
        self.phase = None

    def __call__(self, msg: str, **info) -> None:
        if self.quiet:
            return
        if "step" not in info:
            self._end_bar()
            if self.status:
                self.status.update(msg)
            return
        if self.bar is None or self.phase != msg:
            self._end_bar()
            if self.status:
                self.status.stop()
            self.bar = self._progress_cls(*self._columns, console=err, transient=False)
            self.bar.start()
            self.task = self.bar.add_task(msg, total=info["total"], info="")
            self.phase = msg
        text = f"loss {info['loss']:.4f} · task {info['task']:.4f} · cost {info['cost']:.3f} · " \
               f"alive {100 * info['alive']:.0f} %"
        self.bar.update(self.task, completed=info["step"], info=text)

    def _end_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            if self.status:
                self.status.start()

    def close(self) -> None:
        self._end_bar()
        if self.status:
            self.status.stop()


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
    for key, scale, unit in (("macs", 1e6, "M"), ("params", 1e6, "M"), ("latency_ms", 1, "ms")):
        if key not in o:
            continue
        ratio = p[key] / o[key] if o[key] else 1.0
        profile = rep.get("profile")
        profile = profile.get("name") if isinstance(profile, dict) else profile
        label = {"macs": "MACs", "latency_ms": f"latency ({profile or 'profile'})"}.get(key, key)
        table.add_row(label, f"{o[key] / scale:,.3f} {unit}", f"{p[key] / scale:,.3f} {unit}", f"{ratio:.3f}")
    measured = rep.get("measured")
    if measured:
        m = measured["rounds"][measured["chosen"]]
        table.add_row("latency (measured here)", f"{m['original_ms']:,.3f} ms", f"{m['pruned_ms']:,.3f} ms",
                      f"{m['measured_ratio']:.3f}")
    out.print(table)
    if measured:
        n, rounds = measured["threads"], len(measured["rounds"])
        verdict = {True: " [green]target met[/]", False: " [yellow]target not met[/]", None: ""}[measured["met"]]
        which = f" · round {measured['chosen'] + 1} of {rounds}" if rounds > 1 else ""
        out.print(f"measured with ONNX Runtime on this machine ({n} thread{'s' if n != 1 else ''}, "
                  f"{measured['clock']}): ratio {m['measured_ratio']:.3f}{verdict}{which}")
    v = rep["verify"]
    out.print(f"verified pruned == masked on {v['inputs_used']} inputs (max abs diff {v['max_abs_diff']:.2e})")
    fid = rep.get("fidelity")
    if fid and fid.get("agreement") is not None:
        acc = f", accuracy {100 * fid['accuracy']:.1f} % (original {100 * fid['original_accuracy']:.1f} %)" \
            if "accuracy" in fid else ""
        out.print(f"held-out fidelity on {fid['samples']} inputs: agreement with the original "
                  f"{100 * fid['agreement']:.1f} %{acc}")
    b = rep.get("budget")
    if b and b["steps"]:
        out.print(f"optimizer steps: {b['training']} training + {b['recovery']} recovery"
                  + (f" ({b['probe']} of them choosing the learning rate)" if b.get("probe") else ""))
    if not rep["target"]["reached"]:
        out.print(f"[yellow]target not reached[/]: best legal result keeps {rep['target']['achieved']:.3f}")
    for note in rep["notes"]:
        out.print(f"note: {note}")
    out.print(f"wrote {output}")


@profiles_app.command("list")
def profiles_list(
    as_json: bool = typer.Option(False, "--json", help="Print the profiles as JSON."),
):
    """List the built-in hardware profiles."""
    from .cost.profile import list_profiles

    try:
        profiles = list_profiles()
    except OnnxMorphError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps([{k: v for k, v in p.to_json().items() if k != "tables"} for p in profiles]))
        return
    table = Table(title="hardware profiles")
    for col, justify in (("name", "left"), ("kind", "left"), ("peak GFLOP/s", "right"), ("GB/s", "right"),
                         ("dtype B", "right"), ("ch. multiple", "right"), ("description", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for p in profiles:
        table.add_row(p.name, p.kind, f"{p.peak_gflops:,.6g}", f"{p.memory_gbps:,.6g}", str(p.dtype_bytes),
                      str(p.channel_multiple), p.description)
    out.print(table)
    out.print("use `onnxmorph profiles show NAME` for sources, or pass your own JSON with --profile path.json")


@profiles_app.command("show")
def profiles_show(
    name: str = typer.Argument(..., help="A built-in profile name or a profile JSON file."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's JSON."),
):
    """Show one hardware profile: roofline numbers, source, and measured tables."""
    from .cost.profile import TABLE_KINDS, load_profile

    try:
        p = load_profile(name)
    except OnnxMorphError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps(p.to_json()))
        return
    table = Table(title=f"profile {p.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    ridge = p.peak_gflops / p.memory_gbps
    for k, v in (("description", p.description), ("kind", p.kind), ("peak compute", f"{p.peak_gflops:,.6g} GFLOP/s"),
                 ("memory bandwidth", f"{p.memory_gbps:,.6g} GB/s"),
                 ("ridge point", f"{ridge:,.4g} FLOP/byte (compute-bound above)"),
                 ("dtype size", f"{p.dtype_bytes} bytes"), ("channel multiple", str(p.channel_multiple)),
                 ("fusion", "BN / activations / residual Add folded into convs" if p.fusion else "none (every op costs)"),
                 ("source", p.source), ("file", p.path or "-")):
        table.add_row(k, v)
    for k, v in p.measured.items():
        table.add_row(f"measured {k}", str(v))
    if p.op_factors:
        table.add_row("op factors (time / Sigmoid's)", ", ".join(f"{k} {v:g}" for k, v in p.op_factors.items()))
    if p.overheads:
        table.add_row("overheads", ", ".join(f"{k} {1e6 * v:.3g} µs" for k, v in p.overheads.items()))
    if p.batched_matmul:
        from .cost.batched_matmul import seconds

        # what the formula gives for two attention shapes: Q·Kᵀ of ViT-B (12 heads, 197 tokens, 64 dims)
        # and of a 7x7-window block (64 windows x 3 heads, 49 tokens, 32 dims)
        shapes = (("ViT-B Q·Kᵀ", (12, 197, 64, 197)), ("7x7-window Q·Kᵀ", (192, 49, 32, 49)))
        table.add_row("batched products", "; ".join(
            f"{name} {1e6 * float(seconds(p.batched_matmul, *s)):.4g} µs (MatMul), "
            f"{1e6 * float(seconds(p.batched_matmul, *s, op='Einsum')):.4g} µs (Einsum)" for name, s in shapes))
    out.print(table)
    for kind, t in p.tables.items():
        unit = "MAC" if TABLE_KINDS[kind] == "macs" else "byte"
        size = "rows" if kind == "gemm" else "pixels"
        square = " (in = out; the table holds every in × out pair)" if t.out_channels is not None else ""
        tt = Table(title=f"{kind}: effective G{unit}/s by channels{square} (rows) × {size} (columns)"
                         + (" — unaligned counts below" if t.unaligned is not None else ""))
        tt.add_column("channels", justify="right")
        for s in t.sizes:
            tt.add_column(f"{s:g}", justify="right")
        for part, style in ((t, None), (t.unaligned, "yellow")):
            if part is None:
                continue
            seconds, works = part.seconds, part.work
            if part.out_channels is not None:  # the diagonal of the (in, out) grid
                seconds = [seconds[k, k] for k in range(len(part.channels))]
                works = [works[k, k] for k in range(len(part.channels))]
            for c, sec, work in zip(part.channels, seconds, works):
                tt.add_row(f"{c:g}", *[f"{w / s / 1e9:,.3g}" for s, w in zip(sec, work)], style=style)
        out.print(tt)


@profiles_app.command("calibrate")
def profiles_calibrate(
    name: str = typer.Option(..., "--name", help="Name of the measured profile."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write it (default: ./NAME.json)."),
    threads: int = typer.Option(1, "--threads", help="ONNX Runtime intra-op threads (default 1)."),
    grid: str = typer.Option("default", "--grid", help="default | tiny (a few seconds; for tests)."),
    clock: Optional[str] = typer.Option(None, "--clock", help="cpu (thread CPU time; default with 1 thread) | wall."),
    wait_quiet: float = typer.Option(600.0, "--wait-quiet", help="Seconds to wait for a quiet machine to measure "
                                     "again what was measured while it was loaded (shared machines)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Measure THIS machine with ONNX Runtime micro-benchmarks and write a measured profile."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .api import write_text_atomic
    from .cost.calibrate import GRIDS, calibrate

    try:
        if not name.strip() or "/" in name:
            raise UsageError(f"--name '{name}': give a plain profile name")
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        if grid not in GRIDS:
            raise UsageError(f"--grid '{grid}': choose one of {', '.join(GRIDS)}")
        if clock not in (None, "cpu", "wall"):
            raise UsageError(f"--clock '{clock}': choose cpu or wall")
        if clock == "cpu" and threads != 1:
            raise UsageError("--clock cpu measures one thread; use --clock wall with --threads > 1")
        output = output or Path.cwd() / f"{name}.json"
        if output.parent and not output.parent.exists():
            raise UsageError(f"-o {output}: folder {output.parent} does not exist")
        if wait_quiet < 0:
            raise UsageError(f"--wait-quiet must be >= 0, got {wait_quiet}")
        if quiet:
            profile = calibrate(name, threads=threads, grid=grid, clock=clock, quiet_budget_s=wait_quiet)
        else:
            with Progress(TextColumn("calibrating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=err, transient=True) as bar:
                task = bar.add_task("", total=None)

                def progress(done, total, label):
                    bar.update(task, completed=done, total=total, description=label)

                profile = calibrate(name, threads=threads, grid=grid, clock=clock, progress=progress,
                                    quiet_budget_s=wait_quiet)
        write_text_atomic(json.dumps(profile.to_json(), indent=1) + "\n", output)
    except OnnxMorphError as exc:
        fail(exc)
    if not quiet:
        out.print(f"fitted roofline: {profile.peak_gflops:,.1f} GFLOP/s, {profile.memory_gbps:,.1f} GB/s · "
                  f"channel multiple {profile.channel_multiple} · tables: {', '.join(profile.tables)} · "
                  f"{profile.measured.get('seconds')} s")
        out.print(f"wrote {output}; use it with --profile {output}")


def optional_ray_address(argv: list[str]) -> list[str]:
    """`sweep --ray` without an address (last, or before another option) means a local Ray: click
    options have no optional values, so the missing one is filled in as "local"."""
    out = []
    for k, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray" and (k + 1 == len(argv) or argv[k + 1].startswith("-")):
            out.append("local")
    return out


def main() -> None:
    try:
        if "sweep" in sys.argv[1:]:
            sys.argv[1:] = optional_ray_address(sys.argv[1:])
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
