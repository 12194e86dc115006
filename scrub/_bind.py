"""Binding: check a hypothesis against a concrete model and dataset.

Loading (:mod:`scrub._hypothesis`) checks what the file alone determines. Binding checks the
rest, with errors that name the file, the key and a fix:

- every component exists in the model (``a9.h12`` in GPT-2 small: heads are 0–11), and every
  input means something in its architecture (:func:`scrub._architectures.check_paths`:
  parallel blocks, heads without outputs of their own); ``pos_embed`` is dropped on RoPE models;
- every named position exists in the dataset (components, inputs and the metric);
- every feature a node or sampler names exists (a dataset feature or field, a ``features:``
  alias, or a ``package.module:function`` marked ``@scrub.feature``), returns one value per row
  when tried on the pool, and is registered on the dataset for this run;
- the metric's labels exist and are defined where the metric reads them: ``labels: next`` never
  reads past the end of a sequence, a per-example label (one value per example, like ``io``) is
  read at one position per example (not averaged over a set like ``REP``), label ids are tokens
  of the model, and ``logit_diff``'s two labels differ on some example;
- ``fixed`` rows are rows of the dataset pool;
- no model path is claimed twice (:mod:`scrub._claims`): two inputs of one node never splice
  the same component into the same channel at the same position of any example, and an
  all-paths input never claims paths through a sibling's components;
- no position is named twice in one example's positions (overlapping position sets).

Levers (what a run pays to bind, measured on the induction model, 2000 pool rows): a position
spec's pool-wide check is resolved once per bind however many components and inputs name it
(13 checks → 3); with an :class:`~scrub.engine.ActivationCache` (``scrub.run``'s ``cache``), the
checks that read only the dataset, the model's shape and one spec (sequence length and token
ids, again once generated rows are appended; each position spec and the metric's labels,
which read the pool only) are remembered in it for that model and dataset,
as the cache keeps their activations (the pool's rows never change; a cache bound to another
model or dataset forgets them). A check that fails is never remembered: it fails again, where it
did. Bind: 2.6 → 0.8 ms alone, → 0.3 ms with a warm cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from scrub._architectures import adapt_hypothesis, check_paths
from scrub._claims import check_claims
from scrub._errors import HypothesisError
from scrub._hypothesis import Hypothesis
from scrub._imports import import_marked
from scrub._model import ScrubModel, load_model
from scrub._model_config import load_model_config
from scrub._positions import PositionSpec, format_positions, resolve_positions
from scrub._samplers import CondSampler, FixedSampler, GenerateSampler
from scrub._schema import MetricSpec, ModelRefSpec
from scrub.data import Dataset, make_dataset

if TYPE_CHECKING:
    from scrub.engine import ActivationCache

__all__ = ["BoundHypothesis", "bind", "load_model_for", "make_dataset_for"]


@dataclass(frozen=True)
class BoundHypothesis:
    """A hypothesis checked against a model and a dataset, ready to sample and evaluate."""

    hypothesis: Hypothesis
    model: ScrubModel
    dataset: Dataset

    def __repr__(self) -> str:
        return f"BoundHypothesis({self.hypothesis.name!r}, {self.model!r}, {self.dataset!r})"


def load_model_for(
    hypothesis: Hypothesis,
    model: str | None = None,
    *,
    allow_config_only: bool = False,
    weights: bool = True,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> ScrubModel:
    """Load the model a hypothesis file names (relative to the file), or ``model`` instead.

    ``model`` (a command-line ``--model``) is relative to the current directory.
    ``allow_config_only``: a hub model without weights in the cache is checked against its
    config (see :class:`scrub._model.ConfigOnlyModel`); ``weights=False`` (``scrub check``):
    only the config is read, whatever the weights (:func:`scrub._model_config.load_model_config`).
    ``device`` and ``dtype``: as :func:`scrub.load_model`.

    Raises:
        HypothesisError: located at the file's ``model`` key when the file named it (or in the
            model spec file it names).
    """
    if model is not None:
        if not weights:
            return load_model_config(model)
        return load_model(model, allow_config_only=allow_config_only, device=device, dtype=dtype)
    try:
        return load_model_field(
            hypothesis.spec.model,
            relative_to=hypothesis.base_dir,
            allow_config_only=allow_config_only,
            weights=weights,
            device=device,
            dtype=dtype,
        )
    except HypothesisError as exc:
        if exc.file is not None:  # located in a model spec file already
            raise
        located = exc.with_context(file=hypothesis.file, key_prefix=("model",))
        raise hypothesis.locate(located) from None


def load_model_field(
    value: str | ModelRefSpec,
    *,
    relative_to: str | Path | None,
    allow_config_only: bool = False,
    weights: bool = True,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> ScrubModel:
    """Load what a file's ``model:`` names: a source, or ``{path, layernorm}`` inline.

    ``weights=False``: its config only (:func:`scrub._model_config.load_model_config`; the
    layernorm option changes no shape). ``device``, ``dtype``: as :func:`scrub.load_model`.

    Raises:
        HypothesisError: as :func:`scrub.load_model`; for a mapping, keyed inside it (``path``,
            or ``layernorm`` when the loader's option is what failed).
    """
    source = value if isinstance(value, str) else value.path
    if not weights:
        try:
            return load_model_config(source, relative_to=relative_to)
        except HypothesisError as exc:
            if isinstance(value, str):
                raise
            raise exc.with_context(key_prefix=() if exc.key else ("path",)) from None
    if isinstance(value, str):
        return load_model(
            value,
            relative_to=relative_to,
            allow_config_only=allow_config_only,
            device=device,
            dtype=dtype,
        )
    try:
        model = load_model(
            value.path,
            relative_to=relative_to,
            layernorm=value.layernorm,
            allow_config_only=allow_config_only,
            device=device,
            dtype=dtype,
        )
    except HypothesisError as exc:
        raise exc.with_context(key_prefix=() if exc.key else ("path",)) from None
    model.source = value.path
    return model


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
        if hypothesis.dataset_path is not None:  # located in the dataset spec file
            raise hypothesis.locate(exc.with_context(file=hypothesis.dataset_path)) from None
        located = exc.with_context(file=hypothesis.file, key_prefix=("dataset",))
        raise hypothesis.locate(located) from None


def bind(
    hypothesis: Hypothesis,
    model: ScrubModel,
    dataset: Dataset,
    *,
    cache: ActivationCache | None = None,
) -> BoundHypothesis:
    """Check ``hypothesis`` against ``model`` and ``dataset`` (see the module docstring).

    ``cache``: remember the checks that read only the dataset, the model's shape and one spec
    for the next hypothesis bound on this model and dataset (the same checks, done once).

    Raises:
        HypothesisError: located in the hypothesis file.
    """
    try:
        hypothesis = adapt_hypothesis(hypothesis, model.architecture)
        _check(hypothesis, model, dataset, _once(cache, model, dataset))
        check_paths(hypothesis, model.shape)
    except HypothesisError as exc:
        raise hypothesis.locate(exc.with_context(file=hypothesis.file)) from None
    return BoundHypothesis(hypothesis, model, dataset)


Once = Callable[[tuple, Callable[[], None]], None]
"""``once(key, check)``: run ``check`` unless it passed under ``key`` before (:func:`_once`)."""


def _once(cache: ActivationCache | None, model: ScrubModel, ds: Dataset) -> Once:
    """Checks remembered in ``cache`` for ``model`` and ``ds`` once passed, else in this bind
    only. ``check`` raises to fail; nothing is remembered then."""
    passed: set[tuple] = set()

    def once(key: tuple, check: Callable[[], None]) -> None:
        if cache is not None:
            cache.memo(model, ds, ("bind", *key), check)
        elif key not in passed:
            check()
            passed.add(key)

    return once


def _check(hyp: Hypothesis, model: ScrubModel, ds: Dataset, once: Once) -> None:
    pool = np.arange(ds.n_base)

    def distinct(spec: PositionSpec) -> None:
        # the same for every component and input naming ``spec`` (one dataset, one pool):
        # checked at its first occurrence, so a failing spec still fails where it did
        once(("positions", spec), lambda: _distinct(resolve_positions(spec, ds, pool), spec))

    # every row's tokens: checked again once the dataset has grown (generated rows)
    once(("dataset", len(ds)), lambda: _check_dataset(model, ds))
    for name in hyp.graph:
        node = hyp.node(name)
        for i, mc in enumerate(node.components):
            key = ("nodes", name, "components", i)
            try:
                model.shape.check(mc.component)
                distinct(mc.positions)
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
        if node.feature is not None:
            _register_feature(node.feature, hyp, ds, key=("nodes", name, "feature"))
    for child, parent in hyp.graph.edges:
        corr = hyp.edge(child, parent)
        idx = hyp.children(parent).index(child)
        try:
            distinct(corr.positions)
        except HypothesisError as exc:
            raise exc.with_context(
                key_prefix=("nodes", parent, "inputs", idx, "positions")
            ) from None
    check_claims(hyp, ds, n_layers=model.shape.n_layers, parallel=model.shape.parallel)
    metric = hyp.spec.metric
    once(("metric", metric.model_dump_json()), lambda: _check_metric(metric, ds, model))


def _check_dataset(model: ScrubModel, ds: Dataset) -> None:
    """The dataset fits the model: its sequence length and token ids."""
    if ds.seq_len > model.shape.n_ctx:
        raise HypothesisError(
            f"dataset sequences have {ds.seq_len} tokens, but {model.shape.name} reads at most "
            f"{model.shape.n_ctx}",
            key=("dataset", "params"),
            hint="make shorter sequences (the generator's length params) or use a model with a "
            "longer context",
        )
    max_token = int(ds.tokens.max())
    if max_token >= model.shape.d_vocab:
        raise HypothesisError(
            f"dataset uses token id {max_token}, but {model.shape.name} has a vocabulary of "
            f"{model.shape.d_vocab}",
            key=("dataset", "params"),
            hint="use the dataset made for this model (its vocabulary), or the model made for "
            "this dataset",
        )


def _distinct(resolved: np.ndarray, spec: PositionSpec) -> None:
    """Fail if some example's positions name one position twice (e.g. overlapping sets)."""
    if resolved.shape[1] < 2:
        return
    ordered = np.sort(resolved, axis=1)
    twice = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        values, counts = np.unique(resolved[row], return_counts=True)
        raise HypothesisError(
            f"positions {format_positions(spec)} name position {int(values[counts > 1][0])} "
            f"twice in {int(twice.sum())} examples (first: pool row {row})",
            hint="list positions that do not overlap: a position named twice is spliced or "
            "counted twice",
        )


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
    """Check that feature ``name`` exists and works; register an imported one on ``ds``."""
    try:
        if name not in ds.features and name not in ds.fields and ":" in name:
            ds.features[name] = import_marked(name, what="feature")
        _try_feature(name, ds)
    except HypothesisError as exc:
        raise exc.with_context(key_prefix=key) from None


def _try_feature(name: str, ds: Dataset) -> None:
    """Call feature ``name`` on two pool rows: it must return one value per row."""
    fn = ds.feature(name)
    rows = np.arange(min(2, ds.n_base), dtype=np.int64)
    try:
        values = np.asarray(fn(ds, rows))
    except Exception as exc:  # the user's feature function failed
        raise HypothesisError(
            f"feature {name!r} failed on pool rows {rows.tolist()}: {type(exc).__name__}: {exc}",
            hint="a feature is f(dataset, rows) returning one value (or one row of values) per "
            "row; fix the function",
        ) from exc
    if values.ndim == 0 or values.shape[0] != len(rows):
        got = "a scalar" if values.ndim == 0 else f"{values.shape[0]} values"
        raise HypothesisError(
            f"feature {name!r} returned {got} for {len(rows)} rows",
            hint="a feature is f(dataset, rows) returning one value (or one row of values) per row",
        )


def _check_metric(metric: MetricSpec, ds: Dataset, model: ScrubModel) -> None:
    pool = np.arange(ds.n_base)
    try:
        positions = resolve_positions(metric.positions, ds, pool)
        _distinct(positions, metric.positions)
    except HypothesisError as exc:
        raise exc.with_context(key_prefix=("metric", "positions")) from None
    labels: dict[str, np.ndarray] = {}
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
            labels[key] = ds.tokens[torch.as_tensor(pool)[:, None], positions + 1].numpy()
        elif label not in ds.fields:
            raise HypothesisError(
                f"dataset {ds.name!r} has no label field {label!r}",
                key=("metric", key),
                hint=f"use 'next' or one of: {', '.join(sorted(ds.fields))}",
            )
        else:
            labels[key] = _label_field(label, ds, positions, metric, key=("metric", key))
    for key, values in labels.items():
        if values.size and (values.min() < 0 or values.max() >= model.shape.d_vocab):
            raise HypothesisError(
                f"label {getattr(metric, key)!r} holds ids outside the vocabulary of "
                f"{model.shape.name} (0..{model.shape.d_vocab - 1})",
                key=("metric", key),
                hint="labels are token ids of the model; use the dataset made for this model",
            )
    if (
        "correct" in labels
        and "wrong" in labels
        and np.array_equal(labels["correct"], labels["wrong"])
    ):
        raise HypothesisError(
            f"'correct' ({metric.correct}) and 'wrong' ({metric.wrong}) are the same token in "
            "every example, so the logit difference is 0 everywhere",
            key=("metric",),
            hint="name two labels that differ, e.g. correct: io, wrong: s",
        )


def _label_field(
    label: str, ds: Dataset, positions: np.ndarray, metric: MetricSpec, *, key: tuple
) -> np.ndarray:
    """The label field's values, checked to be defined at each metric position."""
    values = np.asarray(ds.fields[label][: ds.n_base])
    where = format_positions(metric.positions)
    if not np.issubdtype(values.dtype, np.integer):
        raise HypothesisError(
            f"label field {label!r} holds {values.dtype} values, not token ids",
            key=key,
            hint="labels are token ids (integers); pick a label field such as "
            + ", ".join(sorted(k for k, v in ds.fields.items() if v.dtype.kind in "iu")),
        )
    k = positions.shape[1]
    if values.ndim == 1 and k > 1:
        raise HypothesisError(
            f"label field {label!r} has one value per example, but the metric reads {k} "
            f"positions per example ({where}); that label is the answer at one position, and "
            "is not defined at the others",
            key=key,
            hint="read the metric at one position per example (e.g. 'positions: END'), or use "
            "'next' labels for a per-position metric",
        )
    if values.ndim > 2 or (values.ndim == 2 and values.shape[1] != k):
        raise HypothesisError(
            f"label field {label!r} has shape {values.shape[1:]} per example, but the metric "
            f"reads {k} position{'s' if k > 1 else ''} per example ({where})",
            key=key,
            hint="a label field has one value per example (read at one position) or one per "
            "metric position",
        )
    return np.broadcast_to(values[:, None], positions.shape) if values.ndim == 1 else values
