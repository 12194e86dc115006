"""Baselines: what "nothing recovered" means for an experiment.

The fraction recovered is ``(scrubbed − baseline) / (clean − baseline)``. The baseline belongs
to the **experiment** (model + dataset + metric + baseline kind), never to a hypothesis: every
hypothesis scored on one experiment (same dataset, reference batch and seed) is divided by the
same baseline values, bit for bit, so rivals share a denominator.

A baseline kind is a small object with a ``kind`` name and one method, ``__call__``, that
takes a :class:`BaselineContext` (the experiment's model, data, reference batch, engine) and
returns a :class:`BaselineRun`: the logits at the metric's positions and what it ran on.

- :class:`ResampleAll` (``resample_all``, the default): the whole model run on unconditionally
  resampled inputs, one pool example per reference row, drawn from the seed's baseline stream
  (:func:`scrub._tree.baseline_rows`), whatever ``other:`` a hypothesis gives its root. A root
  with the default ``other: uncond`` draws the same rows, so the empty hypothesis (root only)
  scores exactly the baseline.

- :class:`MeanAblated` / :class:`ZeroAblated` (``mean``, ``zero``): the same root alone on the same rows, with every
  component output mean- or zero-ablated (:mod:`scrub.engine._ablation`; only the rows' layout
  matters then, through the means' position classes). A hypothesis with that ablation and no
  children scores exactly this baseline.
- :class:`PermutedLabels` (``permuted_labels``, the paren paper's floor): the clean model's
  outputs scored against the labels of a seeded permutation of the reference batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from scrub._components import Component
from scrub._hypothesis import InterpNode, MappedComponent
from scrub._model import ScrubModel
from scrub._positions import PositionSpec, resolve_positions
from scrub._samplers import UncondSampler
from scrub._tree import SampledTree, TreeNode, baseline_rows, stream
from scrub.data import Dataset
from scrub.engine._ablation import Ablation
from scrub.engine.cache import ActivationCache

__all__ = [
    "BASELINES",
    "Ablated",
    "Baseline",
    "BaselineContext",
    "BaselineRun",
    "MeanAblated",
    "PermutedLabels",
    "ResampleAll",
    "ZeroAblated",
    "baseline_for",
]

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
        labels: the reference rows whose labels it is scored against (``None``: the reference
            batch), and ``clean`` the clean logits of those rows (for ``kl``).
    """

    kind: str
    logits: Tensor
    rows: np.ndarray | None
    labels: np.ndarray | None = None
    clean: Tensor | None = None


@dataclass(frozen=True)
class BaselineContext:
    """Everything a baseline kind may need about one experiment's reference batch.

    Attributes:
        model, dataset: the experiment's model and dataset.
        reference: the reference batch's dataset rows.
        seed: the experiment's seed (the baseline's draws come from its baseline stream).
        metric_positions: where the metric reads the logits.
        evaluate: the engine that computes a tree (ablating, for ``mean`` / ``zero``).
        engine: the engine's name (part of memo keys).
        cache: the experiment's activation cache.
        on_pass: called after every forward pass (progress).
        clean_logits: the clean model's logits on the reference batch.
    """

    model: ScrubModel
    dataset: Dataset
    reference: np.ndarray
    seed: int
    metric_positions: PositionSpec
    evaluate: Evaluate
    engine: str
    cache: ActivationCache
    on_pass: Callable[[], None]
    clean_logits: Tensor


class Baseline(Protocol):
    """A named way to compute an experiment's baseline."""

    kind: ClassVar[str]

    def __call__(self, ctx: BaselineContext) -> BaselineRun: ...


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

    def __call__(self, ctx: BaselineContext) -> BaselineRun:
        return _root_alone(self.kind, "", ctx)

    def __repr__(self) -> str:
        return "ResampleAll()"


def _root_alone(kind: str, key: str, ctx: BaselineContext) -> BaselineRun:
    model, dataset = ctx.model, ctx.dataset
    rows = baseline_rows(dataset, ctx.reference, ctx.seed)
    positions = resolve_positions(ctx.metric_positions, dataset, rows)
    # The root alone, computed by the same engine as the scrubbed tree, so that an empty
    # hypothesis (whose root draws these rows) gives the same logits bit for bit.
    root = TreeNode(name=_ROOT.name, path=(), interp=_ROOT, edge=None)
    tree = SampledTree(
        root=root,
        data={root.name: ctx.reference},
        other={root.name: rows},
        dataset=dataset,
        warnings=[],
    )
    logits = ctx.cache.memo(
        model,
        dataset,
        ("baseline", kind, key, ctx.engine, rows.tobytes(), positions.tobytes()),
        lambda: ctx.evaluate(model, tree, positions=positions, on_pass=ctx.on_pass),
    )
    return BaselineRun(kind=kind, logits=logits, rows=rows)


@dataclass(frozen=True)
class Ablated:
    """The root alone with every component mean- or zero-ablated (``evaluate`` must ablate)."""

    kind: ClassVar[str] = ""
    ablation: Ablation

    def __call__(self, ctx: BaselineContext) -> BaselineRun:
        return _root_alone(self.kind, self.ablation.key, ctx)


@dataclass(frozen=True)
class MeanAblated(Ablated):
    """``mean``: every component output replaced by its per-class mean."""

    kind: ClassVar[str] = "mean"


@dataclass(frozen=True)
class ZeroAblated(Ablated):
    """``zero``: every component output set to zero."""

    kind: ClassVar[str] = "zero"


@dataclass(frozen=True)
class PermutedLabels:
    """The clean outputs, scored against the labels of a permutation of the reference batch."""

    kind: ClassVar[str] = "permuted_labels"

    def __call__(self, ctx: BaselineContext) -> BaselineRun:
        perm = stream(ctx.seed, "baseline", "permuted_labels").permutation(len(ctx.reference))
        return BaselineRun(
            kind=self.kind,
            logits=ctx.clean_logits,
            rows=None,
            labels=ctx.reference[perm],
            clean=ctx.clean_logits[torch.as_tensor(perm, device=ctx.clean_logits.device)],
        )


BASELINES: dict[str, Baseline] = {
    ResampleAll.kind: ResampleAll(),
    PermutedLabels.kind: PermutedLabels(),
}
"""Baseline kinds that need nothing but their name (``mean`` and ``zero`` need an ablation)."""


def baseline_for(kind: str, *, ablation: Ablation | None = None) -> Baseline:
    """The baseline named ``kind`` (``ablation``: the one ``mean`` / ``zero`` apply).

    Raises:
        ValueError: no such baseline kind, or ``mean`` / ``zero`` without an ablation.
    """
    if kind in ("mean", "zero"):
        if ablation is None or ablation.kind != kind:
            raise ValueError(f"baseline {kind!r} needs {kind} ablation")
        return MeanAblated(ablation) if kind == "mean" else ZeroAblated(ablation)
    try:
        return BASELINES[kind]
    except KeyError:
        raise ValueError(
            f"unknown baseline {kind!r}; baselines: {', '.join(sorted([*BASELINES, 'mean', 'zero']))}"
        ) from None
