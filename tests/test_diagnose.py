"""``scrub.diagnose``: variants of a hypothesis, paired against it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scrub
from scrub.experiments.diagnose import variants
from tests.conftest import all_components, base_spec


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return fn(*args, **kwargs)


def _hyp(model_dir):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {
            "components": ["a1.h0", "a1.h2"],
            "sampler": "exact",
            "inputs": [{"node": "p", "channels": ["k", "v"]}],
        },
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    return scrub.hypothesis_from_dict(base_spec(model_dir, nodes=nodes), default_name="h")


def test_variants_cover_samplers_subtrees_components_and_channels(tiny_model_dir):
    found = {(node, change) for node, change, _ in variants(_hyp(tiny_model_dir))}
    assert found == {
        ("out", "cut inputs"),
        ("out", "drop h→out channel in (the edge)"),
        ("h", "sampler → uncond"),
        ("h", "cut inputs"),
        ("h", "drop a1.h0"),
        ("h", "drop a1.h2"),
        ("h", "drop p→h channel k"),
        ("h", "drop p→h channel v"),
        ("p", "sampler → uncond"),
        ("p", "drop a0.h1 (the node)"),
    }


def test_diagnose_rows_equal_separate_runs(tiny_model_dir, tiny_model):
    hyp = _hyp(tiny_model_dir)
    diag = _quiet(scrub.diagnose, hyp, model=tiny_model)
    assert diag.rows[0].change == "keep" and diag.rows[0].difference == 0.0
    assert diag.rows[0].recovered == _quiet(scrub.run, hyp, model=tiny_model).recovered
    differences = [r.difference for r in diag.rows[1:]]
    assert differences == sorted(differences)  # largest loss first
    for node, change, data in variants(hyp):
        if (node, change) != ("h", "drop p→h channel v"):
            continue
        variant = scrub.hypothesis_from_dict(data)
        alone = _quiet(scrub.run, variant, model=tiny_model)
        row = next(r for r in diag.rows if (r.node, r.change) == (node, change))
        assert row.recovered == pytest.approx(alone.recovered, abs=1e-6)
    cut = next(r for r in diag.rows if (r.node, r.change) == ("out", "cut inputs"))
    assert cut.recovered == 0.0  # the root alone is the baseline
    assert "keep" in diag.table()
    assert repr(diag) == f"Diagnosis('h', {len(diag.rows)} rows, by=None)"


def test_diagnose_full_hypothesis_keeps_everything(tiny_model_dir, tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": "all"}]},
        "all": {"components": all_components(2, 4), "sampler": "exact"},
    }
    full = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes))
    diag = _quiet(scrub.diagnose, full, model=tiny_model)
    keep = [r for r in diag.rows if r.change == "keep"]
    assert keep and all(r.recovered == 1.0 and r.difference == 0.0 for r in keep)
    # With all paths mapped, an unmapped head or MLP is recomputed from mapped (clean) inputs,
    # so it keeps everything too; an unmapped embedding reads the other inputs' tokens.
    dropped = {r.change: r.recovered for r in diag.rows if r.node == "all"}
    assert len(dropped) == 12 + 1  # 8 heads, 2 MLPs, 2 embeddings, the sampler; a leaf: no cut
    for comp in all_components(2, 4)[1:]:
        assert dropped[f"drop {comp}"] == pytest.approx(1.0, abs=1e-6)
    assert abs(dropped["drop tok_embed"] - 1.0) > 1e-3


def test_diagnose_breaks_examples_down_by_a_field(tiny_model_dir, tiny_model):
    spec = base_spec(tiny_model_dir, nodes=_hyp(tiny_model_dir).spec.model_dump()["nodes"])
    spec["nodes"]["p"]["sampler"] = "uncond"  # a generator could not fill the new field
    hyp = scrub.hypothesis_from_dict(spec)
    ds = scrub.make_dataset_for(hyp, seed=0)
    ds.fields["kind"] = np.arange(len(ds)) % 2
    diag = _quiet(scrub.diagnose, hyp, model=tiny_model, dataset=ds)
    assert diag.by == "kind" and diag.groups == ["0", "1"]
    assert set(diag.rows[0].by_group) == {"0", "1"}
    with pytest.raises(scrub.HypothesisError, match="no field 'nope'"):
        scrub.diagnose(hyp, model=tiny_model, dataset=ds, by="nope")


def test_cli_diagnose_prints_the_ranked_table(tiny_model_dir, tmp_path, capsys):
    import json

    import yaml

    from scrub.cli import main

    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(_hyp(tiny_model_dir).spec.model_dump(mode="json")))
    out = tmp_path / "diag.json"
    assert main(["diagnose", str(path), "--n", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "keep" in printed and "drop a1.h0" in printed
    data = json.loads(out.read_text())
    assert data["rows"][0]["change"] == "keep" and data["experiment"]["n"] == 12
