"""HTML reports: made from real runs, self-contained, robust to missing and unknown fields.

The page structure is checked with the standard library's HTML parser; the slow tier
(``tests/test_report_browser.py``) opens the same pages in headless Chromium.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

import scrub
from scrub._result import recovered_of
from scrub.cli import main
from scrub.report import build_report, load_document
from scrub.report._documents import Document, detect_kind

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None


class Page(HTMLParser):
    """What the tests look at in a page: sections, figures, links, scripts, notes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}  # id -> data-section
        self.figures: list[str] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.skipped: list[str] = []
        self._in_skip = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag in ("section", "article") and "data-section" in a:
            self.sections[a["id"]] = a["data-section"]
        if "data-figure" in a:
            self.figures.append(a["data-figure"])
        for key in ("src", "href", "xlink:href", "action", "data"):
            if key in a:
                self.urls.append(a[key])
        if tag == "p" and "skipped" in (a.get("class") or ""):
            self._in_skip = True
            self.skipped.append("")

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_skip = False

    def handle_data(self, data):
        if self._in_skip:
            self.skipped[-1] += data

    def kinds(self) -> set[str]:
        return set(self.sections.values())


def quiet_run(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return scrub.run(path, **kwargs)


@pytest.fixture(scope="module")
def induction_results(tmp_path_factory):
    """Real runs of two shipped induction hypotheses on the shipped model, paired (n small)."""
    out = tmp_path_factory.mktemp("results")
    model = scrub.load_model("induction")
    paths = []
    for name in ("kcomp", "naive"):
        r = quiet_run(ROOT / "hypotheses" / "induction" / f"{name}.yaml", model=model, n=16, seed=0)
        path = out / f"{name}.json"
        path.write_text(r.to_json())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def parens_result(tmp_path_factory):
    """A real run of a paren hypothesis (its dataset inline and small), for breakdowns."""
    out = tmp_path_factory.mktemp("parens")
    spec = yaml.safe_load((ROOT / "hypotheses" / "parens" / "count_horizon.yaml").read_text())
    spec["dataset"] = {"generator": "parens", "params": {"size": 300}}
    hyp_file = out / "count_horizon.yaml"
    hyp_file.write_text(yaml.safe_dump(spec))
    result = quiet_run(hyp_file, n=40, seed=0)
    path = out / "count_horizon.json"
    path.write_text(result.to_json())
    return path


def test_report_of_compared_real_runs(induction_results, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, induction_results), "--out", str(out)]) == 0
    html = out.read_text()
    page = Page(html)
    assert {"comparison", "summary", "graph", "distribution", "breakdown", "warnings"} <= (
        page.kinds()
    )
    assert "provenance" in page.kinds()
    assert page.figures.count("forest") == 1
    assert page.figures.count("distribution") == 2 and page.figures.count("recovered") == 2
    assert page.figures.count("graph") == (2 if HAS_DOT else 0)
    assert "Paired: every result has the same model" in html
    assert "could not be drawn" not in html
    # the induction dataset has no categorical field: the breakdown says so in its place
    assert any("no categorical field" in s for s in page.skipped)
    # the numbers on the page are the recorded ones
    for path in induction_results:
        data = json.loads(path.read_text())
        assert f"{data['recovered']:.3f}" in html
        assert data["hypothesis_sha256"] in html
    assert "scrub report" in html  # the command line that made it


def test_report_is_self_contained(induction_results):
    html = build_report([load_document(p) for p in induction_results], strict=True)
    page = Page(html)
    assert page.urls, "expected in-page links"
    assert all(u.startswith("#") or u.startswith("data:") for u in page.urls), page.urls
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert "http://" not in html.replace("http://www.w3.org/", "")
    assert "https://" not in html
    assert "@import" not in html
    assert re.findall(r"url\((?!#)", html) == []  # only references inside the page


def test_report_is_deterministic(induction_results):
    docs = [load_document(p) for p in induction_results]
    assert build_report(docs, strict=True) == build_report(docs, strict=True)


def test_breakdown_by_dataset_fields(parens_result):
    html = build_report([load_document(parens_result)], strict=True)
    page = Page(html)
    assert page.figures.count("breakdown") >= 1
    assert "by count_ok" in html and "by horizon_ok" in html  # fields the hypothesis names
    # the per-group fraction recovered is the recorded per-example values, grouped by the
    # dataset's field at the reference rows
    data = json.loads(parens_result.read_text())
    ds = scrub.make_dataset(
        "parens", data["dataset"]["params"], scrub._tree.stream(data["seed"], "dataset")
    )
    field = ds.fields["count_ok"][np.asarray(data["reference"])]
    c, b, s = (
        np.asarray(data[k]) for k in ("per_example_clean", "per_example_baseline", "per_example")
    )
    for value in (False, True):
        mask = field == value
        if np.isclose(c[mask].mean(), b[mask].mean()):
            continue
        rec = float(recovered_of(c[mask], b[mask], s[mask]))
        assert f'<td class="num">{mask.sum()}</td>' in html
        assert f">{rec:.3f}<" in html


def test_run_report_flag(tiny_model_dir, tmp_path):
    from tests.conftest import base_spec

    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "ind", "channels": "in"}]},
        "ind": {"components": ["a1.h0"], "sampler": {"kind": "cond", "features": "s1"}},
    }
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(base_spec(tiny_model_dir, nodes=nodes, defaults={"n": 8})))
    out = tmp_path / "r.html"
    assert main(["run", str(path), "--quiet", "--report", str(out)]) == 0
    page = Page(out.read_text())
    assert {"summary", "graph", "distribution", "warnings", "provenance"} <= page.kinds()
    assert "--report" in out.read_text()  # the run's own command line is recorded


# --------------------------------------------------------------------------------------------
def _doc(data: dict, path: Path | None = None) -> Document:
    return Document(data=data, kind=detect_kind(data), source=str(path or "x.json"), path=path)


def test_missing_and_unknown_fields_become_notes(induction_results):
    data = json.loads(induction_results[0].read_text())
    broken = copy.deepcopy(data)
    for key in ("per_example", "hypothesis_file", "warnings", "recovered_ci", "versions"):
        del broken[key]
    broken["recovered"] = "not a number"
    broken["future_field"] = {"a": [1, 2]}
    html = build_report([_doc(broken, induction_results[0])], strict=True)
    page = Page(html)
    assert {"summary", "graph", "distribution", "warnings", "provenance"} <= page.kinds()
    assert any("no hypothesis file" in s for s in page.skipped)
    assert any("no per-example values" in s for s in page.skipped)
    assert "recovered: <strong>undefined</strong>" in html
    assert "future_field" in html  # unknown fields are listed, not dropped


def test_undefined_recovered_shows_its_reason(induction_results):
    data = json.loads(induction_results[0].read_text())
    data.update(recovered=None, recovered_ci=[None, None])
    data["recovered_undefined_reason"] = "clean = baseline"
    data["self_draws"] = {"prev": {"sampler": 0.25, "other": 0.0}}
    html = build_report([_doc(data, induction_results[0])], strict=True)
    assert "undefined" in html and "clean = baseline" in html
    assert "prev: sampler 25%, other 0%" in html


def test_unknown_kind_gets_a_page():
    html = build_report([_doc({"kind": "from_the_future", "x": 1})], strict=True)
    assert "does not know how to draw a result of kind &#39;from_the_future&#39;" in html
    assert Page(html).sections  # the section that lists its fields


def test_a_failing_section_is_a_note_not_a_traceback(induction_results, monkeypatch):
    from scrub.report import figures

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(figures, "distribution", broken)
    html = build_report([load_document(induction_results[0])])
    assert "This section could not be drawn (RuntimeError: boom)" in html
    with pytest.raises(RuntimeError, match="boom"):
        build_report([load_document(induction_results[0])], strict=True)


def test_changed_hypothesis_file_is_not_drawn(induction_results):
    data = json.loads(induction_results[0].read_text())
    data["hypothesis_sha256"] = "0" * 64
    html = build_report([_doc(data, induction_results[0])], strict=True)
    assert "has changed since this result was made" in html
    assert 'data-figure="graph"' not in html


def test_without_graphviz_the_diagram_is_a_note(induction_results, monkeypatch, tmp_path):
    import scrub._render

    monkeypatch.setattr(scrub._render.shutil, "which", lambda name: None)
    html = build_report([load_document(induction_results[0])], strict=True)
    assert "needs Graphviz&#39;s &#39;dot&#39; program" in html
    assert "DOT source of the diagram" in html
    hyp_file = ROOT / "hypotheses" / "induction" / "kcomp.yaml"
    assert main(["graph", str(hyp_file), "--out", str(tmp_path / "g.svg")]) == 1


def test_report_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.html")]) == 1
    assert "is not valid JSON (line 1" in capsys.readouterr().err
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    assert main(["report", str(listing), "--out", str(tmp_path / "r.html")]) == 1
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r.html")]) == 1
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------------------------
# Experiment results (scrub compare / diagnose / patch). Their formats live on other branches
# and are young: these documents have the shapes the sections read (see
# scrub/report/_experiment_sections.py), and each test also drops fields.
def _comparison(induction_results) -> dict:
    hyps = []
    for path in induction_results:
        d = json.loads(path.read_text())
        hyps.append(
            {
                "name": d["hypothesis"],
                "file": d["hypothesis_file"],
                "sha256": d["hypothesis_sha256"],
                "recovered": d["recovered"],
                "ci": d["recovered_ci"],
                "warnings": ["a warning of " + d["hypothesis"]],
            }
        )
    pair = {"a": hyps[0]["name"], "b": hyps[1]["name"], "difference": 0.5, "ci": [0.4, 0.6]}
    pair.update(p=0.0002, p_holm=0.0004, verdict="a recovers more")
    return {"experiment": {"model": "induction", "n": 16}, "hypotheses": hyps, "pairs": [pair]}


def test_comparison_document(induction_results):
    data = _comparison(induction_results)
    doc = _doc(data, induction_results[0])
    assert doc.kind == "comparison"
    html = build_report([doc], strict=True)
    page = Page(html)
    assert {"experiment", "forest", "pairs", "graph", "warnings", "provenance"} <= page.kinds()
    assert page.figures.count("forest") == 1 and page.figures.count("pairs") == 1
    assert page.figures.count("graph") == (2 if HAS_DOT else 0)
    assert (
        ">0.0004<" in html and "a recovers more" in html and "a warning of induction-kcomp" in html
    )
    del data["pairs"]
    data["hypotheses"][0].pop("file")
    html = build_report([_doc(data, induction_results[0])], strict=True)
    assert "the result records no pairs" in html and "no hypothesis file recorded" in html


def test_diagnosis_document():
    rows = [
        {
            "node": "prev",
            "change": "drop",
            "recovered": 0.3,
            "difference": -0.6,
            "ci": [-0.7, -0.5],
            "p": 0.001,
        },
        {
            "node": "ind",
            "change": "exact",
            "recovered": None,
            "difference": None,
            "ci": [None, None],
        },
    ]
    data = {
        "hypothesis": "h",
        "experiment": {"n": 8},
        "recovered": 0.9,
        "ci": [0.8, 1.0],
        "rows": rows,
    }
    doc = _doc(data)
    assert doc.kind == "diagnosis"
    html = build_report([doc], strict=True)
    assert Page(html).figures == ["ranking"] and "prev: drop" in html and "undefined" in html


def test_patching_documents():
    grid = [[0.1, None, 0.5], [1.0, -0.2, 0.0]]
    data = {
        "kind": "activation",
        "name": "heads",
        "axes": {"component": ["a0.h0", "a0.h1"], "position": [0, 1, "END"]},
        "normalized": grid,
        "warnings": [],
    }
    doc = _doc(data)
    assert doc.kind == "patching"
    page = Page(build_report([doc], strict=True))
    assert page.figures == ["heatmap"]
    four = {
        "kind": "path",
        "axes": {
            "sender": ["a0.h0", "a0.h1"],
            "receiver": ["a1.h0"],
            "channel": ["q", "k"],
            "position": [0],
        },
        "normalized": [[[[None], [None]], [[None], [None]]]] * 2,
        "effect": [[[[0.1], [0.2]]], [[[0.3], [-0.1]]]],
        "normalized_undefined": "source and base agree",
    }
    html = build_report([_doc(four)], strict=True)
    assert Page(html).figures == ["heatmap"]  # sender × channel; receiver and position have one
    assert "Showing effect" in html and "source and base agree" in html
    four["effect"] = [[1, 2]]  # wrong shape
    html = build_report([_doc(four)], strict=True)
    assert "does not have the axes&#39; shape" in html


def test_attention_document():
    tokens = ["<bos>", "a", "b", "a"]
    pattern = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]
    data = {
        "kind": "attention",
        "heads": ["a1.h0", "a1.h3"],
        "tokens": [tokens],
        "lengths": [4],
        "clean": {"a1.h0": [pattern.tolist()], "a1.h3": [pattern.tolist()]},
        "under": {"a1.h0": [np.eye(4).tolist()]},
        "under_label": "hypothesis kcomp",
        "mean_abs_change": {"a1.h0": 0.25},
    }
    html = build_report([_doc(data)], strict=True)
    assert Page(html).figures == ["attention", "attention"]
    assert "under hypothesis kcomp" in html and "mean |change| over all examples 0.250" in html
    del data["tokens"]
    assert "no clean attention patterns with their tokens" in build_report(
        [_doc(data)], strict=True
    )
