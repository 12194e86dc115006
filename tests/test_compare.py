"""``scrub.compare``: one experiment, paired statistics, draws' variance, controls."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import scrub
from scrub.cli import main
from scrub.experiments import _stats
from scrub.experiments.controls import random_controls
from tests.conftest import base_spec

INDUCTION = Path(__file__).parent.parent / "hypotheses" / "induction"


def _hyp(model_dir, nodes, name, **overrides):
    return scrub.hypothesis_from_dict(
        base_spec(model_dir, nodes=nodes, **overrides), default_name=name
    )


def _small(model_dir, heads, name="h", **overrides):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {
            "components": heads,
            "sampler": "exact",
            "inputs": [{"node": "p", "channels": "k"}],
        },
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    return _hyp(model_dir, nodes, name, **overrides)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return fn(*args, **kwargs)


# -- statistics --------------------------------------------------------------------------------
def test_holm_matches_a_hand_computation():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04)
    assert _stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert _stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = _stats.holm([0.02, math.nan, 0.01])
    assert math.isnan(adjusted[1]) and adjusted[0] == pytest.approx(0.02)
    assert adjusted[2] == pytest.approx(0.02)


def test_sign_flip_is_exact_for_small_samples_and_never_zero():
    rng = np.random.default_rng(0)
    assert _stats.sign_flip_p(np.zeros(30), rng=rng) == 1.0
    # all four values positive: only the identity and the all-flipped assignment are as extreme
    assert _stats.sign_flip_p(np.array([1.0, 2, 3, 4]), rng=rng) == pytest.approx(2 / 16)
    assert _stats.sign_flip_p(np.array([1.0, 2, 3, 4]), rng=rng, alternative="greater") == 1 / 16
    big = _stats.sign_flip_p(np.full(200, 1.0), rng=rng, n_resamples=999)
    assert big == pytest.approx(1 / 1000)


def test_combined_interval_contains_examples_interval():
    (lo, hi), half = _stats.combined_interval(0.5, (0.45, 0.52), [0.49, 0.5, 0.52])
    assert lo < 0.45 and hi > 0.52 and half > 0
    assert _stats.combined_interval(0.5, (0.45, 0.52), [0.5]) is None


# -- compare -----------------------------------------------------------------------------------
def test_hypothesis_compared_with_itself_differs_by_exactly_zero(tiny_model_dir, tiny_model):
    a = _small(tiny_model_dir, ["a1.h0", "a1.h2"], name="a")
    again = _small(tiny_model_dir, ["a1.h0", "a1.h2"], name="a")  # another object, same spec
    cmp = _quiet(scrub.compare, [a, again, a], model=tiny_model)
    assert [h.name for h in cmp.hypotheses] == ["a", "a#2", "a#3"]
    for pair in cmp.pairs:
        assert pair.difference == 0.0
        assert pair.ci == (0.0, 0.0)
        assert pair.p == 1.0 and pair.p_holm == 1.0
        assert pair.verdict == "not distinguishable at α = 0.05"


def test_kcomp_beats_naive_on_the_induction_model():
    cmp = _quiet(scrub.compare, [INDUCTION / "naive.yaml", INDUCTION / "kcomp.yaml"], n=60)
    pair = cmp.pair("induction-kcomp", "induction-naive")
    assert pair.difference > 0.3
    assert pair.ci[0] > 0
    assert pair.p_holm < 0.05
    assert cmp.pairs[0].difference < 0  # as listed: naive − kcomp
    assert cmp.pairs[0].verdict == "induction-kcomp > induction-naive"
    kcomp, naive = cmp["induction-kcomp"], cmp["induction-naive"]
    assert pair.difference == pytest.approx(kcomp.recovered - naive.recovered, abs=1e-12)
    assert naive.complete["incomplete"] is True and naive.complete["equivalent"] is False


def test_pairs_are_holm_adjusted_together(tiny_model_dir, tiny_model):
    hyps = [
        _small(tiny_model_dir, heads, name=f"h{i}")
        for i, heads in enumerate([["a1.h0"], ["a1.h0", "a1.h2"], ["a1.h3"]])
    ]
    cmp = _quiet(scrub.compare, hyps, model=tiny_model)
    assert len(cmp.pairs) == 3
    assert [p.p_holm for p in cmp.pairs] == pytest.approx(_stats.holm([p.p for p in cmp.pairs]))


def test_one_draw_equals_a_plain_run(tiny_model_dir, tiny_model):
    hyp = _small(tiny_model_dir, ["a1.h0", "a1.h2"])
    dataset = scrub.make_dataset_for(hyp, seed=2)
    plain = _quiet(scrub.run, hyp, model=tiny_model, seed=2, dataset=dataset)
    cmp = _quiet(scrub.compare, [hyp], model=tiny_model, seed=2, seeds=1)
    score = cmp.hypotheses[0]
    assert score.recovered == plain.recovered
    assert score.ci == plain.recovered_ci
    assert score.per_example == plain.per_example
    assert cmp.reference == plain.reference
    assert cmp.clean == plain.clean and cmp.baseline == plain.baseline
    assert score.total_ci is None and score.per_draw == [plain.recovered]


def test_several_draws_keep_the_reference_batch_and_widen_the_interval(tiny_model_dir, tiny_model):
    a = _small(tiny_model_dir, ["a1.h0", "a1.h2"], name="a")
    b = _small(tiny_model_dir, ["a1.h3"], name="b")
    cmp = _quiet(scrub.compare, [a, b], model=tiny_model, seeds=3)
    plain = _quiet(scrub.run, a, model=tiny_model)
    assert cmp.reference == plain.reference
    assert cmp.experiment["draw_seeds"] == [0, 1, 2]
    for score in cmp.hypotheses:
        assert len(set(score.per_draw)) == 3  # the draws differ
        lo, hi = score.total_ci
        assert lo <= score.ci[0] and score.ci[1] <= hi
        assert hi - lo > score.ci[1] - score.ci[0]
    pair = cmp.pairs[0]
    assert pair.total_ci[0] <= pair.ci[0] and pair.ci[1] <= pair.total_ci[1]


def test_rivals_on_different_experiments_are_refused(tiny_model_dir, tiny_model, tmp_path):
    a = _small(tiny_model_dir, ["a1.h0"], name="a")
    loss = {"kind": "loss", "positions": "REP", "labels": "next"}
    b = _small(tiny_model_dir, ["a1.h3"], name="b", metric=loss)
    with pytest.raises(scrub.HypothesisError, match="differ in 'metric'") as info:
        scrub.compare([a, b], model=tiny_model)
    assert info.value.key == ("metric",)
    c = _small(tiny_model_dir, ["a1.h3"], name="c", defaults={"n": 10, "seed": 0})
    with pytest.raises(scrub.HypothesisError, match=r"defaults\.n"):
        scrub.compare([a, c], model=tiny_model)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"metric": loss}))
    cmp = _quiet(scrub.compare, [a, b], model=tiny_model, experiment=exp)
    assert cmp.experiment["metric"]["kind"] == "loss"


def test_json_is_strict_and_the_frame_is_long(tiny_model_dir, tiny_model):
    a = _small(tiny_model_dir, ["a1.h0"], name="a")
    b = _small(tiny_model_dir, ["a1.h3"], name="b")
    cmp = _quiet(scrub.compare, [a, b], model=tiny_model)
    data = json.loads(cmp.to_json())
    assert data["pairs"][0]["a"] == "a" and "methodology" in data["hypotheses"][0]
    assert data["hypotheses"][0]["methodology"]["ablation"] == "resample"
    frame = cmp.to_frame()
    assert list(frame.columns) == ["kind", "name", "statistic", "value"]
    assert set(frame.kind) == {"hypothesis", "pair"}
    row = frame[(frame.name == "a vs b") & (frame.statistic == "difference")]
    assert float(row.value.iloc[0]) == cmp.pairs[0].difference
    assert "a vs b" in cmp.table() and repr(cmp) == "Comparison([a, b], n=24, draws=1)"


# -- random controls ---------------------------------------------------------------------------
def test_random_controls_are_reproducible_and_keep_the_shape(tiny_model_dir, tiny_model):
    hyp = _small(tiny_model_dir, ["a1.h0", "a1.h2"])
    dataset = scrub.make_dataset_for(hyp, seed=0)
    first = random_controls(hyp, tiny_model, dataset, count=4, seed=0)
    again = random_controls(hyp, tiny_model, dataset, count=4, seed=0)
    other = random_controls(hyp, tiny_model, dataset, count=4, seed=1)
    specs = lambda hs: [h.spec for h in hs]  # noqa: E731
    assert specs(first) == specs(again)
    assert specs(first) != specs(other)
    for control in first:
        for name in hyp.graph:
            mine = [mc.component.kind for mc in hyp.node(name).components]
            theirs = [mc.component.kind for mc in control.node(name).components]
            assert mine == theirs
    cmp = _quiet(scrub.compare, [hyp], model=tiny_model, random_controls=4)
    again_cmp = _quiet(scrub.compare, [hyp], model=tiny_model, random_controls=4)
    controls = cmp.hypotheses[0].controls
    assert controls == again_cmp.hypotheses[0].controls
    assert len(controls["recovered"]) == 4 and 0 <= controls["percentile"] <= 100


def test_cli_compare_writes_json(tiny_model_dir, tmp_path, capsys):
    paths = []
    for name, heads in (("a", ["a1.h0"]), ("b", ["a1.h3"])):
        spec = base_spec(tiny_model_dir, nodes=_small(tiny_model_dir, heads).spec.model_dump(
            mode="json", exclude_none=True)["nodes"], name=name)  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        paths.append(str(path))
    out = tmp_path / "cmp.json"
    assert main(["compare", *paths, "--n", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a vs b" in printed and "TOST" in printed
    assert json.loads(out.read_text())["experiment"]["n"] == 12


def test_compare_and_diagnose_resolve_model_paths_like_run(tmp_path, tiny_model_dir, monkeypatch):
    # A relative 'model:' is relative to the hypothesis file, whatever the current directory.
    (tmp_path / "hyp").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m").symlink_to(tiny_model_dir, target_is_directory=True)
    spec = base_spec("../models/m", nodes={"out": {"components": ["logits"]}})
    path = tmp_path / "hyp" / "empty.yaml"
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)  # where '../models/m' names nothing
    cmp = _quiet(scrub.compare, [path, path], n=4)
    assert cmp.pairs[0].difference == 0.0
    diag = _quiet(scrub.diagnose, path, n=4)
    assert diag.rows
