"""sweep.html: one self-contained page (inline SVG and CSS, no scripts, no external files) with the
front — fidelity against MACs and against predicted / measured latency, Pareto-optimal points
marked, every point a link to its trial's report — and the table of all trials.

Rendered from the sweep.json dict alone, so the page can be rebuilt from it. The plots need
matplotlib (the `sweep` extra); without it the page says so and keeps the table.
"""

from __future__ import annotations

import html
import io
from urllib.parse import quote

AXES = {"macs": ("MACs (millions)", 1e-6), "predicted_ms": ("predicted latency (ms)", 1.0),
        "measured_ms": ("measured latency on this machine (ms)", 1.0)}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;font-size:.9em}
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
tr.front td{background:#eef6ee}tr.failed td{color:#a00}.note{color:#555;font-size:.9em}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0}svg{max-width:100%;height:auto}"""


def report_link(name: str) -> str:
    return f"{quote(name, safe='=,')}/report.json"


def _fmt(v, digits=4):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def plot_svg(summary: dict, axis: str) -> str:
    """Fidelity against `axis` for the finished trials as an inline <svg> element."""
    import matplotlib
    from matplotlib.figure import Figure

    label, scale = AXES[axis]
    fid = summary["fidelity_key"]
    front = set(summary["front"].get(axis, []))
    picked = (summary.get("pick") or {}).get("chosen")
    done = [t for t in summary["trials"] if t["status"] == "done" and t.get(axis) is not None]
    methods = list(dict.fromkeys(t["method"] for t in done))
    with matplotlib.rc_context({"svg.hashsalt": "onnxmorph", "svg.fonttype": "path", "font.size": 9}):
        fig = Figure(figsize=(5.6, 3.9))
        ax = fig.add_subplot()
        line = sorted((t[axis] * scale, t[fid]) for t in done if t["name"] in front)
        if line:
            ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="#999", lw=1, zorder=1,
                    label="Pareto front")
        for k, method in enumerate(methods):
            color, marker = COLORS[k % len(COLORS)], MARKERS[k % len(MARKERS)]
            for on_front in (True, False):
                pts = [t for t in done if t["method"] == method and (t["name"] in front) == on_front]
                if not pts:
                    continue
                sc = ax.scatter([t[axis] * scale for t in pts], [t[fid] for t in pts], s=46 if on_front else 30,
                                marker=marker, zorder=3, edgecolors=color, linewidths=1.3,
                                facecolors=color if on_front else "none",
                                label=f"{method}{'' if on_front else ' (dominated)'}")
                sc.set_urls([report_link(t["name"]) for t in pts])
        for t in done:
            if t["name"] in front:
                ax.annotate(t["target"], (t[axis] * scale, t[fid]), textcoords="offset points", xytext=(4, -10),
                            fontsize=7, color="#444")
            if t["name"] == picked:
                ax.scatter([t[axis] * scale], [t[fid]], s=220, facecolors="none", edgecolors="#e6a800",
                           linewidths=2, zorder=2, label="picked (best.onnx)")
        original = summary.get("original") or {}
        if original.get(axis) is not None and original.get(fid) is not None:
            ax.scatter([original[axis] * scale], [original[fid]], marker="*", s=120, color="#333", zorder=3,
                       label="original")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{fid} (held-out)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in HTML


def render_page(summary: dict) -> str:
    fid, cost = summary["fidelity_key"], summary["cost_key"]
    counts = summary["counts"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnxmorph sweep · "
             f"{html.escape(str(summary['model']))}</title><style>{_CSS}</style></head><body>",
             f"<h1>onnxmorph sweep · {html.escape(str(summary['model']))}</h1>",
             f"<p>{counts['total']} trials ({counts['done']} done, {counts['failed']} failed, {counts['resumed']} "
             f"resumed) · methods {html.escape(', '.join(summary['methods']))} · targets "
             f"{html.escape(', '.join(summary['targets']))} · fidelity: <b>{fid}</b> on "
             f"{summary['eval']['samples']} held-out samples ({html.escape(summary['eval']['source'])}) · "
             f"backend {html.escape(summary['backend'].get('backend', ''))} · {summary['wall_s']:.1f} s</p>"]
    pk = summary.get("pick")
    if pk:
        parts.append(f"<p><b>pick</b> {html.escape(', '.join(pk['constraints']))}: {html.escape(pk['message'])}"
                     + (" → <code>best.onnx</code>" if pk.get("best") else "") + "</p>")
    axes = [a for a in AXES if a in summary["front"]]
    parts.append("<h2>Front</h2><p class='note'>Filled points are Pareto-optimal for that plot's cost (no "
                 "other trial is at least as cheap and at least as faithful); every point links to its "
                 "report.</p><div class='plots'>")
    try:
        for axis in axes:
            parts.append(f"<figure>{plot_svg(summary, axis)}</figure>")
    except ImportError:
        parts.append("<p class='note'>Plots need matplotlib: pip install 'onnxmorph[sweep]'.</p>")
    parts.append("</div><h2>Trials</h2><table><tr><th>trial</th><th>status</th><th>MACs</th><th>MACs ratio</th>"
                 "<th>params ratio</th><th>predicted ms</th><th>measured ms</th><th>agreement</th>"
                 f"<th>accuracy</th><th>on front ({cost})</th><th>seconds</th></tr>")
    front = set(summary["front"].get(cost, []))
    for t in sorted(summary["trials"], key=lambda t: (t["status"] != "done", t.get(cost) or 0, t["name"])):
        name = html.escape(t["name"])
        if t["status"] != "done":
            parts.append(f"<tr class='failed'><td>{name}</td><td>failed</td>"
                         f"<td colspan='9' style='text-align:left'>{html.escape(t.get('error') or '')}</td></tr>")
            continue
        star = " ★" if pk and pk.get("chosen") == t["name"] else ""
        parts.append(
            f"<tr class='{'front' if t['name'] in front else ''}'><td><a href='{report_link(t['name'])}'>{name}</a>"
            f"{star} <a href='{quote(t['name'], safe='=,')}/model.onnx'>model</a></td><td>{'resumed' if t['resumed'] else 'done'}"
            f"</td><td>{t['macs'] / 1e6:,.3f} M</td><td>{_fmt(t.get('macs_ratio'))}</td>"
            f"<td>{_fmt(t.get('params_ratio'))}</td><td>{_fmt(t.get('predicted_ms'))}</td>"
            f"<td>{_fmt(t.get('measured_ms'))}</td><td>{_fmt(t.get('agreement'))}</td>"
            f"<td>{_fmt(t.get('accuracy'))}</td><td>{'✓' if t['name'] in front else ''}</td>"
            f"<td>{_fmt(t.get('seconds'), 3)}</td></tr>")
    parts.append("</table></body></html>\n")
    return "".join(parts)
