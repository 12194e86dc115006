"""``scrub reproduce ioi``, the word-level ABC flips it relies on, and the IOI claim files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import scrub
from scrub.cli import main
from scrub.experiments._flips import flip_pool
from scrub.experiments.reproduce import CLAIMS, ROOT, reproduce

HYP = Path(__file__).parent.parent / "hypotheses"


def _names_ds(size=40, generator="ioi_names"):
    params = {"size": size, "names": "heldout", "templates": "all"}
    return scrub.make_dataset(generator, params, np.random.default_rng(0))


@pytest.mark.parametrize("what", ["S1", "S2", "ABC", "S", "IO"])
def test_word_level_flips_change_only_their_slot(what):
    ds = _names_ds()
    flipped = flip_pool(ds, [what], np.random.default_rng(1))
    changed = (flipped.tokens != ds.tokens[: ds.n_base]).numpy()
    slots = {"S1": ["S1"], "S2": ["S2"], "ABC": ["S2"], "S": ["S1", "S2"], "IO": ["IO"]}[what]
    rows = np.arange(ds.n_base)
    expected = np.zeros_like(changed)
    for slot in slots:
        expected[rows, ds.positions[slot][:, 0]] = True
    assert (changed == expected).all()
    duplicated = flipped.features["s_duplicated"](flipped, rows)
    assert (duplicated == (what in ("S", "IO"))).all()


def test_the_abc_generator_writes_a_third_name_at_s2():
    ds = _names_ds(generator="ioi_names_abc")
    rows = np.arange(len(ds))
    s2 = ds.tokens[rows, ds.positions["S2"][:, 0]].numpy()
    assert (s2 == ds.fields["s2"]).all() and (s2 != ds.fields["s"]).all()
    assert (s2 != ds.fields["io"]).all() and not ds.features["s_duplicated"](ds, rows).any()
    assert ds.params["abc"] is True and "abc" not in _names_ds().params


def test_every_claim_file_exists_for_both_targets():
    for target, folder in (("ioi_names", "ioi_names"), ("gpt2", "ioi")):
        for claim in CLAIMS[target]:
            for name in claim.files:
                assert (HYP / folder / name).is_file(), (target, claim.key, name)
    assert HYP.parent == ROOT


def test_reproduce_refuses_unknown_papers_and_claims(tmp_path):
    with pytest.raises(scrub.HypothesisError, match="nothing to reproduce named 'ioi2'"):
        reproduce("ioi2", out=tmp_path)
    with pytest.raises(scrub.HypothesisError, match="unknown claim 'claim9'") as err:
        reproduce(only=["claim9"], out=tmp_path)
    assert "claim2_keys" in err.value.hint


def test_reproduce_cli_on_a_tiny_n_writes_numbers_that_its_commands_measure(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["reproduce", "ioi", "--n", "8", "--only", "claim6_only_movers", "--no-patches",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'results.md'}" in printed and f"wrote {out / 'results.json'}" in printed
    results = json.loads((out / "results.json").read_text())
    claim = results["claims"]["claim6_only_movers"]
    assert claim["command"] == "scrub compare hypotheses/ioi_names/without_movers.yaml --n 8"
    md = (out / "results.md").read_text()
    assert claim["command"] in md
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        alone = scrub.run(HYP / "ioi_names" / "without_movers.yaml", n=8)
    assert claim["hypotheses"][0]["recovered"] == pytest.approx(alone.recovered, abs=1e-9)
    assert f"{alone.recovered:.3f}" in md


def test_reproduce_runs_the_gpt2_files_on_a_gpt2_shaped_model(tmp_path, gpt2_shaped_dir):
    rep = reproduce(model=str(gpt2_shaped_dir), only=["claim2_keys"], n=4, out=tmp_path)
    claim = rep.results["claims"]["claim2_keys"]
    assert rep.results["target"] == "gpt2" and "hypotheses/ioi/keys_exact.yaml" in claim["command"]
    assert "--model" in claim["command"] and len(claim["hypotheses"]) == 2


@pytest.mark.slow
def test_reproduce_on_the_offline_model_finds_the_layer3_movers(tmp_path):
    rep = reproduce(out=tmp_path)
    logits = rep.results["patches"]["ioi_names-iterative-path-logits"]["top"]
    assert {row["sender"] for row in logits[:5]} == {"a3.h1", "a3.h2", "a3.h3", "a3.h4", "a3.h7"}
    assert set(rep.results["claims"]) == {c.key for c in CLAIMS["ioi_names"]}
    assert "diagnosis" in rep.results and (tmp_path / "results.md").is_file()
    assert any(p.suffix == ".png" for p in rep.files)
