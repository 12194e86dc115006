"""The IOI-toy dataset (word-level IOI prompts) and the shipped IOI-toy model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import scrub
from scrub._positions import parse_positions, resolve_positions
from scrub.data.ioi_templates import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES
from scrub.data.ioi_toy import (
    BOS,
    PAD,
    VOCAB_FILE,
    Vocab,
    ioi_toy,
    max_prompt_len,
    render,
    split_words,
)

CARD = json.loads((VOCAB_FILE.parent / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def vocab():
    return Vocab.load()


@pytest.fixture(scope="module")
def every_template():
    """Prompts from every template in both orders, any names (each of the 30 layouts present)."""
    ds = ioi_toy(rng=np.random.default_rng(0), size=900, names="all", templates="all")
    layouts = set(zip(ds.fields["template"].tolist(), ds.fields["order"].tolist(), strict=True))
    assert len(layouts) == 2 * len(BABA_TEMPLATES)
    return ds


def check_examples(ds, vocab: Vocab) -> None:
    """Every example is ``<bos> prompt <pad>...`` with its positions on the right tokens."""
    tokens = ds.tokens.numpy()
    pos = {k: v[:, 0] for k, v in ds.positions.items()}
    assert tokens.shape[1] == max_prompt_len()
    for i in range(len(ds)):
        t, order = int(ds.fields["template"][i]), int(ds.fields["order"][i])
        io, s = vocab.tokens[ds.fields["io"][i]], vocab.tokens[ds.fields["s"][i]]
        values = {"[A]": io, "[B]": s, "[PLACE]": vocab.tokens[ds.fields["place"][i]]}
        values["[OBJECT]"] = vocab.tokens[ds.fields["object"][i]]
        template = (ABBA_TEMPLATES, BABA_TEMPLATES)[order][t]
        words, _ = render(template, values)
        end = pos["END"][i]
        assert end == len(words)
        assert vocab.decode(tokens[i, : end + 1]) == [BOS, *words]
        assert (tokens[i, end + 1 :] == vocab.pad_id).all()
        assert tokens[i, pos["IO"][i]] == ds.fields["io"][i]
        assert tokens[i, pos["S1"][i]] == tokens[i, pos["S2"][i]] == ds.fields["s"][i]
        assert pos["S1+1"][i] == pos["S1"][i] + 1
        assert io != s and io in NAMES and s in NAMES
        # The IO appears once in the prompt, the S twice; S2 is the last name before END.
        assert (tokens[i, : end + 1] == ds.fields["io"][i]).sum() == 1
        assert (tokens[i, : end + 1] == ds.fields["s"][i]).sum() == 2
        if order == 0:  # ABBA
            assert pos["IO"][i] < pos["S1"][i]
        else:
            assert pos["S1"][i] < pos["IO"][i]
        assert max(pos["IO"][i], pos["S1"][i]) < pos["S2"][i] < end


def test_split_words_and_render():
    assert split_words("Then, [B] and [A] went to the [PLACE].") == [
        *("Then", ",", "[B]", "and", "[A]", "went", "to", "the", "[PLACE]", "."),
    ]
    words, where = render(
        "[B] gave [A] a [OBJECT], [B]", {"[A]": "Mary", "[B]": "John"} | {"[OBJECT]": "ring"}
    )
    assert words == ["John", "gave", "Mary", "a", "ring", ",", "John"]
    assert where == {"[B]": [0, 6], "[A]": [2], "[OBJECT]": [4]}
    with pytest.raises(ValueError, match="not a single word"):
        render("[A] went", {"[A]": "Mary Ann"})


def test_shipped_vocab_is_the_templates_vocab(vocab):
    """word_vocab.json = what Vocab.build makes from ioi_templates (no template word missing)."""
    rebuilt = Vocab.build(
        heldout_names=vocab.heldout_names, heldout_templates=vocab.heldout_templates
    )
    assert rebuilt == vocab
    assert vocab.tokens[:2] == (BOS, PAD)
    assert vocab.decode(vocab.encode(["Mary", "gave", "."])) == ["Mary", "gave", "."]
    assert set(vocab.names("train")) | set(vocab.names("heldout")) == set(NAMES)
    assert vocab.heldout_names and vocab.heldout_templates
    with pytest.raises(KeyError, match="not in the IOI-toy vocabulary"):
        vocab.id("Zaphod")


def test_every_template_and_order_is_laid_out_right(every_template, vocab):
    check_examples(every_template, vocab)
    orders = every_template.fields["order"]
    assert set(orders.tolist()) == {0, 1}


def test_splits_and_orders(vocab):
    ds = ioi_toy(
        rng=np.random.default_rng(1),
        size=200,
        names="heldout",
        templates="heldout",
        prompt_type="BABA",
    )
    held = set(vocab.ids(vocab.heldout_names).tolist())
    assert set(ds.fields["io"].tolist()) <= held and set(ds.fields["s"].tolist()) <= held
    assert set(ds.fields["template"].tolist()) <= set(vocab.heldout_templates)
    assert set(ds.fields["order"].tolist()) == {1}
    train = ioi_toy(rng=np.random.default_rng(1), size=200)
    assert not set(train.fields["io"].tolist()) & held
    assert not set(train.fields["template"].tolist()) & set(vocab.heldout_templates)
    with pytest.raises(ValueError, match="'train', 'heldout' or 'all'"):
        ioi_toy(rng=np.random.default_rng(1), names="test")


def test_same_seed_same_dataset():
    a = ioi_toy(rng=np.random.default_rng(5), size=50)
    b = ioi_toy(rng=np.random.default_rng(5), size=50)
    assert torch.equal(a.tokens, b.tokens)
    assert all((a.positions[k] == b.positions[k]).all() for k in a.positions)


@pytest.mark.parametrize(
    ("feature", "kept"),
    [
        ("io", ["io"]),
        ("s", ["s"]),
        ("names", ["io", "s"]),
        ("template", ["template", "order"]),
        ("order", ["order"]),
    ],
)
def test_generators_keep_their_feature_and_are_seeded(every_template, vocab, feature, kept):
    ds = every_template.subset(np.arange(300))
    rows = np.arange(0, 300, 3)
    new = ds.generator(feature)(ds, rows, np.random.default_rng(3))
    again = ds.generator(feature)(ds, rows, np.random.default_rng(3))
    assert torch.equal(new.tokens, again.tokens)
    check_examples(new, vocab)
    for name in kept:
        assert (new.fields[name] == ds.fields[name][rows]).all()
    # Everything else is drawn anew: the prompts differ from the originals.
    assert (new.tokens != ds.tokens[rows]).any(1).float().mean() > 0.9
    added = ds.extend(new)  # same padded length: the pool can grow with generated rows
    assert (added == np.arange(300, 300 + len(rows))).all()


def test_features_match_the_gpt2_ioi_dataset(every_template):
    ds, rows = every_template, np.array([3, 1, 4])
    assert (ds.feature("io_name")(ds, rows) == ds.fields["io"][rows]).all()
    assert (ds.feature("s_name")(ds, rows) == ds.fields["s"][rows]).all()
    assert ds.feature("s_duplicated")(ds, rows).all()
    assert (ds.feature("positions")(ds, rows)[:, 2] == ds.positions["S2"][rows, 0]).all()
    assert (ds.feature("names")(ds, rows)[:, 1] == ds.fields["s"][rows]).all()
    assert (ds.fields["length"] == ds.positions["END"][:, 0] + 1).all()
    assert (ds.positions["BOS"] == 0).all()


def test_position_name_with_plus_parses(every_template):
    assert parse_positions("S1+1, END") == ("S1+1", "END")
    got = resolve_positions(("S1+1",), every_template, np.arange(5))
    assert (got == every_template.positions["S1"][:5] + 1).all()


@pytest.fixture(scope="module")
def model():
    return scrub.load_model("ioi_toy")


def test_model_loads_offline_and_matches_hugging_face(model):
    """Compatibility mode keeps log-probabilities (the card's TL-vs-HF check, on fresh prompts)."""
    from transformers import GPT2LMHeadModel

    ds = ioi_toy(rng=np.random.default_rng(8), size=32, names="all", templates="all")
    hf = GPT2LMHeadModel.from_pretrained(VOCAB_FILE.parent).eval()
    with torch.no_grad():
        ours = model.bridge(ds.tokens).log_softmax(-1)
        theirs = hf(ds.tokens).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-3
    assert model.shape.d_vocab == len(Vocab.load())


@pytest.mark.parametrize("templates", ["train", "heldout"])
@pytest.mark.parametrize("order", ["ABBA", "BABA"])
def test_model_meets_its_card(model, vocab, templates, order):
    """Training names, training and held-out templates (the card: held-out names fail)."""
    ds = ioi_toy(rng=np.random.default_rng(99), size=100, templates=templates, prompt_type=order)
    with torch.no_grad():
        logits = model.bridge(ds.tokens)
    rows = torch.arange(len(ds))
    at_end = logits[rows, torch.as_tensor(ds.positions["END"][:, 0])]
    io, s = torch.as_tensor(ds.fields["io"]), torch.as_tensor(ds.fields["s"])
    logit_diff = (at_end[rows, io] - at_end[rows, s]).mean().item()
    names = torch.as_tensor(vocab.ids(NAMES))
    acc_names = (names[at_end[:, names].argmax(-1)] == io).double().mean().item()
    card = CARD["cells"][f"names=train,templates={templates},order={order}"]
    # A fresh sample of 100: allow sampling noise below the card's 500-prompt numbers.
    assert logit_diff > card["logit_diff"] - 1.5
    assert acc_names > card["acc_names"] - 0.1


HYPOTHESES = VOCAB_FILE.parent.parent.parent.parent / "hypotheses" / "ioi_toy"


def test_full_and_empty_ioi_toy_hypotheses_are_exact():
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        full = scrub.run(HYPOTHESES / "full.yaml", n=8)
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        empty = scrub.run(HYPOTHESES / "empty.yaml", n=8)
    assert full.recovered == 1.0 and empty.recovered == 0.0
    assert full.clean > 5 > abs(full.baseline)
