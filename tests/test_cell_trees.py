"""Grid cells share their draws: the same trees, plans and results as sampling each cell alone.

:func:`scrub.experiments._cells.trees_of` samples the first cell of each tree shape and copies
its draws to the other cells of that shape (every cell is still validated on its own). On
every kind built from cells (activation, path, iterative path, attention under a patch; a
knockout builds no cells) the trees, the engine's plans and the results are those of the
per-cell path, :func:`scrub.sample_tree` on every cell.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import scrub
from scrub._errors import HypothesisError
from scrub._tree import sample_tree
from scrub.engine._plan import make_plan
from scrub.experiments import _cells, experiment_from_dict, patch
from scrub.experiments.patching import _grid, setup

DATA = {
    "generator": "induction",
    "params": {"size": 200, "segment_len": 4, "prefix_len": 1, "gap_len": 1, "suffix_len": 1},
}
LOSS = {"kind": "loss", "positions": "REP", "labels": "next"}
KINDS = {
    "activation": {"components": "all", "positions": "each"},
    "activation_named": {"kind": "activation", "components": ["a1.h0", "m0"], "positions": ["A1", "A2"]},
    "path": {"senders": "all", "receivers": "all", "channels": ["q", "k", "v", "in"]},
    "path_into_logits": {"kind": "path", "senders": ["a0.h1", "m1"], "receivers": ["logits"], "channels": ["in"]},
    "iterative_path": {"receivers": ["a1.h0", "a1.h3"], "positions": ["A1", "END"]},
    "attention": {"heads": ["a1.h0"], "under": {"components": ["a0.h1", "m0"]}, "examples": 2},
}  # fmt: skip


def experiment(name: str):
    keys = dict(KINDS[name])
    kind = keys.pop("kind", name)
    return experiment_from_dict(
        {"kind": kind, "model": "induction", "dataset": DATA, "metric": LOSS,
         "base": "uncond", "defaults": {"n": 5, "seed": 3}, **keys}
    )  # fmt: skip


@pytest.fixture(scope="module")
def induction():
    return scrub.load_model("induction")


def per_cell(bound, drawn, *, n, seed):
    """The per-cell path: every cell sampled on its own."""
    return sample_tree(bound, n=n, seed=seed)


def described(tree) -> list:
    """Everything a sampled tree holds, in comparable form (samplers by their role)."""
    return [
        (node.name, node.path, node.interp.components, repr(node.interp.sampler),
         repr(node.interp.other), node.edge, tree.data[node.name].tolist(),
         tree.other[node.name].tolist() if node.name in tree.other else None)
        for node in tree.root.walk()
    ] + [tree.warnings, tree.self_draws, tree.dataset]  # fmt: skip


def grid_trees(su, cells):
    present = [c for c in cells if c is not None]
    rows = {"base": su.base, "source": su.source}
    return _cells.trees_of(
        present, su.hypothesis_base(), su.model, su.dataset, rows,
        n=su.n, seed=su.seed, file=su.experiment.file,
    )  # fmt: skip


@pytest.mark.parametrize("name", [k for k in KINDS if k != "attention"])
def test_shared_draws_give_the_per_cell_trees_and_plans(induction, name, monkeypatch):
    su = setup(experiment(name), model=induction)
    _, cells = _grid(su)
    calls = []
    monkeypatch.setattr(
        _cells, "sample_tree", lambda b, **k: calls.append(1) or sample_tree(b, **k)
    )
    fast = grid_trees(su, cells)
    assert len(fast) > 1 and len(calls) == 1  # one shape per grid: sampled once
    monkeypatch.setattr(_cells, "_sampled", per_cell)
    slow = grid_trees(su, cells)
    assert [described(t) for t in fast] == [described(t) for t in slow]
    assert all(a.data[k] is not b.data[k] for a, b in itertools.pairwise(fast) for k in a.data)
    assert repr(make_plan(induction, fast)) == repr(make_plan(induction, slow))


@pytest.mark.parametrize("name", list(KINDS))
def test_shared_draws_give_the_per_cell_results(induction, name, monkeypatch):
    exp = experiment(name)
    fast = patch(exp, model=induction)
    monkeypatch.setattr(_cells, "_sampled", per_cell)
    slow = patch(exp, model=induction)
    assert fast.to_json() == slow.to_json()
    if hasattr(fast, "per_example"):
        np.testing.assert_array_equal(fast.per_example, slow.per_example)


def test_trees_with_other_samplers_are_not_shared(induction, dataset):
    hyp = scrub.hypothesis_from_dict(
        {"model": "induction", "dataset": DATA, "metric": LOSS,
         "nodes": {"out": {"components": ["logits"], "inputs": [{"node": "h"}]},
                   "h": {"components": ["a1.h0"], "sampler": "uncond"}}}
    )  # fmt: skip
    tree = sample_tree(scrub.bind(hyp, induction, dataset), n=4, seed=0)
    assert _cells.draw_key(tree.root) is None  # uncond draws from a stream: not shared


def test_a_bad_cell_is_named_with_the_file(induction):
    su = setup(experiment("activation"), model=induction)
    bad = _cells.Cell(("a9.h0", "all"), {"out": {"components": ["logits"], "inputs": [
        {"node": "patched", "paths": "all"}]}, "patched": {"components": ["a0.h0@"]}},
        (("out", "other", "base"), ("patched", "sampler", "source")))  # fmt: skip
    good = _grid(su)[1][:3]
    with pytest.raises(HypothesisError, match=r"grid cell \('a9.h0', 'all'\)") as err:
        _cells.trees_of(
            [*good, bad], su.hypothesis_base(), induction, su.dataset,
            {"base": su.base, "source": su.source}, n=su.n, seed=su.seed, file="exp.yaml",
        )  # fmt: skip
    assert err.value.file == "exp.yaml"
