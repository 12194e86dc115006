"""Drawing hypotheses as Graphviz DOT."""

from __future__ import annotations

import shutil

import pytest
import yaml

import scrub
from scrub._render import render, to_dot, to_svg
from scrub.cli import main
from tests.conftest import base_spec

NODES = {
    "out": {"components": ["logits"], "inputs": [{"node": "ind", "channels": "in"}]},
    "ind": {
        "components": ["a1.h0@REP"],
        "inputs": [{"node": "prev", "channels": "k", "paths": "all"}],
    },
    "prev": {"components": ["a0.h1"], "sampler": {"kind": "cond", "features": "s1"}},
}


def test_dot_labels_are_the_files_words(tiny_model_dir):
    nodes = {
        **NODES,
        "out": {
            "components": ["logits"],
            "other": {"kind": "cond", "features": ["s1", "s2"]},
            "inputs": [{"node": "ind", "channels": "in"}, {"node": "emb", "positions": [0, 1]}],
        },
        "emb": {"components": ["embed"], "feature": "seg", "sampler": {"kind": "generate"}},
    }
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes), default_name="g")
    source = to_dot(hyp).source
    assert "Sampler(" not in source  # no Python reprs
    assert "a1.h0@REP" in source and "sampler: cond on [s1]" in source
    assert "other: cond on [s1, s2]" in source  # other: samplers are shown
    assert "sampler: exact (default)" in source  # ind sets none
    assert "sampler: generate seg" in source and ">embed<" in source  # as written, not expanded
    assert "runs on the reference batch" in source
    assert 'prev -> ind [label="k at all positions\nall paths" style=dashed]' in source
    assert 'ind -> out [label="in at the components\' positions\ndirect" style=solid]' in source
    assert 'emb -> out [label="in at 0,1\ndirect" style=solid]' in source
    assert "peripheries=2" in source  # the root


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_and_png(tiny_model_dir, tmp_path):
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=NODES), default_name="g")
    svg = to_svg(hyp, id_prefix="x-")
    assert svg.startswith("<svg") and "cond on [s1]" in svg and 'id="x-graph0"' in svg
    png = render(hyp, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_format_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(base_spec(tiny_model_dir, nodes=NODES)))
    assert main(["graph", str(path), "--out", str(tmp_path / "g.pdf")]) == 1
    assert "write one of .dot, .gv, .svg, .png" in capsys.readouterr().err


def test_cli_graph_writes_dot(tmp_path, tiny_model_dir):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(base_spec(tiny_model_dir, nodes=NODES)))
    out = tmp_path / "g.dot"
    assert main(["graph", str(path), "--out", str(out)]) == 0
    assert out.read_text().startswith("digraph g {")
