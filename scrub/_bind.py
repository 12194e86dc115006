"""Binding: check a hypothesis against a concrete model and dataset.

Loading (:mod:`scrub._hypothesis`) checks what the file alone determines. Binding checks the
rest, with errors that name the file, the key and a fix:

- every component exists in the model (``a9.h12`` in GPT-2 small: heads are 0–11), and every
  input means something in its architecture (:func:`scrub._architectures.check_paths`:
  parallel blocks, heads without outputs of their own); ``pos_embed`` is dropped on RoPE models;
- every named position exists in the dataset (components, inputs and the metric);
- every feature a sampler uses exists (a dataset feature or field, a ``features:`` alias, or a
  ``package.module:function``), and is registered on the dataset for this run;
- the metric's labels exist, and ``labels: next`` never reads past the end of a sequence;
- no model path is matched twice: two inputs of one node never splice the same component into
  the same channel at the same position of any example.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from scrub._architectures import adapt_hypothesis, check_paths
from scrub._components import Component
from scrub._errors import HypothesisError
from scrub._hypothesis import Correspondence, Hypothesis, MappedComponent
from scrub._imports import import_object
from scrub._model import ScrubModel
from scrub._positions import format_positions, resolve_positions
from scrub._samplers import CondSampler, GenerateSampler
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
        hypothesis = adapt_hypothesis(hypothesis, model.architecture)
        _check(hypothesis, model, dataset)
        check_paths(hypothesis, model.shape)
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
    for parent in hyp.graph:
        _check_no_double_match(hyp, parent, ds)
    _check_metric(hyp, ds)


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


def _check_no_double_match(hyp: Hypothesis, parent: str, ds: Dataset) -> None:
    """Fail if two inputs of ``parent`` splice one component into one channel at one position."""
    pool = np.arange(ds.n_base)
    splices: list[tuple[Correspondence, MappedComponent]] = [
        (hyp.edge(child, parent), mc)
        for child in hyp.children(parent)
        for mc in hyp.node(child).components
    ]
    for (e1, m1), (e2, m2) in combinations(splices, 2):
        if m1.component != m2.component or e1.child == e2.child:
            continue
        if not _targets_overlap(hyp, parent, e1, e2, m1.component):
            continue
        p1 = resolve_positions(e1.splice_positions(m1), ds, pool)
        p2 = resolve_positions(e2.splice_positions(m2), ds, pool)
        shared = (p1[:, :, None] == p2[:, None, :]).any(axis=(1, 2))
        if shared.any():
            idx = hyp.children(parent).index(e2.child)
            raise HypothesisError(
                f"the path from {m1.component.name} into node {parent!r} is matched twice, by "
                f"inputs {e1.child!r} (positions {format_positions(e1.splice_positions(m1))}) "
                f"and {e2.child!r} (positions {format_positions(e2.splice_positions(m2))})",
                key=("nodes", parent, "inputs", idx),
                hint="split the positions or channels so that each path is matched once",
            )


def _targets_overlap(
    hyp: Hypothesis, parent: str, e1: Correspondence, e2: Correspondence, comp: Component
) -> bool:
    """Whether both edges reach some channel of some component of ``parent``."""
    return any(
        set(e1.channels) & set(e2.channels) & set(pmc.component.channels)
        for pmc in hyp.node(parent).components
    )
