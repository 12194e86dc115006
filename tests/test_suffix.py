"""Suffix blocks: a patched root's blocks at the positions its patches reach only
(:mod:`scrub.engine._suffix`).

- A chain of suffix blocks from a plain residual stream, with patched heads and MLPs at
  several layers, reproduces the model's own patched pass at the read positions (repeated ones
  too), with and without a plain prefix, on GPT-2-, Pythia- and Llama-shaped models.
- Activation grids (integer and per-row named positions, reads that vary per row) and random
  hypotheses give the same logits with the lever as without it and as the reference; the lever
  really evaluates the grid's roots (and no bridge block runs for them).
- Which roots it takes: shared or cached rows only; nothing recorded in their pass.
- Fallback: where the restated chain disagrees with the model, the engine runs full passes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scrub._components import Component
from scrub._hooks import keeping
from scrub.engine import ActivationCache, FastEngine, _chunk, evaluate_reference
from scrub.engine._plan import make_plan
from scrub.engine._suffix import SuffixBlocks, suffix_blocks_for, write_patch
from scrub.engine._suffix_pass import suffix_roots
from scrub.experiments._cells import activation_cells
from tests.test_late_start import (
    FAMILIES,
    _block_rows,
    _grid_trees,
    _path_trees,
    _random_tree,
    sampled,
)
from tests.test_late_start import models as late_start_models

models = late_start_models  # the same tiny random GPT-2-, Pythia- and Llama-shaped models


def _patched_pass(model, tokens, patches):
    """The model's own pass with ``patches`` ((layer, head or None, position, value)): every
    block's input of the plain pass, and the patched pass's final residual stream."""
    seen = {}
    keep = keeping(seen)
    n_layers = model.shape.n_layers

    def patching(layer, kind):
        def hook(t, hook=None):
            t = t.clone()
            for at, head, pos, value in patches:
                if at == layer and (head is None) == (kind == "mlp"):
                    if head is None:
                        t[:, pos] = value
                    else:
                        t[:, pos, head] = value
            return t

        return hook

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    edits = [(f"blocks.{L}.attn.hook_z", patching(L, "z")) for L in range(n_layers)]
    edits += [(f"blocks.{L}.hook_mlp_out", patching(L, "mlp")) for L in range(n_layers)]
    with torch.inference_mode():
        with model.bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
            model.bridge(tokens)
        with model.bridge.hooks(fwd_hooks=[*edits, ("ln_final.hook_in", keep("final"))]):
            model.bridge(tokens)
    return [seen[n] for n in names], seen["final"]


def _chain(blocks: SuffixBlocks, streams, patches, begin, start, read):
    x = streams[begin][:, start:]
    last = blocks.n_layers - 1
    with torch.inference_mode():
        for layer in range(begin, blocks.n_layers):
            k, v = blocks.kv(layer, streams[layer])
            prefix = (k[:, :, :start], v[:, :, :start]) if start else None
            at_read = read if layer == last else None
            mine = [p for p in patches if p[0] == layer]

            def patch(kind, t, mine=mine, at_read=at_read):
                for _, head, pos, value in mine:
                    if (head is None) == (kind == "mlp"):
                        dst = torch.full((t.shape[0], 1), pos)
                        write_patch(t, head, dst, value[:, None], start, at_read)

            x = blocks(layer, x, prefix, at_read, patch)
    return x


@pytest.mark.parametrize("start", [0, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_patched_chain_of_suffix_blocks_reproduces_the_model(models, family, start):
    model = models[family]
    blocks = suffix_blocks_for(model)
    assert blocks is not None
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, model.shape.d_vocab, (3, 11), generator=gen)
    d_head, d_model = model.bridge.cfg.d_head, model.bridge.cfg.d_model
    patches = [  # a layer-1 head at the suffix's first position, an MLP, last-layer heads
        (1, 2, 4, torch.randn(3, d_head, generator=gen)),
        (1, None, 6, torch.randn(3, d_model, generator=gen)),
        (2, 0, 10, torch.randn(3, d_head, generator=gen)),
        (2, 3, 5, torch.randn(3, d_head, generator=gen)),  # not read: changes nothing
    ]
    streams, final = _patched_pass(model, tokens, patches)
    read = torch.tensor([[10, 4, 4], [5, 10, 7], [9, 9, 6]])
    got = _chain(blocks, streams, patches, 1, start, read)
    want = final[torch.arange(3)[:, None], read]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _read_at(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(3, 8, n), np.full(n, 9)], axis=1)  # varies per row; repeats


class _Spy:
    """Counts the roots the engine hands to the suffix blocks, and their suffix starts."""

    def __init__(self, monkeypatch):
        self.roots = self.receivers = 0
        real = _chunk.evaluate_suffix

        def spy(blocks, run, roots, begins, streams):
            self.roots += len(roots)
            self.receivers += sum(any(c.kind == "head" for c, _ in g.targets) for g in roots)
            return real(blocks, run, roots, begins, streams)

        monkeypatch.setattr(_chunk, "evaluate_suffix", spy)


def _check(model, trees, read_at):
    on = FastEngine(cache=ActivationCache()).evaluate_many(model, trees, positions=read_at)
    off = FastEngine(cache=ActivationCache(), suffix=False).evaluate_many(
        model, trees, positions=read_at
    )
    batch = np.arange(len(read_at))[:, None]
    for tree, got, plain in zip(trees, on.logits, off.logits, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, plain, atol=1e-4, rtol=1e-4)
        ref = evaluate_reference(model, tree)[batch, read_at].double().log_softmax(-1)
        torch.testing.assert_close(got.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


def _two_base_grids(model, cells, n=6):
    """The cells on two base (and source) draws of one dataset: roots on different rows
    share the suffix blocks' passes."""
    import warnings

    import scrub
    from scrub._bind import make_dataset_for
    from scrub.experiments._cells import trees_of
    from tests.conftest import base_spec

    spec = base_spec(model.path, nodes={"out": {"components": ["logits"]}})
    dataset = make_dataset_for(scrub.hypothesis_from_dict(spec), seed=0)
    base = {k: spec[k] for k in ("model", "dataset", "metric")} | {"name": "grid"}
    trees = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        rows = {"base": rng.choice(len(dataset), n), "source": rng.choice(len(dataset), n)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            trees += trees_of(cells, base, model, dataset, rows, n=n, seed=0, file=None)
    return trees


@pytest.mark.parametrize("family", FAMILIES)
def test_grids_on_two_base_draws_equal_the_plain_engine_and_the_reference(
    models, family, monkeypatch
):
    model = models[family]
    comps = [Component("head", 0, 1), Component("head", 1, 2), Component("mlp", 1)]
    trees = _two_base_grids(model, activation_cells(comps, [(3,), (5,), ("FRESH",)]))
    spy = _Spy(monkeypatch)
    read_at = _read_at(len(trees[0].reference), 2)
    _check(model, trees, read_at)
    assert spy.roots == len(trees)
    # Chunked (4 + 2 reference rows) and one tree per plan: each root alone on its rows in
    # its plan takes the lever once the cache holds the plain pass (from the first plan on).
    spy.roots = 0
    small = FastEngine(cache=ActivationCache(), max_batch_rows=4)
    got = small.evaluate_many(model, trees, positions=read_at).logits
    want = FastEngine(cache=ActivationCache(), suffix=False).evaluate_many(
        model, trees, positions=read_at
    )
    for a, b in zip(got, want.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert spy.roots > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_grids_equal_the_plain_engine_and_the_reference(models, family, monkeypatch):
    model = models[family]
    heads = [Component("head", layer, h) for layer in range(3) for h in (0, 3)]
    comps = [*heads, Component("mlp", 0), Component("mlp", 1), Component("mlp", 2)]
    positions = [None, (0,), (2,), (5,), (9,), ("FRESH",), ("A2", 6)]
    trees = _grid_trees(model, activation_cells(comps, positions))
    read_at = _read_at(len(trees[0].reference), 0)
    spy = _Spy(monkeypatch)
    _check(model, trees, read_at)
    assert spy.roots >= len(trees) // 2  # the lever evaluated the grid's live cells
    # No bridge block ran for those roots: block 1's attention ran in the cache's fills only.
    with_suffix = _block_rows(
        model, 1, lambda: FastEngine(cache=ActivationCache()).evaluate_many(
            model, trees, positions=read_at)
    )  # fmt: skip
    without = _block_rows(
        model, 1, lambda: FastEngine(cache=ActivationCache(), suffix=False).evaluate_many(
            model, trees, positions=read_at)
    )  # fmt: skip
    n = len(trees[0].reference)
    assert sum(with_suffix) <= 2 * n < sum(without)  # the base and source rows' plain passes


@pytest.mark.parametrize("family", FAMILIES)
def test_path_grids_equal_the_plain_engine_and_the_reference(models, family, monkeypatch):
    """Direct-path receivers (their z recomputed by the kernels from the assembled inputs)
    take the lever too, in the roots they are fused into (not under grouped-query attention,
    Llama-shaped here)."""
    model = models[family]
    receivers = [Component("head", 1, 2), Component("head", 2, 0), Component("mlp", 1)]
    spy = _Spy(monkeypatch)
    # Receivers' outputs reaching the logits at one position too (a path cell's ``at``).
    _check(
        model, (at := _path_trees(model, receivers[:1], at=[4])), _read_at(len(at[0].reference), 4)
    )
    trees = _path_trees(model, receivers)
    cache = ActivationCache()
    read_at = _read_at(len(trees[0].reference), 1)
    _check(model, trees, read_at)
    # Under grouped-query attention a receiver keeps its own group (not fused into the root),
    # which the bridge runs; the root then only patches its output in.
    assert spy.roots > 0 and (spy.receivers > 0) == (model.shape.kv_group == 1)
    # The receivers' outputs the engine keeps (from the suffix blocks' pass) serve a second
    # call, whose roots then patch them in: the same logits.
    first = FastEngine(cache=cache).evaluate_many(model, trees, positions=read_at).logits
    again = FastEngine(cache=cache).evaluate_many(model, trees, positions=read_at).logits
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


RANDOM_SEEDS = (0, 2, 8, 10)  # 2, 8 and 10 give roots the lever takes (the test below)


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_random_hypotheses_equal_the_plain_engine_and_the_reference(models, family, seed):
    model = models[family]
    tree = _random_tree(model, seed)
    read_at = _read_at(len(tree.reference), seed)
    _check(model, [tree, tree], read_at)  # two roots on the same rows: shared streams


def test_random_hypotheses_do_use_the_lever(models):
    """The property test above is not vacuous: some of its plans hand roots to the lever
    (patches from leaves and from virtual output groups, at named and integer positions)."""
    for family in FAMILIES:
        model = models[family]
        taken = []
        for seed in RANDOM_SEEDS:
            tree = _random_tree(model, seed)
            plan = make_plan(model, [tree, tree], kernels=True, late_start=True, fuse=True)
            taken.append(len(suffix_roots(model, plan, lambda key, rows: False)))
        assert sum(t > 0 for t in taken) >= 3, (family, taken)


def test_only_roots_on_shared_or_cached_rows_changed_by_patches_alone(models):
    model = models["gpt2"]
    cell = activation_cells([Component("head", 1, 2)], [(4,)])
    trees = _grid_trees(model, cell)
    alone = make_plan(model, trees, kernels=True, late_start=True)
    assert suffix_roots(model, alone, lambda key, rows: False) == {}
    assert suffix_roots(model, alone, lambda key, rows: True) == {alone.root: 1}
    shared = make_plan(model, trees * 2, kernels=True, late_start=True)
    assert suffix_roots(model, shared, lambda key, rows: False) == {r: 1 for r in shared.roots}
    # A root that records an output in its pass (a direct splice of a layer-1 head into the
    # logits, beside its layer-1 patch: the "this pass" value it subtracts) keeps its full pass.
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [
                {"node": "p", "paths": "all", "positions": [4]},
                {"node": "d", "paths": "direct"},
            ],
        },
        "p": {"components": ["a1.h2"], "sampler": "uncond"},
        "d": {"components": ["a1.h0"], "sampler": "uncond"},
    }

    tree = sampled(model, nodes)
    plan = make_plan(model, [tree, tree], kernels=True, late_start=True)
    assert suffix_roots(model, plan, lambda key, rows: True) == {}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_chain_that_disagrees_with_the_model_falls_back_to_full_passes(
    models, family, monkeypatch
):
    model = models[family]
    real = SuffixBlocks.__call__

    def off(self, layer, x, prefix, query=None, patch=None):
        out = real(self, layer, x, prefix, query, patch)
        return out + 1e-2 if layer == self.n_layers - 1 else out

    monkeypatch.setattr(SuffixBlocks, "__call__", off)
    monkeypatch.delitem(model.memo, "suffix_blocks", raising=False)
    assert suffix_blocks_for(model) is None
    spy = _Spy(monkeypatch)
    heads = [Component("head", 1, 0), Component("head", 2, 3)]
    trees = _grid_trees(model, activation_cells(heads, [(2,), (5,)]))
    read_at = _read_at(len(trees[0].reference), 3)
    _check(model, trees, read_at)
    assert spy.roots == 0
