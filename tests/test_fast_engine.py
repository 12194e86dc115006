"""The fast engine against the reference engine, and its caching and chunking.

The backbone: on every shipped hypothesis and on random hypotheses (random trees of nodes mapping
random heads, MLPs and embeddings at random positions through random channels, direct and all
paths, every sampler kind), the two engines agree to 1e-4 on log-probabilities.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._plan import make_plan
from scrub.testing import save_random_gpt2
from tests.conftest import base_spec, shipped_hypotheses, stand_in
from tests.random_hypotheses import random_nodes

ATOL = 1e-4


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    """A random 3-layer, 3-head GPT-2 with MLPs: more layers for longer paths."""
    d = save_random_gpt2(
        tmp_path_factory.mktemp("deep"), n_layers=3, n_heads=3, d_model=24, init_std=0.2, seed=2
    )
    return scrub.load_model(str(d))


def logprobs(t: torch.Tensor) -> torch.Tensor:
    return t.double().log_softmax(-1)


def sampled(model, nodes, *, n=8, seed=0):
    hyp = scrub.hypothesis_from_dict(base_spec(model.path, nodes=nodes))
    ds = make_dataset_for(hyp, seed=seed)
    return scrub.sample_tree(scrub.bind(hyp, model, ds), n=n, seed=seed)


def assert_engines_agree(model, tree, **fast_options):
    ref = evaluate_reference(model, tree)
    fast = FastEngine(**fast_options)(model, tree)
    torch.testing.assert_close(logprobs(fast), logprobs(ref), atol=ATOL, rtol=0)


def _random_case(models, seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = models[seed % len(models)]
    nodes = random_nodes(rng, model.shape, max_depth=int(rng.integers(1, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        tree = sampled(model, nodes, seed=seed)
    # Odd seeds compute multi-layer nodes by kernels, even seeds in output groups.
    assert_engines_agree(
        model, tree, max_batch_rows=int(rng.choice([5, 64, 4096])), kernels=bool(seed % 2)
    )


@pytest.mark.parametrize("seed", range(36))
def test_fast_equals_reference_on_random_hypotheses(tiny_model, one_layer_model, deep_model, seed):
    _random_case([tiny_model, one_layer_model, deep_model], seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(36, 400))
def test_fast_equals_reference_on_random_hypotheses_slow(
    tiny_model, one_layer_model, deep_model, seed
):
    _random_case([tiny_model, one_layer_model, deep_model], seed)


@pytest.mark.parametrize("path", shipped_hypotheses())
def test_fast_equals_reference_on_shipped_hypotheses(path, gpt2_shaped_dir):
    model = scrub.load_model(
        stand_in(path, gpt2_shaped_dir) or scrub.load_hypothesis(path).spec.model
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        fast = scrub.run(path, n=24, model=model, engine="fast")
        ref = scrub.run(path, n=24, model=model, engine="reference")
    assert fast.draws == ref.draws
    np.testing.assert_allclose(fast.per_example, ref.per_example, atol=ATOL, rtol=0)
    np.testing.assert_allclose(fast.per_example_baseline, ref.per_example_baseline, atol=ATOL)
    assert fast.per_example_clean == ref.per_example_clean


MULTI_LAYER = {
    "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
    "h": {
        "components": ["a1.h1", "a1.h2", "m1"],
        "sampler": "uncond",
        "inputs": [{"node": "p", "channels": ["k", "in"]}],
    },
    "p": {"components": ["a0.h3"], "sampler": "uncond"},
}


@pytest.mark.parametrize("kernels", [False, True])
def test_a_node_across_layers_gets_an_output_group_and_stays_isolated(tiny_model, kernels):
    tree = sampled(tiny_model, MULTI_LAYER)
    plan = make_plan(tiny_model, tree, kernels=kernels)
    roles = [(g.node.name, g.fused, bool(g.sets), g.virtual) for g in plan.groups]
    assert roles == [
        ("h", False, False, False),
        ("h", False, True, kernels),
        ("out", True, False, False),
    ]
    assert [src.node.name for src, _ in plan.leaves] == ["p"]
    assert_engines_agree(tiny_model, tree, kernels=kernels)


def test_kernels_reproduce_the_shipped_and_random_models(tiny_model, deep_model):
    from scrub.engine._kernels import kernels_for

    assert kernels_for(tiny_model) is not None
    assert kernels_for(deep_model) is not None
    assert kernels_for(scrub.load_model("induction")) is not None


def test_groups_stop_after_the_last_layer_they_are_read_at(deep_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "a", "channels": "in"}]},
        "a": {"components": ["a1.h0"], "sampler": "uncond", "inputs": [{"node": "b"}]},
        "b": {"components": ["a0.h2"], "sampler": "uncond"},
    }
    tree = sampled(deep_model, nodes)
    plan = make_plan(deep_model, tree)
    assert [(stop, [plan.groups[g].node.name for g in gids]) for stop, gids in plan.passes] == [
        (2, ["a"]),
        (3, ["out"]),
    ]
    assert_engines_agree(deep_model, tree)


def test_identical_copies_of_a_dag_node_are_planned_once(tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "a"}, {"node": "b"}]},
        "a": {"components": ["a1.h0"], "other": "exact", "inputs": [{"node": "c", "channels": "k"}]},
        "b": {"components": ["a1.h1"], "other": "exact", "inputs": [{"node": "c", "channels": "q"}]},
        "c": {"components": ["a0.h2", "m0"], "other": "exact", "inputs": [{"node": "d", "channels": "in"}]},
        "d": {"components": ["a0.h1"], "sampler": "exact"},  # each copy draws alone: same draws
    }  # fmt: skip
    tree = sampled(tiny_model, nodes)
    assert {"a>c", "b>c"} <= {n.name for n in tree.root.walk()}
    plan = make_plan(tiny_model, tree)
    assert [g.node.name for g in plan.groups].count("a>c") + [
        g.node.name for g in plan.groups
    ].count("b>c") == 2  # one reading and one output group, for both copies
    assert_engines_agree(tiny_model, tree)


def test_chunk_sizes_do_not_change_results(tiny_model):
    tree = sampled(tiny_model, MULTI_LAYER, n=13)
    whole = FastEngine()(tiny_model, tree)
    for rows in (4, 7, 26):
        chunked = FastEngine(max_batch_rows=rows)(tiny_model, tree)
        # Identical up to float32 rounding of differently shaped matrix products.
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_max_batch_rows_caps_every_forward_pass(tiny_model):
    tree = sampled(tiny_model, MULTI_LAYER, n=13)
    sizes: list[int] = []
    hook = tiny_model.bridge.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(args[0].shape[0]), with_kwargs=True
    )
    try:
        FastEngine(max_batch_rows=6)(tiny_model, tree)
    finally:
        hook.remove()
    assert sizes and max(sizes) <= 6


def test_positions_only_logits_match_full_logits(tiny_model):
    tree = sampled(tiny_model, MULTI_LAYER)
    pos = np.stack([np.arange(3) + i for i in range(len(tree.reference))])
    full = FastEngine()(tiny_model, tree)
    some = FastEngine()(tiny_model, tree, positions=pos)
    batch = torch.arange(len(pos))[:, None]
    torch.testing.assert_close(some, full[batch, torch.as_tensor(pos)], atol=1e-5, rtol=0)


def test_shared_cache_serves_leaves_and_gives_identical_results(tiny_model_dir, tiny_model):
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=MULTI_LAYER))
    ds = make_dataset_for(hyp, seed=0)
    cache = ActivationCache()
    first = scrub.run(hyp, model=tiny_model, dataset=ds, cache=cache, seed=1)
    assert cache.rows_computed > 0
    cached = {key: int((slots >= 0).sum()) for key, slots in cache._slots.items()}
    again = scrub.run(hyp, model=tiny_model, dataset=ds, cache=cache, seed=1)
    # Every leaf row is served from the cache. (The second run's root, whose child subtree is
    # now served too, starts later and asks the cache for the plain outputs it subtracts.)
    assert {key: int((cache._slots[key] >= 0).sum()) for key in cached} == cached
    assert again.to_json() == first.to_json()
    alone = scrub.run(hyp, model=tiny_model, dataset=ds, seed=1)
    assert alone.to_json() == first.to_json()


def test_shared_subtrees_are_computed_once_and_served_from_the_cache(tiny_model_dir, tiny_model):
    def hyp(extra):
        nodes = {**MULTI_LAYER, "out": {"components": ["logits"], "inputs": [
            {"node": "h", "channels": "in"}, *([{"node": "e", "channels": "in"}] if extra else [])
        ]}}  # fmt: skip
        if extra:
            nodes["e"] = {"components": ["a0.h0"], "sampler": "uncond"}
        return scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=nodes))

    ds = make_dataset_for(hyp(False), seed=0)
    cache = ActivationCache()
    scrub.run(hyp(False), model=tiny_model, dataset=ds, cache=cache)
    tree = scrub.sample_tree(scrub.bind(hyp(True), tiny_model, ds), n=24, seed=0)
    plan = make_plan(tiny_model, tree, known=lambda sig: cache.knows(tiny_model, ds, sig))
    assert [g.node.name for g in plan.groups] == ["out"]  # h's subtree is known: only the root
    assert {s.node.name for s, _ in plan.leaves} == {"h", "e"}
    shared = scrub.run(hyp(True), model=tiny_model, dataset=ds, cache=cache)
    alone = scrub.run(hyp(True), model=tiny_model, dataset=ds)
    np.testing.assert_allclose(shared.per_example, alone.per_example, atol=1e-5, rtol=0)


def test_cache_resets_for_another_dataset(tiny_model_dir, tiny_model):
    """Even when the first dataset is freed: the cache holds it, so its id is never reused."""
    hyp = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=MULTI_LAYER))
    cache = ActivationCache()
    a = scrub.run(hyp, model=tiny_model, dataset=make_dataset_for(hyp, seed=0), cache=cache)
    b = scrub.run(hyp, model=tiny_model, dataset=make_dataset_for(hyp, seed=5), cache=cache)
    c = scrub.run(hyp, model=tiny_model, dataset=make_dataset_for(hyp, seed=5))
    assert b.to_json() == c.to_json()
    assert a.per_example != b.per_example


def test_fast_engine_rejects_a_zero_batch():
    with pytest.raises(ValueError, match="max_batch_rows must be at least 1"):
        FastEngine(max_batch_rows=0)
    with pytest.raises(ValueError, match="max_batch_rows must be at least 1"):
        ActivationCache(max_batch_rows=0)
