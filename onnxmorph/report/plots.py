"""The figures of the HTML report, drawn with matplotlib and returned as inline <svg> elements.

Text is drawn as paths (no fonts needed where the page is opened) and the SVG ids are salted with
a constant, so the same report renders to the same bytes. Every mark a reader (or a test) may want
to find carries an id: `kept-K`/`removed-K` for group K's bars, `op-KEY-OP-original`/`op-KEY-OP-pruned`,
`cost-METRIC`, `curve-SERIES`.
"""

from __future__ import annotations

import io
import math

from ..errors import UsageError

KEPT, REMOVED, ORIGINAL, HELD_OUT = "#1f77b4", "#d5d9de", "#a0a4a8", "#d62728"
_RC = {"svg.hashsalt": "onnxmorph-report", "svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}


def require_matplotlib() -> None:
    """Fail with the CLI's one line when the plotting library is missing (before any work is done)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("an HTML report draws its plots with matplotlib: pip install 'onnxmorph[plot]'") from None


def _render(draw, width: float, height: float) -> str:
    """Run `draw(fig)` on a fresh figure and return the figure as an inline <svg> element."""
    require_matplotlib()
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        draw(fig)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def cost_chart(rows: list[tuple[str, str, float, float]], target: tuple[str, float] | None) -> str:
    """Pruned cost as a share of the original, one bar per (key, label, original, pruned) row; a
    dashed line at the target fraction on its metric's bar."""
    rows = [r for r in rows if r[2]]

    def draw(fig):
        ax = fig.add_subplot()
        y = list(range(len(rows)))[::-1]
        ax.barh(y, [100] * len(rows), color=REMOVED, height=0.6)
        for yk, (key, _, before, after) in zip(y, rows):
            share = 100 * after / before
            bar = ax.barh([yk], [share], color=KEPT, height=0.6)[0]
            bar.set_gid(f"cost-{key}")
            ax.text(max(share, 100) + 2, yk, f"{share:.1f} %", va="center", fontsize=8)
            if target is not None and target[0] == key:
                ax.plot([100 * target[1]] * 2, [yk - 0.4, yk + 0.4], color="#222", ls="--", lw=1.2)
        ax.set_yticks(y, [r[1] for r in rows])
        ax.set_xlim(0, max(100, *(100 * r[3] / r[2] for r in rows)) + 20)
        ax.set_xticks(range(0, 101, 20))
        ax.set_xlabel("pruned, % of the original (grey: the original; dashed: the target)")

    return _render(draw, 6.4, 0.45 * len(rows) + 0.9)


def groups_chart(groups: list[dict]) -> str:
    """Channels kept (blue) and removed (grey) per group, in graph order, numbered as in the table."""
    n = len(groups)

    def draw(fig):
        ax = fig.add_subplot()
        kept = [g.get("kept", len(g.get("kept_indices", []))) for g in groups]
        removed = [g["channels"] - k for g, k in zip(groups, kept)]
        for name, bars in (("kept", ax.bar(range(n), kept, color=KEPT, width=0.8)),
                           ("removed", ax.bar(range(n), removed, bottom=kept, color=REMOVED, width=0.8))):
            for k, bar in enumerate(bars):
                bar.set_gid(f"{name}-{k}")
        ax.set_xlim(-0.7, n - 0.3)
        if n <= 40:
            ax.set_xticks(range(n), [str(k) for k in range(n)], fontsize=7)
        ax.set_xlabel("group, in graph order (numbers as in the table below)")
        ax.set_ylabel("channels")
        # the kept share on its own axis: a small group cut hard is a bottleneck that bars hide
        share = ax.twinx()
        share.spines["right"].set_visible(True)
        share.plot(range(n), [100 * k / max(1, g["channels"]) for k, g in zip(kept, groups)], ls="none", marker="D",
                   ms=3.5, color="#222", label="kept share (right axis)")[0].set_gid("kept-share")
        share.set_ylim(0, 105)
        share.set_ylabel("kept share, %")
        ax.legend(handles=[_patch(KEPT, "kept"), _patch(REMOVED, "removed"), *share.get_legend_handles_labels()[0]],
                  fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False)

    return _render(draw, min(14.0, max(6.4, 0.22 * n + 1.5)), 3.6)


def ops_chart(rows: list[dict], key: str, label: str, scale: float) -> str:
    """Original (grey) and pruned (blue) `key` per op kind, for the kinds that have any."""
    rows = [r for r in rows if r["original"].get(key)]

    def draw(fig):
        ax = fig.add_subplot()
        y = list(range(len(rows)))[::-1]
        for yk, r in zip(y, rows):
            ax.barh([yk + 0.2], [r["original"][key] * scale], height=0.38, color=ORIGINAL)[0] \
                .set_gid(f"op-{key}-{r['op']}-original")
            ax.barh([yk - 0.2], [r["pruned"][key] * scale], height=0.38, color=KEPT)[0] \
                .set_gid(f"op-{key}-{r['op']}-pruned")
        ax.set_yticks(y, [r["op"] for r in rows])
        ax.set_xlabel(label)
        ax.legend(handles=[_patch(ORIGINAL, "original"), _patch(KEPT, "pruned")], fontsize=8, loc="lower right",
                  frameon=False)

    return _render(draw, 4.6, 0.38 * len(rows) + 1.0)


def curve_chart(curve: list[dict], achieved: float | None) -> str:
    """The training curve over all optimizer steps of the prune, phase after phase: task loss (and
    held-out loss) above; the cost fraction and the alive share of channels below."""
    xs, spans, offset = [], [], 0
    for phase in dict.fromkeys(e.get("phase", "training") for e in curve):
        steps = [e["step"] for e in curve if e.get("phase", "training") == phase]
        spans.append((phase, offset, offset + max(steps) + 1))
        offset = spans[-1][2]
    start = {phase: lo for phase, lo, _ in spans}
    xs = [start[e.get("phase", "training")] + e["step"] for e in curve]

    def series(key, *, skip_phase=None):
        """The points of `key`, with a NaN between phases: matplotlib breaks the line there."""
        x_out, y_out, last = [], [], None
        for x, e in zip(xs, curve):
            phase = e.get("phase", "training")
            if e.get(key) is None or phase == skip_phase or not math.isfinite(e[key]):
                continue
            if last is not None and phase != last:
                x_out.append(math.nan)
                y_out.append(math.nan)
            x_out.append(x)
            y_out.append(e[key])
            last = phase
        return x_out, y_out

    def draw(fig):
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        x, y = series("task_loss")
        top.plot(x, y, color=KEPT, marker="o", ms=3, label="task loss")[0].set_gid("curve-task_loss")
        hx, hy = series("held_out_loss")
        if hx:
            top.plot(hx, hy, color=HELD_OUT, marker="s", ms=4, ls=":", label="held-out loss")[0] \
                .set_gid("curve-held_out_loss")
        finite = [v for v in y + hy if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            top.set_yscale("log")
        top.set_ylabel("loss")
        top.legend(fontsize=8, frameon=False)
        # a fixed-mask phase (recovery) has no controller: its cost is the cut's, drawn as a level
        cx, cy = series("cost_fraction", skip_phase="recovery")
        if cx:
            bottom.plot(cx, cy, color="#ff7f0e", marker="o", ms=3, label="cost fraction")[0] \
                .set_gid("curve-cost_fraction")
        ax_, ay = series("alive_fraction")
        if ax_:
            bottom.plot(ax_, ay, color="#2ca02c", marker="^", ms=3, label="alive share of channels")[0] \
                .set_gid("curve-alive_fraction")
        rec = [s for s in spans if s[0] == "recovery"]
        if rec and achieved is not None:
            bottom.plot([rec[0][1], rec[0][2]], [achieved] * 2, color="#ff7f0e", ls="--", lw=1,
                        label="cost fraction of the cut")
        bottom.set_ylim(0, 1.05)
        bottom.set_ylabel("fraction")
        bottom.set_xlabel("optimizer step")
        bottom.legend(fontsize=8, frameon=False, loc="lower left")
        for phase, lo, hi in spans:
            for ax in (top, bottom):
                if lo > 0:
                    ax.axvline(lo - 0.5, color="#888", lw=0.8, ls="--")
            top.text((lo + hi) / 2, 1.02, phase, transform=top.get_xaxis_transform(), ha="center", fontsize=8,
                     color="#555")

    return _render(draw, 7.2, 4.4)


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)
