"""``scrub.run``: hypothesis → bound → sampled tree → evaluated → scored.

The clean model runs on the reference batch; the baseline is the same engine on the root alone
(everything on ``O_root``), so an empty hypothesis scores exactly 0; the scrubbed model is the
engine on the whole tree. All three share the reference batch and the root's other inputs.
"""

from __future__ import annotations

import platform
import warnings
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
from scrub._result import ScrubResult, bootstrap_ci, recovered_of
from scrub._tree import SampledTree, TreeNode, sample_tree, stream
from scrub.data import Dataset
from scrub.engine import evaluate_reference

__all__ = ["ENGINES", "run"]

ENGINES = {"reference": evaluate_reference}
"""Evaluators by name: ``engine(model, tree, *, on_pass) -> logits``."""

BASELINE_KIND = "resample_all"


def run(
    hypothesis: Hypothesis | str | Path,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    engine: str = "reference",
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
        engine: the evaluator (``reference``).
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
    if not isinstance(model, ScrubModel):
        model = load_model(model or spec.model)
    if dataset is None:
        dataset = make_dataset_for(hyp, seed=seed)
    bound = bind(hyp, model, dataset)
    tree = sample_tree(bound, n=n, seed=seed)
    messages = list(tree.warnings)

    evaluate = ENGINES[engine]
    bar = tqdm(desc=f"scrub {hyp.name}", unit="pass", disable=not progress, leave=False)
    try:
        x = tree.reference
        clean_logits = model.run(dataset.tokens[torch.as_tensor(x)])[0]
        bar.update()
        baseline_logits = evaluate(model, _root_only(tree), on_pass=bar.update)
        scrubbed_logits = evaluate(model, tree, on_pass=bar.update)
    finally:
        bar.close()

    def metric(logits: Tensor, rows: np.ndarray) -> np.ndarray:
        return per_example_metric(
            spec.metric, logits, rows=rows, reference=x, dataset=dataset, clean_logits=clean_logits
        )

    o_root = tree.rows(tree.root)
    clean = metric(clean_logits, x)
    baseline = metric(baseline_logits, o_root)
    scrubbed = metric(scrubbed_logits, o_root)

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
        engine=engine,
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
        versions=_versions(),
    )
    for message in messages:
        warnings.warn(message, ScrubWarning, stacklevel=2)
    return result


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


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("scrub", "torch", "transformer-lens", "transformers", "numpy", "scipy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
