"""The human HTML report, opened in a real headless browser (Debian's chromium, which CI installs).

Reports come from real prunes of the demo model: magnitude (`prune --report x.html` straight from the
CLI) and a short gates run with data (JSON, then `onnxmorph report x.json -o x.html`), so there is a
training curve. The page's DOM as the browser built it must hold every section, one bar per group,
the curve's points and the numbers of the JSON report; its screenshot must show the plots.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO, DEMO_DATA = REPO / "models" / "demo_cnn.onnx", REPO / "models" / "demo_cnn.npz"
CLI = [sys.executable, "-m", "onnxmorph.cli"]
KEPT_RGB = (0x1F, 0x77, 0xB4)  # the plots' blue (kept channels, pruned cost, task loss)
ALWAYS = ("summary", "cost", "groups", "ops", "frozen", "verify", "notes", "timings")


def run(args, cwd, check=True):
    proc = subprocess.run(CLI + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the HTML report test needs Debian's chromium: apt-get install chromium (.ci/run does)"
    return path


def browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args, page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], []

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def all_text(self) -> str:
        return " ".join(" ".join(n.text) for n in self.iter())


class Tree(HTMLParser):
    """The browser's serialized DOM as a tree (html.parser keeps SVG tags, lower-cased)."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", [])
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text.append(data)

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.root.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def ids(self, pattern: str) -> list[str]:
        return [n.attrs["id"] for n in self.root.iter() if re.fullmatch(pattern, n.attrs.get("id") or "")]


def open_page(page: Path, tmp: Path) -> tuple[Tree, np.ndarray]:
    """The DOM chromium built from `page`, and its screenshot as an RGB array (one browser run)."""
    from PIL import Image

    shot = tmp / f"{page.stem}.png"
    dom = Tree(browser(page, tmp, "--window-size=1200,2400", f"--screenshot={shot}", "--dump-dom").stdout)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
    return dom, pixels


@pytest.fixture(scope="module")
def magnitude(tmp_path_factory):
    """A magnitude prune with a profile, its HTML report written by `prune --report x.html`; the
    numbers to find come from the same prune run through the API (deterministic: same seed)."""
    import onnxmorph

    tmp = tmp_path_factory.mktemp("magnitude")
    run(["prune", DEMO, "-o", "m.onnx", "--profile", "t4", "--report", "m.html", "-q"], tmp)
    report = onnxmorph.prune(str(DEMO), profile="t4").report
    return report, *open_page(tmp / "m.html", tmp), (tmp / "m.html").read_text()


@pytest.fixture(scope="module")
def gates(tmp_path_factory):
    """A short gates run with data (a training curve), JSON first, then `onnxmorph report`."""
    tmp = tmp_path_factory.mktemp("gates")
    run(["prune", DEMO, "-o", "g.onnx", "--method", "gates", "--data", DEMO_DATA, "--steps", "20",
         "--no-reconstruct", "--report", "g.json", "-q"], tmp)
    run(["report", "g.json", "-o", "g.html", "-q"], tmp)
    report = json.loads((tmp / "g.json").read_text())
    return report, *open_page(tmp / "g.html", tmp), (tmp / "g.html").read_text()


def check_page(report: dict, dom: Tree, pixels: np.ndarray, source: str, sections) -> None:
    for sid in sections:
        assert dom.by_id(sid).tag == "section"
    # self-contained: nothing to fetch, nothing to run
    assert not re.search(r"<script|<link|<img|<iframe|\ssrc=|@import|url\(['\"]?http", source, re.I)
    assert len(dom.ids(r"kept-\d+")) == len(report["groups"]) == len(dom.ids(r"removed-\d+"))
    assert len([n for n in dom.by_id("kept-share").iter() if n.tag == "use"]) == len(report["groups"])
    rows = [n for n in dom.by_id("groups").iter() if n.tag == "tr"][1:]
    assert [int(r.children[3].all_text()) for r in rows] == [g["kept"] for g in report["groups"]]
    cost = dom.by_id("cost").all_text()
    for side in ("original", "pruned"):
        assert f"{report[side]['macs']:,}" in cost and f"{report[side]['params']:,}" in cost
    assert f"{report['pruned']['macs'] / report['original']['macs']:.3f}" in cost
    ops = {r["op"] for r in report["cost_by_op"] if r["original"]["macs"]}
    assert ops and set(dom.ids(r"op-macs-.*-pruned")) == {f"op-macs-{op}-pruned" for op in ops}
    for side in ("original", "pruned"):  # the JSON's cost_by_op adds up to the totals, and the page shows it
        for key in ("macs", "bytes"):
            assert sum(r[side][key] for r in report["cost_by_op"]) == pytest.approx(report[side][key], abs=len(ops))
    op_rows = {r.children[0].all_text().strip(): r.all_text() for r in dom.by_id("ops").iter() if r.tag == "tr"}
    for r in report["cost_by_op"]:
        assert f"{r['original']['bytes']:,}" in op_rows[r["op"]] and f"{r['pruned']['macs']:,}" in op_rows[r["op"]]
    verify = dom.by_id("verify").all_text()
    assert f"{report['verify']['max_abs_diff']:.3g}" in verify and "passed" in verify
    frozen = dom.by_id("frozen").all_text()
    assert all(g["name"] in frozen and g["reason"] in frozen for g in report["frozen"])
    notes = dom.by_id("notes").all_text()
    assert all(n in notes for n in report["notes"])
    # the screenshot is a page with plots drawn: not blank, and the plots' blue is on it
    gray = pixels.mean(axis=2)
    assert gray.std() > 20 and (gray < 200).mean() > 0.02
    blue = (np.abs(pixels - np.array(KEPT_RGB)).max(axis=2) <= 12).sum()
    assert blue > 2000, blue


def test_magnitude_report_in_browser(magnitude):
    report, dom, pixels, source = magnitude
    check_page(report, dom, pixels, source, ALWAYS)
    assert not dom.ids("training")  # one-shot: no curve section
    # predicted latency (profile t4): in the cost table, and a per-op latency chart
    assert f"{report['pruned']['latency_ms']:.4g}" in dom.by_id("cost").all_text()
    assert dom.ids("op-latency_ms-Conv-pruned") and dom.ids("cost-latency")


def test_gates_report_has_training_curve_fidelity_and_budget(gates):
    report, dom, pixels, source = gates
    check_page(report, dom, pixels, source, ALWAYS + ("training", "fidelity", "budget"))
    curve = report["training_curve"]
    assert {e["phase"] for e in curve} == {"training", "recovery"}
    for series in ("task_loss", "alive_fraction"):
        points = [n for n in dom.by_id(f"curve-{series}").iter() if n.tag == "use"]
        assert len(points) == sum(e.get(series) is not None for e in curve), series
    cost_points = [n for n in dom.by_id("curve-cost_fraction").iter() if n.tag == "use"]
    assert len(cost_points) == sum("cost_fraction" in e for e in curve if e["phase"] == "training")
    fid = dom.by_id("fidelity").all_text()
    assert f"{100 * report['fidelity']['agreement']:.1f} %" in fid
    budget = [n.all_text().split() for n in dom.by_id("budget").iter() if n.tag == "tr"][1:]
    assert dict((k, int(v)) for k, v in budget) == {k: report["budget"][k] for k in dict(budget)}
    assert report["budget"]["steps"] == 20


def test_report_command_bad_input_is_one_line(tmp_path, gates):
    from typer.testing import CliRunner

    from onnxmorph.cli import app

    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text('{"original": {"macs": 1')
    (tmp_path / "r.json").write_text(json.dumps(gates[0]))
    html = str(tmp_path / "out.html")
    for args, code in (([tmp_path / "missing.json", "-o", html], 1), ([tmp_path / "broken.json", "-o", html], 1),
                       ([tmp_path / "list.json", "-o", html], 1), ([DEMO, "-o", html], 1),
                       ([tmp_path / "r.json", "-o", tmp_path / "r.txt"], 2),
                       ([tmp_path / "r.json", "-o", tmp_path / "nowhere" / "r.html"], 2)):
        res = CliRunner().invoke(app, ["report", *map(str, args)])
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)
    assert not list(tmp_path.glob("*.html")) and not list(tmp_path.glob("*.txt"))


def test_html_report_without_matplotlib_is_one_line_before_pruning(tmp_path):
    """matplotlib is the `plot` extra: without it `--report x.html` says so, before any work."""
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    proc = subprocess.run(CLI + ["prune", str(DEMO), "--report", "x.html"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(shim.parent)})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'onnxmorph[plot]'" in proc.stderr
    assert not (tmp_path / "demo_cnn.pruned.onnx").exists() and not (tmp_path / "x.html").exists()


def test_measured_latency_rounds_are_shown(magnitude):
    """A `--measure` report's block (the chosen round in the cost table, every round below it),
    rendered in-process: timing a model here would cost more than this test is worth."""
    from onnxmorph.report.html import render_html

    report = json.loads(json.dumps(magnitude[0]))
    rounds = [{"fraction": 0.5, "predicted_ratio": 0.52, "measured_ratio": 0.61, "original_ms": 1.25,
               "pruned_ms": 0.7625, "ratio_rel_se": 0.02, "pairs": 9, "margin": 0.0, "met_below": 0.48, "met": False},
              {"fraction": 0.41, "predicted_ratio": 0.43, "measured_ratio": 0.47, "original_ms": 1.25,
               "pruned_ms": 0.5875, "ratio_rel_se": 0.02, "pairs": 9, "margin": 0.05, "met_below": 0.48,
               "met": True}]
    report["measured"] = {"rounds": rounds, "chosen": 1, "met": True, "z": 1.645, "clock": "thread CPU time",
                          "threads": 1}
    dom = Tree(render_html(report))
    rows = [n.all_text().split() for n in dom.by_id("cost").iter() if n.tag == "tr"]
    measured = [r for r in rows if r[:2] == ["measured", "latency"]]
    assert len(measured) == 1 and measured[0][-3:] == ["1.25", "0.5875", "0.470"]
    assert [r[3] for r in rows if r and r[0] in ("1", "2")] == ["0.61", "0.47"]  # the rounds' measured ratios
    assert "the target is met" in dom.by_id("cost").all_text()
