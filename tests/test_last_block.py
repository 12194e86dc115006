"""The last block at the metric's positions only (:mod:`scrub.engine._last`).

- The restated last block reproduces the model's final residual stream at any positions
  (repeated ones too) on GPT-2-, Pythia- and Llama-shaped models.
- Activation and path-patching grids and random hypotheses read at a few positions per row
  give the same logits with the lever as without it and as the reference; the lever really
  replaces the last block in passes that read nothing else there, and only in those.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scrub._components import Component
from scrub._hooks import keeping
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._last import last_block_for, reads_only_before
from scrub.experiments._cells import activation_cells
from tests.test_late_start import FAMILIES, _block_rows, _grid_trees, _path_trees, _random_tree
from tests.test_late_start import models as late_start_models

models = late_start_models  # the same tiny random GPT-2-, Pythia- and Llama-shaped models


@pytest.mark.parametrize("family", FAMILIES)
def test_the_last_block_at_some_positions_reproduces_the_model(models, family):
    model = models[family]
    block = last_block_for(model)
    assert block is not None
    layer = model.shape.n_layers - 1
    tokens = torch.randint(
        0, model.shape.d_vocab, (3, 11), generator=torch.Generator().manual_seed(2)
    )
    seen = {}

    keep = keeping(seen)

    names = [f"blocks.{layer}.hook_resid_pre", "ln_final.hook_in"]
    with torch.inference_mode(), model.bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
        model.bridge(tokens)
        pos = torch.tensor([[10, 3, 3], [0, 5, 10], [7, 7, 1]])
        got = block(seen[names[0]], pos)
    want = seen[names[1]][torch.arange(3)[:, None], pos]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_only_hooks_before_the_last_block_allow_the_lever():
    assert reads_only_before(["hook_embed", "blocks.1.attn.hook_z", "ln_final.hook_in"], 2)
    assert not reads_only_before(["blocks.2.hook_mlp_out"], 2)
    assert not reads_only_before(["blocks.12.hook_resid_pre"], 2)
    assert not reads_only_before(["unembed.hook_out"], 2)


def _read_at(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, 6, n), np.full(n, 7)], axis=1)  # varies per row; repeats


def _check(model, trees, read_at):
    on = FastEngine(cache=ActivationCache()).evaluate_many(model, trees, positions=read_at)
    off = FastEngine(cache=ActivationCache(), last_block=False).evaluate_many(
        model, trees, positions=read_at
    )
    batch = np.arange(len(read_at))[:, None]
    for tree, got, plain in zip(trees, on.logits, off.logits, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, plain, atol=1e-4, rtol=1e-4)
        ref = evaluate_reference(model, tree)[batch, read_at].double().log_softmax(-1)
        torch.testing.assert_close(got.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_grids_equal_the_plain_engine_and_the_reference(models, family):
    model = models[family]
    heads = [Component("head", layer, h) for layer in range(3) for h in (0, 2)]
    comps = [*heads, Component("mlp", 0), Component("mlp", 2)]
    trees = _grid_trees(model, activation_cells(comps, [None, (2,), (7,)]))
    read_at = _read_at(len(trees[0].reference), 0)
    _check(model, trees, read_at)
    # The lever fired: the last block's attention ran on fewer rows than without it.
    engine = FastEngine(cache=ActivationCache())
    rows = _block_rows(model, 2, lambda: engine.evaluate_many(model, trees, positions=read_at))
    plain = FastEngine(cache=ActivationCache(), last_block=False)
    full = _block_rows(model, 2, lambda: plain.evaluate_many(model, trees, positions=read_at))
    assert 0 < sum(rows) < sum(full)  # the cells patching layer 2 keep their full block


@pytest.mark.parametrize("family", FAMILIES)
def test_path_grids_equal_the_plain_engine_and_the_reference(models, family):
    model = models[family]
    receivers = [Component("head", 1, 2), Component("head", 2, 0), Component("mlp", 1)]
    trees = _path_trees(model, receivers)
    read_at = _read_at(len(trees[0].reference), 1)
    _check(model, trees, read_at)
    # A last-layer receiver's cells too: its z is the kernels' (no row of block 2 is computed
    # by the bridge), and the subtrees it keeps serve a second call unchanged.
    last = _path_trees(model, [Component("head", 2, 0)])
    cache = ActivationCache()
    first = FastEngine(cache=cache).evaluate_many(model, last, positions=read_at).logits
    if model.shape.kv_group == 1:  # grouped-query models read the split q/k/v inputs instead
        rows = _block_rows(
            model, 2, lambda: FastEngine(cache=ActivationCache()).evaluate_many(
                model, last, positions=read_at)
        )  # fmt: skip
        assert sum(rows) == 0
    again = FastEngine(cache=cache).evaluate_many(model, last, positions=read_at).logits
    plain = FastEngine(cache=ActivationCache(), last_block=False)
    want = plain.evaluate_many(model, last, positions=read_at).logits
    for a, b, c in zip(first, again, want, strict=True):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b, c, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("family", FAMILIES)
def test_random_hypotheses_equal_the_plain_engine_and_the_reference(models, family, seed):
    model = models[family]
    tree = _random_tree(model, seed)
    _check(model, [tree], _read_at(len(tree.reference), seed))
