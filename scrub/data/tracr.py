"""Inputs for the Tracr-compiled models (``scrub/models/tracr_<program>/``) and their true outputs.

Each shipped Tracr model computes one causal RASP program (``scripts/convert_tracr.py``
compiles and converts them). ``tracr(program=..., size=...)`` makes sequences for it: BOS
(id 0) then ``max_seq_len`` tokens drawn uniformly from the program's vocabulary (``a b c x``),
with the program's output computed here, in plain numpy, from the RASP definition:

- ``prev_token``: the token before each position (``shift_by(1, tokens)``);
- ``frac_x``: the fraction of tokens so far, this one included, equal to ``x``
  (``make_frac_prevs(tokens == "x")``);
- ``hist``: how many tokens so far, this one included, equal this one (``make_hist()``,
  evaluated causally).

Positions: ``BOS`` (0) and ``OUT``, the positions where the program has an output (from 1; from 2
for ``prev_token``, whose first token has no previous one). Fields: ``label`` (categorical
programs: the output id at each ``OUT`` position, the model's logit that the program's answer
raises) or ``value`` (``frac_x``: the fraction, which the model writes into logit 1 times its
``scale``, so that it is ``(logit 1 - logit 0) / scale`` in scrub's per-position centred logits), and ``x_pattern`` / ``equality`` (below).

Features and generators for samplers that keep what the program reads:

- ``x_pattern`` (which positions hold ``x``): the generator redraws every other token from
  ``a b c``, so ``frac_x`` is unchanged while the tokens are not;
- ``equality`` (which positions hold equal tokens: each position's first occurrence): the
  generator applies a random permutation of the vocabulary to the tokens, which keeps ``hist``.

Pitfall: every sequence has the same length, so every example has the same positions; a
resample of the position embedding alone changes nothing (zero ablation does: see the models'
cards).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from scrub._errors import HypothesisError
from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, check_pool_size, token_tensor

__all__ = ["PROGRAMS", "program_info", "reference_output", "tracr"]

PROGRAMS = ("prev_token", "frac_x", "hist")
"""The programs with a shipped model (``scrub/models/tracr_<program>/``)."""

_MODELS = Path(__file__).resolve().parents[1] / "models"


def program_info(program: str) -> dict[str, Any]:
    """The ``tracr.json`` of a shipped program: vocabulary, ids, layers, RASP-evaluated examples.

    Raises:
        HypothesisError: not a shipped program.
    """
    if program not in PROGRAMS:
        raise HypothesisError(
            f"no Tracr program {program!r}",
            key=("params", "program"),
            hint=f"programs: {', '.join(PROGRAMS)}",
        )
    return json.loads((_MODELS / f"tracr_{program}" / "tracr.json").read_text())


def reference_output(program: str, tokens: np.ndarray) -> np.ndarray:
    """The program's output on ``(N, T)`` token *names* (without BOS), per position ``(N, T)``.

    Positions where the program has no output (``prev_token`` at 0) hold ``None``.
    """
    n, t = tokens.shape
    out = np.empty((n, t), dtype=object)
    if program == "prev_token":
        out[:, 0] = None
        out[:, 1:] = tokens[:, :-1]
    elif program == "frac_x":
        out[:] = np.cumsum(tokens == "x", axis=1) / np.arange(1, t + 1)
    elif program == "hist":
        same = tokens[:, :, None] == tokens[:, None, :]  # [row, query, key]
        out[:] = np.tril(same).sum(-1)
    else:
        raise ValueError(f"unknown program {program!r}")
    return out


def _build(program: str, names: np.ndarray, params: dict[str, Any]) -> Dataset:
    info = program_info(program)
    ids = info["input_ids"]
    n, t = names.shape
    tokens = np.empty((n, t + 1), dtype=np.int64)
    tokens[:, 0] = ids["BOS"]
    tokens[:, 1:] = np.vectorize(ids.__getitem__, otypes=[np.int64])(names)
    first = info["first_output_position"]
    out_positions = np.arange(first, t + 1)
    output = reference_output(program, names)[:, first - 1 :]
    fields: dict[str, np.ndarray] = {
        "x_pattern": (names == "x").astype(np.int64),
        "equality": (names[:, :, None] == names[:, None, :]).argmax(-1).astype(np.int64),
    }
    if info["output_kind"] == "numerical":
        fields["value"] = output.astype(np.float64)
    else:
        out_ids = info["output_ids"]
        fields["label"] = np.vectorize(lambda v: out_ids[str(v)], otypes=[np.int64])(output)
    return Dataset(
        name="tracr",
        params=params,
        tokens=token_tensor(tokens),
        positions={
            "BOS": np.zeros((n, 1), dtype=np.int64),
            "OUT": np.broadcast_to(out_positions, (n, len(out_positions))).copy(),
        },
        fields=fields,
        generators={"x_pattern": _same_x_pattern, "equality": _same_equality},
    )


def _names(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    info = program_info(ds.params["program"])
    by_id = {i: name for name, i in info["input_ids"].items()}
    return np.vectorize(by_id.__getitem__, otypes=[object])(ds.tokens[rows, 1:].numpy())


def _same_x_pattern(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New sequences with ``x`` where ``rows`` have it and other tokens redrawn from the rest."""
    names = _names(ds, rows)
    vocab = [v for v in program_info(ds.params["program"])["vocab"] if v != "x"]
    fresh = np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), names.shape)]
    return _build(ds.params["program"], np.where(names == "x", "x", fresh), dict(ds.params))


def _same_equality(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New sequences: each row's tokens under its own random permutation of the vocabulary."""
    names = _names(ds, rows)
    vocab = program_info(ds.params["program"])["vocab"]
    out = np.empty_like(names)
    for i, row in enumerate(names):
        perm = dict(
            zip(vocab, np.asarray(vocab, dtype=object)[rng.permutation(len(vocab))], strict=True)
        )
        out[i] = [perm[v] for v in row]
    return _build(ds.params["program"], out, dict(ds.params))


@dataset_generator
def tracr(*, rng: np.random.Generator, program: str, size: int = 2000) -> Dataset:
    """Make ``size`` input sequences for the shipped Tracr model of ``program``.

    Args:
        rng: every token is drawn from it.
        program: one of :data:`PROGRAMS`.
        size: examples in the pool.
    """
    check_pool_size(size)
    info = program_info(program)
    vocab = np.asarray(info["vocab"], dtype=object)
    names = vocab[rng.integers(0, len(vocab), (size, info["max_seq_len"]))]
    return _build(program, names, {"program": program, "size": size})
