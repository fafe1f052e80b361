"""The human report: one self-contained HTML page (inline CSS and SVG; no scripts, fonts or links
to fetch) rendered from the report dict alone, so an old `--report x.json` renders too.

Sections (each a <section> with this id, present when the report has its data): summary, cost,
groups, ops, training, fidelity, budget, frozen, verify, notes, timings.
"""

from __future__ import annotations

import html
import os

from ..errors import OnnxMorphError
from . import plots

HTML_SUFFIXES = (".html", ".htm")

_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;color:#222;max-width:1100px;
padding:0 1em}h1{font-size:1.45em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd;
padding-bottom:.2em}table{border-collapse:collapse;font-size:.9em;margin:.6em 0}td,th{border-bottom:1px solid #e4e4e4;
padding:.25em .7em;text-align:right;vertical-align:top}td:first-child,th:first-child{text-align:left}
table.groups td:nth-child(2),table.groups th:nth-child(2),table.frozen td,table.frozen th{text-align:left}
table.groups td:nth-child(2),table.frozen td:first-child{overflow-wrap:anywhere}
.note{color:#555;font-size:.9em}.ok{color:#1a7f37;font-weight:600}.bad{color:#b00;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:.5em 0}svg{max-width:100%;height:auto}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}summary{cursor:pointer;color:#1f5fa8}"""


def is_html_path(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(HTML_SUFFIXES)


def render_html(report: dict) -> str:
    """The HTML page for a prune's report dict (the `--report x.json` content)."""
    plots.require_matplotlib()
    if not isinstance(report, dict) or not isinstance(report.get("groups"), list) \
            or not all(isinstance(report.get(k), dict) for k in ("original", "pruned", "verify")) \
            or "macs" not in report["original"]:
        raise OnnxMorphError("not an onnxmorph prune report: it needs 'original' and 'pruned' costs, 'groups' and "
                             "'verify'")
    model = os.path.basename(str(report.get("model", "model")))
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>onnxmorph prune · {_e(model)}"
             f"</title><style>{_CSS}</style></head><body>"]
    for section in (_summary, _cost, _groups, _ops, _training, _fidelity, _budget, _frozen, _verify, _notes,
                    _timings):
        body = section(report)
        if body:
            parts.append(body)
    parts.append("</body></html>\n")
    return "".join(parts)


def _e(v) -> str:
    return html.escape(str(v))


def _name(name: str) -> str:
    """A group name (node names joined by '+'), free to wrap after each '+'."""
    return _e(name).replace("+", "+<wbr>")


def _int(v) -> str:
    return f"{int(v):,}"


def _g(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return _e(v)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{_e(title)}</h2>{body}</section>"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    out = [f"<table class='{cls}'><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _summary(r: dict) -> str:
    t = r.get("target") or {}
    reached = t.get("reached")
    verdict = ("<span class='ok'>reached</span>" if reached else "<span class='bad'>not reached</span>") \
        if reached is not None else ""
    profile = r.get("profile")
    profile = profile.get("name") if isinstance(profile, dict) else profile
    facts = [f"method <b>{_e(r.get('method', '?'))}</b>",
             f"target <b>{_e(t.get('spec', '?'))}</b>" + (f", achieved {_g(t.get('achieved'))} {verdict}" if t else ""),
             *([f"channels rounded to multiples of {_e(t['round_to'])}"] if t.get("round_to", 1) > 1 else []),
             *([f"profile <b>{_e(profile)}</b>"] if profile else []),
             *([f"allocation {_e(r['allocation'])}"] if r.get("allocation") else []),
             f"seed {_e(r.get('seed', '?'))}", f"onnxmorph {_e(r.get('onnxmorph', '?'))}"]
    where = f"<p class='note'>model <code>{_e(r.get('model', '?'))}</code>" + \
        (f" → <code>{_e(r['output'])}</code>" if r.get("output") else "") + "</p>"
    return (f"<section id='summary'><h1>onnxmorph prune · {_e(os.path.basename(str(r.get('model', 'model'))))}</h1>"
            f"{where}<p>{' · '.join(facts)}</p></section>")


def _cost(r: dict) -> str:
    o, p = r["original"], r["pruned"]
    rows = [("macs", "MACs", o.get("macs"), p.get("macs"), _int), ("params", "params", o.get("params"),
            p.get("params"), _int), ("bytes", "memory traffic (bytes)", o.get("bytes"), p.get("bytes"), _int)]
    if "latency_ms" in o:
        profile = r.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else profile
        rows.append(("latency", f"predicted latency ({name or 'profile'}), ms", o["latency_ms"], p.get("latency_ms"),
                     lambda v: f"{v:.4g}"))
    measured = r.get("measured")
    if measured and measured.get("rounds"):
        m = measured["rounds"][measured.get("chosen", 0)]
        rows.append(("measured", "measured latency (ONNX Runtime, this machine), ms", m["original_ms"],
                     m["pruned_ms"], lambda v: f"{v:.4g}"))
    rows = [row for row in rows if row[2] is not None and row[3] is not None]
    table = _table(["", "original", "pruned", "pruned / original"],
                   [[_e(label), fmt(b), fmt(a), f"{a / b:.3f}" if b else "–"] for _, label, b, a, fmt in rows])
    t = r.get("target") or {}
    target = ({"macs": "macs", "params": "params", "latency": "latency"}.get(t.get("metric")), t.get("fraction")) \
        if t.get("fraction") is not None else None
    body = table + f"<figure>{plots.cost_chart([row[:4] for row in rows], target)}</figure>"
    if measured and measured.get("rounds"):
        body += "<p class='note'>measured with {} thread(s), {}; {}</p>".format(
            _e(measured.get("threads", "?")), _e(measured.get("clock", "")),
            {True: "the target is met", False: "the target is not met", None: "no latency target"}[measured.get("met")])
        body += _table(["round", "aimed fraction", "predicted ratio", "measured ratio", "± rel. s.e.", "met"],
                       [[str(k + 1), _g(m.get("fraction")), _g(m.get("predicted_ratio")), _g(m.get("measured_ratio")),
                         _pct(m.get("ratio_rel_se")), _g(m.get("met"))] for k, m in enumerate(measured["rounds"])])
    return _section("cost", "Cost before and after", body)


def _groups(r: dict) -> str:
    groups = r["groups"]
    if not groups:
        return _section("groups", "Channels kept per group", "<p>No prunable groups.</p>")
    kept = sum(g.get("kept", len(g.get("kept_indices", []))) for g in groups)
    total = sum(g["channels"] for g in groups)
    rows = [[str(k), _name(g["name"]), str(g["channels"]),
             str(g.get("kept", len(g.get("kept_indices", [])))),
             _pct(g.get("kept_ratio", g.get("kept", 0) / max(1, g["channels"])))] for k, g in enumerate(groups)]
    table = _table(["#", "group", "channels", "kept", "kept share"], rows, cls="groups")
    return _section("groups", "Channels kept per group",
                    f"<p>{len(groups)} prunable groups keep {_int(kept)} of {_int(total)} channels "
                    f"({_pct(kept / max(1, total))}).</p><figure>{plots.groups_chart(groups)}</figure>"
                    f"<details{' open' if len(groups) <= 40 else ''}><summary>the groups</summary>{table}</details>")


def _ops(r: dict) -> str:
    rows = r.get("cost_by_op")
    if not rows:
        return ""
    has_latency = any("latency_ms" in row["original"] for row in rows)
    charts = [plots.ops_chart(rows, "macs", "MACs (millions)", 1e-6),
              plots.ops_chart(rows, "bytes", "memory traffic (MB)", 1e-6)]
    if has_latency:
        micro = max(row["original"].get("latency_ms") or 0.0 for row in rows) < 0.1
        charts.append(plots.ops_chart(rows, "latency_ms", f"predicted latency ({'µs' if micro else 'ms'})",
                                      1e3 if micro else 1.0))
    head = ["op", "nodes", "MACs", "MACs pruned", "params", "params pruned", "bytes", "bytes pruned"]
    if has_latency:
        head += ["predicted ms", "predicted ms pruned"]
    body = []
    for row in rows:
        o, p = row["original"], row["pruned"]
        cells = [_e(row["op"]), str(row["nodes"]), _int(o["macs"]), _int(p["macs"]), _int(o["params"]),
                 _int(p["params"]), _int(o["bytes"]), _int(p["bytes"])]
        if has_latency:
            cells += [_g(o.get("latency_ms")), _g(p.get("latency_ms"))]
        body.append(cells)
    note = ""
    if has_latency and r["original"].get("latency_ms") is not None:
        fixed = r["original"]["latency_ms"] - sum(row["original"].get("latency_ms") or 0.0 for row in rows)
        if fixed > 1e-6:
            note = (f"<p class='note'>The predicted latency per op leaves out the profile's fixed cost of a run "
                    f"({fixed:.4g} ms), which no op carries.</p>")
    return _section("ops", "Cost by op kind", "<div class='plots'>" + "".join(f"<figure>{c}</figure>" for c in charts)
                    + "</div>" + _table(head, body, cls="ops") + note)


def _training(r: dict) -> str:
    curve = r.get("training_curve")
    if not curve:
        return ""
    phases = {}
    for e in curve:
        phases.setdefault(e.get("phase", "training"), []).append(e["step"])
    desc = ", ".join(f"{_e(k)} {max(v) + 1} steps" for k, v in phases.items())
    achieved = (r.get("target") or {}).get("achieved")
    return _section("training", "Training curve",
                    f"<p class='note'>{desc}; {len(curve)} logged points. The cost fraction is the expected cost "
                    f"of the gates' keep probabilities under the target's metric; the alive share counts the "
                    f"channels still alive.</p><figure>{plots.curve_chart(curve, achieved)}</figure>")


def _fidelity(r: dict) -> str:
    f = r.get("fidelity")
    if not f:
        return ""
    lines = [f"<p>On {_e(f.get('samples', '?'))} held-out inputs: agreement with the original "
             f"<b>{_pct(f.get('agreement'))}</b>"
             + (f", accuracy {_pct(f['accuracy'])} (original {_pct(f.get('original_accuracy'))})"
                if "accuracy" in f else "") + ".</p>"]
    outs = f.get("outputs") or {}
    if outs:
        lines.append(_table(["output", "kind", "top-1 agreement", "relative error", "cosine"],
                            [[_e(k), _e(v.get("kind", "")), _pct(v.get("top1_agreement")), _g(v.get("relative_error")),
                              _g(v.get("cosine"))] for k, v in outs.items()]))
    return _section("fidelity", "Fidelity", "".join(lines))


def _budget(r: dict) -> str:
    b = r.get("budget")
    if not b:
        return ""
    if not b.get("steps"):
        return _section("budget", "Optimizer steps", "<p>None: a one-shot prune without --data.</p>")
    rows = [[_e(k), _e(b[k])] for k in ("steps", "training", "recovery", "probe") if k in b]
    rows += [[_e(k), _e(v)] for k, v in b.items() if k not in ("steps", "training", "recovery", "probe")]
    return _section("budget", "Optimizer steps", _table(["", "steps"], rows))


def _frozen(r: dict) -> str:
    frozen = r.get("frozen") or []
    if not frozen:
        return _section("frozen", "Frozen groups", "<p>None: every channel group was prunable.</p>")
    rows = [[_name(g["name"]), str(g.get("channels", "?")), _e(g.get("reason", ""))] for g in frozen]
    return _section("frozen", "Frozen groups",
                    f"<p>{len(frozen)} group{'s' if len(frozen) != 1 else ''} "
                    f"({_int(sum(g.get('channels', 0) for g in frozen))} channels) kept whole, each "
                    f"with its reason.</p>" + _table(["group", "channels", "reason"], rows, cls="frozen"))


def _verify(r: dict) -> str:
    v = r["verify"]
    ok = v.get("passed")
    verdict = "<span class='ok'>passed</span>" if ok else "<span class='bad'>failed</span>"
    return _section("verify", "Verification: pruned ≡ masked",
                    f"<p>{verdict}: the pruned model and the masked model (the original with 0/1 gates) agree on "
                    f"{_e(v.get('inputs_used', '?'))} inputs.</p>"
                    + _table(["", ""], [["max abs diff", f"<span class='max-abs-diff'>{_g(v.get('max_abs_diff'), 3)}"
                                                         "</span>"],
                                        ["of the tolerance", _pct(v.get("tolerance_ratio"))],
                                        ["worst output", _e(v.get("worst_output", "–"))]]))


def _notes(r: dict) -> str:
    notes = r.get("notes") or []
    body = "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else "<p>None.</p>"
    return _section("notes", "Notes", body)


def _timings(r: dict) -> str:
    t = r.get("timings")
    if not t:
        return ""
    return _section("timings", "Timings", _table(["stage", "seconds"], [[_e(k), f"{v:.3f}"] for k, v in t.items()]))
