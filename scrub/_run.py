"""``scrub.run``: hypothesis → bound → sampled tree → evaluated → scored.

The clean model runs on the reference batch; the baseline is the same engine on the root alone
(everything on ``O_root``), so an empty hypothesis scores exactly 0; the scrubbed model is the
engine on the whole tree. All three share the reference batch and the root's other inputs.

Logits are only needed where the metric reads them, so the engines are asked for those
positions only. With a shared :class:`~scrub.engine.ActivationCache` (and a shared dataset),
competing hypotheses reuse the clean and baseline outputs and every cached leaf activation.
"""

from __future__ import annotations

import functools
import platform
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from scrub._bind import bind, make_dataset_for
from scrub._errors import ScrubWarning
from scrub._hypothesis import Hypothesis, load_hypothesis
from scrub._metrics import per_example_metric
from scrub._model import ScrubModel, load_model
from scrub._positions import resolve_positions
from scrub._result import ScrubResult, bootstrap_ci, recovered_of
from scrub._tree import SampledTree, TreeNode, sample_tree, stream
from scrub.data import Dataset
from scrub.engine import ActivationCache, FastEngine, evaluate_reference

__all__ = ["ENGINES", "run"]

ENGINES = ("fast", "reference")
"""The evaluators ``run`` accepts by name (``fast``: :class:`FastEngine`, the default)."""

Evaluate = Callable[..., Tensor]

BASELINE_KIND = "resample_all"


def run(
    hypothesis: Hypothesis | str | Path,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    engine: str = "fast",
    cache: ActivationCache | None = None,
    max_batch_rows: int = 4096,
    confidence: float = 0.95,
    progress: bool = False,
) -> ScrubResult:
    """Scrub a hypothesis and score it.

    Args:
        hypothesis: a :class:`Hypothesis` or the path of a hypothesis file.
        model: a loaded model or a model source (default: the file's ``model``).
        dataset: a dataset to use instead of making the file's (it may grow).
        n: number of reference examples (default: the file's ``defaults.n``).
        seed: the seed every draw derives from (default: the file's ``defaults.seed``).
        engine: the evaluator, ``fast`` (default) or ``reference``; they agree to 1e-4.
        cache: activations to reuse across runs on the same model and dataset (fast engine);
            pass the same ``dataset`` too.
        max_batch_rows: most rows in one forward pass (fast engine); results do not depend
            on it beyond float rounding.
        confidence: confidence level of the bootstrap intervals.
        progress: show a progress bar on stderr.

    Returns:
        The :class:`ScrubResult`.

    Raises:
        HypothesisError: the hypothesis is invalid for this model or dataset.
    """
    hyp = hypothesis if isinstance(hypothesis, Hypothesis) else load_hypothesis(hypothesis)
    spec = hyp.spec
    n = spec.defaults.n if n is None else n
    seed = spec.defaults.seed if seed is None else seed
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if cache is None:
        cache = ActivationCache(max_batch_rows=max_batch_rows)
    if not isinstance(model, ScrubModel):
        model = load_model(model or spec.model)
    if dataset is None:
        dataset = make_dataset_for(hyp, seed=seed)
    bound = bind(hyp, model, dataset)
    tree = sample_tree(bound, n=n, seed=seed)
    messages = list(tree.warnings)

    evaluate: Evaluate = (
        FastEngine(cache=cache, max_batch_rows=max_batch_rows)
        if engine == "fast"
        else _gathering(evaluate_reference)
    )
    x = tree.reference
    o_root = tree.rows(tree.root)
    clean_pos = resolve_positions(spec.metric.positions, dataset, x)
    root_pos = resolve_positions(spec.metric.positions, dataset, o_root)
    bar = tqdm(desc=f"scrub {hyp.name}", unit="pass", disable=not progress, leave=False)
    try:
        clean_logits = cache.memo(
            model,
            dataset,
            ("clean", x.tobytes(), clean_pos.tobytes()),
            lambda: _clean(model, dataset, x, clean_pos, max_batch_rows),
        )
        bar.update()
        baseline_logits = cache.memo(
            model,
            dataset,
            ("baseline", engine, o_root.tobytes(), root_pos.tobytes()),
            lambda: evaluate(model, _root_only(tree), positions=root_pos, on_pass=bar.update),
        )
        scrubbed_logits = evaluate(model, tree, positions=root_pos, on_pass=bar.update)
    finally:
        bar.close()

    def metric(logits: Tensor) -> np.ndarray:
        return per_example_metric(
            spec.metric, logits, reference=x, dataset=dataset, clean_logits=clean_logits
        )

    clean = metric(clean_logits)
    baseline = metric(baseline_logits)
    scrubbed = metric(scrubbed_logits)

    if torch.equal(scrubbed_logits, clean_logits):
        messages.append(
            "the scrubbed output equals the clean model's exactly: this hypothesis resamples "
            "nothing that reaches the output"
        )
    elif torch.equal(scrubbed_logits, baseline_logits):
        messages.append(
            "the scrubbed output equals the baseline exactly: this hypothesis keeps nothing "
            "that reaches the output"
        )
    if np.isclose(clean.mean(), baseline.mean(), rtol=0, atol=1e-12):
        messages.append(
            "clean and baseline metrics agree, so the fraction recovered is undefined (NaN)"
        )

    rng = stream(seed, "bootstrap")

    def ci(values: np.ndarray) -> tuple[float, float]:
        return bootstrap_ci((values,), np.mean, rng=rng, confidence=confidence)

    result = ScrubResult(
        hypothesis=hyp.name,
        hypothesis_file=hyp.file,
        hypothesis_sha256=hyp.sha256,
        model=model.source,
        model_sha256=model.checkpoint_sha256(),
        dataset={
            "generator": spec.dataset.generator,
            "params": dict(dataset.params),
            "spec_file": hyp.dataset_file,
        },
        metric=spec.metric.model_dump(),
        n=n,
        seed=seed,
        engine=evaluate.describe(model) if isinstance(evaluate, FastEngine) else engine,
        baseline_kind=BASELINE_KIND,
        clean=float(clean.mean()),
        baseline=float(baseline.mean()),
        scrubbed=float(scrubbed.mean()),
        clean_ci=ci(clean),
        baseline_ci=ci(baseline),
        scrubbed_ci=ci(scrubbed),
        recovered=float(recovered_of(clean, baseline, scrubbed)),
        recovered_ci=bootstrap_ci(
            (clean, baseline, scrubbed), recovered_of, rng=rng, confidence=confidence
        ),
        confidence=confidence,
        per_example=scrubbed.tolist(),
        per_example_clean=clean.tolist(),
        per_example_baseline=baseline.tolist(),
        reference=x.tolist(),
        draws=tree.draws(),
        warnings=messages,
        versions=dict(_versions()),
    )
    for message in messages:
        warnings.warn(message, ScrubWarning, stacklevel=2)
    return result


def _clean(
    model: ScrubModel, dataset: Dataset, rows: np.ndarray, positions: np.ndarray, chunk: int
) -> Tensor:
    """The clean model's logits on ``rows`` at ``positions``: ``(batch, K, vocab)``."""
    pieces = []
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        logits = model.run(dataset.tokens[torch.as_tensor(rows[part])])[0]
        pieces.append(_gather(logits, positions[part]))
    return torch.cat(pieces)


def _gather(logits: Tensor, positions: np.ndarray) -> Tensor:
    batch = torch.arange(logits.shape[0], device=logits.device)[:, None]
    return logits[batch, torch.as_tensor(positions, device=logits.device)]


def _gathering(evaluate: Callable[..., Tensor]) -> Evaluate:
    """An engine that returns full logits, asked for some positions only."""

    def gathered(model, tree, *, positions, on_pass) -> Tensor:
        return _gather(evaluate(model, tree, on_pass=on_pass), positions)

    return gathered


def _root_only(tree: SampledTree) -> SampledTree:
    """The baseline tree: the root alone, on the same reference batch and other inputs."""
    root = tree.root
    alone = TreeNode(name=root.name, path=root.path, interp=root.interp, edge=None)
    return SampledTree(
        root=alone,
        data={root.name: tree.data[root.name]},
        other={root.name: tree.other[root.name]},
        dataset=tree.dataset,
        warnings=[],
    )


@functools.cache
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("scrub", "torch", "transformer-lens", "transformers", "numpy", "scipy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
