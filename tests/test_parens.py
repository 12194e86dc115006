"""The parentheses dataset and the shipped paren-balance classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import scrub
from scrub.data.parens import (
    BALANCED,
    CLOSE,
    KINDS,
    OPEN,
    PAD,
    START,
    UNBALANCED,
    VOCAB,
    from_strings,
    to_string,
)

SIZE = 600


@pytest.fixture(scope="module")
def ds():
    return scrub.make_dataset("parens", {"size": SIZE}, np.random.default_rng(0))


def brute_force(s: str) -> dict:
    """Every field of one string, the slow and obvious way."""
    depth, lowest = 0, None
    for c in s:
        depth += 1 if c == "(" else -1
        lowest = depth if lowest is None else min(lowest, depth)
    count_ok, horizon_ok = s.count("(") == s.count(")"), lowest >= 0
    balanced = count_ok and horizon_ok
    return {
        "kind": [[0, 2], [1, 3]][not count_ok][not horizon_ok],
        "balanced": balanced,
        "count_ok": count_ok,
        "horizon_ok": horizon_ok,
        "length": len(s),
        "n_open": s.count("("),
        "elevation": depth,
        "min_elevation": lowest,
        "first_char_open": s[0] == "(",
        "last_char_close": s[-1] == ")",
        "ends_ok": s[0] == "(" and s[-1] == ")",
        "label": BALANCED if balanced else UNBALANCED,
        "wrong_label": UNBALANCED if balanced else BALANCED,
    }


def test_every_field_matches_a_brute_force_check(ds):
    for row in range(len(ds)):
        expected = brute_force(to_string(ds.tokens[row]))
        got = {name: ds.fields[name][row].item() for name in expected}
        assert got == expected, (row, to_string(ds.tokens[row]))


def test_known_strings():
    ds = from_strings(["()", "(()", ")(", "))", "())(", "(())()"])
    assert ds.fields["kind"].tolist() == [0, 1, 2, 3, 2, 0]
    assert [KINDS[k] for k in ds.fields["kind"]] == [
        "balanced", "count", "horizon", "both", "horizon", "balanced",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a string"):
        from_strings(["(a)"])


def test_failure_kinds_are_separated_and_in_the_stated_proportions(ds):
    f = ds.fields
    assert np.bincount(f["kind"], minlength=4).tolist() == [300, 120, 120, 60]  # 50/20/20/10%
    assert np.array_equal(f["balanced"], f["count_ok"] & f["horizon_ok"])
    # Hard negatives: count failures that never go negative, mostly one or two '(' short ...
    count = f["kind"] == 1
    assert (f["min_elevation"][count] >= 0).all() and (f["elevation"][count] > 0).all()
    assert (f["elevation"][count] <= 2).mean() > 0.4
    # ... and horizon failures with equal counts, about half dipping to exactly -1.
    horizon = f["kind"] == 2
    assert (f["elevation"][horizon] == 0).all()
    assert 0.4 < (f["min_elevation"][horizon] == -1).mean() < 0.8
    # Balanced strings and horizon failures have even lengths; every length occurs.
    assert (f["length"][f["count_ok"]] % 2 == 0).all()
    assert f["length"].min() >= 1 and f["length"].max() == 40
    assert len(np.unique(f["length"])) == 40


def test_positions_point_at_the_right_tokens_and_padding_follows_end(ds):
    tokens = ds.tokens.numpy()
    assert ds.seq_len == 41 and (tokens[:, 0] == START).all()
    assert ds.positions["START"].shape == ds.positions["END"].shape == (len(ds), 1)
    assert (ds.positions["START"] == 0).all()
    end = ds.positions["END"][:, 0]
    assert np.array_equal(end, ds.fields["length"])
    cols = np.arange(ds.seq_len)[None, :]
    body = (cols >= 1) & (cols <= end[:, None])
    assert np.isin(tokens[body], [OPEN, CLOSE]).all()
    assert (tokens[cols > end[:, None]] == PAD).all()
    rows = np.arange(len(ds))
    assert np.array_equal(tokens[rows, end] == CLOSE, ds.fields["last_char_close"])


def test_same_seed_same_dataset_and_parameters_are_checked(ds):
    again = scrub.make_dataset("parens", {"size": SIZE}, np.random.default_rng(0))
    assert torch.equal(again.tokens, ds.tokens)
    other = scrub.make_dataset("parens", {"size": SIZE}, np.random.default_rng(1))
    assert not torch.equal(other.tokens, ds.tokens)
    with pytest.raises(scrub.HypothesisError, match="rejected its params"):
        scrub.make_dataset("parens", {"p_balanced": 0.9, "p_count": 0.2}, np.random.default_rng())
    with pytest.raises(scrub.HypothesisError, match="has no parameter 'length'"):
        scrub.make_dataset("parens", {"length": 3}, np.random.default_rng())


@pytest.mark.parametrize(
    "name", ["kind", "balanced", "count_ok", "horizon_ok", "length", "kind_length"]
)
def test_generators_keep_their_feature_and_are_seeded(ds, name):
    rows = np.arange(0, SIZE, 3)
    gen = ds.generator(name)
    new = gen(ds, rows, np.random.default_rng(5))
    feature = ds.feature(name)
    assert np.array_equal(feature(new, np.arange(len(new))), feature(ds, rows))
    for row in range(len(new)):  # the fields of generated strings are right, too
        expected = brute_force(to_string(new.tokens[row]))
        assert {k: new.fields[k][row].item() for k in expected} == expected
    again = gen(ds, rows, np.random.default_rng(5))
    assert torch.equal(again.tokens, new.tokens)
    assert not torch.equal(gen(ds, rows, np.random.default_rng(6)).tokens, new.tokens)
    assert (new.tokens != ds.tokens[rows]).any(1).float().mean() > 0.5  # new strings, mostly
    copy = ds.subset(np.arange(len(ds)))
    assert np.array_equal(copy.extend(new), np.arange(len(ds), len(ds) + len(rows)))


def test_a_generator_draws_the_rest_like_the_dataset(ds):
    """Keeping only 'balanced' draws the failure kind and the length afresh."""
    rows = np.flatnonzero(~ds.fields["balanced"])
    new = ds.generator("balanced")(ds, rows, np.random.default_rng(0))
    assert set(new.fields["kind"].tolist()) == {1, 2, 3}
    assert (new.fields["length"] != ds.fields["length"][rows]).mean() > 0.8


@pytest.fixture(scope="module")
def model():
    return scrub.load_model("parens")


def test_the_shipped_model_loads_offline(model):
    assert model.kind == "shipped" and model.checkpoint_sha256() is not None
    shape = model.shape
    assert (shape.n_layers, shape.n_heads, shape.d_vocab) == (3, 2, VOCAB)
    assert shape.n_ctx >= 42


def test_the_shipped_model_meets_its_card(model):
    """MODEL_CARD.md: near-perfect accuracy on held-out strings, for every failure kind."""
    fresh = scrub.make_dataset("parens", {"size": 400}, np.random.default_rng(2024))
    logits = model.run(fresh.tokens)[0]
    end = torch.as_tensor(fresh.positions["END"][:, 0])
    logp = logits[torch.arange(len(fresh)), end].log_softmax(-1)
    labels = torch.as_tensor(fresh.fields["label"])
    correct = (logp.argmax(-1) == labels).numpy()
    kind = fresh.fields["kind"]
    for code in range(4):
        assert correct[kind == code].mean() >= 0.97, KINDS[code]
    assert correct.mean() >= 0.99
    assert -logp.gather(1, labels[:, None]).mean() < 0.05


HYPOTHESES = Path(__file__).parent.parent / "hypotheses" / "parens"


def test_full_paren_hypothesis_recovers_exactly_one(model):
    """Full at END is the clean model, although strings (and so END) differ in length."""
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        result = scrub.run(HYPOTHESES / "full.yaml", model=model, n=50)
    assert result.recovered == 1.0


def test_empty_paren_hypothesis_recovers_exactly_zero(model):
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        result = scrub.run(HYPOTHESES / "empty.yaml", model=model, n=50)
    assert result.recovered == 0.0
    assert result.baseline > 1.0 > result.clean  # loss: a random string's answer is often wrong


def test_a_generate_sampler_scrubs_with_new_strings_of_the_same_class(model):
    """count/horizon with generated strings: every draw is new and keeps its node's feature."""
    spec = {
        "model": "parens",
        "dataset": {"generator": "parens", "params": {"size": 300}},
        "metric": {"kind": "accuracy", "positions": "END", "labels": "label"},
        "nodes": {
            "out": {"components": ["logits"], "inputs": [{"node": "decision", "positions": "END"}]},
            "decision": {
                "components": ["m1@END"],
                "inputs": [
                    {"node": "count", "channels": "in", "positions": "END"},
                    {"node": "horizon", "channels": "in", "positions": "END"},
                ],
            },
            "count": {
                "components": ["embed@END", "a0.h0@END", "a0.h1@END", "m0@END"],
                "sampler": {"kind": "generate", "feature": "count_ok"},
            },
            "horizon": {
                "components": ["a1.h0@END"],
                "sampler": {"kind": "generate", "feature": "horizon_ok"},
            },
        },
    }
    hyp = scrub.hypothesis_from_dict(spec, default_name="generated")
    ds = scrub.make_dataset("parens", {"size": 300}, np.random.default_rng(0))
    result = scrub.run(hyp, model=model, dataset=ds, n=40, seed=0)
    reference = np.array(result.reference)
    for node, feature in (("count", "count_ok"), ("horizon", "horizon_ok")):
        rows = np.array(result.draws[node])
        assert (rows >= 300).all()
        assert np.array_equal(ds.fields[feature][rows], ds.fields[feature][reference])
    assert 0.5 < result.scrubbed <= 1.0
