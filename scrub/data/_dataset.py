"""Datasets: token sequences with the per-example facts that hypotheses talk about.

A :class:`Dataset` is a pool of examples (a ``(N, T)`` token tensor, padded to one length T)
plus, per example:

- **named positions**: ``positions[name]`` is an ``(N, K)`` int array (K = 1 for a single
  position such as ``END``, K > 1 for a set such as ``REP``); K is the same for every example;
- **fields**: ``fields[name]`` is an ``(N,)`` or ``(N, ...)`` array of per-example values
  (label token ids, template ids, the repeated segment...). Every field is also a feature;
- **features**: named functions of the examples, used by conditional samplers;
- **generators**: functions that *make* new examples sharing one feature with given ones.

The first ``n_base`` rows are the pool that samplers draw from. Generated examples are appended
after them and are only ever returned by the generator samplers that made them, so that drawing
from the pool does not depend on what other samplers generated earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scrub._errors import HypothesisError

if TYPE_CHECKING:  # torch is imported where tensors are made: loading files needs none
    import torch

__all__ = [
    "MAX_POOL_SIZE",
    "MAX_POOL_TOKENS",
    "MAX_SEQ_LEN",
    "Dataset",
    "Feature",
    "Generator",
    "check_pool_size",
    "check_pool_tokens",
    "token_tensor",
]

MAX_POOL_SIZE = 1_000_000
"""The most examples a generator may make for a pool (scrub draws ``n`` reference rows from it)."""

MAX_SEQ_LEN = 65_536
"""The longest sequence a generator may make."""

MAX_POOL_TOKENS = 1 << 25
"""The most tokens (examples x sequence length) in a pool: 256 MiB of int64 token ids."""


def token_tensor(values: np.ndarray) -> torch.Tensor:
    """``values`` as a torch tensor sharing their memory (torch is imported on first use)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values))


def check_pool_size(size: int, *, param: str = "size") -> None:
    """Refuse a pool size outside ``1 .. MAX_POOL_SIZE`` before anything is allocated.

    Raises:
        HypothesisError: at ``params.<param>``.
    """
    if not 1 <= size <= MAX_POOL_SIZE:
        raise HypothesisError(
            f"dataset size {size:,} is outside 1 .. {MAX_POOL_SIZE:,}",
            key=("params", param),
            hint="the pool needs at least one example, and more than a million is more than a "
            "scrub needs (n reference examples are drawn from it); e.g. 'size: 2000'",
        )


def check_pool_tokens(size: int, seq_len: int, *, param: str) -> None:
    """Refuse sequences longer than ``MAX_SEQ_LEN`` or pools over ``MAX_POOL_TOKENS`` tokens.

    Raises:
        HypothesisError: at ``params.<param>`` (the parameter that sets the length).
    """
    if not 1 <= seq_len <= MAX_SEQ_LEN:
        raise HypothesisError(
            f"these params make sequences of {seq_len:,} tokens, outside 1 .. {MAX_SEQ_LEN:,}",
            key=("params", param),
            hint="use shorter lengths; the model reads at most its context length anyway",
        )
    if size * seq_len > MAX_POOL_TOKENS:
        raise HypothesisError(
            f"a pool of {size:,} sequences of {seq_len:,} tokens holds {size * seq_len:,} "
            f"tokens, more than {MAX_POOL_TOKENS:,}",
            key=("params", "size"),
            hint="use a smaller size or shorter sequences",
        )


Feature = Callable[["Dataset", np.ndarray], np.ndarray]
"""A feature: ``f(dataset, rows) -> values`` with one value (or row of values) per row."""

Generator = Callable[["Dataset", np.ndarray, np.random.Generator], "Dataset"]
"""A generator: ``g(dataset, rows, rng) -> new examples``, one per row, sharing a feature."""


@dataclass
class Dataset:
    """A pool of examples with named positions, fields, features and generators.

    Attributes:
        name: the generator's registered name (``"induction"``).
        params: the parameters it was made with (recorded in results).
        tokens: ``(N, T)`` int64 token ids.
        positions: name → ``(N, K)`` int64 positions.
        fields: name → per-example values, first axis N.
        features: extra named features beyond the fields.
        generators: feature name → generator that makes examples sharing that feature.
        n_base: rows ``[0, n_base)`` are the pool samplers draw from.
        generated: the rows each generator draw appended, by draw (see ``GenerateSampler``).
    """

    name: str
    params: Mapping[str, Any]
    tokens: torch.Tensor
    positions: dict[str, np.ndarray]
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, Feature] = field(default_factory=dict)
    generators: dict[str, Generator] = field(default_factory=dict)
    n_base: int = -1
    generated: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if self.n_base < 0:
            self.n_base = n
        for name, pos in self.positions.items():
            assert pos.ndim == 2 and pos.shape[0] == n, f"positions[{name}] has shape {pos.shape}"
        for name, values in self.fields.items():
            assert values.shape[0] == n, f"fields[{name}] has {values.shape[0]} rows, not {n}"

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, n={self.n_base}, seq_len={self.seq_len}, "
            f"positions={sorted(self.positions)}, features={self.feature_names()})"
        )

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    # -- positions ---------------------------------------------------------------------------
    def named_positions(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The ``(len(rows), K)`` positions called ``name`` in each of ``rows``."""
        if name not in self.positions:
            raise HypothesisError(
                f"dataset {self.name!r} has no position named {name!r}",
                hint=f"its named positions are: {', '.join(sorted(self.positions))}",
            )
        return self.positions[name][rows]

    def is_position_set(self, name: str) -> bool:
        return name in self.positions and self.positions[name].shape[1] > 1

    # -- features ----------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        return sorted(set(self.fields) | set(self.features))

    def feature(self, name: str) -> Feature:
        """The feature called ``name``: a registered feature or a field."""
        if name in self.features:
            return self.features[name]
        if name in self.fields:
            return lambda ds, rows: ds.fields[name][rows]
        raise HypothesisError(
            f"dataset {self.name!r} has no feature named {name!r}",
            hint=f"its features are: {', '.join(self.feature_names())}; or name a function "
            "as 'package.module:function' taking (dataset, rows)",
        )

    def generator(self, feature: str) -> Generator:
        """The generator that makes examples sharing ``feature``."""
        if feature in self.generators:
            return self.generators[feature]
        raise HypothesisError(
            f"dataset {self.name!r} cannot generate examples matching feature {feature!r}",
            hint="it can generate for: "
            + (", ".join(sorted(self.generators)) or "no feature")
            + "; or use a 'cond' sampler",
        )

    # -- growth by generators -----------------------------------------------------------------
    def extend(self, new: Dataset) -> np.ndarray:
        """Append ``new``'s examples (made by a generator); return their row indices."""
        if new.seq_len != self.seq_len:
            raise ValueError(
                f"generated examples have length {new.seq_len}, the pool has {self.seq_len}"
            )
        start = len(self)
        import torch

        self.tokens = torch.cat([self.tokens, new.tokens])
        for name in self.positions:
            self.positions[name] = np.concatenate([self.positions[name], new.positions[name]])
        for name in self.fields:
            self.fields[name] = np.concatenate([self.fields[name], new.fields[name]])
        return np.arange(start, len(self), dtype=np.int64)

    def subset(self, rows: np.ndarray) -> Dataset:
        """A new dataset of ``rows`` (all of them base rows), sharing features and generators."""
        return Dataset(
            name=self.name,
            params=self.params,
            tokens=self.tokens[token_tensor(np.asarray(rows))],
            positions={k: v[rows] for k, v in self.positions.items()},
            fields={k: v[rows] for k, v in self.fields.items()},
            features=self.features,
            generators=self.generators,
        )
