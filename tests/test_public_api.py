"""The public surface: every exported name imports, and user-facing objects have useful reprs."""

from __future__ import annotations

import scrub
from tests.conftest import base_spec


def test_every_public_name_imports():
    for name in scrub.__all__:
        assert getattr(scrub, name) is not None, name


def test_errors_show_the_public_module():
    assert scrub.HypothesisError.__module__ == "scrub"
    assert scrub.ScrubWarning.__module__ == "scrub"


def test_hypothesis_error_message_is_built_from_parts():
    err = scrub.HypothesisError(
        "unknown component 'a9.h12'", file="h.yaml", key=("nodes", "nm", "components", 0), hint="x"
    )
    assert str(err) == "h.yaml at nodes.nm.components[0]: unknown component 'a9.h12'\n  hint: x"


def test_reprs(tiny_model_dir, tiny_model):
    spec = base_spec(
        tiny_model_dir,
        nodes={
            "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
            "h": {"components": ["a1.h0@REP"], "sampler": "uncond"},
        },
    )
    hyp = scrub.hypothesis_from_dict(spec, default_name="demo")
    assert repr(hyp) == f"Hypothesis('demo', model='{tiny_model_dir}', nodes=2, root='out')"
    assert repr(hyp.node("h")) == "InterpNode('h', [a1.h0@REP], sampler=UncondSampler())"
    assert repr(hyp.edge("h", "out")) == (
        "Correspondence('h' -> 'out', channels=['in'], positions=all, paths='direct')"
    )
    assert repr(scrub.Component("head", 1, 0)) == "Component('a1.h0')"
    assert repr(tiny_model) == (
        f"ScrubModel('{tiny_model_dir}', layers=2, heads=4, n_ctx=64, vocab=128)"
    )
    assert repr(scrub.treeify(hyp)) == "TreeNode('out', children=['h'])"


def test_engine_reprs():
    cache = scrub.ActivationCache()
    assert repr(cache) == "ActivationCache(components={}, memo=0)"
    assert repr(scrub.FastEngine(max_batch_rows=64)) == (
        "FastEngine(cache=None, max_batch_rows=64, kernels=True, ablation=None, max_memory=None)"
    )
