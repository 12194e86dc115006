"""Parentheses: balanced and unbalanced strings of ``(`` and ``)``, for a balance classifier.

A string is **balanced** when it passes two tests (as in the causal-scrubbing paper's paren
experiment, Chan et al. 2022):

- the **count** test: as many ``(`` as ``)``;
- the **horizon** test: no prefix has more ``)`` than ``(`` (the elevation, ``#( − #)``, never
  goes below 0).

The dataset separates the two ways to fail, so hypotheses can condition on each test alone:

============  ========  ==========  =====================================================
``kind``      count_ok  horizon_ok  how it is drawn (length ``n``)
============  ========  ==========  =====================================================
0 balanced    yes       yes         uniform over balanced strings; ``n`` even
1 count       no        yes         elevation never negative, ends at ``h > 0``; ``h`` is
                                    the smallest positive value of ``n``'s parity with
                                    probability 1/2, the next with 1/4, ...; any ``n``
2 horizon     yes       no          equal counts, some prefix negative; ``n`` even; with
                                    probability ``near_miss`` the minimum elevation is
                                    exactly −1 (one dip), else uniform over such strings
3 both        no        no          i.i.d. fair characters, kept when both tests fail;
                                    any ``n``
============  ========  ==========  =====================================================

Kinds 1 and 2 are the hard negatives: a count failure looks balanced to the horizon test and
(mostly) ends one or two ``)`` short; a horizon failure has equal counts and often dips below 0
only once. Lengths are uniform over the values allowed for the kind (1 or 2 .. ``max_len``).

Layout (``T = max_len + 1`` tokens)::

    [START] c_1 c_2 ... c_n [PAD] ... [PAD]
    0       1   2       n   n+1       max_len

Token ids: ``PAD`` 0, ``START`` 1, ``OPEN`` 2, ``CLOSE`` 3, and two class tokens ``BALANCED`` 4
and ``UNBALANCED`` 5 that the classifier predicts: the model's next-token output **at END** (the
last character) is read as the answer, so ``loss``/``accuracy`` use ``labels: label`` and
``logit_diff`` uses ``correct: label, wrong: wrong_label``, all at ``positions: END``.

Named positions: ``START`` (0) and ``END`` (``n``, the last character), each ``(N, 1)``.

Fields (also features): ``kind`` (0–3, see :data:`KINDS`), ``balanced``, ``count_ok``,
``horizon_ok``, ``length`` (``n``), ``n_open``, ``elevation`` (``#( − #)`` of the whole string),
``min_elevation`` (over the non-empty prefixes), ``first_char_open``, ``last_char_close``,
``ends_ok`` (both), ``label`` (``BALANCED`` or ``UNBALANCED``), ``wrong_label`` (the other).
Feature ``kind_length``: the pair (kind, length).

Generators (``{kind: generate, feature: F}``) make a new string that shares ``F`` with each
given example and is otherwise drawn like the dataset (kind and length from the dataset's
distribution conditioned on ``F``): ``kind``, ``balanced``, ``count_ok``, ``horizon_ok``,
``length``, ``kind_length``.

Pitfalls:

- The paper's model was bidirectional and read its answer at position 0; GPT-2 attention is
  causal, so a GPT-2 classifier must answer at the last character (``END``). ``END`` moves with
  the length: never read at a fixed position.
- Strings have different lengths, so an edge without ``positions`` splices position ``t`` of
  one string into position ``t`` of another, and the output is read at the END of the string
  the root's forward pass runs on (its other inputs): an unrestricted edge into ``logits``
  moves the child's output from the *wrong* position. Restrict edges into the output to ``positions: END`` (the full hypothesis
  ``hypotheses/parens/full.yaml`` does; without it, full ≠ clean).
- Padding comes *after* END, so a causal model never sees it at END; but hypotheses that splice
  at every position also splice pad positions (harmless to the output at END).
- Odd lengths always fail the count test, so parity alone decides part of kinds 1 and 3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, check_pool_size, check_pool_tokens, token_tensor

if TYPE_CHECKING:  # torch is imported where tensors are made: loading files needs none
    import torch

__all__ = [
    "BALANCED",
    "CLOSE",
    "KINDS",
    "OPEN",
    "PAD",
    "START",
    "UNBALANCED",
    "VOCAB",
    "from_strings",
    "kind_of",
    "parens",
    "to_string",
]

PAD, START, OPEN, CLOSE, BALANCED, UNBALANCED = 0, 1, 2, 3, 4, 5
VOCAB = 6
KINDS = ("balanced", "count", "horizon", "both")
"""Names of the ``kind`` codes 0–3: balanced, count-only failure, horizon-only failure, both."""

_COUNT_OK = np.array([True, False, True, False])
_HORIZON_OK = np.array([True, True, False, False])


def kind_of(count_ok: np.ndarray, horizon_ok: np.ndarray) -> np.ndarray:
    """The ``kind`` code (0–3) of strings with the given test results."""
    return (~np.asarray(count_ok)).astype(np.int64) + 2 * (~np.asarray(horizon_ok)).astype(np.int64)


# -- drawing strings ---------------------------------------------------------------------------


def _arrangements(
    n: np.ndarray, n_open: np.ndarray, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Uniform arrangements of ``n_open[i]`` opens among ``n[i]`` characters; ``±1`` steps."""
    keys = rng.random((len(n), width))
    cols = np.arange(width)
    keys[cols[None, :] >= n[:, None]] = np.inf  # padding sorts last
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    steps = np.where(ranks < n_open[:, None], 1, -1)
    steps[cols[None, :] >= n[:, None]] = 0
    return steps


def _min_elevation(steps: np.ndarray, n: np.ndarray) -> np.ndarray:
    elev = np.cumsum(steps, axis=1)
    elev[np.arange(steps.shape[1])[None, :] >= n[:, None]] = np.iinfo(np.int64).max
    return elev.min(axis=1)


def _draw_kind(
    kind: int, n: np.ndarray, width: int, *, near_miss: float, rng: np.random.Generator
) -> np.ndarray:
    """Steps of ``len(n)`` strings of one kind: draw, and redraw the rows that miss the kind."""
    if kind == 1:  # ends at h > 0: the smallest h of n's parity with probability 1/2, ...
        h0 = np.where(n % 2 == 0, 2, 1)
        h = h0 + 2 * np.minimum(rng.geometric(0.5, size=len(n)) - 1, (n - h0) // 2)
        n_open = (n + h) // 2
    else:
        n_open = n // 2
    dip = rng.random(len(n)) < near_miss if kind == 2 else np.zeros(len(n), dtype=bool)
    steps = np.zeros((len(n), width), dtype=np.int64)
    todo = np.arange(len(n))
    while len(todo):
        nt = n[todo]
        if kind == 3:
            cand = np.where(rng.random((len(todo), width)) < 0.5, 1, -1)
            cand[np.arange(width)[None, :] >= nt[:, None]] = 0
        else:
            cand = _arrangements(nt, n_open[todo], width, rng)
        low = _min_elevation(cand, nt)
        if kind == 3:
            ok = (cand.sum(axis=1) != 0) & (low < 0)
        elif kind == 2:
            ok = np.where(dip[todo], low == -1, low < 0)
        else:
            ok = low >= 0
        steps[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return steps


def _draw_steps(
    kinds: np.ndarray, n: np.ndarray, *, near_miss: float, rng: np.random.Generator
) -> np.ndarray:
    """``(N, max n)`` steps (+1 open, −1 close, 0 padding) of strings of the given kinds."""
    width = int(n.max(initial=1))
    steps = np.zeros((len(n), width), dtype=np.int64)
    for kind in range(4):  # a fixed order, so the draws are reproducible
        rows = np.flatnonzero(kinds == kind)
        if len(rows):
            steps[rows] = _draw_kind(kind, n[rows], width, near_miss=near_miss, rng=rng)
    return steps


# -- the joint distribution of (kind, length) ----------------------------------------------------


def _kind_length_table(params: dict) -> np.ndarray:
    """``P[kind, length]`` of the dataset (lengths 0 .. max_len; length 0 has probability 0)."""
    max_len = int(params["max_len"])
    p_kind = np.array(
        [
            params["p_balanced"],
            params["p_count"],
            params["p_horizon"],
            1.0 - params["p_balanced"] - params["p_count"] - params["p_horizon"],
        ]
    )
    lengths = np.arange(max_len + 1)
    table = np.zeros((4, max_len + 1))
    for kind in range(4):
        allowed = (lengths >= 1) & ((lengths % 2 == 0) if _COUNT_OK[kind] else True)
        table[kind, allowed] = p_kind[kind] / allowed.sum()
    return table


def _draw_kind_length(
    table: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    flat = rng.choice(table.size, size=size, p=table.ravel() / table.sum())
    kinds, lengths = np.divmod(flat, table.shape[1])
    return kinds.astype(np.int64), lengths.astype(np.int64)


# -- building the dataset ------------------------------------------------------------------------


def _build(steps: np.ndarray, n: np.ndarray, *, seq_len: int, params: dict) -> Dataset:
    size = len(n)
    tokens = np.full((size, seq_len), PAD, dtype=np.int64)
    tokens[:, 0] = START
    body = np.where(steps > 0, OPEN, np.where(steps < 0, CLOSE, PAD))
    tokens[:, 1 : 1 + body.shape[1]] = body
    n_open = (steps > 0).sum(axis=1)
    elevation = steps.sum(axis=1)
    min_elev = _min_elevation(steps, n) if steps.shape[1] else np.zeros(size, dtype=np.int64)
    count_ok = elevation == 0
    horizon_ok = min_elev >= 0
    balanced = count_ok & horizon_ok
    rows = np.arange(size)
    first_open = tokens[:, 1] == OPEN
    last_close = tokens[rows, n] == CLOSE
    fields = {
        "kind": kind_of(count_ok, horizon_ok),
        "balanced": balanced,
        "count_ok": count_ok,
        "horizon_ok": horizon_ok,
        "length": n.astype(np.int64),
        "n_open": n_open.astype(np.int64),
        "elevation": elevation.astype(np.int64),
        "min_elevation": min_elev.astype(np.int64),
        "first_char_open": first_open,
        "last_char_close": last_close,
        "ends_ok": first_open & last_close,
        "label": np.where(balanced, BALANCED, UNBALANCED).astype(np.int64),
        "wrong_label": np.where(balanced, UNBALANCED, BALANCED).astype(np.int64),
    }
    positions = {
        "START": np.zeros((size, 1), dtype=np.int64),
        "END": n.astype(np.int64)[:, None],
    }
    return Dataset(
        name="parens",
        params=params,
        tokens=token_tensor(tokens),
        positions=positions,
        fields=fields,
        features={"kind_length": _kind_length_feature},
        generators={name: _generator(name) for name in _GENERATED},
    )


def _kind_length_feature(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    return np.stack([ds.fields["kind"][rows], ds.fields["length"][rows]], axis=1)


def _make(
    kinds: np.ndarray, lengths: np.ndarray, *, rng: np.random.Generator, params: dict
) -> Dataset:
    steps = _draw_steps(kinds, lengths, near_miss=float(params["near_miss"]), rng=rng)
    ds = _build(steps, lengths, seq_len=int(params["max_len"]) + 1, params=params)
    assert np.array_equal(ds.fields["kind"], kinds), "drawn strings must have the asked kinds"
    return ds


# -- generators ----------------------------------------------------------------------------------

_GENERATED = ("kind", "balanced", "count_ok", "horizon_ok", "length", "kind_length")


def _table_values(name: str, table: np.ndarray) -> np.ndarray:
    """The value of feature ``name`` in each cell ``[kind, length]`` of the table."""
    grid = np.indices(table.shape)
    kinds, lengths = grid[0], grid[1]
    out: np.ndarray
    if name == "kind":
        out = kinds
    elif name == "balanced":
        out = np.equal(kinds, 0)
    elif name == "count_ok":
        out = _COUNT_OK[kinds]
    elif name == "horizon_ok":
        out = _HORIZON_OK[kinds]
    elif name == "length":
        out = lengths
    else:  # kind_length
        out = kinds * table.shape[1] + lengths
    return out


def _generator(name: str) -> Callable[[Dataset, np.ndarray, np.random.Generator], Dataset]:
    def generate(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
        params = dict(ds.params)
        table = _kind_length_table(params)
        cells = _table_values(name, table)
        kind, length = ds.fields["kind"][rows], ds.fields["length"][rows]
        values = cells[kind, length]
        new_kinds = np.empty(len(rows), dtype=np.int64)
        new_lengths = np.empty(len(rows), dtype=np.int64)
        for value in np.unique(values):
            sel = np.flatnonzero(values == value)
            cond = np.where(cells == value, table, 0.0)
            new_kinds[sel], new_lengths[sel] = _draw_kind_length(cond, len(sel), rng)
        return _make(new_kinds, new_lengths, rng=rng, params=params)

    generate.__name__ = f"same_{name}"
    generate.__doc__ = f"New strings with the same {name!r}, otherwise drawn like the dataset."
    return generate


# -- public --------------------------------------------------------------------------------------


def to_string(tokens: torch.Tensor | np.ndarray) -> str:
    """The characters of one example's tokens (START and padding dropped)."""
    chars = {OPEN: "(", CLOSE: ")"}
    return "".join(chars[int(t)] for t in np.asarray(tokens) if int(t) in chars)


def from_strings(strings: list[str], *, max_len: int = 40) -> Dataset:
    """A dataset of the given strings (for tests and demos); its ``params`` are the defaults.

    Raises:
        ValueError: a string is empty, longer than ``max_len``, or has other characters.
    """
    for s in strings:
        if not 1 <= len(s) <= max_len or set(s) - {"(", ")"}:
            raise ValueError(f"not a string of 1..{max_len} parentheses: {s!r}")
    n = np.array([len(s) for s in strings], dtype=np.int64)
    steps = np.zeros((len(strings), max_len), dtype=np.int64)
    for i, s in enumerate(strings):
        steps[i, : len(s)] = [1 if c == "(" else -1 for c in s]
    params = _params(size=len(strings), max_len=max_len)
    return _build(steps, n, seq_len=max_len + 1, params=params)


def _params(
    *,
    size: int,
    max_len: int = 40,
    p_balanced: float = 0.5,
    p_count: float = 0.2,
    p_horizon: float = 0.2,
    near_miss: float = 0.5,
) -> dict:
    return {
        "size": size,
        "max_len": max_len,
        "p_balanced": p_balanced,
        "p_count": p_count,
        "p_horizon": p_horizon,
        "near_miss": near_miss,
    }


@dataset_generator
def parens(
    *,
    rng: np.random.Generator,
    size: int = 2000,
    max_len: int = 40,
    p_balanced: float = 0.5,
    p_count: float = 0.2,
    p_horizon: float = 0.2,
    near_miss: float = 0.5,
) -> Dataset:
    """Make ``size`` parenthesis strings (see the module docstring for the kinds and layout).

    Args:
        rng: the generator every kind, length and character is drawn from.
        size: number of examples in the pool.
        max_len: longest string (at least 2); sequences are ``max_len + 1`` tokens.
        p_balanced: fraction of balanced strings (kind 0).
        p_count: fraction failing only the count test (kind 1).
        p_horizon: fraction failing only the horizon test (kind 2); the rest fail both (kind 3).
        near_miss: fraction of horizon failures whose elevation dips to −1 and no lower.
    """
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2, not {max_len}")
    check_pool_size(size)
    check_pool_tokens(size, max_len + 1, param="max_len")
    fractions = (p_balanced, p_count, p_horizon)
    if not all(0 <= f <= 1 for f in fractions) or sum(fractions) > 1 + 1e-12:  # NaN too
        raise ValueError(
            f"p_balanced, p_count and p_horizon must be non-negative with sum <= 1, not {fractions}"
        )
    if not 0 <= near_miss <= 1:
        raise ValueError(f"near_miss must be in [0, 1], not {near_miss}")
    params = _params(
        size=size,
        max_len=max_len,
        p_balanced=p_balanced,
        p_count=p_count,
        p_horizon=p_horizon,
        near_miss=near_miss,
    )
    table = _kind_length_table(params)
    # Exact proportions of the kinds (rounded), in random order; lengths drawn per kind.
    counts = np.floor(np.array([*fractions, 1 - sum(fractions)]) * size + 1e-9).astype(np.int64)
    counts[0] += size - counts.sum()
    kinds = rng.permutation(np.repeat(np.arange(4), counts))
    lengths = np.empty(size, dtype=np.int64)
    for kind in range(4):
        rows = np.flatnonzero(kinds == kind)
        row_table = np.zeros_like(table)
        row_table[kind] = table[kind]
        if len(rows):
            lengths[rows] = _draw_kind_length(row_table, len(rows), rng)[1]
    return _make(kinds, lengths, rng=rng, params=params)
