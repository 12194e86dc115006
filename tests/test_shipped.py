"""Every shipped hypothesis validates and runs; the shipped induction model's invariants hold."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import scrub
from scrub.cli import main
from tests.conftest import shipped_hypotheses, stand_in

INDUCTION = Path(__file__).parent.parent / "hypotheses" / "induction"


def test_there_are_shipped_hypotheses():
    names = {p.name for p in INDUCTION.glob("*.yaml")}
    assert {"full.yaml", "empty.yaml", "kcomp.yaml", "kcomp_all_heads.yaml", "naive.yaml"} <= names


@pytest.mark.parametrize("path", shipped_hypotheses())
def test_shipped_hypothesis_checks_and_runs(path, capsys, gpt2_shaped_dir):
    model = stand_in(path, gpt2_shaped_dir)  # GPT-2 files run on a random GPT-2-shaped model
    assert main(["check", str(path), *(["--model", model] if model else [])]) == 0, (
        capsys.readouterr().err
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)  # full/empty warn by design
        result = scrub.run(path, n=8, model=model)
    assert len(result.per_example) == 8
    if model is None:  # the model beats random resampling, in the metric's direction
        if result.metric["kind"] in ("loss", "kl"):
            assert result.clean < result.baseline
        else:  # logit_diff, accuracy: higher is better
            assert result.clean > result.baseline


def test_full_induction_hypothesis_recovers_exactly_one():
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        result = scrub.run(INDUCTION / "full.yaml", n=50)
    assert result.recovered == 1.0


def test_empty_induction_hypothesis_recovers_exactly_zero():
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        result = scrub.run(INDUCTION / "empty.yaml", n=50)
    assert result.recovered == 0.0


def test_induction_model_meets_its_card():
    """MODEL_CARD.md: a0.h1 previous-token head, a1.h0/h1/h3 induction heads, low repeated loss."""
    import numpy as np
    import torch

    model = scrub.load_model("induction")
    ds = scrub.make_dataset("induction", {"size": 300}, np.random.default_rng(7))
    logits, cache = model.bridge.run_with_cache(ds.tokens)
    rows = torch.arange(len(ds))[:, None]
    prev = cache["blocks.0.attn.hook_pattern"].diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2))
    rep, nxt = torch.as_tensor(ds.positions["REP"]), torch.as_tensor(ds.positions["A1_NEXT"])
    pattern = cache["blocks.1.attn.hook_pattern"]  # batch head query key
    induction = pattern[rows, :, rep, nxt].mean((0, 1))
    assert prev[1] > 0.9 and max(prev[[0, 2, 3]]) < 0.3
    assert min(induction[[0, 1, 3]]) > 0.8
    logp = logits.log_softmax(-1)[rows, rep].gather(-1, ds.tokens[rows, rep + 1][..., None])
    assert -logp.mean() < 0.6  # card: 0.469 on this layout
