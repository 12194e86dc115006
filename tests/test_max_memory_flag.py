"""``--max-memory MIB`` on ``compare``, ``diagnose`` and ``patch``: the budget reaches the engine.

Each command is run twice on a shipped model with a small ``n``: once with a 1 MiB budget (a
pass then takes 17 rows of the induction dataset instead of about two thousand) and once
without. A spy on :func:`scrub.engine.cache.pass_rows` checks that the budget got to the
engine and the cache, and the two runs' JSON must agree (up to float rounding).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import scrub
import scrub.engine.cache
import scrub.engine.fast
from scrub.cli import main
from scrub.experiments import patch
from scrub.experiments.patching import GRID_PASS_MEMORY

ROOT = Path(__file__).resolve().parent.parent
KCOMP = str(ROOT / "hypotheses" / "induction" / "kcomp.yaml")
NAIVE = str(ROOT / "hypotheses" / "induction" / "naive.yaml")
PATH_EXP = str(ROOT / "experiments" / "induction" / "path_prev_token.yaml")
ATTENTION_EXP = str(ROOT / "experiments" / "induction" / "attention_prev_token.yaml")
MIB = 2**20


@pytest.fixture
def budgets(monkeypatch) -> list[tuple[int | None, int]]:
    """Every ``(max_memory, rows)`` that ``pass_rows`` was asked for and answered."""
    seen: list[tuple[int | None, int]] = []
    real = scrub.engine.cache.pass_rows

    def spy(model, seq_len, *, max_memory=None):
        rows = real(model, seq_len, max_memory=max_memory)
        seen.append((max_memory, rows))
        return rows

    monkeypatch.setattr(scrub.engine.cache, "pass_rows", spy)
    monkeypatch.setattr(scrub.engine.fast, "pass_rows", spy)
    return seen


def _numbers(value, path=()):
    """The JSON's numbers by path (strings and timings aside), for comparing two runs."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("seconds", "elapsed", "versions", "command_line", "wall_s"):
                yield from _numbers(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, (*path, i))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, float(value)


def _same_numbers(a: Path, b: Path) -> None:
    left = dict(_numbers(json.loads(a.read_text())))
    right = dict(_numbers(json.loads(b.read_text())))
    assert left.keys() == right.keys() and left
    for key, x in left.items():
        y = right[key]
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-4, abs=1e-5), key


def _capped_and_plain(
    argv: list[str], out_flag: str, tmp_path: Path, budgets, default: int | None = None
) -> None:
    capped, plain = tmp_path / "capped", tmp_path / "plain"
    assert main([*argv, "--max-memory", "1", out_flag, str(capped)]) == 0
    assert budgets and {m for m, _ in budgets} == {MIB}
    small = max(rows for _, rows in budgets)
    budgets.clear()
    assert main([*argv, out_flag, str(plain)]) == 0
    assert budgets and {m for m, _ in budgets} == {default}  # no flag: the command's default
    assert small < min(rows for _, rows in budgets)  # the cap did cut the passes
    if capped.is_dir():
        capped, plain = (next(p.glob("*.json")) for p in (capped, plain))
    _same_numbers(capped, plain)


def test_compare_max_memory_reaches_the_engine(tmp_path, budgets, capsys) -> None:
    argv = ["compare", KCOMP, NAIVE, "--n", "6"]
    _capped_and_plain(argv, "--out", tmp_path, budgets)


def test_diagnose_max_memory_reaches_the_engine(tmp_path, budgets, capsys) -> None:
    _capped_and_plain(["diagnose", NAIVE, "--n", "6"], "--out", tmp_path, budgets)


@pytest.mark.parametrize(
    ("experiment", "default"),
    [(PATH_EXP, GRID_PASS_MEMORY), (ATTENTION_EXP, None)],  # grids: their own pass budget
    ids=["path", "attention"],
)
def test_patch_max_memory_reaches_the_engine(
    experiment, default, tmp_path, budgets, capsys
) -> None:
    argv = ["patch", experiment, "--n", "4", "--no-figures"]
    _capped_and_plain(argv, "--out", tmp_path, budgets, default)


@pytest.mark.parametrize("command", ["compare", "diagnose", "patch"])
@pytest.mark.parametrize("value", ["0", "-3", "lots"])
def test_bad_max_memory_is_a_usage_error(command, value, capsys) -> None:
    file = PATH_EXP if command == "patch" else KCOMP
    with pytest.raises(SystemExit) as exc:
        main([command, file, "--max-memory", value])
    assert exc.value.code == 2
    assert "--max-memory" in capsys.readouterr().err


def test_python_apis_refuse_a_bad_max_memory() -> None:
    for value in (0, 1.5):
        with pytest.raises(ValueError, match="max_memory"):
            scrub.compare([KCOMP], max_memory=value)
        with pytest.raises(ValueError, match="max_memory"):
            scrub.diagnose(KCOMP, max_memory=value)
        with pytest.raises(ValueError, match="max_memory"):
            patch(PATH_EXP, max_memory=value)
