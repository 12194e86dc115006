"""``scrub.run``: hypothesis → bound → sampled tree → evaluated → scored.

The clean model runs on the reference batch; the scrubbed model is the engine on the whole
tree; the baseline belongs to the experiment, not to the hypothesis (:mod:`scrub.engine.
baseline`): by default (``resample_all``) the whole model on rows drawn from the seed's
baseline stream, which the root's default ``other: uncond`` draw shares, so an empty hypothesis
scores exactly 0 and every hypothesis on one experiment shares one denominator.

The fraction recovered is **undefined** (``None``, with ``recovered_undefined_reason``) when
clean and baseline cannot be told apart: the paired bootstrap CI of clean − baseline contains 0,
a mean is not finite, or there are too few examples. It is never reported as a number then.

The file's ``ablation:`` (resample, mean, zero; :mod:`scrub.engine._ablation`) goes to the
engine, and so does the ablation of a ``mean`` / ``zero`` baseline. Every result records the methodology (:func:`scrub._result.methodology`).

Logits are only needed where the metric reads them, so the engines are asked for those
positions only. With a shared :class:`~scrub.engine.ActivationCache` (and a shared dataset),
competing hypotheses reuse the clean and baseline outputs and every cached leaf activation.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import os
import platform
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from scrub._bind import bind, load_model_for, make_dataset_for
from scrub._errors import ScrubWarning
from scrub._gc import no_gc
from scrub._hooks import unmasked_rows_softmax
from scrub._hypothesis import Hypothesis, load_hypothesis
from scrub._intervals import intervals
from scrub._metrics import per_example_metric
from scrub._model import ScrubModel
from scrub._positions import resolve_positions
from scrub._precision import check_precision
from scrub._result import ScrubResult, methodology
from scrub._schema import MetricSpec
from scrub._tree import MAX_TREE_NODES, SampledTree, sample_tree
from scrub.data import Dataset
from scrub.engine import ActivationCache, FastEngine, baseline_for, evaluate_reference
from scrub.engine._ablation import Ablation, ablation_for
from scrub.engine.baseline import BaselineContext
from scrub.engine.cache import balanced, pass_rows

__all__ = ["ENGINES", "run"]

ENGINES = ("fast", "reference")
"""The evaluators ``run`` accepts by name (``fast``: :class:`FastEngine`, the default)."""

Evaluate = Callable[..., Tensor]


@no_gc()  # a run's many small objects would set off full collections (scrub._gc)
def run(
    hypothesis: Hypothesis | str | Path,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    reference_seed: int | None = None,
    engine: str = "fast",
    baseline: str | None = None,
    cache: ActivationCache | None = None,
    max_batch_rows: int = 4096,
    max_tree_nodes: int = MAX_TREE_NODES,
    confidence: float = 0.95,
    progress: bool | None = False,
    max_memory: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> ScrubResult:
    """Scrub a hypothesis and score it.

    Args:
        hypothesis: a :class:`Hypothesis` or the path of a hypothesis file.
        model: a loaded model or a model source (default: the file's ``model``).
        dataset: a dataset to use instead of making the file's (it may grow).
        n: number of reference examples (default: the file's ``defaults.n``).
        seed: the seed every draw derives from (default: the file's ``defaults.seed``).
        reference_seed: draw the reference batch from this seed instead (default: ``seed``),
            to re-draw the tree on one reference batch (``scrub compare --seeds``).
        engine: the evaluator, ``fast`` (default) or ``reference``; they agree to 1e-4.
        baseline: the experiment's baseline kind (default: the file's ``baseline``, else the
            one matching its ``ablation``: ``resample_all`` for ``resample``); see
            :mod:`scrub.engine.baseline`.
        cache: activations to reuse across runs on the same model and dataset (fast engine);
            pass the same ``dataset`` too.
        max_batch_rows: most rows in one forward pass (fast engine); results do not depend
            on it beyond float rounding.
        max_tree_nodes: refuse hypotheses whose treeified graph has more nodes than this.
        confidence: confidence level of the bootstrap intervals.
        progress: show a progress bar on stderr (``None``: only if stderr is a terminal).
        max_memory: activation budget of one forward pass in bytes (fast engine): each pass
            takes the most rows that fit, at most ``max_batch_rows`` (``None``: 32 MiB; see
            :func:`scrub.engine.cache.pass_rows`). Results do not depend on it.
        device: where to load ``model`` (``cpu`` by default, ``cuda``, ``cuda:N``).
        dtype: the type to load ``model`` in (``float32`` by default, ``bfloat16``,
            ``float16``; see :mod:`scrub._precision`). Metrics are computed in float64 in
            every dtype. A loaded model runs where and as it was loaded: ``device`` and
            ``dtype``, if given, must match it.

    Returns:
        The :class:`ScrubResult`.

    Raises:
        HypothesisError: the hypothesis is invalid for this model or dataset.
        ValueError: an option is out of range (``n < 1``, ``seed < 0``, ...).
        PrecisionError: an unknown or unavailable device or dtype, or one that differs from a
            loaded ``model``'s.
    """
    hyp = hypothesis if isinstance(hypothesis, Hypothesis) else load_hypothesis(hypothesis)
    spec = hyp.spec
    n = _count("n", spec.defaults.n if n is None else n, minimum=1)
    seed = _count("seed", spec.defaults.seed if seed is None else seed, minimum=0)
    max_batch_rows = _count("max_batch_rows", max_batch_rows, minimum=1)
    max_tree_nodes = _count("max_tree_nodes", max_tree_nodes, minimum=1)
    if max_memory is not None:
        max_memory = _count("max_memory", max_memory, minimum=1)
    if not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), not {confidence!r}")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    kind = spec.baseline_kind if baseline is None else baseline
    if kind not in ("resample_all", "mean", "zero", "permuted_labels"):
        baseline_for(kind)  # raises, naming the kinds
    if kind == "mean" and spec.ablation.kind != "mean":
        raise ValueError("baseline 'mean' takes its means from the file's mean 'ablation:'")
    if cache is None:
        cache = ActivationCache(max_batch_rows=max_batch_rows, max_memory=max_memory)
    if not isinstance(model, ScrubModel):
        # the file's model is relative to the file
        model = load_model_for(hyp, model, device=device or "cpu", dtype=dtype or "float32")
    else:
        check_precision(model, device=device, dtype=dtype)
    if dataset is None:
        dataset = make_dataset_for(hyp, seed=seed)
    bound = bind(hyp, model, dataset, cache=cache)  # dataset-only checks kept in it
    tree = sample_tree(
        bound, n=n, seed=seed, max_tree_nodes=max_tree_nodes, reference_seed=reference_seed
    )
    messages = list(tree.warnings)

    ablation = ablation_for(hyp, model, dataset, cache)
    evaluate = _engine(engine, cache, max_batch_rows, ablation, max_memory)
    base_ablation = {"mean": ablation, "zero": Ablation("zero")}.get(kind)
    base = baseline_for(kind, ablation=base_ablation)
    x = tree.reference
    o_root = tree.rows(tree.root)
    clean_pos = resolve_positions(spec.metric.positions, dataset, x)
    root_pos = resolve_positions(spec.metric.positions, dataset, o_root)
    stages = ("clean", "baseline", "scrubbed")
    # the clean pass split as the engine's passes are (a pass's cost per row grows past them)
    clean_rows = min(max_batch_rows, pass_rows(model, dataset.seq_len, max_memory=max_memory))
    bar = tqdm(  # cleared when closed, so it never shares a line with the table
        total=len(stages),
        desc=f"scrub {hyp.name}",
        unit="stage",
        disable=_no_bar(progress),
        leave=False,
    )

    def tick() -> None:
        bar.refresh()

    try:
        bar.set_postfix_str(stages[0])
        clean_logits = cache.memo(
            model,
            dataset,
            ("clean", x.tobytes(), clean_pos.tobytes()),
            lambda: _clean(model, dataset, x, clean_pos, clean_rows),
        )
        bar.update()
        bar.set_postfix_str(stages[1])
        base_run = base(
            BaselineContext(
                model=model,
                dataset=dataset,
                reference=x,
                seed=seed,
                metric_positions=spec.metric.positions,
                evaluate=_engine(engine, cache, max_batch_rows, base_ablation, max_memory),
                engine=engine,
                cache=cache,
                on_pass=tick,
                clean_logits=clean_logits,
            )
        )
        baseline_logits = base_run.logits
        labelled = x if base_run.labels is None else base_run.labels
        baseline_clean = clean_logits if base_run.clean is None else base_run.clean
        bar.update()
        bar.set_postfix_str(stages[2])
        scrubbed_logits = evaluate(model, tree, positions=root_pos, on_pass=tick)
        bar.update()
    finally:
        bar.close()

    def metric(logits: Tensor, reference: np.ndarray = x, of: Tensor = clean_logits) -> np.ndarray:
        return per_example_metric(
            spec.metric, logits, reference=reference, dataset=dataset, clean_logits=of
        )

    # the clean and baseline outputs come from the cache: so do their metrics (_held_metric)
    clean = _held_metric(cache, model, dataset, spec.metric, metric, clean_logits, x, clean_logits)
    baseline_values = _held_metric(
        cache, model, dataset, spec.metric, metric, baseline_logits, labelled, baseline_clean
    )
    scrubbed = metric(scrubbed_logits)

    if same := _same_logits(scrubbed_logits, clean_logits):
        messages.append(
            f"the scrubbed output equals the clean model's {same}: this hypothesis resamples "
            "nothing that reaches the output"
        )
    elif same := _same_logits(scrubbed_logits, baseline_logits):
        messages.append(
            f"the scrubbed output equals the baseline {same}: this hypothesis keeps nothing "
            "that reaches the output"
        )
    for name, values in (("clean", clean), ("baseline", baseline_values), ("scrubbed", scrubbed)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            messages.append(
                f"the {name} metric is not finite on {bad} of {len(values)} examples (written "
                "as null in JSON)"
            )

    # scrub._intervals: each interval its own draw from the bootstrap stream, in turn; those
    # read from the clean and baseline metrics alone are shared through the cache
    cis = intervals(
        clean,
        baseline_values,
        scrubbed,
        seed=seed,
        confidence=confidence,
        memo=functools.partial(cache.memo, model, dataset),
    )
    if cis.reason is not None:
        messages.append(f"the fraction recovered is undefined: {cis.reason}")

    result = ScrubResult(
        hypothesis=hyp.name,
        hypothesis_file=hyp.file,
        hypothesis_sha256=hyp.sha256,
        model=model.source,
        model_sha256=model.checkpoint_sha256(),
        dataset={
            "generator": spec.dataset.generator,
            "params": dict(dataset.params),
            "spec_file": _relative_to_file(hyp.dataset_path, hyp.file),
        },
        metric=spec.metric.model_dump(),
        n=n,
        seed=seed,
        engine=evaluate.describe(model) if isinstance(evaluate, FastEngine) else engine,
        baseline_kind=base_run.kind,
        clean=float(clean.mean()),
        baseline=float(baseline_values.mean()),
        scrubbed=float(scrubbed.mean()),
        clean_ci=cis.clean,
        baseline_ci=cis.baseline,
        scrubbed_ci=cis.scrubbed,
        recovered=cis.recovered,
        recovered_ci=cis.recovered_ci,
        confidence=confidence,
        per_example=scrubbed.tolist(),
        per_example_clean=clean.tolist(),
        per_example_baseline=baseline_values.tolist(),
        reference=x.tolist(),
        draws=tree.draws(),
        warnings=messages,
        versions=dict(_versions()),
        recovered_undefined_reason=cis.reason,
        baseline_rows=None if base_run.rows is None else base_run.rows.tolist(),
        self_draws=tree.self_draws,
        generated=_generated_examples(tree),
        methodology=methodology(hyp, ablation),
        **model.precision,
    )
    for message in messages:
        warnings.warn(message, ScrubWarning, stacklevel=2)
    return result


def _count(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return int(value)


def _no_bar(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: ``None`` lets tqdm hide the bar when stderr is not a terminal."""
    return None if progress is None else not progress


def _held_metric(
    cache: ActivationCache,
    model: ScrubModel,
    dataset: Dataset,
    spec: MetricSpec,
    metric: Callable[[Tensor, np.ndarray, Tensor], np.ndarray],
    logits: Tensor,
    reference: np.ndarray,
    clean_logits: Tensor,
) -> np.ndarray:
    """``metric(logits, reference, clean_logits)``, once for every hypothesis that reads the
    same tensors (the clean and baseline outputs the cache holds) with the same metric.

    Remembered in the cache with the tensors it read, under their ids: an id names one live
    object, and they live while the entry does (checked with ``is`` all the same); the values
    are read-only. Measured: 0.3 ms a metric on the induction model at n = 64.
    """
    key = ("metric", spec.model_dump_json(), id(logits), id(clean_logits), _bytes(reference))

    def compute() -> tuple[Tensor, Tensor, np.ndarray]:
        values = metric(logits, reference, clean_logits)
        values.flags.writeable = False
        return logits, clean_logits, values

    held = cache.memo(model, dataset, key, compute)
    if held[0] is not logits or held[1] is not clean_logits:
        return metric(logits, reference, clean_logits)
    return held[2]


def _bytes(a: np.ndarray) -> tuple:
    return (a.dtype.str, a.shape, a.tobytes())


def _relative_to_file(path: str | None, file: str | None) -> str | None:
    """``path`` relative to the directory of ``file`` (POSIX separators), for portable JSON."""
    if path is None or file is None:
        return path
    start = Path(file).resolve().parent
    return Path(os.path.relpath(Path(path).resolve(), start)).as_posix()


def _generated_examples(tree: SampledTree) -> dict[str, dict[str, Any]]:
    """Every generated row a draw uses: its tokens, named positions and fields, by row id.

    Generated examples are not in the dataset its spec makes, so a result keeps them to be
    re-scored from its JSON alone.
    """
    ds = tree.dataset
    rows = tree.generated_rows()
    if not rows:
        return {}
    index = np.asarray(rows)
    tokens = ds.tokens[torch.as_tensor(index)].tolist()  # one conversion per array, not per row
    positions = {name: pos[index].tolist() for name, pos in sorted(ds.positions.items())}
    fields = {
        name: v[index].tolist() if v.dtype != object else [np.asarray(v[r]).tolist() for r in rows]
        for name, v in sorted(ds.fields.items())
    }
    n = len(rows)  # per row: one value per name (zip of no names: n empty rows)
    pos_rows = list(zip(*positions.values(), strict=True)) if positions else [()] * n
    field_rows = list(zip(*fields.values(), strict=True)) if fields else [()] * n
    return {
        str(row): {
            "tokens": t,
            "positions": dict(zip(positions, p, strict=True)),
            "fields": dict(zip(fields, f, strict=True)),
        }
        for row, t, p, f in zip(rows, tokens, pos_rows, field_rows, strict=True)
    }


class _Final(Exception):
    """Raised at the final residual stream: the clean pass unembeds only at the positions."""


@torch.inference_mode()
def _clean(
    model: ScrubModel, dataset: Dataset, rows: np.ndarray, positions: np.ndarray, chunk: int
) -> Tensor:
    """The clean model's logits on ``rows`` at ``positions``: ``(batch, K, vocab)``, in
    passes of at most ``chunk`` rows.

    As the engine computes its root's logits: the final residual stream read at
    ``ln_final.hook_in`` (which ends the pass), unembedded only at ``positions``, the softmax
    without the fully-masked-row guards (unpadded causal rows have none). The whole last block
    runs here; where the engine computes it at the metric's positions only
    (:mod:`scrub.engine._last`) the two round differently, which :func:`_same_logits` allows.
    """
    got: list[Tensor] = []

    def final(t: Tensor, hook=None) -> Tensor:
        got.append(t)
        raise _Final

    resids = []
    bridge = model.bridge
    with bridge.hooks(fwd_hooks=[("ln_final.hook_in", final)]), unmasked_rows_softmax(bridge):
        step = balanced(len(rows), chunk)  # pieces of about one size
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            got.clear()
            with contextlib.suppress(_Final):
                model.run(dataset.tokens[torch.as_tensor(rows[part])])
            if not got:
                raise AssertionError("the clean pass did not reach ln_final")
            resids.append(_gather(got[0], positions[part]))
    return torch.cat([model.unembed(resid) for resid in resids])  # outside the hook


def _same_logits(a: Tensor, b: Tensor) -> str | None:
    """How ``a`` equals ``b``: ``"exactly"``, ``"to float rounding (...)"``, or ``None``.

    Rounding: the engine computes some blocks in another order than a plain pass (the last
    block at the metric's positions only, :mod:`scrub.engine._last`), so a hypothesis that
    changes nothing may differ from the clean pass in the last bits; it is still reported.
    """
    if a.shape != b.shape:
        return None
    if torch.equal(a, b):
        return "exactly"
    diff = (a.float() - b.float()).abs().max().item()
    scale = max(b.float().abs().max().item(), 1.0)
    if diff <= 1e-5 * scale:
        return f"to float rounding (max |difference| of the logits {diff:.1e})"
    return None


def _gather(logits: Tensor, positions: np.ndarray) -> Tensor:
    batch = torch.arange(logits.shape[0], device=logits.device)[:, None]
    return logits[batch, torch.as_tensor(positions, device=logits.device)]


def _engine(
    engine: str,
    cache: ActivationCache,
    max_batch_rows: int,
    ablation: Ablation | None,
    max_memory: int | None = None,
) -> Evaluate:
    """The evaluator named ``engine``, ablating unmapped inputs as ``ablation`` says."""
    if engine == "fast":
        return FastEngine(
            cache=cache, max_batch_rows=max_batch_rows, ablation=ablation, max_memory=max_memory
        )
    return _gathering(functools.partial(evaluate_reference, ablation=ablation))


def _gathering(evaluate: Callable[..., Tensor]) -> Evaluate:
    """An engine that returns full logits, asked for some positions only."""

    def gathered(model, tree, *, positions, on_pass) -> Tensor:
        return _gather(evaluate(model, tree, on_pass=on_pass), positions)

    return gathered


@functools.cache
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("scrub", "torch", "transformer-lens", "transformers", "numpy", "scipy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
