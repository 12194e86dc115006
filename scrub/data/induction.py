"""Induction sequences: random tokens with one segment repeated later.

Layout of every example (lengths are parameters)::

    [BOS] prefix  A (segment)  gap  A (again)  suffix
          P       L            G    L          S

With ``random_offsets`` the slack (P + G + S) is redistributed at random per example, keeping the
length fixed, so positions must be read from the named positions, never assumed.

Named positions: ``BOS``, ``END`` (last token); sets ``A1`` / ``A2`` (the two copies of the
segment), ``REP`` (positions ``s2 .. s2+L-2`` of the second copy, whose next token an induction
head can predict), ``A1_NEXT`` (``s1+1 .. s1+L-1``: the tokens after each earlier occurrence,
where an induction head at ``REP`` looks), ``FRESH`` (``s1 .. s1+L-2``: the first copy, whose
next tokens are unpredictable).

Fields (also features): ``segment`` (the L tokens of A), ``s1``, ``s2`` (start of each copy),
``first_token``. Generators: ``segment`` makes a new example with the same segment at the same
offsets and fresh random tokens elsewhere.
"""

from __future__ import annotations

import numpy as np

from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, check_pool_size, check_pool_tokens, token_tensor

__all__ = ["BOS", "induction"]

BOS = 0


def _layout(
    n: int,
    *,
    rng: np.random.Generator,
    segment_len: int,
    prefix_len: int,
    gap_len: int,
    suffix_len: int,
    random_offsets: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Starts ``(s1, s2)`` of the two copies for ``n`` examples."""
    if not random_offsets:
        s1 = np.full(n, 1 + prefix_len, dtype=np.int64)
        return s1, s1 + segment_len + gap_len
    slack = prefix_len + gap_len + suffix_len
    # Split the slack into three non-negative parts, uniformly at random.
    cuts = np.sort(rng.integers(0, slack + 1, size=(n, 2)), axis=1)
    prefix, gap = cuts[:, 0], cuts[:, 1] - cuts[:, 0]
    s1 = 1 + prefix
    return s1.astype(np.int64), (s1 + segment_len + gap).astype(np.int64)


def _build(
    segments: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    *,
    rng: np.random.Generator,
    seq_len: int,
    vocab: int,
    params: dict,
) -> Dataset:
    n, seg_len = segments.shape
    tokens = rng.integers(1, vocab, size=(n, seq_len), dtype=np.int64)
    tokens[:, 0] = BOS
    offsets = np.arange(seg_len)
    rows = np.arange(n)[:, None]
    tokens[rows, s1[:, None] + offsets] = segments
    tokens[rows, s2[:, None] + offsets] = segments
    positions = {
        "BOS": np.zeros((n, 1), dtype=np.int64),
        "END": np.full((n, 1), seq_len - 1, dtype=np.int64),
        "A1": s1[:, None] + offsets,
        "A2": s2[:, None] + offsets,
        "REP": s2[:, None] + offsets[:-1],
        "A1_NEXT": s1[:, None] + offsets[1:],
        "FRESH": s1[:, None] + offsets[:-1],
    }
    fields = {"segment": segments, "s1": s1, "s2": s2, "first_token": segments[:, 0].copy()}
    return Dataset(
        name="induction",
        params=params,
        tokens=token_tensor(tokens),
        positions=positions,
        fields=fields,
        generators={"segment": _same_segment},
    )


def _same_segment(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New examples with the segment and offsets of ``rows`` and fresh tokens elsewhere."""
    return _build(
        ds.fields["segment"][rows],
        ds.fields["s1"][rows],
        ds.fields["s2"][rows],
        rng=rng,
        seq_len=ds.seq_len,
        vocab=int(ds.params["vocab"]),
        params=dict(ds.params),
    )


@dataset_generator
def induction(
    *,
    rng: np.random.Generator,
    size: int = 2000,
    segment_len: int = 10,
    prefix_len: int = 3,
    gap_len: int = 3,
    suffix_len: int = 2,
    vocab: int = 128,
    random_offsets: bool = False,
) -> Dataset:
    """Make ``size`` induction sequences (see the module docstring for the layout).

    Args:
        rng: the generator every token and offset is drawn from.
        size: number of examples in the pool.
        segment_len: L, the length of the repeated segment (at least 2).
        prefix_len, gap_len, suffix_len: random tokens before, between and after the copies.
        vocab: tokens are drawn uniformly from ``1 .. vocab-1`` (0 is BOS).
        random_offsets: redistribute the prefix/gap/suffix lengths at random per example.
    """
    if segment_len < 2:
        raise ValueError(f"segment_len must be at least 2, not {segment_len}")
    for name, value in (
        ("prefix_len", prefix_len),
        ("gap_len", gap_len),
        ("suffix_len", suffix_len),
    ):
        if value < 0:
            raise ValueError(f"{name} must be at least 0, not {value}")
    if not 2 <= vocab <= 1 << 31:
        raise ValueError(f"vocab must be 2 .. 2**31, not {vocab}")
    check_pool_size(size)
    seq_len = 1 + prefix_len + 2 * segment_len + gap_len + suffix_len
    check_pool_tokens(size, seq_len, param="segment_len")
    params = {
        "size": size,
        "segment_len": segment_len,
        "prefix_len": prefix_len,
        "gap_len": gap_len,
        "suffix_len": suffix_len,
        "vocab": vocab,
        "random_offsets": random_offsets,
    }
    s1, s2 = _layout(
        size,
        rng=rng,
        segment_len=segment_len,
        prefix_len=prefix_len,
        gap_len=gap_len,
        suffix_len=suffix_len,
        random_offsets=random_offsets,
    )
    segments = rng.integers(1, vocab, size=(size, segment_len), dtype=np.int64)
    return _build(segments, s1, s2, rng=rng, seq_len=seq_len, vocab=vocab, params=params)
