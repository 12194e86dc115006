"""``scrub.compare``: rival hypotheses scored on one experiment, with paired statistics.

Intuition: "which explanation does the data support, by how much, and how sure are we" is a
question about *differences* of scores, and a difference is only meaningful when both scores
come from one experiment: the same model, dataset, reference batch, metric, baseline and
ablation. So every hypothesis is scored with :func:`scrub.run` on one dataset object and one
:class:`~scrub.ActivationCache`; nodes they share get the same draws (:mod:`scrub._tree`), so the
comparison is **paired** example by example, and the cache computes the clean model, the
baseline, every leaf and every shared subtree once.

Reported (statistics in :mod:`scrub.experiments._stats`):

- per hypothesis: recovered with a bootstrap CI over reference examples; with ``seeds=K``, the
  K draws' values, their spread and an interval over both sources; the test that recovered < 1
  and TOST equivalence within ``margin``; with ``random_controls=N``, its percentile among N
  random hypotheses of the same shape (:mod:`scrub.experiments.controls`);
- per pair: the paired difference in recovered, its bootstrap CI (the ratio of means resampled
  as a ratio), a sign-flip p-value, Holm-adjusted over all pairs, and a verdict.

Pitfalls: a hypothesis listed twice is scored once (so its difference with itself is exactly 0
and p = 1, not float noise from a different batch layout); with ``seeds=1`` every number of a
hypothesis is the plain :func:`scrub.run`'s.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrub._bind import load_model_for, make_dataset_for
from scrub._errors import HypothesisError, ScrubWarning
from scrub._hypothesis import Hypothesis, load_hypothesis
from scrub._model import ScrubModel
from scrub._precision import check_precision
from scrub._result import ScrubResult, _clean_nan, bootstrap_ci, recovered_of
from scrub._run import _count, run
from scrub._tree import stream
from scrub.data import Dataset
from scrub.engine import ActivationCache
from scrub.experiments import _stats
from scrub.experiments._experiment import impose, same_experiment

__all__ = ["Comparison", "HypothesisScore", "PairScore", "Scorer", "compare"]


@dataclass(frozen=True)
class HypothesisScore:
    """One hypothesis's scores in a comparison.

    Attributes:
        name, file, sha256: which hypothesis.
        recovered: fraction recovered (pooled over draws); ``ci`` over reference examples.
        scrubbed: mean scrubbed metric.
        per_draw: recovered for each draw of the tree; ``draws_half_width`` the draws' share
            of the interval and ``total_ci`` the interval over both sources (``None`` with
            one draw).
        complete: the test that recovered < 1 and TOST within the margin.
        controls: recovered of random same-shape hypotheses and this one's percentile.
        methodology: the choices the score depends on.
        per_example: scrubbed metric per reference example (averaged over draws).
        warnings: what its runs warned about.
    """

    name: str
    file: str | None
    sha256: str
    recovered: float
    ci: tuple[float, float]
    scrubbed: float
    per_draw: list[float]
    draws_half_width: float | None
    total_ci: tuple[float, float] | None
    complete: dict[str, Any]
    controls: dict[str, Any] | None
    methodology: dict[str, Any]
    per_example: list[float]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PairScore:
    """A paired comparison ``a`` vs ``b``: ``difference = recovered(a) − recovered(b)``."""

    a: str
    b: str
    difference: float
    ci: tuple[float, float]
    per_draw: list[float]
    total_ci: tuple[float, float] | None
    p: float
    p_holm: float
    verdict: str


@dataclass(frozen=True)
class Comparison:
    """Rival hypotheses scored on one experiment (see the module docstring).

    Attributes:
        experiment: model, dataset, metric, baseline, ablation, n, seed, draw seeds, engine,
            device, dtype, confidence, alpha, margin and the statistical methods.
        clean, baseline: mean metrics shared by every hypothesis.
        reference: the reference rows.
        hypotheses: per-hypothesis scores, in the order given.
        pairs: every pair (i < j), in order.
    """

    experiment: dict[str, Any]
    clean: float
    baseline: float
    reference: list[int]
    hypotheses: list[HypothesisScore]
    pairs: list[PairScore]

    def __repr__(self) -> str:
        names = ", ".join(h.name for h in self.hypotheses)
        return f"Comparison([{names}], n={self.experiment['n']}, draws={len(self.experiment['draw_seeds'])})"

    def __getitem__(self, name: str) -> HypothesisScore:
        for score in self.hypotheses:
            if score.name == name:
                return score
        raise KeyError(name)

    def pair(self, a: str, b: str) -> PairScore:
        """The pair ``a`` vs ``b`` (either order; the sign follows the order asked)."""
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
            if (p.b, p.a) == (a, b):
                flip = (-p.ci[1], -p.ci[0])
                total = None if p.total_ci is None else (-p.total_ci[1], -p.total_ci[0])
                return PairScore(
                    a, b, -p.difference, flip, [-x for x in p.per_draw], total, p.p, p.p_holm,
                    p.verdict,
                )  # fmt: skip
        raise KeyError((a, b))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes ``None``), with ``kind: comparison`` for ``scrub report``."""
        return _clean_nan({"kind": "comparison", **asdict(self)})

    def to_json(self, *, indent: int | None = 2) -> str:
        """Strict JSON (no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_frame(self) -> Any:
        """A pandas long table: one row per hypothesis or pair and statistic."""
        import pandas as pd

        rows: list[dict[str, Any]] = []

        def add(kind: str, name: str, stat: str, value: Any) -> None:
            rows.append({"kind": kind, "name": name, "statistic": stat, "value": value})

        for h in self.hypotheses:
            add("hypothesis", h.name, "recovered", h.recovered)
            add("hypothesis", h.name, "ci_low", h.ci[0])
            add("hypothesis", h.name, "ci_high", h.ci[1])
            if h.total_ci is not None:
                add("hypothesis", h.name, "total_ci_low", h.total_ci[0])
                add("hypothesis", h.name, "total_ci_high", h.total_ci[1])
                add("hypothesis", h.name, "draws_half_width", h.draws_half_width)
            for key in ("p_incomplete", "p_equivalent", "margin"):
                add("hypothesis", h.name, key, h.complete[key])
            if h.controls is not None:
                add("hypothesis", h.name, "control_percentile", h.controls["percentile"])
        for p in self.pairs:
            name = f"{p.a} vs {p.b}"
            for stat, value in (
                ("difference", p.difference),
                ("ci_low", p.ci[0]),
                ("ci_high", p.ci[1]),
                ("p", p.p),
                ("p_holm", p.p_holm),
            ):
                add("pair", name, stat, value)
        return pd.DataFrame(rows, columns=["kind", "name", "statistic", "value"])

    def table(self) -> str:
        """The comparison as a text table (what ``scrub compare`` prints)."""
        from scrub.experiments._format import format_comparison

        return format_comparison(self)


# --------------------------------------------------------------------------------------------
class Scorer:
    """Scores hypotheses on one experiment: one model, dataset, cache, reference batch.

    Identical hypotheses (the same spec but for names and descriptions) are scored once.
    """

    def __init__(
        self,
        model: ScrubModel,
        dataset: Dataset,
        cache: ActivationCache,
        *,
        n: int,
        seed: int,
        draw_seeds: list[int],
        engine: str,
        max_batch_rows: int,
        confidence: float,
        max_memory: int | None = None,
    ) -> None:
        self.model, self.dataset, self.cache = model, dataset, cache
        self.n, self.seed, self.draw_seeds = n, seed, draw_seeds
        self.engine, self.max_batch_rows, self.confidence = engine, max_batch_rows, confidence
        self.max_memory = max_memory
        self._done: dict[str, list[ScrubResult]] = {}
        self.shared: list[tuple[np.ndarray, np.ndarray]] | None = None  # (clean, baseline)/draw

    @classmethod
    def on(
        cls,
        hyp: Hypothesis,
        *,
        model: ScrubModel | str | None,
        dataset: Dataset | None,
        cache: ActivationCache | None,
        n: int | None,
        seed: int | None,
        draws: int,
        engine: str,
        max_batch_rows: int,
        confidence: float,
        max_memory: int | None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Scorer:
        """A scorer on ``hyp``'s experiment: what is not given comes from ``hyp``'s file.

        ``n`` and ``seed`` default to the file's ``defaults``, the model and dataset are the
        file's (a relative ``model:`` is relative to the file), and ``draws`` draws of the tree
        use seeds ``seed``, ``seed + 1``, ... The callers have checked ``max_memory``.
        ``device`` and ``dtype``: where and in which type to load the model (a loaded one must
        match them).
        """
        n = hyp.spec.defaults.n if n is None else n
        seed = hyp.spec.defaults.seed if seed is None else seed
        if not isinstance(model, ScrubModel):
            model = load_model_for(hyp, model, device=device or "cpu", dtype=dtype or "float32")
        else:
            check_precision(model, device=device, dtype=dtype)
        if dataset is None:
            dataset = make_dataset_for(hyp, seed=seed)
        if cache is None:
            cache = ActivationCache(max_batch_rows=max_batch_rows, max_memory=max_memory)
        return cls(
            model,
            dataset,
            cache,
            n=n,
            seed=seed,
            draw_seeds=[seed + k for k in range(draws)],
            engine=engine,
            max_batch_rows=max_batch_rows,
            confidence=confidence,
            max_memory=max_memory,
        )

    def results(self, hyp: Hypothesis) -> list[ScrubResult]:
        """One :func:`scrub.run` per draw seed, on the shared reference batch."""
        key = _content_key(hyp)
        if key not in self._done:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ScrubWarning)  # kept in result.warnings
                self._done[key] = [
                    run(
                        hyp,
                        model=self.model,
                        dataset=self.dataset,
                        cache=self.cache,
                        n=self.n,
                        seed=s,
                        reference_seed=self.seed,
                        engine=self.engine,
                        max_batch_rows=self.max_batch_rows,
                        confidence=self.confidence,
                        max_memory=self.max_memory,
                    )
                    for s in self.draw_seeds
                ]
            self._check_shared(hyp, self._done[key])
        return self._done[key]

    def _check_shared(self, hyp: Hypothesis, results: list[ScrubResult]) -> None:
        """The one place that relies on the baseline: every hypothesis must share it."""
        mine = [
            (np.asarray(r.per_example_clean), np.asarray(r.per_example_baseline)) for r in results
        ]
        if self.shared is None:
            self.shared = mine
            return
        for (c0, b0), (c, b) in zip(self.shared, mine, strict=True):
            if not np.array_equal(c0, c):
                raise AssertionError("clean metrics differ on one reference batch")
            if not np.array_equal(b0, b):
                raise HypothesisError(
                    f"hypothesis {hyp.name!r} gets a different baseline from the others: its "
                    "root draws its other inputs differently, so the scores would not share a "
                    "denominator",
                    file=hyp.file,
                    key=("nodes", hyp.root, "other"),
                    hint="give every hypothesis's root the same 'other:' sampler",
                )

    def arrays(self, hyp: Hypothesis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(clean, baseline, scrubbed)`` per draw and example: ``(K, n)`` each."""
        rs = self.results(hyp)
        return tuple(  # type: ignore[return-value]
            np.stack([np.asarray(getattr(r, k)) for r in rs])
            for k in ("per_example_clean", "per_example_baseline", "per_example")
        )


def number(value: float | None) -> float:
    """``value``, with ``None`` (undefined) as NaN."""
    return math.nan if value is None else float(value)


def undefined_reason(results: list[ScrubResult]) -> str | None:
    """Why recovered is undefined for these runs (clean ≈ baseline), if it is."""
    for r in results:
        if r.recovered is None or not math.isfinite(r.recovered):
            return getattr(r, "recovered_undefined_reason", None) or "clean and baseline agree"
    return None


def _content_key(hyp: Hypothesis) -> str:
    spec = hyp.spec.model_dump(mode="json", exclude_none=True)
    spec.pop("name", None)
    spec.pop("description", None)
    for node in spec["nodes"].values():
        node.pop("description", None)
    return json.dumps(spec, sort_keys=True)


def score_hypothesis(
    scorer: Scorer,
    hyp: Hypothesis,
    *,
    name: str,
    alpha: float,
    margin: float,
    controls: dict[str, Any] | None = None,
) -> HypothesisScore:
    """Per-hypothesis statistics (pooled over draws; a plain run's with one draw)."""
    results = scorer.results(hyp)
    C, B, S = scorer.arrays(hyp)
    c, b, s = C.mean(axis=0), B.mean(axis=0), S.mean(axis=0)
    undefined = undefined_reason(results)
    if undefined is not None:
        recovered, ci = math.nan, (math.nan, math.nan)
    elif len(results) == 1:
        recovered, ci = number(results[0].recovered), results[0].recovered_ci
    else:
        recovered = float(recovered_of(c, b, s))
        ci = bootstrap_ci(
            (c, b, s),
            recovered_of,
            rng=stream(scorer.seed, "compare", "bootstrap", name),
            confidence=scorer.confidence,
        )
    per_draw = [number(r.recovered) for r in results]
    both = _stats.combined_interval(recovered, ci, per_draw, confidence=scorer.confidence)
    complete = _stats.completeness(
        c, b, s, margin=margin, alpha=alpha, rng=stream(scorer.seed, "compare", "complete", name)
    )
    if undefined is not None:
        complete = {**{k: math.nan for k in complete}, "margin": margin, "reason": undefined}
    messages = list(dict.fromkeys(w for r in results for w in r.warnings))
    return HypothesisScore(
        name=name,
        file=hyp.file,
        sha256=hyp.sha256,
        recovered=float(recovered),
        ci=tuple(ci),  # type: ignore[arg-type]
        scrubbed=float(s.mean()),
        per_draw=per_draw,
        draws_half_width=None if both is None else both[1],
        total_ci=None if both is None else both[0],
        complete=complete,
        controls=controls,
        methodology=results[0].methodology,
        per_example=s.tolist(),
        warnings=messages,
    )


def score_pair(
    scorer: Scorer, a: Hypothesis, b: Hypothesis, *, names: tuple[str, str]
) -> dict[str, Any]:
    """The paired difference of two hypotheses (before Holm)."""
    C, B, SA = scorer.arrays(a)
    _, _, SB = scorer.arrays(b)
    c, base, sa, sb = C.mean(axis=0), B.mean(axis=0), SA.mean(axis=0), SB.mean(axis=0)
    difference = float(_stats.recovered_difference(c, base, sa, sb))
    ci = _stats.difference_ci(
        c,
        base,
        sa,
        sb,
        rng=stream(scorer.seed, "compare", "difference", *names),
        confidence=scorer.confidence,
    )
    per_draw = [float(_stats.recovered_difference(C[k], B[k], SA[k], SB[k])) for k in range(len(C))]
    both = _stats.combined_interval(difference, ci, per_draw, confidence=scorer.confidence)
    p = _stats.sign_flip_p(sa - sb, rng=stream(scorer.seed, "compare", "sign-flip", *names))
    if undefined_reason(scorer.results(a) + scorer.results(b)) is not None:
        difference, ci, p = math.nan, (math.nan, math.nan), math.nan
    if not math.isfinite(difference):
        p = math.nan
    return {
        "a": names[0],
        "b": names[1],
        "difference": difference,
        "ci": ci,
        "per_draw": per_draw,
        "total_ci": None if both is None else both[0],
        "p": p,
    }


def _verdict(pair: dict[str, Any], alpha: float) -> str:
    if not math.isfinite(pair["p_holm"]):
        return "undefined: recovered is undefined"
    if pair["p_holm"] < alpha:
        first, second = (pair["a"], pair["b"]) if pair["difference"] > 0 else (pair["b"], pair["a"])
        return f"{first} > {second}"
    return f"not distinguishable at α = {alpha:g}"


def _unique_names(hyps: list[Hypothesis]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for hyp in hyps:
        seen[hyp.name] = seen.get(hyp.name, 0) + 1
        names.append(hyp.name if seen[hyp.name] == 1 else f"{hyp.name}#{seen[hyp.name]}")
    return names


def compare(
    hypotheses: list[Hypothesis | str | Path],
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    seeds: int = 1,
    experiment: str | Path | None = None,
    random_controls: int = 0,
    engine: str = "fast",
    cache: ActivationCache | None = None,
    max_batch_rows: int = 4096,
    confidence: float = 0.95,
    alpha: float = 0.05,
    margin: float = 0.05,
    max_memory: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Comparison:
    """Score rival hypotheses on one experiment and compare them pairwise.

    Args:
        hypotheses: hypotheses or paths of hypothesis files (at least one).
        model: a loaded model or a model source (default: the files' shared ``model``).
        dataset: a dataset to use instead of making the files' shared one.
        n: reference examples (default: the files' shared ``defaults.n``).
        seed: the seed of the reference batch and of the first draw (default: ``defaults.seed``).
        seeds: draws of the tree on the reference batch (seeds ``seed``, ``seed + 1``, ...).
        experiment: a YAML file whose experiment keys (model, dataset, metric, baseline,
            ablation, defaults) are imposed on every hypothesis.
        random_controls: random hypotheses of each one's shape to rank it against.
        engine: ``fast`` or ``reference``.
        cache: an activation cache to share further (on this model and dataset).
        max_batch_rows: most rows in one forward pass.
        confidence: confidence level of the intervals.
        alpha: level of the tests (verdicts, completeness).
        margin: the equivalence margin ε of the TOST (recovered within 1 ± ε).
        max_memory: activation budget of one forward pass in bytes (fast engine), as in
            :func:`scrub.run` (``None``: its default). Results do not depend on it.
        device, dtype: where and in which type to load ``model`` (default ``cpu``,
            ``float32``), as in :func:`scrub.run`; a loaded ``model`` must match them.

    Raises:
        HypothesisError: a hypothesis is invalid, or two differ in their experiment.
        ValueError: no hypothesis, or ``seeds`` / ``random_controls`` / ``max_memory`` out of
            range.
    """
    if not hypotheses:
        raise ValueError("compare needs at least one hypothesis")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    if random_controls < 0:
        raise ValueError(f"random_controls must be at least 0, not {random_controls}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), not {margin}")
    if max_memory is not None:
        max_memory = _count("max_memory", max_memory, minimum=1)
    hyps = [h if isinstance(h, Hypothesis) else load_hypothesis(h) for h in hypotheses]
    if experiment is not None:
        hyps = impose(hyps, experiment)
    exp = same_experiment(hyps, n=n, seed=seed)
    scorer = Scorer.on(
        hyps[0],
        model=model,
        dataset=dataset,
        cache=cache,
        n=n,
        seed=seed,
        draws=seeds,
        engine=engine,
        max_batch_rows=max_batch_rows,
        confidence=confidence,
        max_memory=max_memory,
        device=device,
        dtype=dtype,
    )
    n, seed = scorer.n, scorer.seed
    names = _unique_names(hyps)
    scores = []
    for hyp, name in zip(hyps, names, strict=True):
        controls = None
        if random_controls:
            from scrub.experiments.controls import control_scores

            controls = control_scores(scorer, hyp, count=random_controls, seed=seed)
        scores.append(
            score_hypothesis(scorer, hyp, name=name, alpha=alpha, margin=margin, controls=controls)
        )
    pairs = [
        score_pair(scorer, hyps[i], hyps[j], names=(names[i], names[j]))
        for i, j in itertools.combinations(range(len(hyps)), 2)
    ]
    for pair, adjusted in zip(pairs, _stats.holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
        pair["verdict"] = _verdict(pair, alpha)
    for score in scores:
        for message in score.warnings:
            warnings.warn(f"{score.name}: {message}", ScrubWarning, stacklevel=2)
    assert scorer.shared is not None
    clean, base = (np.stack(a).mean(axis=0) for a in zip(*scorer.shared, strict=True))
    reference = scorer.results(hyps[0])[0].reference
    exp.update(
        n=n,
        seed=seed,
        draw_seeds=scorer.draw_seeds,
        engine=engine,
        **scorer.model.precision,
        confidence=confidence,
        alpha=alpha,
        margin=margin,
        methods={
            "recovered_ci": "bootstrap over reference examples (scipy.stats.bootstrap, BCa), "
            "recovered recomputed as a ratio of means on each resample",
            "difference_p": "paired sign-flip test over reference examples, two-sided",
            "multiple_comparisons": "Holm over all pairs",
            "incomplete_p": "one-sided paired sign-flip test, scrubbed vs clean",
            "equivalence": "TOST: two one-sided t-tests on Fieller-linearised per-example values",
            "total_ci": "examples' interval widened in quadrature by t(K-1)·sd/sqrt(K) of the "
            "K draws",
        },
    )
    return Comparison(
        experiment=exp,
        clean=float(clean.mean()),
        baseline=float(base.mean()),
        reference=list(reference),
        hypotheses=scores,
        pairs=[PairScore(**p) for p in pairs],
    )
