"""Discovery experiments on the treeified engine: activation, path and iterative path patching.

Before writing a hypothesis one finds the circuit by patching. Every patch is a special case of
causal scrubbing (DESIGN.md, "Other experiments that are special cases"; the cells are built in
:mod:`scrub.experiments._cells`), so scrub runs a whole grid as row groups of a few batched
passes of the fast engine (:meth:`scrub.FastEngine.evaluate_many`), chunked under
``max_batch_rows``, with the same samplers, named positions and metrics as a hypothesis:

- ``kind: activation``: each component's output (× position) taken from the source examples;
- ``kind: path``: each sender's direct path into each receiver's ``q`` / ``k`` / ``v`` / ``in``;
- ``kind: iterative_path``: every upstream head and MLP (× position) into one receiver set;
- ``kind: attention`` (:mod:`scrub.experiments._attention`): heads' patterns under a patch or a
  hypothesis, minus clean;
- ``kind: knockout`` (:mod:`scrub.experiments._knockout`): the IOI paper's node-level
  faithfulness, every component outside a circuit mean- or zero-ablated (no base or source).

Vocabulary: the **reference** batch supplies the labels the metric reads; the **base** run is
what gets patched (the root's other inputs, drawn by ``base:`` from the reference); the
**source** supplies the patched values (drawn by ``source:``). Each cell is scored against the
base run (``effect``) and normalised by the run entirely on the source (``scale``): 0 means the
patch changes nothing, 1 that it carries the whole difference between the two runs.

Pitfall: with datasets whose examples differ in layout, integer positions (``positions:
each``) move position t of the source onto position t of the base; use named positions, or
draw the base and source with the same layout (a flip, or ``cond`` on ``template``/``order``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from scrub._bind import _register_feature, load_model_field
from scrub._errors import HypothesisError
from scrub._gc import no_gc
from scrub._hypothesis import _sampler
from scrub._metrics import per_example_metric
from scrub._model import ScrubModel, load_model
from scrub._positions import resolve_positions
from scrub._precision import check_precision
from scrub._run import _clean, _count, _versions
from scrub._samplers import CondSampler, SampleContext, Sampler
from scrub._schema import MODEL_FORMS, CondSpec, GenerateSpec
from scrub._tree import reference_rows, stream
from scrub._yaml import read_yaml_document
from scrub.data import Dataset, make_dataset
from scrub.data._spec import load_dataset_spec
from scrub.engine import ActivationCache, FastEngine
from scrub.experiments._attention import AttentionResult, attention
from scrub.experiments._cells import (
    Cell,
    activation_cells,
    components_of,
    path_cells,
    trees_of,
)
from scrub.experiments._flips import FlipSampler
from scrub.experiments._knockout import KnockoutResult, knockout
from scrub.experiments._patch_result import PatchResult
from scrub.experiments._patch_schema import (
    EXPERIMENT_KINDS,
    SOURCE_KINDS,
    ActivationSpec,
    AttentionSpec,
    ExperimentSpec,
    FlipSpec,
    IterativePathSpec,
    KnockoutSpec,
    PathSpec,
)
from scrub.experiments._patch_stats import grid_stats

__all__ = ["Experiment", "Setup", "load_experiment", "patch"]

GRID_PASS_MEMORY = 128 * 2**20
"""A grid's activation budget of one pass when none is given (bytes), not the engine's default.

Context: the engine's default (:data:`scrub.engine.cache.PASS_MEMORY`, 32 MiB) was measured on
``scrub run`` passes. A grid's passes are different: most cells run as suffix blocks over
a few positions, and smaller passes only add calls. Measured on the IOI-toy activation grid
(``bench_patching.py --case ioi_toy --n 8``, one process, 2026-12-02 12:47 UTC, load 2): 0.61–0.65 s
CPU with 128 MiB against 0.79–0.87 s with 32 MiB. ``--max-memory`` still overrides it.
"""

_ADAPTER: pydantic.TypeAdapter = pydantic.TypeAdapter(ExperimentSpec)


@dataclass(frozen=True)
class Experiment:
    """A validated patching experiment file."""

    name: str
    spec: ActivationSpec | PathSpec | IterativePathSpec | AttentionSpec | KnockoutSpec
    file: str | None
    sha256: str
    dataset_file: str | None = None

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, kind={self.spec.kind!r}, model={self.spec.model!r})"


def load_experiment(path: str | Path) -> Experiment:
    """Load and validate a patching experiment file.

    Raises:
        HypothesisError: the file is missing, not YAML, or not a valid experiment (naming the
            file, the key and a fix).
    """
    path = Path(path)
    data, raw = _read(path)
    return experiment_from_dict(
        data, file=str(path), sha256=hashlib.sha256(raw).hexdigest(), default_name=path.stem
    )


def _read(path: Path) -> tuple[Any, bytes]:
    doc = read_yaml_document(path, what="experiment file")
    return doc.data, doc.raw


def experiment_from_dict(
    data: Any, *, file: str | None = None, sha256: str | None = None, default_name: str = "patch"
) -> Experiment:
    """Validate an experiment given as plain data (what the YAML reader returns)."""
    if not isinstance(data, dict):
        raise HypothesisError(
            f"an experiment file must be a mapping of keys, not {type(data).__name__}",
            file=file,
            hint="start with 'kind:', 'model:', 'dataset:' and 'metric:'",
        )
    if data.get("kind") not in EXPERIMENT_KINDS:
        raise HypothesisError(
            "missing 'kind'" if "kind" not in data else f"unknown kind {data['kind']!r}",
            file=file,
            key=("kind",),
            hint=f"kinds: {', '.join(EXPERIMENT_KINDS)}",
        )
    dataset_file = None
    if isinstance(data.get("dataset"), str):
        source = load_dataset_spec(data["dataset"], file)
        dataset_file = str(source.file)
        data = {**data, "dataset": source.data}
    ablation = data.get("ablation")
    if isinstance(ablation, dict) and isinstance(ablation.get("dataset"), str):
        reference = load_dataset_spec(ablation["dataset"], file)
        data = {**data, "ablation": {**ablation, "dataset": reference.data}}
    try:
        spec = _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        raise _located(exc, file, data["kind"]) from None
    if sha256 is None:
        sha256 = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    return Experiment(spec.name or default_name, spec, file, sha256, dataset_file)


def _located(exc: pydantic.ValidationError, file: str | None, kind: str) -> HypothesisError:
    import difflib

    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = list(err["loc"])
    if loc and loc[0] == kind:  # the discriminated union's tag
        loc = loc[1:]
    key = tuple(
        p
        for i, p in enumerate(loc)
        if not (i > 0 and (p in SOURCE_KINDS or (loc[i - 1] == "model" and p in MODEL_FORMS)))
    )
    hint = None
    if err["type"] == "extra_forbidden":
        model: Any = {
            "activation": ActivationSpec,
            "path": PathSpec,
            "iterative_path": IterativePathSpec,
            "attention": AttentionSpec,
            "knockout": KnockoutSpec,
        }[kind]
        allowed = sorted(model.model_fields) if len(key) == 1 else []
        close = difflib.get_close_matches(str(key[-1]), allowed, n=1)
        problem = f"unknown key {key[-1]!r}"
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"allowed keys for kind {kind!r}: {', '.join(allowed)}" if allowed else ""
        ) or None
    elif err["type"] == "missing":
        problem = f"missing required key {key[-1]!r}"
    elif err["type"] == "union_tag_invalid":
        problem = err["msg"]
        hint = f"sampler kinds: {', '.join(SOURCE_KINDS)}"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    return HypothesisError(problem, file=file, key=key, hint=hint)


# -- setting up: model, dataset, reference, base and source rows ------------------------------
@dataclass
class Setup:
    """What every kind shares: the model, the dataset and the rows drawn once."""

    experiment: Experiment
    model: ScrubModel
    dataset: Dataset
    n: int
    seed: int
    reference: np.ndarray
    base: np.ndarray
    source: np.ndarray
    warnings: list[str]

    def hypothesis_base(self) -> dict[str, Any]:
        """The keys every cell's hypothesis dict shares with the experiment file."""
        spec = self.experiment.spec
        return {
            "name": self.experiment.name,
            "model": spec.model if isinstance(spec.model, str) else spec.model.model_dump(),
            "dataset": spec.dataset.model_dump(),
            "metric": spec.metric.model_dump(exclude_none=True),
            "features": dict(spec.features),
        }


def setup(
    experiment: Experiment,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Setup:
    """Load the model (on ``device``, in ``dtype``), make the dataset and draw the reference,
    base and source rows."""
    spec = experiment.spec
    n = spec.defaults.n if n is None else n
    seed = spec.defaults.seed if seed is None else seed
    if not isinstance(model, ScrubModel):
        # A file's relative 'model:' is relative to the file, as in hypothesis files.
        home = Path(experiment.file).parent if model is None and experiment.file else None
        where, kind = device or "cpu", dtype or "float32"
        if model is not None:
            model = load_model(model, device=where, dtype=kind)
        else:
            try:
                model = load_model_field(spec.model, relative_to=home, device=where, dtype=kind)
            except HypothesisError as exc:
                if exc.file is not None:  # located in a model spec file already
                    raise
                raise exc.with_context(file=experiment.file, key_prefix=("model",)) from None
    else:
        check_precision(model, device=device, dtype=dtype)
    if dataset is None:
        try:
            dataset = make_dataset(
                spec.dataset.generator, spec.dataset.params, stream(seed, "dataset")
            )
        except HypothesisError as exc:
            raise exc.with_context(file=experiment.file, key_prefix=("dataset",)) from None
    messages: list[str] = []
    try:
        x = reference_rows(dataset, n, seed)
        together: dict[str, np.ndarray] = {}

        def draw(key: str, role: str, path: str) -> np.ndarray:
            sampler = _sampler_of(getattr(spec, key), key, experiment, dataset)
            ctx = SampleContext(
                dataset=dataset,
                rng=stream(seed, role, path),
                node=key,
                together=together,
                together_rng=lambda group: stream(seed, "together", group),
                warnings=messages,
            )
            try:
                return sampler.sample(x, ctx)
            except HypothesisError as exc:
                raise exc.with_context(key_prefix=(key,)) from None

        if isinstance(spec, KnockoutSpec):  # runs on the reference itself
            base = source = x.copy()
        else:
            base = draw("base", "other", "out")  # the stream a hypothesis root's other uses
            source = draw("source", "data", "out/source")
        resolve_positions(spec.metric.positions, dataset, base)
    except HypothesisError as exc:
        raise exc.with_context(file=experiment.file) from None
    return Setup(experiment, model, dataset, n, seed, x, base, source, messages)


def _sampler_of(spec: Any, key: str, experiment: Experiment, dataset: Dataset) -> Sampler:
    if isinstance(spec, FlipSpec):
        return FlipSampler(tuple(spec.flip))
    aliases = experiment.spec.features
    if isinstance(spec, CondSpec) and not spec.features:
        raise HypothesisError(f"a 'cond' {key} needs 'features: [...]'", key=(key,))
    if isinstance(spec, GenerateSpec) and not spec.feature:
        raise HypothesisError(f"a 'generate' {key} needs 'feature: ...'", key=(key,))
    sampler = _sampler(spec, key, None, (key,), aliases)
    if isinstance(sampler, CondSampler):
        for feature in sampler.features:
            _register_feature(feature, None, dataset, key=(key,))  # type: ignore[arg-type]
    return sampler


# -- running a grid ---------------------------------------------------------------------------
def patch(
    experiment: Experiment | str | Path,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    max_batch_rows: int = 4096,
    cache: ActivationCache | None = None,
    max_memory: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> PatchResult | AttentionResult | KnockoutResult:
    """Run a patching experiment and return its grid with per-cell statistics.

    Args:
        experiment: an :class:`Experiment` or the path of an experiment file.
        model: a loaded model or a model source (default: the file's ``model``).
        dataset: a dataset to use instead of making the file's.
        n: reference examples (default: the file's ``defaults.n``).
        seed: the seed of every draw (default: the file's ``defaults.seed``).
        max_batch_rows: most rows in one forward pass (results do not depend on it beyond
            float rounding).
        cache: activations to reuse across runs on the same model and dataset.
        max_memory: activation budget of one forward pass in bytes (fast engine), as in
            :func:`scrub.run` (``None``: :data:`GRID_PASS_MEMORY` for grids). Results do not depend on it.
        device, dtype: where and in which type to load ``model`` (default ``cpu``,
            ``float32``), as in :func:`scrub.run`; a loaded ``model`` must match them.

    Returns:
        The :class:`PatchResult` (``.to_frame()``, ``.to_json()``, ``.save(dir)``); for
        ``kind: attention`` an :class:`AttentionResult`, for ``kind: knockout`` a
        :class:`~scrub.experiments._knockout.KnockoutResult`.

    Raises:
        HypothesisError: the experiment is invalid for this model or dataset.
        ValueError: ``max_memory`` is not a positive integer.
    """
    if max_memory is not None:
        max_memory = _count("max_memory", max_memory, minimum=1)
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    su = setup(exp, model=model, dataset=dataset, n=n, seed=seed, device=device, dtype=dtype)
    if isinstance(exp.spec, AttentionSpec):
        return attention(su, max_batch_rows=max_batch_rows, max_memory=max_memory)
    if isinstance(exp.spec, KnockoutSpec):
        return knockout(su, max_batch_rows=max_batch_rows, cache=cache)
    try:
        axes, cells = _grid(su)
    except HypothesisError as exc:
        raise exc.with_context(file=exp.file) from None
    with no_gc():
        return run_cells(
            su, axes, cells, max_batch_rows=max_batch_rows, cache=cache, max_memory=max_memory
        )


def _positions_axis(spec: Any, su: Setup, *, each: bool) -> list[tuple | None]:
    value = spec.positions
    if value == "each" and each:
        return [(t,) for t in range(su.dataset.seq_len)]
    if value is None:
        return [None]
    for item in value:
        try:
            resolve_positions((item,), su.dataset, su.reference)
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=("positions",)) from None
    return [(item,) for item in value]


def _grid(su: Setup) -> tuple[dict[str, list], list[Cell | None]]:
    spec = su.experiment.spec
    shape = su.model.shape
    if isinstance(spec, ActivationSpec):
        comps = components_of(spec.components, shape, key=("components",))
        positions = _positions_axis(spec, su, each=True)
        axes: dict[str, list] = {
            "component": [c.name for c in comps],
            "position": [_pos_name(p) for p in positions],
        }
        return axes, list(activation_cells(comps, positions))
    if isinstance(spec, PathSpec):
        senders = components_of(spec.senders, shape, key=("senders",))
        receivers = components_of(spec.receivers, shape, key=("receivers",), allow_logits=True)
        positions = _positions_axis(spec, su, each=False)
        axes = {
            "sender": [c.name for c in senders],
            "receiver": [r.name for r in receivers],
            "channel": list(spec.channels),
            "position": [_pos_name(p) for p in positions],
        }
        cells = path_cells(
            shape, senders, [[r] for r in receivers], spec.channels, positions, by_channel=True
        )
        return axes, cells
    assert isinstance(spec, IterativePathSpec)
    receivers = components_of(spec.receivers, shape, key=("receivers",), allow_logits=True)
    first = min(shape.order(r) for r in receivers)
    senders = [
        c for c in components_of(spec.senders, shape, key=("senders",)) if shape.order(c) < first
    ]
    if not senders:
        raise HypothesisError(
            "no sender is upstream of every receiver",
            key=("receivers",),
            hint="receivers read the residual stream after their senders write it",
        )
    positions = _positions_axis(spec, su, each=False)
    axes = {"sender": [c.name for c in senders], "position": [_pos_name(p) for p in positions]}
    return axes, path_cells(shape, senders, [receivers], spec.channels, positions, by_channel=False)


def _pos_name(pos: tuple | None) -> str | int:
    return "all" if pos is None else pos[0]


def run_cells(
    su: Setup,
    axes: dict[str, list],
    cells: list[Cell | None],
    *,
    max_batch_rows: int,
    cache: ActivationCache | None,
    max_memory: int | None = None,
) -> PatchResult:
    """Evaluate every cell as one batched call of the fast engine and score the grid."""
    spec = su.experiment.spec
    assert not isinstance(spec, KnockoutSpec), "a knockout has no grid"
    model, ds = su.model, su.dataset
    if max_memory is None:
        max_memory = GRID_PASS_MEMORY
    cache = cache or ActivationCache(max_batch_rows=max_batch_rows, max_memory=max_memory)
    present = [c for c in cells if c is not None]
    trees = trees_of(
        present,
        su.hypothesis_base(),
        model,
        ds,
        {"base": su.base, "source": su.source},
        n=su.n,
        seed=su.seed,
        file=su.experiment.file,
    )
    x = su.reference
    clean_pos = resolve_positions(spec.metric.positions, ds, x)
    root_pos = resolve_positions(spec.metric.positions, ds, su.base)
    clean_logits = _clean(model, ds, x, clean_pos, max_batch_rows)

    def metric(logits: torch.Tensor) -> np.ndarray:
        return per_example_metric(
            spec.metric, logits, reference=x, dataset=ds, clean_logits=clean_logits
        )

    clean = metric(clean_logits)
    # The base and source runs are evaluated like the cells (the same engine passes), so a
    # cell that changes nothing scores exactly the base run, not the base run plus rounding.
    plain = [
        Cell((role,), {"out": {"components": ["logits"]}}, (("out", "other", role),))
        for role in ("base", "source")
    ]
    trees = trees_of(
        plain, su.hypothesis_base(), model, ds, {"base": su.base, "source": su.source},
        n=su.n, seed=su.seed, file=su.experiment.file,
    ) + trees  # fmt: skip
    engine = FastEngine(
        cache=cache, max_batch_rows=max_batch_rows, joint_qkv=True, max_memory=max_memory
    )
    done = engine.evaluate_many(model, trees, positions=root_pos, reduce=metric)
    base, scale, *patched = (np.asarray(v) for v in done.logits)
    values = np.full((len(cells), su.n), np.nan)
    valid = np.array([c is not None for c in cells])
    if patched:
        values[valid] = np.stack(patched)
    st = grid_stats(
        values[valid],
        base,
        scale,
        rng=stream(su.seed, "patch-stats"),
        confidence=spec.confidence,
        n_resamples=spec.n_resamples,
        n_permutations=spec.n_permutations,
        correction=spec.correction,
    )
    return PatchResult.build(
        setup=su,
        axes=axes,
        valid=valid,
        values=values,
        stats=st,
        clean=clean,
        base=base,
        scale=scale,
        cells=[None if c is None else c.nodes for c in cells],
        versions=dict(_versions()),
    )
