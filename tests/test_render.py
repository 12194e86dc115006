"""Drawing hypotheses as Graphviz DOT."""

from __future__ import annotations

import yaml

import scrub
from scrub._render import to_dot
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


def test_dot_shows_nodes_samplers_and_edges(tiny_model_dir):
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=NODES), default_name="g")
    source = to_dot(hyp).source
    assert ("a1.h0@REP" in source and "CondSampler(features=[&#x27;s1&#x27;])" in source) or (
        "CondSampler(features=['s1'])" in source
    )
    assert "prev -> ind" in source and 'label="k @all (all)"' in source and "style=dashed" in source
    assert "ind -> out" in source and "doubleoctagon" in source


def test_cli_graph_writes_dot(tmp_path, tiny_model_dir):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(base_spec(tiny_model_dir, nodes=NODES)))
    out = tmp_path / "g.dot"
    assert main(["graph", str(path), "--out", str(out)]) == 0
    assert out.read_text().startswith("digraph g {")
