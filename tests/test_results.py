"""ScrubResult: the score's arithmetic, CIs, JSON, and the CLI that prints and saves it."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import yaml

import scrub
from scrub._result import bootstrap_ci, recovered_of
from scrub.cli import main
from tests.conftest import base_spec

REQUIRED_KEYS = {
    "hypothesis", "model", "metric", "n", "seed", "clean", "baseline", "scrubbed",
    "recovered", "recovered_ci", "per_example", "draws", "warnings",
}  # fmt: skip


def partial_hypothesis(model_dir) -> dict:
    return base_spec(
        model_dir,
        nodes={
            "out": {"components": ["logits"], "inputs": [{"node": "h", "positions": "REP"}]},
            "h": {
                "components": ["a1.h0", "a1.h1"],
                "sampler": "exact",
                "inputs": [{"node": "p", "channels": ["k", "v"]}],
            },
            "p": {"components": ["a0.h2", "embed"], "sampler": "exact"},
        },
    )


@pytest.fixture
def hyp_file(tmp_path, tiny_model_dir):
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(partial_hypothesis(tiny_model_dir), sort_keys=False))
    return path


def test_recovered_is_the_ratio_of_mean_differences():
    clean, base, scrubbed = np.array([1.0, 3.0]), np.array([5.0, 7.0]), np.array([2.0, 6.0])
    assert recovered_of(clean, base, scrubbed) == pytest.approx((4 - 6) / (2 - 6))


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    clean = rng.normal(1, 0.1, 200)
    base = rng.normal(4, 0.1, 200)
    scrubbed = rng.normal(2, 0.5, 200)
    point = recovered_of(clean, base, scrubbed)
    lo, hi = bootstrap_ci((clean, base, scrubbed), recovered_of, rng=np.random.default_rng(1))
    assert lo < point < hi and hi - lo < 0.2
    again = bootstrap_ci((clean, base, scrubbed), recovered_of, rng=np.random.default_rng(1))
    assert (lo, hi) == again


def test_bootstrap_ci_of_constant_data_is_the_point():
    ones = np.ones(10)
    assert bootstrap_ci((ones, 2 * ones, ones), recovered_of, rng=np.random.default_rng(0)) == (
        1.0,
        1.0,
    )


def test_result_json_has_the_documented_keys_and_round_trips(hyp_file, tiny_model):
    result = scrub.run(hyp_file, model=tiny_model, n=20)
    data = json.loads(result.to_json())
    assert set(data) >= REQUIRED_KEYS
    assert len(data["per_example"]) == 20 and len(data["recovered_ci"]) == 2
    assert set(data["draws"]) == {"out", "out.other", "h", "h.other", "p"}
    assert data["metric"]["kind"] == "kl" and data["n"] == 20
    assert data["hypothesis_file"] == str(hyp_file)
    assert data["versions"]["torch"]
    assert scrub.ScrubResult.from_dict(data).to_json() == result.to_json()
    means = [np.mean(data[k]) for k in ("per_example_clean", "per_example_baseline", "per_example")]
    assert means == pytest.approx([data["clean"], data["baseline"], data["scrubbed"]])


def test_nan_is_written_as_null(tiny_model_dir, tiny_model):
    spec = partial_hypothesis(tiny_model_dir)
    spec["metric"] = {"kind": "kl", "positions": "REP"}
    spec["nodes"] = {"out": {"components": ["logits"]}}
    hyp = scrub.hypothesis_from_dict(spec)
    with pytest.warns(scrub.ScrubWarning):
        result = scrub.run(hyp, model=tiny_model, n=5)
    # Root only: scrubbed == baseline, so recovered is 0 — but KL of clean is 0, baseline > 0.
    assert result.clean == 0.0 and result.recovered == 0.0
    assert json.loads(result.to_json())["clean"] == 0.0


def test_result_repr(hyp_file, tiny_model):
    result = scrub.run(hyp_file, model=tiny_model, n=10)
    text = repr(result)
    assert text.startswith("ScrubResult('partial', kl: clean=")
    assert "recovered=" in text and "n=10, seed=0)" in text


def test_cli_run_prints_the_table_and_writes_json(hyp_file, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "res" / "result.json"
    code = main(["run", str(hyp_file), "--n", "12", "--seed", "2", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    for word in ("clean", "baseline (resample_all)", "scrubbed", "recovered", "95% CI"):
        assert word in printed
    data = json.loads(out.read_text())
    assert set(data) >= REQUIRED_KEYS and data["n"] == 12 and data["seed"] == 2
    assert data["model"] == str(tiny_model_dir)


def test_cli_check_ok(hyp_file, capsys):
    assert main(["check", str(hyp_file)]) == 0
    assert "ok:" in capsys.readouterr().out


def test_cli_reports_hypothesis_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\n")
    assert main(["run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.yaml" in err and "Traceback" not in err


def test_metric_kinds_on_the_clean_model(tiny_model_dir, tiny_model):
    """Accuracy is a fraction, KL of the clean model to itself is 0, logit diffs are finite."""
    for metric, check in [
        ({"kind": "accuracy", "positions": "REP", "labels": "next"}, lambda v: 0 <= v <= 1),
        ({"kind": "kl", "positions": "REP"}, lambda v: v == 0),
        (
            {"kind": "logit_diff", "positions": "END", "correct": "first_token", "wrong": "s1"},
            math.isfinite,
        ),
    ]:
        spec = partial_hypothesis(tiny_model_dir)
        spec["metric"] = metric
        with warnings.catch_warnings():  # a random model may score 0 accuracy clean and base
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            result = scrub.run(scrub.hypothesis_from_dict(spec), model=tiny_model, n=8)
        assert check(result.clean), metric


def test_a_scrub_that_changes_nothing_is_reported(tiny_model_dir, tiny_model):
    """Cond on an injective feature returns the reference rows: warned and kept in the JSON."""
    spec = partial_hypothesis(tiny_model_dir)
    spec["nodes"]["p"]["sampler"] = {"kind": "cond", "features": ["segment"]}
    with pytest.warns(scrub.ScrubWarning, match="found only the reference example itself"):
        result = scrub.run(scrub.hypothesis_from_dict(spec), model=tiny_model, n=10)
    assert any(
        "node 'p'" in w and "100% of rows" in w for w in json.loads(result.to_json())["warnings"]
    )
    assert result.draws["p"] == result.draws["h"]
