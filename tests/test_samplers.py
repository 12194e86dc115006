"""Each sampler's contract, on the induction dataset."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import scrub
from scrub._samplers import SampleContext
from scrub._tree import stream


def ctx(dataset, *, seed=0, together=None, node="n"):
    return SampleContext(
        dataset=dataset,
        rng=np.random.default_rng(seed),
        node=node,
        together={} if together is None else together,
        together_rng=lambda group: stream(seed, "together", group),
    )


PARENT = np.arange(0, 100, 3, dtype=np.int64)


def test_exact_keeps_rows(dataset):
    out = scrub.ExactSampler().sample(PARENT, ctx(dataset))
    np.testing.assert_array_equal(out, PARENT)


def test_uncond_draws_pool_rows_independent_of_parent(dataset):
    a = scrub.UncondSampler().sample(PARENT, ctx(dataset, seed=1))
    b = scrub.UncondSampler().sample(PARENT[::-1].copy(), ctx(dataset, seed=1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == PARENT.shape and (a >= 0).all() and (a < dataset.n_base).all()
    assert (a != PARENT).mean() > 0.9


def test_cond_keeps_the_feature_and_varies_the_rest(dataset):
    sampler = scrub.CondSampler(("first_token",))
    out = sampler.sample(PARENT, ctx(dataset))
    first = dataset.fields["first_token"]
    np.testing.assert_array_equal(first[out], first[PARENT])
    assert (out != PARENT).mean() > 0.5  # classes of ~200/127 examples: mostly other rows


def test_cond_on_several_features_keeps_all(dataset):
    out = scrub.CondSampler(("first_token", "s1")).sample(PARENT, ctx(dataset))
    for name in ("first_token", "s1"):
        np.testing.assert_array_equal(dataset.fields[name][out], dataset.fields[name][PARENT])


def test_cond_draws_uniformly_within_a_class(dataset):
    class_rows = np.flatnonzero(dataset.fields["s1"] == dataset.fields["s1"][0])
    parent = np.zeros(4000, dtype=np.int64)
    out = scrub.CondSampler(("s1",)).sample(parent, ctx(dataset))
    counts = np.bincount(out, minlength=dataset.n_base)[class_rows]
    assert set(np.unique(out)) == set(class_rows)
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform within the class


def test_cond_on_an_injective_feature_records_a_warning(dataset):
    c = ctx(dataset, node="tok")
    out = scrub.CondSampler(("segment",)).sample(PARENT, c)
    np.testing.assert_array_equal(out, PARENT)
    assert len(c.warnings) == 1
    assert "found only the reference example itself for 100% of rows" in c.warnings[0]
    assert "'tok'" in c.warnings[0] and "generate" in c.warnings[0]


def test_uncond_together_shares_one_draw(dataset):
    together: dict = {}
    s = scrub.UncondTogetherSampler("g")
    a = s.sample(PARENT, ctx(dataset, seed=1, together=together))
    b = s.sample(PARENT, ctx(dataset, seed=2, together=together))
    c = scrub.UncondTogetherSampler("h").sample(PARENT, ctx(dataset, seed=1, together=together))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_fixed_tiles_its_rows(dataset):
    out = scrub.FixedSampler((5, 7)).sample(PARENT[:5], ctx(dataset))
    np.testing.assert_array_equal(out, [5, 7, 5, 7, 5])
    with pytest.raises(scrub.HypothesisError, match="outside the dataset pool"):
        scrub.FixedSampler((10_000,)).sample(PARENT, ctx(dataset))


def test_generate_makes_new_examples_with_the_same_feature(dataset):
    n_before = len(dataset)
    out = scrub.GenerateSampler("segment").sample(PARENT, ctx(dataset))
    assert (out >= n_before).all() and len(dataset) == n_before + len(PARENT)
    np.testing.assert_array_equal(dataset.fields["segment"][out], dataset.fields["segment"][PARENT])
    tokens = dataset.tokens.numpy()
    a2 = dataset.positions["A2"]
    rows = np.arange(len(out))[:, None]
    np.testing.assert_array_equal(tokens[out][rows, a2[out]], tokens[PARENT][rows, a2[PARENT]])
    assert (tokens[out] != tokens[PARENT]).any(axis=1).all(), "the rest is freshly drawn"


def test_generate_for_a_feature_without_generator_is_an_error(dataset):
    with pytest.raises(
        scrub.HypothesisError, match="cannot generate examples matching feature 's1'"
    ):
        scrub.GenerateSampler("s1").sample(PARENT, ctx(dataset))


def test_sampler_reprs():
    assert repr(scrub.CondSampler(("segment",))) == "CondSampler(features=['segment'])"
    assert repr(scrub.UncondTogetherSampler("g")) == "UncondTogetherSampler(group='g')"
    assert repr(scrub.ExactSampler()) == "ExactSampler()"
    assert repr(scrub.FixedSampler((1, 2))) == "FixedSampler(rows=[1, 2])"
    assert repr(scrub.GenerateSampler("segment")) == "GenerateSampler(feature='segment')"


def test_feature_aliases_reach_the_samplers(tiny_model_dir):
    from tests.conftest import base_spec

    spec = base_spec(
        tiny_model_dir,
        features={"start": "s1", "seg": "segment"},
        nodes={
            "out": {"components": ["logits"], "inputs": [{"node": "a"}, {"node": "b"}]},
            "a": {"components": ["a1.h0"], "sampler": {"kind": "cond", "features": ["start"]}},
            "b": {"components": ["a1.h1"], "feature": "seg", "sampler": "generate"},
        },
    )
    hyp = scrub.hypothesis_from_dict(spec)
    assert hyp.node("a").sampler == scrub.CondSampler(("s1",))
    assert hyp.node("b").sampler == scrub.GenerateSampler("segment")
    assert hyp.node("b").feature == "segment"
