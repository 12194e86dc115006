"""Every shipped hypothesis validates and runs; the shipped induction model's invariants hold."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import scrub
from scrub.cli import main

HYPOTHESES = sorted((Path(__file__).parent.parent / "hypotheses").rglob("*.yaml"))
INDUCTION = Path(__file__).parent.parent / "hypotheses" / "induction"


def test_there_are_shipped_hypotheses():
    names = {p.name for p in INDUCTION.glob("*.yaml")}
    assert {"full.yaml", "empty.yaml", "kcomp.yaml", "kcomp_all_heads.yaml", "naive.yaml"} <= names


@pytest.mark.parametrize("path", HYPOTHESES, ids=lambda p: p.stem)
def test_shipped_hypothesis_checks_and_runs(path, capsys):
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)  # full/empty warn by design
        result = scrub.run(path, n=16)
    assert len(result.per_example) == 16
    assert result.clean < result.baseline  # loss: the model beats random resampling


def test_full_induction_hypothesis_recovers_exactly_one():
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        result = scrub.run(INDUCTION / "full.yaml", n=50)
    assert result.recovered == 1.0


def test_empty_induction_hypothesis_recovers_exactly_zero():
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        result = scrub.run(INDUCTION / "empty.yaml", n=50)
    assert result.recovered == 0.0
