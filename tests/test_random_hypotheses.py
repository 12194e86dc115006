"""Random hypotheses through the reference engine.

With every sampler and every other-inputs sampler ``exact``, every row group is the reference
batch, so every splice moves a value onto itself and the scrub must equal the clean model —
whatever the tree, channels, positions and paths. With random samplers, the same seed must give
the same result.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import scrub
from tests.conftest import base_spec
from tests.random_hypotheses import random_nodes

FAST = range(12)
SLOW = range(12, 200)


def _hyp(model, nodes):
    return scrub.hypothesis_from_dict(base_spec(model.path, nodes=nodes))


def _all_exact(model, seed):
    nodes = random_nodes(np.random.default_rng(seed), model.shape, sampler="exact", other="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        result = scrub.run(_hyp(model, nodes), model=model, n=6, seed=seed)
    np.testing.assert_allclose(result.per_example, result.per_example_clean, atol=1e-4)


def _reproducible(model, seed):
    nodes = random_nodes(np.random.default_rng(seed), model.shape)
    hyp = _hyp(model, nodes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        a = scrub.run(hyp, model=model, n=6, seed=seed)
        b = scrub.run(hyp, model=model, n=6, seed=seed)
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize("seed", FAST)
def test_all_exact_random_hypothesis_is_clean(tiny_model, seed):
    _all_exact(tiny_model, seed)


@pytest.mark.parametrize("seed", FAST)
def test_random_hypothesis_is_reproducible(tiny_model, seed):
    _reproducible(tiny_model, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW)
def test_all_exact_random_hypothesis_is_clean_slow(tiny_model, seed):
    _all_exact(tiny_model, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW)
def test_random_hypothesis_is_reproducible_slow(tiny_model, seed):
    _reproducible(tiny_model, seed)
