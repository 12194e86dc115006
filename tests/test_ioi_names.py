"""The IOI-names dataset and the shipped IOI-names model (solves IOI for names it never saw)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scrub
from scrub.data import make_dataset
from scrub.data.ioi_names import VOCAB_FILE, ioi_names
from scrub.data.ioi_templates import NAMES
from scrub.data.ioi_toy import Vocab, max_prompt_len

HYPOTHESES = VOCAB_FILE.parent.parent.parent.parent / "hypotheses" / "ioi_names"
CARD = json.loads((VOCAB_FILE.parent / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def vocab():
    return Vocab.load(VOCAB_FILE)


@pytest.fixture(scope="module")
def model():
    return scrub.load_model("ioi_names")


def test_vocab_has_a_large_name_pool_and_round_trips(vocab, tmp_path):
    assert len(vocab.name_pool) > 4 * len(NAMES) // 2
    assert set(NAMES) <= set(vocab.name_pool)
    assert set(vocab.heldout_names) < set(vocab.name_pool)
    assert set(vocab.names("train")) | set(vocab.names("heldout")) == set(vocab.name_pool)
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == vocab
    rebuilt = Vocab.build(
        heldout_names=vocab.heldout_names,
        heldout_templates=vocab.heldout_templates,
        names=vocab.name_pool,
    )
    assert rebuilt == vocab


def test_vocab_rejects_names_outside_its_pool():
    with pytest.raises(ValueError, match="not in the name pool"):
        Vocab.build(heldout_names=["Keloran"])
    with pytest.raises(ValueError, match="also template words"):
        Vocab.build(names=[*NAMES, "gave"])


def test_dataset_layout_and_splits(vocab):
    ds = ioi_names(rng=np.random.default_rng(0), size=300, names="heldout", templates="all")
    assert ds.name == "ioi_names" and ds.tokens.shape[1] == max_prompt_len()
    held = set(vocab.ids(vocab.heldout_names).tolist())
    assert set(ds.fields["io"].tolist()) <= held and set(ds.fields["s"].tolist()) <= held
    rows = np.arange(len(ds))
    tokens = ds.tokens.numpy()
    pos = {k: v[:, 0] for k, v in ds.positions.items()}
    assert (tokens[rows, pos["IO"]] == ds.fields["io"]).all()
    assert (tokens[rows, pos["S1"]] == ds.fields["s"]).all()
    assert (tokens[rows, pos["S2"]] == ds.fields["s"]).all()
    assert (pos["S1+1"] == pos["S1"] + 1).all()
    after_end = np.arange(tokens.shape[1])[None, :] > pos["END"][:, None]
    assert (tokens[after_end] == vocab.pad_id).all()
    assert (tokens[~after_end] != vocab.pad_id).all()
    assert (ds.fields["length"] == pos["END"] + 1).all()
    train = ioi_names(rng=np.random.default_rng(0), size=300)
    assert not set(train.fields["io"].tolist()) & held


def test_generators_use_the_ioi_names_vocabulary(vocab):
    """Generated rows come from the same (default) vocabulary and split as the pool."""
    ds = make_dataset("ioi_names", {"size": 60, "names": "heldout"}, np.random.default_rng(1))
    rows = np.arange(0, 60, 2)
    new = ds.generator("names")(ds, rows, np.random.default_rng(2))
    assert new.name == "ioi_names"
    assert (new.fields["io"] == ds.fields["io"][rows]).all()
    assert (new.fields["s"] == ds.fields["s"][rows]).all()
    fresh = ds.generator("template")(ds, rows, np.random.default_rng(2))
    held = set(vocab.ids(vocab.heldout_names).tolist())
    assert set(fresh.fields["io"].tolist()) <= held
    assert (fresh.fields["template"] == ds.fields["template"][rows]).all()
    ds.extend(fresh)


@pytest.mark.parametrize("order", ["ABBA", "BABA"])
def test_model_solves_ioi_for_names_it_never_saw(model, vocab, order):
    """IO > S on ≥ 95% of held-out-name prompts (held-out templates too), each order."""
    for templates in ("train", "heldout"):
        ds = ioi_names(
            rng=np.random.default_rng([7, len(templates)]),
            size=200,
            names="heldout",
            templates=templates,
            prompt_type=order,
        )
        with torch.no_grad():
            logits = model.bridge(ds.tokens)
        rows = torch.arange(len(ds))
        at_end = logits[rows, torch.as_tensor(ds.positions["END"][:, 0])]
        io, s = torch.as_tensor(ds.fields["io"]), torch.as_tensor(ds.fields["s"])
        ld = at_end[rows, io] - at_end[rows, s]
        assert (ld > 0).double().mean().item() >= 0.95, (templates, order)
        card = CARD["cells"][f"names=heldout,templates={templates},order={order}"]
        assert ld.mean().item() > card["logit_diff"] - 1.0


def test_model_matches_hugging_face(model):
    from transformers import GPT2LMHeadModel

    ds = ioi_names(rng=np.random.default_rng(8), size=32, names="all", templates="all")
    hf = GPT2LMHeadModel.from_pretrained(VOCAB_FILE.parent).eval()
    with torch.no_grad():
        ours = model.bridge(ds.tokens).log_softmax(-1)
        theirs = hf(ds.tokens).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-3


def test_full_ioi_names_hypothesis_is_exact():
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        full = scrub.run(HYPOTHESES / "full.yaml", n=8)
    assert full.recovered == 1.0
    assert full.clean > full.baseline + 3  # n = 8: clean 9.3, baseline 3.0


def test_empty_ioi_names_hypothesis_is_exact():
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        empty = scrub.run(HYPOTHESES / "empty.yaml", n=8)
    assert empty.recovered == 0.0
