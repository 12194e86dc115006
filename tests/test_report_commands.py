"""``--report`` on ``scrub compare``, ``scrub diagnose`` and ``scrub patch``: the page each
writes, checked against the JSON the same command writes (``--out``), and ``scrub report`` of
those JSON files (with ``kind`` keys, and old files without them)."""

from __future__ import annotations

import html as html_module
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml

from scrub.cli import main
from scrub.report import build_report, load_document
from scrub.report._diagnosis_sections import loss_overlay
from scrub.report._documents import Document
from scrub.report.figures import loss_colour
from tests.conftest import base_spec
from tests.test_report import Page

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None
SMALL_INDUCTION = {
    "generator": "induction",
    "params": {"size": 300, "segment_len": 5, "prefix_len": 1, "gap_len": 1, "suffix_len": 1},
}


def _three(value) -> str:
    return f"{value:.3f}"


def _tiny_file(folder: Path, model_dir, name: str, heads: list[str]) -> Path:
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {"components": heads, "sampler": "exact", "inputs": [{"node": "p", "channels": "k"}]},
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **base_spec(model_dir, nodes=nodes)}))
    return path


@pytest.fixture(scope="module")
def tiny_files(tiny_model_dir, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("hyps")
    return [
        _tiny_file(folder, tiny_model_dir, "wide", ["a1.h0", "a1.h1"]),
        _tiny_file(folder, tiny_model_dir, "narrow", ["a1.h3"]),
    ]


@pytest.fixture(scope="module")
def compared(tiny_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    argv = ["compare", *map(str, tiny_files), "--seeds", "2", "--random-controls", "1"]
    argv += ["--out", str(out / "cmp.json"), "--report", str(out / "cmp.html")]
    assert main(argv) == 0
    return out / "cmp.json", out / "cmp.html"


@pytest.fixture(scope="module")
def diagnosed(tiny_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("diag")
    argv = ["diagnose", str(tiny_files[0]), "--out", str(out / "d.json")]
    assert main([*argv, "--report", str(out / "d.html")]) == 0
    return out / "d.json", out / "d.html"


def test_compare_report_matches_its_json(compared):
    json_path, html_path = compared
    data = json.loads(json_path.read_text())
    assert data["kind"] == "comparison"
    html = html_path.read_text()
    page = Page(html)
    assert {"experiment", "forest", "pairs", "distribution", "graph", "warnings"} <= page.kinds()
    assert "provenance" in page.kinds() and "could not be drawn" not in html
    assert page.figures.count("forest") == 1 and page.figures.count("pairs") == 1
    assert page.figures.count("distribution") == 1
    assert page.figures.count("graph") == (2 if HAS_DOT else 0)
    for h in data["hypotheses"]:
        assert f">{_three(h['recovered'])}<" in html
        assert f"[{_three(h['total_ci'][0])}, {_three(h['total_ci'][1])}]" in html
        assert h["sha256"] in html
        control = h["controls"]
        assert f"{control['percentile']:.0f} of {control['count']}" in html
    pair = data["pairs"][0]
    assert f">{_three(pair['difference'])}<" in html and pair["verdict"] in html
    assert f"ε = {data['experiment']['margin']:g}" in html
    assert "scrub compare" in html  # the command line


def test_report_of_compare_json_and_of_an_old_file(compared, tmp_path):
    json_path, _ = compared
    out = tmp_path / "again.html"
    assert main(["report", str(json_path), "--out", str(out)]) == 0
    assert {"forest", "pairs", "distribution"} <= Page(out.read_text()).kinds()
    old = json.loads(json_path.read_text())
    del old["kind"]  # as scrub compare wrote it before it had one
    (tmp_path / "old.json").write_text(json.dumps(old))
    doc = load_document(tmp_path / "old.json")
    assert doc.kind == "comparison"
    assert {"forest", "pairs"} <= Page(build_report([doc], strict=True)).kinds()


def test_diagnose_report_matches_its_json(diagnosed):
    json_path, html_path = diagnosed
    data = json.loads(json_path.read_text())
    assert data["kind"] == "diagnosis" and data["file"] and data["sha256"]
    assert math.isfinite(data["clean"]) and math.isfinite(data["baseline"])
    html = html_path.read_text()
    page = Page(html)
    assert {"experiment", "ranking", "graph", "skipped", "warnings", "provenance"} <= page.kinds()
    assert page.figures.count("ranking") == 1
    for row in data["rows"]:
        assert f"{row['node']}: {row['change']}" in html
        if row["difference"] is not None:
            assert f">{row['difference']:.3f}<" in html
    if not HAS_DOT:
        return
    assert page.figures.count("graph") == 1 and page.figures.count("legend") == 1
    # each node's colour is its largest own loss (its sampler, its components), cut excluded
    own = {}
    for row in data["rows"][1:]:
        if re.match(r"drop .+→.+ channel ", row["change"]) or row["change"] == "cut inputs":
            continue
        own[row["node"]] = max(own.get(row["node"], -math.inf), -row["difference"])
    scale = max(abs(-r["difference"]) for r in data["rows"][1:] if r["change"] != "cut inputs")
    assert own
    for node, loss in own.items():
        assert f'fill="{loss_colour(loss, scale)}"' in html, node
        text = rf"worst: [^<]*loss {re.escape(f'{loss:+.3f}')}"
        assert re.search(text, html_module.unescape(html)), node


def test_report_of_diagnose_json_and_of_an_old_file(diagnosed, tmp_path):
    json_path, _ = diagnosed
    out = tmp_path / "again.html"
    assert main(["report", str(json_path), "--out", str(out)]) == 0
    assert {"ranking", "graph"} <= Page(out.read_text()).kinds()
    old = json.loads(json_path.read_text())
    for key in ("kind", "file", "sha256", "clean", "baseline", "warnings"):
        del old[key]  # as scrub diagnose wrote it before
    (tmp_path / "old.json").write_text(json.dumps(old))
    doc = load_document(tmp_path / "old.json")
    assert doc.kind == "diagnosis"
    html = build_report([doc], strict=True)
    assert "the diagnosis records no hypothesis file" in html
    assert "the result records no warnings list" in html and "ranking" in Page(html).kinds()


def test_a_changed_hypothesis_is_not_coloured(diagnosed, tiny_files, tmp_path):
    json_path, _ = diagnosed
    data = json.loads(json_path.read_text())
    changed = tmp_path / "h.yaml"
    changed.write_text(tiny_files[0].read_text() + "\n# edited\n")
    data["file"] = str(changed)
    html = build_report([Document(data=data, kind="diagnosis", source="d.json")], strict=True)
    assert "has changed since this result was made" in html


def test_loss_overlay_places_rows_on_nodes_and_edges(tiny_files):
    from scrub._hypothesis import load_hypothesis

    hyp = load_hypothesis(tiny_files[0])
    rows = [
        {"node": "—", "change": "keep", "difference": 0.0},
        {"node": "out", "change": "cut inputs", "difference": -0.9},
        {"node": "h", "change": "cut inputs", "difference": -0.8},
        {"node": "h", "change": "drop a1.h0", "difference": -0.2},
        {"node": "h", "change": "drop a1.h1", "difference": 0.1},
        {"node": "h", "change": "drop p→h channel k (the edge)", "difference": -0.4},
        {"node": "p", "change": "sampler → uncond", "difference": None},
    ]
    overlay, scale, matched = loss_overlay(hyp, rows)
    assert matched == 5 and scale == pytest.approx(0.4)  # cuts do not set the scale
    assert set(overlay.node_fill) == {"h"}  # out has only its cut; p's row is undefined
    assert overlay.node_fill["h"] == loss_colour(0.2, 0.4)
    assert overlay.node_note["h"] == "worst: drop a1.h0, loss +0.200; cut inputs: loss +0.800"
    assert overlay.node_note["out"] == "cut inputs: loss +0.900"
    assert overlay.edge_colour == {("p", "h"): loss_colour(0.4, 0.4)}
    assert overlay.edge_note == {("p", "h"): "drop k: loss +0.400"}
    assert loss_colour(0.4, 0.4) != loss_colour(-0.4, 0.4) != loss_colour(0.0, 0.4)


def test_patch_report_matches_its_json(tmp_path):
    spec = {
        "name": "heads",
        "kind": "activation",
        "model": "induction",
        "dataset": SMALL_INDUCTION,
        "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
        "defaults": {"n": 6, "seed": 0},
        "base": "uncond",
        "source": "exact",
        "components": "heads",
        "positions": "each",
    }
    exp = tmp_path / "heads.yaml"
    exp.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    argv = [
        "patch",
        str(exp),
        "--out",
        str(out),
        "--no-figures",
        "--report",
        str(tmp_path / "p.html"),
    ]
    assert main(argv) == 0
    data = json.loads((out / "heads.json").read_text())
    html = (tmp_path / "p.html").read_text()
    page = Page(html)
    assert {"setup", "heatmap", "cells", "warnings", "provenance"} <= page.kinds()
    assert page.figures == ["heatmap"] and "could not be drawn" not in html
    key = "normalized" if data["normalized_undefined"] is None else "effect"
    flat = [(abs(v), v) for row in data[key] for v in row if v is not None]
    assert f">{max(flat)[1]:.3f}<" in html  # the largest cell is in the table
    assert f"{data['clean']:.4f}" in html and data["sha256"] in html
    # scrub report of the JSON scrub patch wrote
    assert main(["report", str(out / "heads.json"), "--out", str(tmp_path / "r.html")]) == 0
    assert {"heatmap", "cells"} <= Page((tmp_path / "r.html").read_text()).kinds()


def test_attention_report(tmp_path):
    spec = {
        "name": "att",
        "kind": "attention",
        "model": "induction",
        "dataset": SMALL_INDUCTION,
        "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
        "defaults": {"n": 4, "seed": 0},
        "base": "exact",
        "source": "uncond",
        "heads": ["a1.h0"],
        "under": {"components": ["a0.h1"]},
    }
    exp = tmp_path / "att.yaml"
    exp.write_text(yaml.safe_dump(spec))
    report = tmp_path / "a.html"
    assert main(["patch", str(exp), "--report", str(report)]) == 0
    page = Page(report.read_text())
    assert {"setup", "attention", "warnings", "provenance"} <= page.kinds()
    assert page.figures == ["attention"]


@pytest.mark.parametrize("command", ["compare", "diagnose", "patch"])
def test_report_to_a_folder_fails_before_running(command, tmp_path, capsys):
    argv = [command, str(ROOT / "hypotheses" / "induction" / "kcomp.yaml")]
    if command == "patch":
        argv = [command, str(ROOT / "experiments" / "induction" / "activation_heads.yaml")]
    assert main([*argv, "--report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"--report {tmp_path} is a directory" in err and "x.html" in err


def test_graph_coloured_by_a_diagnosis(diagnosed, tiny_files, tmp_path, capsys):
    json_path, _ = diagnosed
    assert main(["graph", str(tiny_files[0]), "--diagnosis", str(json_path)]) == 0
    dot = capsys.readouterr().out
    assert "worst: " in dot and 'fillcolor="#' in dot and "penwidth=2.6" in dot
    if HAS_DOT:
        out = tmp_path / "g.svg"
        assert (
            main(["graph", str(tiny_files[0]), "--diagnosis", str(json_path), "--out", str(out)])
            == 0
        )
        assert "worst: " in html_module.unescape(out.read_text())
    # a diagnosis of another file, or not a diagnosis: refused
    assert main(["graph", str(tiny_files[1]), "--diagnosis", str(json_path)]) == 1
    assert "may diagnose another file or version" in capsys.readouterr().err
    other = tmp_path / "run.json"
    other.write_text(json.dumps({"kind": "activation", "axes": {}}))
    assert main(["graph", str(tiny_files[0]), "--diagnosis", str(other)]) == 1
    assert "is a 'patching' result, not a diagnosis" in capsys.readouterr().err
