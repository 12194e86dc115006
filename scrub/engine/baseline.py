"""Baselines: what "nothing recovered" means for an experiment.

The fraction recovered is ``(scrubbed − baseline) / (clean − baseline)``. The baseline belongs
to the **experiment** (model + dataset + metric + baseline kind), never to a hypothesis: every
hypothesis scored on one experiment (same dataset, reference batch and seed) is divided by the
same baseline values, bit for bit, so rivals share a denominator.

A baseline kind is a small object with a ``kind`` name and one method, ``__call__``, that
returns a :class:`BaselineRun`: the logits at the metric's positions and what it ran on.

- :class:`ResampleAll` (``resample_all``, the default): the whole model run on unconditionally
  resampled inputs, one pool example per reference row, drawn from the seed's baseline stream
  (:func:`scrub._tree.baseline_rows`), whatever ``other:`` a hypothesis gives its root. A root
  with the default ``other: uncond`` draws the same rows, so the empty hypothesis (root only)
  scores exactly the baseline.

Other kinds (mean or zero ablation, permuted labels) are added to :data:`BASELINES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from torch import Tensor

from scrub._components import Component
from scrub._hypothesis import InterpNode, MappedComponent
from scrub._model import ScrubModel
from scrub._positions import PositionSpec, resolve_positions
from scrub._samplers import UncondSampler
from scrub._tree import SampledTree, TreeNode, baseline_rows
from scrub.data import Dataset
from scrub.engine.cache import ActivationCache

__all__ = ["BASELINES", "Baseline", "BaselineRun", "ResampleAll", "baseline_for"]

Evaluate = Callable[..., Tensor]
"""An engine: ``evaluate(model, tree, *, positions, on_pass) -> (batch, K, vocab)`` logits."""


@dataclass(frozen=True)
class BaselineRun:
    """A baseline's output on one reference batch.

    Attributes:
        kind: the baseline's name (``resample_all``).
        logits: ``(batch, K, vocab)`` logits at the metric's positions.
        rows: the dataset rows the model ran on, one per reference row (``None`` for kinds
            that do not run on other examples).
    """

    kind: str
    logits: Tensor
    rows: np.ndarray | None


class Baseline(Protocol):
    """A named way to compute an experiment's baseline."""

    kind: ClassVar[str]

    def __call__(
        self,
        *,
        model: ScrubModel,
        dataset: Dataset,
        reference: np.ndarray,
        seed: int,
        metric_positions: PositionSpec,
        evaluate: Evaluate,
        engine: str,
        cache: ActivationCache,
        on_pass: Callable[[], None],
    ) -> BaselineRun: ...


_ROOT = InterpNode(
    name="baseline",
    components=(MappedComponent(Component("logits")),),
    feature=None,
    sampler=None,
    other=UncondSampler(),
)


@dataclass(frozen=True)
class ResampleAll:
    """The whole model on one unconditionally resampled example per reference row."""

    kind: ClassVar[str] = "resample_all"

    def __call__(
        self,
        *,
        model: ScrubModel,
        dataset: Dataset,
        reference: np.ndarray,
        seed: int,
        metric_positions: PositionSpec,
        evaluate: Evaluate,
        engine: str,
        cache: ActivationCache,
        on_pass: Callable[[], None],
    ) -> BaselineRun:
        rows = baseline_rows(dataset, reference, seed)
        positions = resolve_positions(metric_positions, dataset, rows)
        # The root alone, computed by the same engine as the scrubbed tree, so that an empty
        # hypothesis (whose root draws these rows) gives the same logits bit for bit.
        root = TreeNode(name=_ROOT.name, path=(), interp=_ROOT, edge=None)
        tree = SampledTree(
            root=root,
            data={root.name: reference},
            other={root.name: rows},
            dataset=dataset,
            warnings=[],
        )
        logits = cache.memo(
            model,
            dataset,
            ("baseline", self.kind, engine, rows.tobytes(), positions.tobytes()),
            lambda: evaluate(model, tree, positions=positions, on_pass=on_pass),
        )
        return BaselineRun(kind=self.kind, logits=logits, rows=rows)

    def __repr__(self) -> str:
        return "ResampleAll()"


BASELINES: dict[str, Baseline] = {ResampleAll.kind: ResampleAll()}
"""Baseline kinds by name."""


def baseline_for(kind: str) -> Baseline:
    """The baseline named ``kind``.

    Raises:
        ValueError: no such baseline kind.
    """
    try:
        return BASELINES[kind]
    except KeyError:
        raise ValueError(
            f"unknown baseline {kind!r}; baselines: {', '.join(sorted(BASELINES))}"
        ) from None
