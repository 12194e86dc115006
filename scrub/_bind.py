"""Binding: check a hypothesis against a concrete model and dataset.

Loading (:mod:`scrub._hypothesis`) checks what the file alone determines. Binding checks the
rest, with errors that name the file, the key and a fix:

- every component exists in the model (``a9.h12`` in GPT-2 small: heads are 0–11);
- every named position exists in the dataset (components, inputs and the metric);
- every feature a sampler uses exists (a dataset feature or field, a ``features:`` alias, or a
  ``package.module:function``), and is registered on the dataset for this run;
- the metric's labels exist, and ``labels: next`` never reads past the end of a sequence;
- ``fixed`` rows are rows of the dataset pool;
- no model path is claimed twice (:mod:`scrub._claims`): two inputs of one node never splice
  the same component into the same channel at the same position of any example, and an
  all-paths input never claims paths through a sibling's components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scrub._claims import check_claims
from scrub._errors import HypothesisError
from scrub._hypothesis import Hypothesis
from scrub._imports import import_object
from scrub._model import ScrubModel
from scrub._positions import resolve_positions
from scrub._samplers import CondSampler, FixedSampler, GenerateSampler
from scrub.data import Dataset, make_dataset

__all__ = ["BoundHypothesis", "bind", "make_dataset_for"]


@dataclass(frozen=True)
class BoundHypothesis:
    """A hypothesis checked against a model and a dataset, ready to sample and evaluate."""

    hypothesis: Hypothesis
    model: ScrubModel
    dataset: Dataset

    def __repr__(self) -> str:
        return f"BoundHypothesis({self.hypothesis.name!r}, {self.model!r}, {self.dataset!r})"


def make_dataset_for(hypothesis: Hypothesis, *, seed: int) -> Dataset:
    """Make the dataset a hypothesis file names, drawing from the run's ``seed``.

    Raises:
        HypothesisError: located at the file's ``dataset`` key.
    """
    from scrub._tree import stream

    spec = hypothesis.spec.dataset
    try:
        return make_dataset(spec.generator, spec.params, stream(seed, "dataset"))
    except HypothesisError as exc:
        raise exc.with_context(file=hypothesis.file, key_prefix=("dataset",)) from None


def bind(hypothesis: Hypothesis, model: ScrubModel, dataset: Dataset) -> BoundHypothesis:
    """Check ``hypothesis`` against ``model`` and ``dataset`` (see the module docstring).

    Raises:
        HypothesisError: located in the hypothesis file.
    """
    try:
        _check(hypothesis, model, dataset)
    except HypothesisError as exc:
        raise exc.with_context(file=hypothesis.file) from None
    return BoundHypothesis(hypothesis, model, dataset)


def _check(hyp: Hypothesis, model: ScrubModel, ds: Dataset) -> None:
    pool = np.arange(ds.n_base)
    if ds.seq_len > model.shape.n_ctx:
        raise HypothesisError(
            f"dataset sequences have {ds.seq_len} tokens, but {model.shape.name} reads at most "
            f"{model.shape.n_ctx}",
            key=("dataset", "params"),
        )
    max_token = int(ds.tokens.max())
    if max_token >= model.shape.d_vocab:
        raise HypothesisError(
            f"dataset uses token id {max_token}, but {model.shape.name} has a vocabulary of "
            f"{model.shape.d_vocab}",
            key=("dataset", "params"),
        )
    for name in hyp.graph:
        node = hyp.node(name)
        for i, mc in enumerate(node.components):
            key = ("nodes", name, "components", i)
            try:
                model.shape.check(mc.component)
                resolve_positions(mc.positions, ds, pool)
            except HypothesisError as exc:
                raise exc.with_context(key_prefix=key) from None
        for role, sampler in (("sampler", node.sampler), ("other", node.other)):
            if isinstance(sampler, FixedSampler):
                _check_fixed_rows(sampler, ds, key=("nodes", name, role, "rows"))
            features: tuple[str, ...] = ()
            if isinstance(sampler, CondSampler):
                features = sampler.features
            elif isinstance(sampler, GenerateSampler):
                features = (sampler.feature,)
                try:
                    ds.generator(sampler.feature)
                except HypothesisError as exc:
                    raise exc.with_context(key_prefix=("nodes", name, role)) from None
            for feature in features:
                _register_feature(feature, hyp, ds, key=("nodes", name, role))
    for child, parent in hyp.graph.edges:
        corr = hyp.edge(child, parent)
        idx = hyp.children(parent).index(child)
        try:
            resolve_positions(corr.positions, ds, pool)
        except HypothesisError as exc:
            raise exc.with_context(
                key_prefix=("nodes", parent, "inputs", idx, "positions")
            ) from None
    check_claims(hyp, ds, n_layers=model.shape.n_layers)
    _check_metric(hyp, ds)


def _check_fixed_rows(sampler: FixedSampler, ds: Dataset, *, key: tuple) -> None:
    bad = [r for r in sampler.rows if not 0 <= r < ds.n_base]
    if bad:
        raise HypothesisError(
            f"fixed row {bad[0]} is not a row of the dataset pool, which has rows "
            f"0..{ds.n_base - 1}",
            key=key,
            hint="use rows between 0 and the dataset's size - 1 (negative rows are not allowed)",
        )


def _register_feature(name: str, hyp: Hypothesis, ds: Dataset, *, key: tuple) -> None:
    if name in ds.features or name in ds.fields:
        return
    if ":" in name:
        try:
            ds.features[name] = import_object(name, what="feature")
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=key) from None
        return
    try:
        ds.feature(name)
    except HypothesisError as exc:
        raise exc.with_context(key_prefix=key) from None


def _check_metric(hyp: Hypothesis, ds: Dataset) -> None:
    metric = hyp.spec.metric
    pool = np.arange(ds.n_base)
    try:
        positions = resolve_positions(metric.positions, ds, pool)
    except HypothesisError as exc:
        raise exc.with_context(key_prefix=("metric", "positions")) from None
    for key in ("labels", "correct", "wrong"):
        label = getattr(metric, key)
        if label is None:
            continue
        if label == "next":
            if (positions >= ds.seq_len - 1).any():
                raise HypothesisError(
                    "'next' labels read the token after each metric position, but some "
                    "metric position is the last token",
                    key=("metric", "positions"),
                    hint="read the metric at positions before the last one",
                )
        elif label not in ds.fields:
            raise HypothesisError(
                f"dataset {ds.name!r} has no label field {label!r}",
                key=("metric", key),
                hint=f"use 'next' or one of: {', '.join(sorted(ds.fields))}",
            )
