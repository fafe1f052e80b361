"""The sweep's terminal side: a live progress bar (trials done / running / failed) and the summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


class SweepProgress:
    """`progress` callback for `sweep()`: one bar over the trials, counts and the last event beside it."""

    def __init__(self, console: Console, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.bar = None if quiet else Progress(
            TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(), TextColumn("{task.description}"), console=console, transient=False)
        self.task = None

    def __call__(self, event: str, name: str, counts: dict) -> None:
        if self.bar is None:
            return
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=counts["total"], counts="")
        text = (f"[green]{counts['done']} done[/] · [cyan]{counts['running']} running[/] · "
                f"[red]{counts['failed']} failed[/]" + (f" · {counts['resumed']} resumed" if counts["resumed"] else ""))
        finished = counts["done"] + counts["failed"] + counts["resumed"]
        self.bar.update(self.task, completed=finished, counts=text, description=f"{event} {name}")

    def close(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()


def print_summary(console: Console, result) -> None:
    """The trials by cost with their figures, front and pick marked, and where everything went."""
    s = result.summary
    fid, cost = result.fidelity_key, result.cost_key
    front = set(result.fronts.get(cost, []))
    chosen = result.pick.chosen.name if result.pick is not None and result.pick.chosen is not None else None
    table = Table(title=f"onnxmorph sweep · {s['model']} · fidelity = held-out {fid}")
    for col in ("trial", "MACs ratio", *(["predicted ms"] if "predicted_ms" in result.fronts else []),
                *(["measured ms"] if "measured_ms" in result.fronts else []), fid, "front", "s"):
        table.add_column(col, justify="left" if col == "trial" else "right")
    order = sorted(result.trials, key=lambda t: (t.status != "done", t.value(cost) or 0, t.name))
    for t in order:
        if t.status != "done":
            table.add_row(f"[red]{t.name}[/]", "[red]failed[/]")
            continue
        cells = [t.name + (" [yellow]★[/]" if t.name == chosen else ""), f"{t.value('macs_ratio'):.3f}"]
        if "predicted_ms" in result.fronts:
            cells.append(f"{t.value('predicted_ms'):.4g}")
        if "measured_ms" in result.fronts:
            cells.append(f"{t.value('measured_ms'):.4g}" if t.value("measured_ms") is not None else "-")
        v = t.value(fid)
        cells += ["-" if v is None else f"{v:.4f}", "✓" if t.name in front else "", f"{t.seconds or 0:.1f}"]
        table.add_row(*cells)
    console.print(table)
    for t in order:
        if t.status != "done":
            console.print(f"[red]failed[/] {t.name}: {t.error}", highlight=False)
    c = s["counts"]
    console.print(f"{c['done']} done, {c['failed']} failed, {c['resumed']} resumed of {c['total']} · "
                  f"{s['backend'].get('backend')} · {s['wall_s']:.1f} s")
    console.print(f"wrote {result.outdir / 'sweep.json'} and {result.outdir / 'sweep.html'}")
    if result.pick is not None:
        console.print(result.pick.message + (f" -> {result.pick.best_path}" if result.pick.best_path else ""),
                      highlight=False)
