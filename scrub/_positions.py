"""Positions: where in the sequence a component's output is used or spliced.

A position spec is a tuple of items, each one of:

- an integer (a fixed position; negative counts from the end of the padded sequence);
- the name of a per-example position the dataset provides (``END``, ``S2``);
- the name of a per-example position *set* (``REP``: every token of the repeated half).

``None`` means every position. A spec resolves, for any rows of a dataset, to an integer array
of shape ``(rows, K)`` with the same K for every example.

Named positions are resolved per example: moving "the child's value at END" into "the parent at
END" takes the END of the child's example and writes it at the END of the parent's example, and
the k-th position of a set in one example is aligned with the k-th position of that set in
another. Datasets must therefore give each set the same size in every example; the binder checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from scrub._errors import HypothesisError

if TYPE_CHECKING:
    from scrub.data import Dataset

__all__ = ["PositionSpec", "format_positions", "parse_positions", "resolve_positions"]

PositionSpec = tuple[int | str, ...] | None


def parse_positions(value: object) -> PositionSpec:
    """Normalise a YAML positions value: ``None``, an int, a name, ``"A,B"`` or a list."""
    if value is None:
        return None
    items: Sequence[object]
    if isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        items = [p.strip() for p in value.split(",")]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise HypothesisError(
            f"positions must be an integer, a name or a list of them, not {value!r}",
            hint="e.g. 'positions: END', 'positions: [S2, END]' or 'positions: [0, 1]'",
        )
    out: list[int | str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise HypothesisError(
                f"a position must be an integer or a name, not {item!r}",
                hint="e.g. 'positions: [S2, END]'",
            )
        if isinstance(item, str):
            text = item.strip()
            if text.lstrip("-").isdigit():
                out.append(int(text))
            elif not text:
                raise HypothesisError("empty position name", hint="remove the stray comma")
            else:
                out.append(text)
        else:
            out.append(item)
    twice = next((p for i, p in enumerate(out) if p in out[:i]), None)
    if twice is not None:
        raise HypothesisError(
            f"position {twice!r} is listed twice",
            hint="list each position once (a position listed twice would be spliced or "
            "counted twice)",
        )
    if not out:
        raise HypothesisError(
            "an empty list of positions selects nothing",
            hint="leave 'positions' out to mean every position",
        )
    return tuple(out)


def format_positions(spec: PositionSpec) -> str:
    """The inverse of :func:`parse_positions`, for reprs and reports."""
    return "all" if spec is None else ",".join(str(p) for p in spec)


def resolve_positions(spec: PositionSpec, dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    """Resolve ``spec`` for dataset ``rows`` to an int64 array of shape ``(len(rows), K)``.

    Raises:
        HypothesisError: an unknown name, or an integer outside the sequence.
    """
    seq_len = dataset.seq_len
    n = len(rows)
    if spec is None:
        return np.tile(np.arange(seq_len, dtype=np.int64), (n, 1))
    parts: list[np.ndarray] = []
    for item in spec:
        if isinstance(item, int):
            pos = item + seq_len if item < 0 else item
            if not 0 <= pos < seq_len:
                raise HypothesisError(
                    f"position {item} is outside the sequence (length {seq_len}) "
                    f"of dataset {dataset.name!r}",
                    hint=f"use 0..{seq_len - 1}, a negative index, or a named position",
                )
            parts.append(np.full((n, 1), pos, dtype=np.int64))
        else:
            parts.append(dataset.named_positions(item, rows))
    return np.concatenate(parts, axis=1)
