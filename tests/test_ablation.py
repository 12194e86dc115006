"""Mean and zero ablation of unmapped inputs, and the baselines that match them.

The backbone, as for resampling: on random hypotheses, the fast engine equals the reference
engine under mean and zero ablation; and the empty hypothesis (every component ablated) is the
whole model with every component output replaced by its mean, computed independently with
:meth:`ComponentMeans.patches`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._ablation import Ablation, ablation_for
from scrub.testing import save_random_gpt2
from tests.conftest import base_spec
from tests.random_hypotheses import random_nodes

ATOL = 1e-4
INDUCTION = Path(__file__).parent.parent / "hypotheses" / "induction"
MEAN = {"kind": "mean", "classes": ["END", "A1"]}


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    d = save_random_gpt2(
        tmp_path_factory.mktemp("deep_abl"), n_layers=3, n_heads=3, d_model=24, init_std=0.2, seed=2
    )
    return scrub.load_model(str(d))


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return fn(*args, **kwargs)


def _case(model, seed: int, ablation: dict) -> None:
    rng = np.random.default_rng(seed)
    nodes = random_nodes(rng, model.shape, max_depth=int(rng.integers(1, 4)))
    hyp = scrub.hypothesis_from_dict(base_spec(model.path, nodes=nodes, ablation=ablation))
    ds = make_dataset_for(hyp, seed=seed)
    tree = _quiet(scrub.sample_tree, scrub.bind(hyp, model, ds), n=8, seed=seed)
    abl = ablation_for(hyp, model, ds, ActivationCache())
    ref = evaluate_reference(model, tree, ablation=abl)
    fast = FastEngine(
        ablation=abl, max_batch_rows=int(rng.choice([5, 64, 4096])), kernels=bool(seed % 2)
    )(model, tree)
    torch.testing.assert_close(
        fast.double().log_softmax(-1), ref.double().log_softmax(-1), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("seed", range(16))
def test_fast_equals_reference_with_mean_and_zero_ablation(tiny_model, deep_model, seed):
    model = [tiny_model, deep_model][seed % 2]
    _case(model, seed, MEAN if seed % 4 < 2 else "zero")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(16, 200))
def test_fast_equals_reference_with_mean_and_zero_ablation_slow(tiny_model, deep_model, seed):
    model = [tiny_model, deep_model][seed % 2]
    _case(model, seed, MEAN if seed % 4 < 2 else "zero")


def _empty(model_dir, **overrides):
    nodes = {"out": {"components": ["logits"]}}
    return scrub.hypothesis_from_dict(base_spec(model_dir, nodes=nodes, **overrides))


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_mean_ablation_of_every_component_is_the_mean_baseline(tiny_model, engine):
    hyp = _empty(tiny_model.path, ablation=MEAN)
    assert hyp.spec.baseline_kind == "mean"
    ds = make_dataset_for(hyp, seed=0)
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        result = scrub.run(hyp, model=tiny_model, dataset=ds, engine=engine)
    assert result.baseline_kind == "mean"
    assert result.per_example == result.per_example_baseline and result.recovered == 0.0
    # Independently: the whole model with every output replaced by its per-class mean.
    means = scrub.component_means(
        tiny_model, ds, tiny_model.shape.all_components(), classes=MEAN["classes"]
    )
    rows = np.asarray(result.draws["out.other"])
    logits, _, _ = tiny_model.run(ds.tokens[torch.as_tensor(rows)], patches=means.patches(ds, rows))
    reference = np.asarray(result.reference)

    def at_rep(out: torch.Tensor, of: np.ndarray) -> torch.Tensor:
        positions = scrub._positions.resolve_positions(("REP",), ds, of)
        return out[torch.arange(len(of))[:, None], torch.as_tensor(positions)]

    clean, _, _ = tiny_model.run(ds.tokens[torch.as_tensor(reference)])
    expected = scrub._metrics.per_example_metric(
        hyp.spec.metric,
        at_rep(logits, rows),
        reference=reference,
        dataset=ds,
        clean_logits=at_rep(clean, reference),
    )
    np.testing.assert_allclose(result.per_example_baseline, expected, atol=1e-5)
    assert result.methodology["ablation_reference"]["size"] > 0
    assert result.methodology["ablation_reference"]["classes"] == ["END", "A1", "other"]


def test_full_hypothesis_recovers_one_under_every_ablation(tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": "all"}]},
        "all": {"components": ["embed", "a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0",
                               "a1.h0", "a1.h1", "a1.h2", "a1.h3", "m1"], "sampler": "exact"},
    }  # fmt: skip
    for ablation in ("zero", MEAN):
        hyp = scrub.hypothesis_from_dict(base_spec(tiny_model.path, nodes=nodes, ablation=ablation))
        result = _quiet(scrub.run, hyp, model=tiny_model)
        assert result.recovered == pytest.approx(1.0, abs=1e-6)
        assert result.baseline != result.clean


def test_zero_and_permuted_label_baselines(tiny_model):
    zero = _quiet(scrub.run, _empty(tiny_model.path, ablation="zero"), model=tiny_model)
    assert zero.baseline_kind == "zero" and zero.per_example == zero.per_example_baseline
    spec = scrub.load_hypothesis(INDUCTION / "empty.yaml").spec.model_dump(mode="json")
    spec["baseline"] = "permuted_labels"
    hyp = scrub.hypothesis_from_dict(spec, file=str(INDUCTION / "empty.yaml"))
    permuted = _quiet(scrub.run, hyp, n=40)
    assert permuted.baseline_kind == "permuted_labels"
    # the trained model's loss on other examples' next tokens: far worse than on its own
    assert permuted.baseline > 3 * permuted.clean
    assert _quiet(scrub.run, hyp, n=40).per_example_baseline == permuted.per_example_baseline


def test_ablation_changes_the_score_and_is_refused_across_rivals(tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {"components": ["a1.h0", "a1.h2"], "sampler": "exact"},
    }
    resample = scrub.hypothesis_from_dict(base_spec(tiny_model.path, nodes=nodes), default_name="r")
    mean = scrub.hypothesis_from_dict(
        base_spec(tiny_model.path, nodes=nodes, ablation=MEAN), default_name="m"
    )
    a, b = (_quiet(scrub.run, h, model=tiny_model) for h in (resample, mean))
    assert a.per_example != b.per_example
    with pytest.raises(scrub.HypothesisError, match="differ in 'ablation'"):
        scrub.compare([resample, mean], model=tiny_model)


def test_ablation_errors_name_the_key(tiny_model):
    with pytest.raises(scrub.HypothesisError, match="for 'mean' ablation"):
        _empty(tiny_model.path, ablation={"kind": "zero", "classes": ["END"]})
    with pytest.raises(scrub.HypothesisError, match="baseline 'mean'"):
        _empty(tiny_model.path, baseline="mean")
    hyp = _empty(tiny_model.path, ablation={"kind": "mean", "classes": ["NOPE"]})
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.run(hyp, model=tiny_model)
    assert info.value.key[0] == "ablation"
    assert repr(Ablation("zero")) == "Ablation('zero')"
