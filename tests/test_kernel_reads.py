"""The kernels' heads computed only at the positions anything reads (scrub.engine._reads)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub._components import Component
from scrub._positions import resolve_positions
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._kernels import kernels_for

KCOMP = Path(__file__).resolve().parent.parent / "hypotheses" / "induction" / "kcomp.yaml"


def _kcomp(n: int = 24):
    hyp = scrub.load_hypothesis(KCOMP)
    model = scrub.load_model(hyp.spec.model)
    dataset = make_dataset_for(hyp, seed=0)
    tree = scrub.sample_tree(scrub.bind(hyp, model, dataset), n=n, seed=0)
    pos = resolve_positions(hyp.spec.metric.positions, dataset, tree.rows(tree.root))
    return model, tree, pos


def test_heads_at_read_positions_equal_every_position_there_and_nan_elsewhere():
    hyp = scrub.load_hypothesis(KCOMP)
    model = scrub.load_model(hyp.spec.model)
    kernels = kernels_for(model)
    assert kernels is not None
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(6, 12, model.bridge.cfg.d_model, generator=g) for _ in range(3)]
    heads = [Component("head", 1, 0), Component("head", 1, 2)]
    ins = {c: {"q": x[0], "k": x[1], "v": x[2]} for c in heads}
    at = torch.tensor([3, 7, 8])
    full = kernels.heads(ins)
    some = kernels.heads(ins, dict.fromkeys(heads, at))
    given = kernels.heads(
        {c: {"q": x[0][:, at], "k": x[1], "v": x[2]} for c in heads},
        dict.fromkeys(heads, at),
        q_at=True,
    )
    rest = torch.ones(12, dtype=torch.bool)
    rest[at] = False
    for c in heads:
        torch.testing.assert_close(some[c][:, at], full[c][:, at], atol=1e-6, rtol=0)
        torch.testing.assert_close(given[c][:, at], full[c][:, at], atol=1e-6, rtol=0)
        assert some[c][:, rest].isnan().all()


def test_kcomp_computes_the_induction_heads_at_rep_only_and_matches_the_reference(monkeypatch):
    model, tree, pos = _kcomp()
    kernels = kernels_for(model)
    calls = []
    heads = type(kernels).heads

    def spy(self, inputs, at=None, **kw):
        out = heads(self, inputs, at, **kw)
        calls.append({c: bool(z.isnan().any()) for c, z in out.items()})
        return out

    monkeypatch.setattr(type(kernels), "heads", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        fast = FastEngine()(model, tree, positions=pos)
    assert calls and all(any(c.values()) for c in calls)  # restricted: NaN off REP
    ref = evaluate_reference(model, tree)
    batch = torch.arange(len(pos))[:, None]
    expected = ref[batch, torch.as_tensor(pos)]
    assert not fast.isnan().any()
    torch.testing.assert_close(fast.log_softmax(-1), expected.log_softmax(-1), atol=1e-4, rtol=0)


def test_subtrees_kept_for_later_calls_are_computed_at_every_position():
    model, tree, pos = _kcomp()
    cache = ActivationCache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        first = FastEngine(cache=cache)(model, tree, positions=pos)
        again = FastEngine(cache=cache)(model, tree, positions=pos)
    kept = [z for outputs in cache._subtrees.values() for z in outputs.values()]
    assert kept and not any(bool(z.isnan().any()) for z in kept)
    np.testing.assert_allclose(first.numpy(), again.numpy(), atol=1e-5, rtol=0)
