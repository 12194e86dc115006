"""Late start: row groups begin at the first layer they change, from the cached residual stream.

- A late pass (blocks L.. on a residual stream) reproduces a full pass on GPT-2-, Pythia- and
  Llama-shaped models, and really skips the blocks before L (their modules never run).
- Plans: an activation patch of a layer-L head starts at L; a path patch's receiver and root
  start at the receiver's layer (the sender's "this pass" output served by the cache); an
  unpatched root needs no block at all; a group alone on uncached rows starts from the tokens.
- Fused children: a path-patching cell is one group, equal to the unfused plan.
- The fast engine with late starts equals the fast engine without them and the reference, on
  random hypotheses on every family.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub._components import Component
from scrub._hooks import keeping
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._plan import make_plan
from scrub.engine._start import late_pass, late_start_works
from scrub.engine.cache import Residual
from scrub.experiments._cells import Cell
from scrub.testing import save_random_model
from tests.conftest import base_spec
from tests.random_hypotheses import random_nodes

FAMILIES = ("gpt2", "pythia", "llama")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for i, family in enumerate(FAMILIES):
        path = save_random_model(tmp_path_factory.mktemp(family), family, n_layers=3, seed=10 + i)
        out[family] = scrub.load_model(str(path))
    return out


def sampled(model, nodes, *, n=8, seed=0):
    hyp = scrub.hypothesis_from_dict(base_spec(model.path, nodes=nodes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        bound = scrub.bind(hyp, model, make_dataset_for(hyp, seed=seed))
    return scrub.sample_tree(bound, n=n, seed=seed)


def _block_rows(model, layer: int, run) -> list[int]:
    """Batch sizes that block ``layer``'s attention module computed during ``run()``."""
    rows: list[int] = []
    attn = model.bridge.blocks[layer].attn
    hook = attn.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(
            (args[0] if args else kwargs["hidden_states"]).shape[0]
        ),
        with_kwargs=True,
    )
    try:
        run()
    finally:
        hook.remove()
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_a_late_pass_reproduces_a_full_pass_and_skips_the_early_blocks(models, family):
    model = models[family]
    assert late_start_works(model)
    tokens = torch.randint(
        0, model.shape.d_vocab, (3, 12), generator=torch.Generator().manual_seed(1)
    )
    seen = {}

    keep = keeping(seen)

    with torch.inference_mode():
        names = ["blocks.2.hook_resid_pre", "ln_final.hook_in"]
        with model.bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
            full = model.bridge(tokens)
        for start in (1, 2):
            resid = seen["blocks.2.hook_resid_pre"] if start == 2 else None
            if resid is None:
                with model.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", keep("r1"))]):
                    model.bridge(tokens)
                resid = seen["r1"]
            skipped = _block_rows(model, 0, lambda r=resid, s=start: seen.update(
                late=late_pass(model, r, s, None)))  # fmt: skip
            assert skipped == []  # block 0 never ran
            torch.testing.assert_close(seen["late"], full, atol=1e-5, rtol=0)
        stopped = late_pass(model, seen["r1"], 1, 2)  # blocks 1 .. 1: the input of block 2
        torch.testing.assert_close(stopped, seen["blocks.2.hook_resid_pre"], atol=1e-5, rtol=0)


def test_patches_and_splices_start_their_groups_late(models):
    model = models["gpt2"]
    patched = {  # an activation patch of a2.h1 at one position: the root starts at layer 2
        "out": {"components": ["logits"], "inputs": [{"node": "p", "paths": "all", "positions": [3]}]},
        "p": {"components": ["a2.h1"], "sampler": "uncond"},
    }  # fmt: skip
    path = {  # a0.h0 -> a1.h2's q, then a1.h2 -> logits through all paths
        "out": {"components": ["logits"], "inputs": [{"node": "r", "channels": "in", "paths": "all"}]},
        "r": {"components": ["a1.h2"], "inputs": [{"node": "s", "channels": ["q"]}]},
        "s": {"components": ["a0.h0"], "sampler": "uncond"},
    }  # fmt: skip
    plain = {"out": {"components": ["logits"]}}
    a0h0 = Component("head", 0, 0)
    for nodes, want in ((patched, {"out": (2, [])}), (path, {"r": (1, [a0h0]), "out": (1, [])}),
                        (plain, {"out": (3, [])})):  # fmt: skip
        tree = sampled(model, nodes)
        cached = make_plan(model, tree, kernels=True, late_start=True, cached=lambda *_: True)
        assert {g.node.name: (g.start, g.served) for g in cached.groups} == want
        # Alone on rows whose residual stream is not cached, a group starts from the tokens.
        alone = make_plan(model, tree, kernels=True, late_start=True)
        assert all(g.start == 0 for g in alone.groups)
        shared = make_plan(model, [tree, tree], kernels=True, late_start=True)  # two roots
        assert {shared.groups[r].start for r in shared.roots} == {want["out"][0]}
        assert make_plan(model, tree).groups[0].start == 0  # off by default
        late = FastEngine(cache=ActivationCache())(model, tree)
        full = FastEngine(late_start=False)(model, tree)
        torch.testing.assert_close(late, full, atol=1e-5, rtol=0)
        ref = evaluate_reference(model, tree)
        torch.testing.assert_close(late.double().log_softmax(-1), ref.double().log_softmax(-1),
                                   atol=1e-4, rtol=0)  # fmt: skip


def test_the_engine_runs_no_early_block_for_a_late_group(models):
    from scrub.experiments._cells import activation_cells

    model = models["llama"]
    heads = [Component("head", 2, 0), Component("head", 2, 3)]
    trees = _grid_trees(model, activation_cells(heads, [None, (3,)]))
    engine = FastEngine()
    engine.evaluate_many(model, trees)  # the one-off checks of the kernels and of late passes
    # Block 0 runs only in the cache's plain passes over the distinct base and source rows.
    rows = _block_rows(model, 0, lambda: FastEngine().evaluate_many(model, trees))
    distinct = len(np.unique(np.concatenate([trees[0].rows(n) for n in trees[0].root.walk()])))
    assert sum(rows) == distinct
    full = _block_rows(model, 0, lambda: FastEngine(late_start=False).evaluate_many(model, trees))
    assert full == [6, 4 * 6]  # the source rows' leaf pass, then the cells' pass from the tokens


def _warm_cache(model, tree) -> ActivationCache:
    """A cache holding every residual stream of every row of ``tree``: every group may start
    late (the engine's plans then start each group at its first changed layer)."""
    cache = ActivationCache()
    rows = np.unique(np.concatenate([tree.rows(n) for n in tree.root.walk()]))
    layers = range(1, model.shape.n_layers + 1)
    cache.outputs(model, tree.dataset, [(Residual(layer), rows) for layer in layers])
    return cache


def _random_tree(model, seed):
    rng = np.random.default_rng([seed, 7])
    nodes = random_nodes(rng, model.shape, max_depth=int(rng.integers(1, 4)))
    return sampled(model, nodes, seed=seed)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("family", FAMILIES)
def test_late_starts_equal_full_passes_and_the_reference(models, family, seed):
    model = models[family]
    tree = _random_tree(model, seed)
    kernels = bool(seed % 2)
    full = FastEngine(kernels=kernels, late_start=False, fuse=False)(model, tree)
    ref = evaluate_reference(model, tree).double().log_softmax(-1)
    rows = [5, 4096][seed % 2]
    warm = FastEngine(cache=_warm_cache(model, tree), kernels=kernels, max_batch_rows=rows)
    twice = FastEngine(kernels=kernels, max_batch_rows=rows).evaluate_many(model, [tree, tree])
    for late in [warm(model, tree), *twice.logits]:  # late from the cache; shared roots' rows
        torch.testing.assert_close(late, full, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(late.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


def test_random_hypotheses_do_start_late(models):
    """The property test above is not vacuous: most of its plans start some group late."""
    late = shared = 0
    for family in FAMILIES:
        model = models[family]
        for seed in range(8):
            tree = _random_tree(model, seed)
            cache = _warm_cache(model, tree)

            def cached(layer, rows, cache=cache, model=model, ds=tree.dataset):
                return cache.holds(model, ds, Residual(layer), rows)

            plan = make_plan(model, tree, late_start=True, cached=cached)
            late += any(g.start > 0 for g in plan.groups)
            plan = make_plan(model, [tree, tree], late_start=True)
            shared += any(g.start > 0 for g in plan.groups)
    assert late >= len(FAMILIES) * 8 // 2 and shared >= len(FAMILIES) * 8 // 2


@pytest.mark.parametrize("family", ["gpt2", "pythia", "llama", "qwen2", "gemma2"])
def test_the_engine_passes_softmax_equals_the_compatibility_mode_one(family, tmp_path):
    """The engine's passes drop the fully-masked-row guards (:func:`unmasked_rows_softmax`):
    on unpadded causal rows the logits and patterns are those of the guarded softmax."""
    from scrub._hooks import unmasked_rows_softmax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = scrub.load_model(str(save_random_model(tmp_path, family, seed=3)))
    bridge = model.bridge
    tokens = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(2))
    patterns = {}

    keep = keeping(patterns)

    with torch.inference_mode():
        with bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", keep("guarded"))]):
            guarded = bridge(tokens)
        with (
            bridge.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", keep("plain"))]),
            unmasked_rows_softmax(bridge),
        ):
            assert not any(b.attn.compatibility_mode for b in bridge.blocks)
            plain = bridge(tokens)
    assert all(b.attn.compatibility_mode for b in bridge.blocks)  # restored
    torch.testing.assert_close(plain, guarded, atol=1e-6, rtol=0)
    torch.testing.assert_close(patterns["plain"], patterns["guarded"], atol=1e-7, rtol=0)


def _grid_trees(model, cells, n=6):
    """Trees of grid cells (:mod:`scrub.experiments._cells`) on one base and one source draw."""
    from scrub.experiments._cells import trees_of

    spec = base_spec(model.path, nodes={"out": {"components": ["logits"]}})
    hyp = scrub.hypothesis_from_dict(spec)
    dataset = make_dataset_for(hyp, seed=0)
    rng = np.random.default_rng(0)
    rows = {"base": rng.choice(len(dataset), n), "source": rng.choice(len(dataset), n)}
    base = {k: spec[k] for k in ("model", "dataset", "metric")} | {"name": "grid"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return trees_of(cells, base, model, dataset, rows, n=n, seed=0, file=None)


def _path_trees(model, receivers, *, at=None):
    """Path-patching cells a0.h0 -> each receiver's inputs, as the patching grid builds them
    (``at``: the receiver's output reaches the logits at these positions only)."""
    from scrub.experiments._cells import path_cells

    cells = path_cells(
        model.shape, [Component("head", 0, 0)], [[r] for r in receivers], ["q", "k", "v", "in"],
        [None], by_channel=True,
    )  # fmt: skip
    cells = [c for c in cells if c is not None]  # heads read q, k, v; MLPs read in
    for cell in cells if at is not None else ():
        cell.nodes["out"]["inputs"][0]["positions"] = at
    return _grid_trees(model, cells)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_path_cell_is_one_group_and_equals_the_unfused_plan(models, family):
    model = models[family]
    receivers = [Component("head", 1, 2), Component("head", 2, 0), Component("mlp", 1)]
    trees = _path_trees(model, receivers)
    plan = make_plan(model, trees, kernels=True, late_start=True, fuse=True)
    fused = [g for g in plan.groups if g.into is not None]
    if model.shape.kv_group > 1:  # a head's k/v slot is shared: never fused
        assert not fused
    else:
        assert {g.node.name for g in fused} == {"receiver"} and len(fused) == len(trees)
        running = [g for _, gids in plan.passes for g in map(plan.groups.__getitem__, gids)]
        assert all(g.node.name == "out" for g in running)  # one group per cell
        for root in (plan.groups[r] for r in plan.roots):
            inner = next(g for g in fused if g.into == root.gid)
            assert root.start == inner.node.interp.components[0].component.layer
            assert root.served == [Component("head", 0, 0)] and not root.patches
    engine = FastEngine(cache=ActivationCache())
    got = engine.evaluate_many(model, trees).logits
    plain = FastEngine(late_start=False, fuse=False).evaluate_many(model, trees).logits
    for tree, late, full in zip(trees, got, plain, strict=True):
        torch.testing.assert_close(late, full, atol=1e-4, rtol=1e-4)
        ref = evaluate_reference(model, tree).double().log_softmax(-1)
        torch.testing.assert_close(late.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


def test_a_child_patched_at_some_positions_only_is_not_fused(models):
    model = models["gpt2"]
    trees = _path_trees(model, [Component("head", 2, 1)], at=[3, 4])
    plan = make_plan(model, trees, kernels=True, late_start=True, fuse=True)
    assert all(g.into is None for g in plan.groups)
    got = FastEngine().evaluate_many(model, trees).logits
    for tree, late in zip(trees, got, strict=True):
        ref = evaluate_reference(model, tree).double().log_softmax(-1)
        torch.testing.assert_close(late.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


def test_patches_the_read_positions_cannot_see_are_dropped(models):
    """A last-layer output reaches the logits only at its own position, an earlier one only at
    later positions: a root's patch that reaches no read position is dropped, and the
    logits at the read positions are unchanged."""
    from scrub.experiments._cells import activation_cells

    model = models["gpt2"]
    last, earlier = Component("head", 2, 1), Component("head", 1, 0)
    cells = activation_cells([last], [(3,), (5,)]) + activation_cells([earlier], [(7,), (2,)])
    trees = _grid_trees(model, cells)
    read_at = np.full((len(trees[0].reference), 1), 5)
    plan = make_plan(model, trees, kernels=True, read_at=read_at)
    patched = [bool(plan.groups[r].patches) for r in plan.roots]
    assert patched == [False, True, False, True]
    assert (
        make_plan(model, trees, kernels=True, read_at=np.full_like(read_at, 7))
        .groups[plan.roots[2]]
        .patches
    )  # a1.h0@7 is seen at position 7
    got = FastEngine(cache=ActivationCache()).evaluate_many(model, trees, positions=read_at)
    batch = np.arange(len(read_at))[:, None]
    for tree, logits in zip(trees, got.logits, strict=True):
        ref = evaluate_reference(model, tree)[batch, read_at]
        torch.testing.assert_close(logits.double().log_softmax(-1), ref.double().log_softmax(-1),
                                   atol=1e-4, rtol=0)  # fmt: skip


def test_a_one_layer_model_needs_no_pass_for_unpatched_roots(one_layer_model):
    """One layer: nothing to skip before it, but a plain root sharing its rows needs no pass."""
    from scrub.experiments._cells import activation_cells

    model = one_layer_model
    assert late_start_works(model)
    plain = Cell(("base",), {"out": {"components": ["logits"]}}, (("out", "other", "base"),))
    cells = [plain, plain, *activation_cells([Component("head", 0, 1)], [None, (2,)])]
    trees = _grid_trees(model, cells)
    plan = make_plan(model, trees, kernels=True, late_start=True)
    assert [plan.groups[r].start for r in plan.roots] == [1, 1, 0, 0]  # two share the base rows
    got = FastEngine().evaluate_many(model, trees).logits
    for tree, logits in zip(trees, got, strict=True):
        ref = evaluate_reference(model, tree).double().log_softmax(-1)
        torch.testing.assert_close(logits.double().log_softmax(-1), ref, atol=1e-4, rtol=0)
