"""``bind(..., cache=...)``: the checks a cache remembers are the checks without it.

``scrub.run`` binds on its activation cache, which remembers the checks that read only the
dataset, the model's shape and one spec (:mod:`scrub._bind`). Here a hypothesis that fails one
of them fails the same way on a cache where another hypothesis passed, fails again on the same
cache, and a dataset that grows is checked again.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

import scrub
from scrub.engine import ActivationCache


@pytest.fixture
def base(tiny_model_dir: Path) -> dict:
    return {
        "name": "base",
        "model": str(tiny_model_dir),
        "dataset": {"generator": "induction", "params": {"size": 100}},
        "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
        "defaults": {"n": 20, "seed": 0},
        "nodes": {
            "out": {
                "components": ["logits"],
                "inputs": [{"node": "ind", "channels": "in", "positions": "REP"}],
            },
            "ind": {"components": ["a1.h2", "a1.h3"], "sampler": "exact"},
        },
    }


def _load(tmp_path: Path, data: dict, name: str) -> scrub.Hypothesis:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return scrub.load_hypothesis(path)


def _error(hyp, model, dataset, cache) -> scrub.HypothesisError:
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.bind(hyp, model, dataset, cache=cache)
    return info.value


def _variants(base: dict) -> dict[str, dict]:
    """Hypotheses that each fail one of the checks a cache remembers."""
    overlap = copy.deepcopy(base)  # A2 and REP overlap: a position named twice
    overlap["nodes"]["ind"]["components"] = [{"component": "a1.h2", "positions": "A2,REP"}]
    del overlap["nodes"]["out"]["inputs"][0]["positions"]
    edge = copy.deepcopy(base)
    edge["nodes"]["out"]["inputs"][0]["positions"] = "A2,REP"
    last = copy.deepcopy(base)  # 'next' labels after the last token
    last["metric"]["positions"] = "END"
    field = copy.deepcopy(base)
    field["metric"] = {"kind": "loss", "positions": "END", "labels": "no_such_field"}
    return {"overlap": overlap, "edge": edge, "last": last, "field": field}


def test_a_remembered_check_fails_as_without_a_cache(tmp_path, base, tiny_model):
    dataset = scrub.make_dataset("induction", {"size": 100}, np.random.default_rng(0))
    good = _load(tmp_path, base, "base")
    for name, data in _variants(base).items():
        bad = _load(tmp_path, data, name)
        want = _error(bad, tiny_model, dataset, None)
        cache = ActivationCache()
        scrub.bind(good, tiny_model, dataset, cache=cache)  # its checks pass and are kept
        for _ in range(2):  # a failed check is not remembered: it fails again
            got = _error(bad, tiny_model, dataset, cache)
            assert (got.key, got.problem, got.hint, got.file) == (
                want.key,
                want.problem,
                want.hint,
                want.file,
            ), name
        scrub.bind(good, tiny_model, dataset, cache=cache)  # and the good one still passes


def test_a_grown_dataset_is_checked_again(tmp_path, base, tiny_model):
    dataset = scrub.make_dataset("induction", {"size": 100}, np.random.default_rng(0))
    hyp = _load(tmp_path, base, "base")
    cache = ActivationCache()
    scrub.bind(hyp, tiny_model, dataset, cache=cache)
    extra = dataset.subset(np.arange(2))
    extra.tokens[:] = tiny_model.shape.d_vocab  # out of the vocabulary
    dataset.extend(extra)
    err = _error(hyp, tiny_model, dataset, cache)
    assert f"uses token id {tiny_model.shape.d_vocab}" in err.problem
