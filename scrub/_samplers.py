"""Conditional samplers: how a node's data is drawn from its parent's data.

Each sampler has one method, ``sample(parent_rows, ctx) -> rows``: given the dataset rows of the
parent's data (one per reference example), return the rows of this node's data, aligned row for
row. ``ctx`` carries the dataset, the random stream for this draw and the run's warnings.

- :class:`ExactSampler`: the parent's rows.
- :class:`UncondSampler`: a uniformly random pool row for each row.
- :class:`UncondTogetherSampler`: like ``Uncond``, but every node of the same group shares one draw.
- :class:`CondSampler`: for each row, a random pool row with the same feature value(s).
- :class:`FixedSampler`: always the given rows.
- :class:`GenerateSampler`: *make* a new example with the same feature value, using a generator
  the dataset provides. Use it where the feature is nearly injective: filtering the pool would
  only find the reference example itself, and that part of the hypothesis would scrub nothing.

Pitfall: ``CondSampler`` classes of size one return the parent's own row; the sampler then does
nothing. It records how often that happened, and the run warns above 10% of rows. Small classes
(2–10 examples) do the same for a fraction of rows without any singleton: so the tree measures,
for every ``cond`` and ``generate`` draw, the fraction of rows whose example is the parent's own
(:func:`self_draw_fraction`), records it in the result and warns above 10%.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from scrub._errors import HypothesisError

if TYPE_CHECKING:
    from scrub.data import Dataset

__all__ = [
    "SELF_DRAW_WARN_FRACTION",
    "CondSampler",
    "ExactSampler",
    "FixedSampler",
    "GenerateSampler",
    "SampleContext",
    "Sampler",
    "UncondSampler",
    "UncondTogetherSampler",
    "self_draw_fraction",
]

SINGLETON_WARN_FRACTION = 0.1
"""Warn when a conditional sampler can only return the reference row for more than this."""

SELF_DRAW_WARN_FRACTION = 0.1
"""Warn when a ``cond`` / ``generate`` draw returns the parent's own example for more than this."""


def self_draw_fraction(dataset: Dataset, parent_rows: np.ndarray, rows: np.ndarray) -> float:
    """The fraction of ``rows`` whose example is token for token the parent row's example.

    Compared by tokens, not by row index, so a generated copy of the parent counts too.
    """
    if len(rows) == 0:
        return 0.0
    same_row = rows == parent_rows
    tokens = dataset.tokens
    rest = ~same_row
    if rest.any():
        import torch  # here, so that loading a hypothesis file needs no torch

        a = tokens[torch.as_tensor(rows[rest])]
        b = tokens[torch.as_tensor(parent_rows[rest])]
        same_row[rest] = (a == b).all(dim=1).cpu().numpy()
    return float(same_row.mean())


@dataclass
class SampleContext:
    """What a sampler needs for one draw.

    Attributes:
        dataset: the dataset (generators may append to it).
        rng: the random stream for this draw (keyed by node and role, see ``scrub._tree``).
        node: the tree node being sampled, for messages.
        together: shared draws of ``UncondTogetherSampler`` groups, by group name.
        together_rng: makes the random stream of a group's shared draw.
        warnings: messages collected for the result.
    """

    dataset: Dataset
    rng: np.random.Generator
    node: str
    together: dict[str, np.ndarray]
    together_rng: Callable[[str], np.random.Generator]
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning; the run reports it (and raises a ``ScrubWarning``) at the end."""
        self.warnings.append(message)


class Sampler(Protocol):
    """Draws a node's rows from its parent's rows."""

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray: ...


def _pool_draw(ctx: SampleContext, n: int) -> np.ndarray:
    return ctx.rng.integers(0, ctx.dataset.n_base, size=n, dtype=np.int64)


@dataclass(frozen=True)
class ExactSampler:
    """``D_node = D_parent``."""

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        return parent_rows.copy()

    def __repr__(self) -> str:
        return "ExactSampler()"


@dataclass(frozen=True)
class UncondSampler:
    """A uniformly random pool example for every row, independent of the parent."""

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        return _pool_draw(ctx, len(parent_rows))

    def __repr__(self) -> str:
        return "UncondSampler()"


@dataclass(frozen=True)
class UncondTogetherSampler:
    """Uniformly random rows, shared by every node that uses the same ``group``."""

    group: str

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        if self.group not in ctx.together:
            rng = ctx.together_rng(self.group)
            ctx.together[self.group] = rng.integers(
                0, ctx.dataset.n_base, size=len(parent_rows), dtype=np.int64
            )
        return ctx.together[self.group].copy()

    def __repr__(self) -> str:
        return f"UncondTogetherSampler(group={self.group!r})"


def feature_classes(values: np.ndarray) -> np.ndarray:
    """Integer class ids for per-row feature values (rows compared whole for 2-D values)."""
    flat = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
    _, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(-1)


@dataclass(frozen=True)
class CondSampler:
    """For each row, a random pool example agreeing with the parent row on ``features``."""

    features: tuple[str, ...]

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        ds = ctx.dataset
        pool = np.arange(ds.n_base, dtype=np.int64)
        rows = np.concatenate([pool, parent_rows])
        columns = []
        for name in self.features:
            values = np.asarray(ds.feature(name)(ds, rows))
            if values.shape[0] != len(rows):
                raise HypothesisError(
                    f"feature {name!r} returned {values.shape[0]} values for {len(rows)} rows",
                    hint="a feature must return one value (or one row of values) per row",
                )
            columns.append(feature_classes(values))
        classes = feature_classes(np.stack(columns, axis=1))
        pool_classes, parent_classes = classes[: ds.n_base], classes[ds.n_base :]

        order = np.argsort(pool_classes, kind="stable")
        sorted_classes = pool_classes[order]
        start = np.searchsorted(sorted_classes, parent_classes, side="left")
        stop = np.searchsorted(sorted_classes, parent_classes, side="right")
        size = stop - start
        missing = size == 0
        if missing.any():
            # The parent row is not in the pool (e.g. a generated example) and nothing matches.
            raise HypothesisError(
                f"node {ctx.node!r}: no pool example shares features {list(self.features)} "
                f"with {int(missing.sum())} of its parent's rows",
                hint="use a 'generate' sampler, a coarser feature, or a larger dataset size",
            )
        picks = start + (ctx.rng.random(len(parent_rows)) * size).astype(np.int64)
        out = order[np.minimum(picks, stop - 1)]

        only_self = (size == 1) & (out == parent_rows)
        frac = float(only_self.mean()) if len(only_self) else 0.0
        if frac > SINGLETON_WARN_FRACTION:
            ctx.warn(
                f"node {ctx.node!r}: CondSampler({', '.join(self.features)}) found only the "
                f"reference example itself for {frac:.0%} of rows, so the hypothesis scrubs "
                "nothing there; use a 'generate' sampler or a coarser feature"
            )
        return out

    def __repr__(self) -> str:
        return f"CondSampler(features={list(self.features)})"


@dataclass(frozen=True)
class FixedSampler:
    """Always the given pool ``rows``, tiled to the batch size."""

    rows: tuple[int, ...]

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        bad = [r for r in self.rows if not 0 <= r < ctx.dataset.n_base]
        if bad:
            raise HypothesisError(
                f"node {ctx.node!r}: fixed row {bad[0]} is outside the dataset pool "
                f"(0..{ctx.dataset.n_base - 1})",
            )
        return np.resize(np.asarray(self.rows, dtype=np.int64), len(parent_rows))

    def __repr__(self) -> str:
        return f"FixedSampler(rows={list(self.rows)})"


@dataclass(frozen=True)
class GenerateSampler:
    """A freshly made example sharing ``feature`` with each parent row.

    The same draw (same random stream, same parent rows) on the same dataset returns the rows it
    made the first time instead of appending copies, so hypotheses that share a node share its
    generated examples by row too: their draws compare equal and cached activations are reused.
    """

    feature: str

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        ds = ctx.dataset
        try:
            generator = ds.generator(self.feature)
        except HypothesisError as exc:
            raise HypothesisError(f"node {ctx.node!r}: {exc.problem}", hint=exc.hint) from None
        key = (self.feature, repr(ctx.rng.bit_generator.state), parent_rows.tobytes())
        made = ds.generated.get(key)
        if made is None:
            made = ds.extend(generator(ds, parent_rows, ctx.rng))
            ds.generated[key] = made
        return made.copy()

    def __repr__(self) -> str:
        return f"GenerateSampler(feature={self.feature!r})"
