"""Reports in a real browser: each kind of page loads in headless Chromium with no console
errors, and every expected section and figure is there and visible. Screenshots are saved (in
the test's temporary folder, or in ``$SCRUB_SCREENSHOTS`` when set).

Slow tier (``make test-all``, which installs the Debian package ``chromium`` where it can);
skipped with the reason when Chromium is not installed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

import scrub
from scrub.report import build_report, load_document
from scrub.report._documents import Document
from scrub.report.browser import available, inspect_page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not available(), reason="Chromium is not installed (apt-get install chromium)"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None


def _run(rel: str, out: Path, n: int = 60) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        result = scrub.run(ROOT / "hypotheses" / rel, n=n, seed=0)
    path = out / (rel.replace("/", "-").removesuffix(".yaml") + ".json")
    path.write_text(result.to_json())
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("browser-results")
    return {
        "comparison": [_run("induction/kcomp.yaml", out), _run("induction/naive.yaml", out)],
        "single": [_run("parens/count_horizon.yaml", out)],
    }


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("SCRUB_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _look(html: str, name: str, shots: Path, selectors: list[str]):
    page_file = shots / f"{name}.html"
    page_file.write_text(html)
    shot = shots / f"{name}.png"
    seen = inspect_page(page_file, selectors=selectors, screenshot=shot)
    assert seen.console == [], seen.console
    assert seen.failed == [], seen.failed
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and seen.height > 500
    return seen


def _visible(seen, selector: str, count: int | None = None) -> None:
    found = seen.elements[selector]
    assert found, f"{selector}: not on the page"
    assert all(e["visible"] for e in found), f"{selector}: not all visible: {found}"
    if count is not None:
        assert len(found) == count, f"{selector}: {len(found)} on the page, expected {count}"


def test_comparison_page(results, shots):
    docs = [load_document(p) for p in results["comparison"]]
    kinds = ["summary", "distribution", "breakdown", "warnings", "provenance"]
    selectors = [
        'section[data-section="comparison"]',
        'figure[data-figure="forest"] svg',
        'figure[data-figure="distribution"] svg',
        'figure[data-figure="recovered"] svg',
        'figure[data-figure="graph"] svg',
        "nav a",
        *[f'section[data-section="{k}"]' for k in kinds],
    ]
    seen = _look(build_report(docs, strict=True), "comparison", shots, selectors)
    _visible(seen, 'section[data-section="comparison"]', 1)
    _visible(seen, 'figure[data-figure="forest"] svg', 1)
    for kind in kinds:
        _visible(seen, f'section[data-section="{kind}"]', 2)
    _visible(seen, 'figure[data-figure="distribution"] svg', 2)
    _visible(seen, 'figure[data-figure="recovered"] svg', 2)
    if HAS_DOT:
        _visible(seen, 'figure[data-figure="graph"] svg', 2)
    _visible(seen, "nav a")
    assert "induction-kcomp" in seen.title


def test_single_result_page_with_breakdowns(results, shots):
    docs = [load_document(p) for p in results["single"]]
    selectors = [
        'section[data-section="summary"]',
        'section[data-section="breakdown"]',
        'figure[data-figure="breakdown"] svg',
        'figure[data-figure="distribution"] svg',
        'figure[data-figure="graph"] svg',
        "table.breakdown",
        'section[data-section="comparison"]',
    ]
    seen = _look(build_report(docs, strict=True), "single", shots, selectors)
    for sel in selectors[:4]:
        _visible(seen, sel)
    _visible(seen, "table.breakdown")
    if HAS_DOT:
        _visible(seen, 'figure[data-figure="graph"] svg', 1)
    assert seen.elements['section[data-section="comparison"]'] == []  # one result: no comparison


def test_degraded_pages(results, shots, monkeypatch):
    """Missing fields, an unknown kind and no Graphviz: notes in place of sections, no errors."""
    import scrub._render

    monkeypatch.setattr(scrub._render.shutil, "which", lambda name: None)
    data = dict(load_document(results["single"][0]).data)
    for key in ("per_example", "per_example_clean", "warnings", "reference"):
        data.pop(key)
    docs = [
        Document(data=data, kind="scrub_result", source="partial.json", path=results["single"][0]),
        Document(
            data={"kind": "from_the_future", "grid": [[1, 2]]},
            kind="from_the_future",
            source="f.json",
        ),
    ]
    selectors = ["p.note.skipped", 'section[data-section="unknown"]', "details"]
    seen = _look(build_report(docs), "degraded", shots, selectors)
    _visible(seen, "p.note.skipped")
    _visible(seen, 'section[data-section="unknown"]', 1)
    _visible(seen, "details", 1)  # the DOT source, where the diagram would be


def test_the_checker_sees_errors(tmp_path):
    """The browser check is not vacuous: it reports a console error, a failed load, a hidden
    element."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p id=shown>x</p><p id=hidden style='display:none'>y</p>"
        "<img src='missing.png'><script>console.error('broken');</script></body></html>"
    )
    seen = inspect_page(page, selectors=["#shown", "#hidden"])
    assert any("broken" in c for c in seen.console)
    assert seen.failed or any("missing.png" in c or "ERR_FILE_NOT_FOUND" in c for c in seen.console)
    assert seen.elements["#shown"][0]["visible"] and not seen.elements["#hidden"][0]["visible"]


def test_experiment_pages(results, shots):
    """Comparison, diagnosis, patching grid and attention documents (the shapes of
    tests/test_report.py's), on one page."""
    import numpy as np

    from tests.test_report import _comparison

    grid = {
        "kind": "activation",
        "name": "heads",
        "axes": {"component": ["a0.h0", "a0.h1", "a1.h0"], "position": [0, 1, 2, "END"]},
        "normalized": np.linspace(-1, 1, 12).reshape(3, 4).tolist(),
    }
    pattern = (np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None]).tolist()
    attention = {
        "kind": "attention",
        "heads": ["a1.h0"],
        "tokens": [["<bos>", "a", "b", "a", "b"]],
        "clean": {"a1.h0": [pattern]},
        "under": {"a1.h0": [np.eye(5).tolist()]},
        "under_label": "hypothesis kcomp",
    }
    diagnosis = {
        "hypothesis": "h",
        "experiment": {"n": 8},
        "recovered": 0.9,
        "rows": [{"node": "prev", "change": "drop", "difference": -0.6, "ci": [-0.7, -0.5]}],
    }
    comparison = _comparison(results["comparison"])
    path = results["comparison"][0]
    docs = [
        Document(data=comparison, kind="comparison", source="c.json", path=path),
        Document(data=diagnosis, kind="diagnosis", source="d.json"),
        Document(data=grid, kind="patching", source="g.json"),
        Document(data=attention, kind="attention", source="a.json"),
    ]
    figures = ["forest", "pairs", "ranking", "heatmap", "attention"]
    selectors = [f'figure[data-figure="{f}"] svg' for f in figures]
    seen = _look(build_report(docs, strict=True), "experiments", shots, selectors)
    for selector in selectors:
        _visible(seen, selector, 1)


@pytest.fixture(scope="module")
def made_reports(tmp_path_factory) -> Path:
    """The pages ``make reports`` writes (``scripts/make_reports.py``), on small n."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("made-reports")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    script = ROOT / "scripts" / "make_reports.py"
    argv = [sys.executable, str(script), "--n", "20", "--patch-n", "8", "--out", str(out)]
    subprocess.run(argv, check=True, cwd=ROOT, env=env, capture_output=True)
    return out


MADE_PAGES = {
    # page: (sections present once per result block, figures and how many)
    "induction.html": (
        ["summary", "graph", "distribution", "provenance"],
        {"forest": 1, "distribution": 5, "recovered": 5, "graph": 5},
    ),
    "induction-comparison.html": (
        ["experiment", "forest", "pairs", "distribution", "graph", "warnings", "provenance"],
        {"forest": 1, "pairs": 1, "distribution": 1, "graph": 3},
    ),
    "parens-comparison.html": (
        ["experiment", "forest", "pairs", "distribution", "graph"],
        {"forest": 1, "pairs": 1, "distribution": 1, "graph": 3},
    ),
    "parens-diagnosis.html": (
        ["experiment", "ranking", "graph", "skipped", "warnings", "provenance"],
        {"ranking": 1, "graph": 1, "legend": 1},
    ),
    "patching/induction-iterative-path-logits.html": (
        ["setup", "heatmap", "cells", "warnings", "provenance"],
        {"heatmap": 1},
    ),
    "patching/induction-attention-prev-token.html": (
        ["setup", "attention", "warnings", "provenance"],
        {"attention": 1},
    ),
}


@pytest.mark.parametrize("page", sorted(MADE_PAGES))
def test_made_reports_in_the_browser(made_reports, page, shots):
    """Each kind of page ``make reports`` writes: run, comparison, diagnosis, patching grid,
    attention maps."""
    sections, figures = MADE_PAGES[page]
    if not HAS_DOT:
        figures = {k: v for k, v in figures.items() if k not in ("graph", "legend")}
    selectors = [f'section[data-section="{s}"]' for s in sections]
    selectors += [f'figure[data-figure="{f}"] svg' for f in figures]
    selectors += ["nav a", "p.note.skipped"]
    html = (made_reports / page).read_text()
    assert "could not be drawn" not in html
    name = page.replace("/", "-").removesuffix(".html")
    seen = _look(html, name, shots, selectors)
    for section in sections:
        _visible(seen, f'section[data-section="{section}"]')
    for fig, count in figures.items():
        _visible(seen, f'figure[data-figure="{fig}"] svg', count)
    _visible(seen, "nav a")
