"""The method's invariants (DESIGN.md): full == clean, empty == baseline, seeds reproduce.

Each holds for both engines. The fraction recovered is only defined where clean and baseline
differ (a random model's loss barely does), so the hypotheses here score KL to the clean model:
0 for clean, clearly above 0 for the baseline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import scrub
from tests.conftest import all_components, base_spec

engines = pytest.mark.parametrize("engine", ["fast", "reference"])
KL = {"kind": "kl", "positions": "REP"}  # base_spec's default too; named here for the reader


def full(model_dir, paths: str) -> scrub.Hypothesis:
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": paths}]},
        "all": {"components": all_components(2, 4), "sampler": "exact"},
    }
    return scrub.hypothesis_from_dict(
        base_spec(model_dir, nodes=nodes, metric=KL), default_name="full"
    )


def layered_full(model_dir) -> scrub.Hypothesis:
    """Every component and every path, as a DAG of direct paths: each sublayer reads every one
    before it. Each model path is claimed once (by the chain of its own edges), and the tree
    has 32 nodes with copies of copies (``M1>A1>M0>A0>E``).
    """
    order = [
        ("E", ["embed"]),
        ("A0", ["a0.h0", "a0.h1", "a0.h2", "a0.h3"]),
        ("M0", ["m0"]),
        ("A1", ["a1.h0", "a1.h1", "a1.h2", "a1.h3"]),
        ("M1", ["m1"]),
        ("out", ["logits"]),
    ]
    nodes: dict = {}
    for i, (name, comps) in enumerate(order):
        nodes[name] = {"components": comps}
        if name != "out":
            nodes[name]["sampler"] = "exact"
        if i:
            nodes[name]["inputs"] = [{"node": below} for below, _ in reversed(order[:i])]
    return scrub.hypothesis_from_dict(
        base_spec(model_dir, nodes=nodes, metric=KL), default_name="layered"
    )


def empty(model_dir) -> scrub.Hypothesis:
    nodes = {"out": {"components": ["logits"]}}
    return scrub.hypothesis_from_dict(
        base_spec(model_dir, nodes=nodes, metric=KL), default_name="empty"
    )


@engines
def test_full_hypothesis_all_paths_is_exactly_clean(tiny_model_dir, tiny_model, engine):
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        result = scrub.run(full(tiny_model_dir, "all"), model=tiny_model, engine=engine)
    assert result.per_example == result.per_example_clean
    assert result.recovered == 1.0
    assert result.baseline != result.clean


@engines
# a full hypothesis resamples nothing: reported (exactly, or to float rounding), and scored
@pytest.mark.filterwarnings("ignore:the scrubbed output equals the clean model")
def test_full_hypothesis_direct_paths_matches_clean(tiny_model_dir, tiny_model, engine):
    result = scrub.run(full(tiny_model_dir, "direct"), model=tiny_model, engine=engine)
    np.testing.assert_allclose(result.per_example, result.per_example_clean, atol=1e-4)
    assert result.recovered == pytest.approx(1.0, abs=1e-3)


@engines
@pytest.mark.filterwarnings("ignore:the scrubbed output equals the clean model")
def test_full_hypothesis_as_treeified_dag_matches_clean(tiny_model_dir, tiny_model, engine):
    result = scrub.run(layered_full(tiny_model_dir), model=tiny_model, engine=engine)
    assert {"M1", "out>A1", "M1>A1", "M1>A1>M0>A0>E", "out>E"} <= set(result.draws)
    assert sum(1 for _ in scrub.treeify(layered_full(tiny_model_dir)).walk()) == 32
    np.testing.assert_allclose(result.per_example, result.per_example_clean, atol=1e-4)


@engines
def test_empty_hypothesis_is_exactly_baseline(tiny_model_dir, tiny_model, engine):
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        result = scrub.run(empty(tiny_model_dir), model=tiny_model, engine=engine)
    assert result.per_example == result.per_example_baseline
    assert result.recovered == 0.0
    assert result.recovered_ci == (0.0, 0.0)


@engines
def test_same_seed_gives_identical_json(tiny_model_dir, tiny_model, engine):
    hyp = full(tiny_model_dir, "direct")
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {
            "components": ["a1.h0", "a1.h2"],
            "sampler": "uncond",
            "inputs": [{"node": "p", "channels": "k"}],
        },
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes))
    a = scrub.run(hyp, model=tiny_model, engine=engine, seed=3).to_json()
    b = scrub.run(hyp, model=tiny_model, engine=engine, seed=3).to_json()
    c = scrub.run(hyp, model=tiny_model, engine=engine, seed=4).to_json()
    assert a == b
    assert json.loads(a)["draws"] != json.loads(c)["draws"]


@engines
def test_hypotheses_sharing_a_node_share_its_draws(tiny_model_dir, tiny_model, engine):
    def hyp(extra_heads):
        nodes = {
            "out": {"components": ["logits"], "inputs": [{"node": "h"}]},
            "h": {"components": ["a1.h0", *extra_heads], "sampler": "uncond"},
        }
        return scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes))

    a = scrub.run(hyp([]), model=tiny_model, engine=engine)
    b = scrub.run(hyp(["a1.h3"]), model=tiny_model, engine=engine)
    assert a.reference == b.reference
    assert a.draws == b.draws
    assert a.per_example_baseline == b.per_example_baseline
    assert a.per_example != b.per_example


def test_identical_generate_draws_reuse_their_rows(tiny_model_dir, tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "p", "channels": "in"}]},
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes))
    ds = scrub.make_dataset_for(hyp, seed=0)
    first = scrub.run(hyp, model=tiny_model, dataset=ds)
    size = len(ds)
    assert size > ds.n_base  # the generator appended examples
    again = scrub.run(hyp, model=tiny_model, dataset=ds)
    assert len(ds) == size  # ... and the same draw reused them
    assert again.draws == first.draws
    other_seed = scrub.run(hyp, model=tiny_model, dataset=ds, seed=1)
    assert len(ds) > size and other_seed.draws["p"] != first.draws["p"]
