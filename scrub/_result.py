"""Scrub results: the three metric means, the fraction recovered, CIs, draws and provenance.

**Fraction recovered** = (scrubbed − baseline) / (clean − baseline), where each term is the mean
of the per-example metric over the same reference examples. It is 1 when the hypothesis keeps
all of the metric, 0 when it keeps none of it (the baseline names what "none" is: by default the
fully resampled model, everything on the root's other inputs).

The fraction is **undefined** when clean and baseline cannot be told apart (their paired CI
contains 0) or a mean is not finite: ``recovered`` is then ``None`` (JSON ``null``) and
``recovered_undefined_reason`` says why; it is never a number then.

JSON is strict: NaN and ±infinity are written as ``null`` (the warnings say which metric was
not finite), never as the non-standard ``NaN`` / ``Infinity`` tokens.

Confidence intervals come from ``scipy.stats.bootstrap`` over reference examples, resampling the
three per-example arrays **together** (``paired=True``), BCa where it is defined and the
percentile method where BCa degenerates (e.g. every example recovered exactly): computed by
:mod:`scrub._bootstrap`, the same intervals as ``scipy.stats.bootstrap`` bit for bit.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from scrub._bootstrap import MeanResamples, interval

__all__ = [
    "N_RESAMPLES",
    "ScrubResult",
    "bootstrap_ci",
    "mean_ci",
    "methodology",
    "recovered_from_means",
    "recovered_of",
]


N_RESAMPLES = 2000
"""Bootstrap resamples of every interval a result reports."""


def recovered_of(clean, baseline, scrubbed, axis: int = -1):
    """Fraction recovered from per-example arrays (vectorised over leading axes)."""
    return recovered_from_means(*(np.mean(a, axis=axis) for a in (clean, baseline, scrubbed)))


def recovered_from_means(c, b, s):
    """Fraction recovered from the three means (what :func:`recovered_of` computes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (s - b) / (c - b) + 0.0  # + 0.0 turns -0.0 (nothing recovered) into 0.0


def bootstrap_ci(
    data: tuple[np.ndarray, ...],
    statistic,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float]:
    """A paired bootstrap CI of ``statistic(*data, axis=-1)``; ``(nan, nan)`` if undefined."""
    if len(data[0]) < 2:
        return (math.nan, math.nan)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            # scipy.stats.bootstrap's interval, bit for bit, with cheaper gathers
            # (scrub._bootstrap; one sample: paired=False draws the same resamples)
            low, high = interval(
                data,
                statistic,
                paired=len(data) > 1,
                confidence=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=rng,
            )
        if math.isfinite(low) and math.isfinite(high):
            return (low, high)
    value = float(statistic(*data, axis=-1))
    if math.isfinite(value) and all(np.all(d == d[0]) for d in data):
        return (value, value)  # constant data: the interval is the point
    return (math.nan, math.nan)


def mean_ci(
    resamples: MeanResamples, statistic, which: tuple[int, ...], *, confidence: float = 0.95
) -> tuple[float, float]:
    """:func:`bootstrap_ci`'s interval of ``statistic`` of the means of ``resamples``'
    samples ``which`` (:class:`scrub._bootstrap.MeanResamples`), the same numbers from the
    same draws: BCa, else percentile (a draw of its own), else the point of constant data."""
    data = [resamples.samples[k] for k in which]
    if len(data[0]) < 2:
        return (math.nan, math.nan)
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            low, high = resamples.interval(statistic, which, confidence=confidence, method=method)
        if math.isfinite(low) and math.isfinite(high):
            return (low, high)
    with np.errstate(all="ignore"):
        value = float(statistic(*(np.mean(d, axis=-1) for d in data)))
    if math.isfinite(value) and all(np.all(d == d[0]) for d in data):
        return (value, value)  # constant data: the interval is the point
    return (math.nan, math.nan)


@dataclass
class ScrubResult:
    """The outcome of one scrub.

    Attributes:
        hypothesis: the hypothesis's name; ``hypothesis_file`` / ``hypothesis_sha256`` where
            it came from.
        model, model_sha256: the model source and a hash of its weights file.
        dataset: generator and params.
        metric: the metric spec.
        n, seed, engine: how it was run (``"fast"``, ``"fast (output groups: why)"`` where the
            fast engine cannot use its kernels on the model, or ``"reference"``).
        baseline_kind: what ``baseline`` means (the experiment's baseline, e.g.
            ``resample_all``); ``baseline_rows`` the dataset rows it ran on, if any.
        clean, baseline, scrubbed: mean metric; ``*_ci`` their CIs.
        recovered, recovered_ci: fraction of the metric recovered, and its CI; ``None`` and
            ``(nan, nan)`` when undefined, with ``recovered_undefined_reason``.
        per_example, per_example_clean, per_example_baseline: per-example metric values.
        reference: the reference rows.
        draws: tree node → dataset rows of its data; ``node.other`` → rows of its other inputs.
        warnings: everything the run warned about.
        versions: package versions.
        self_draws: tree node → ``{"sampler": f, "other": f}``: for each ``cond`` / ``generate``
            draw, the fraction of rows whose example is the parent's own (not scrubbed).
        generated: generated row id (a string) → its ``tokens``, named ``positions`` and
            ``fields``: the examples a generator made, which the dataset spec alone does not
            reproduce.
        methodology: the choices the score depends on (:func:`methodology`).
        device, dtype: where and in which floating-point type the model ran (``cpu``,
            ``float32`` unless asked; metrics are computed in float64 in every dtype).
    """

    hypothesis: str
    hypothesis_file: str | None
    hypothesis_sha256: str
    model: str
    model_sha256: str | None
    dataset: dict[str, Any]
    metric: dict[str, Any]
    n: int
    seed: int
    engine: str
    baseline_kind: str
    clean: float
    baseline: float
    scrubbed: float
    clean_ci: tuple[float, float]
    baseline_ci: tuple[float, float]
    scrubbed_ci: tuple[float, float]
    recovered: float | None
    recovered_ci: tuple[float, float]
    confidence: float
    per_example: list[float]
    per_example_clean: list[float]
    per_example_baseline: list[float]
    reference: list[int]
    draws: dict[str, list[int]]
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    recovered_undefined_reason: str | None = None
    baseline_rows: list[int] | None = None
    self_draws: dict[str, dict[str, float]] = field(default_factory=dict)
    generated: dict[str, dict[str, Any]] = field(default_factory=dict)
    methodology: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"

    def __repr__(self) -> str:
        if self.recovered is None:
            recovered = "undefined"
        else:
            lo, hi = self.recovered_ci
            recovered = f"{self.recovered:.3f} [{lo:.3f}, {hi:.3f}]"
        return (
            f"ScrubResult({self.hypothesis!r}, {self.metric['kind']}: clean={self.clean:.4g}, "
            f"baseline={self.baseline:.4g}, scrubbed={self.scrubbed:.4g}, "
            f"recovered={recovered}, n={self.n}, seed={self.seed})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN and ±inf become ``None``, tuples become lists."""
        return _clean_nan(asdict(self))

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScrubResult:
        """The inverse of :meth:`to_dict` (non-finite values come back as NaN)."""
        restored: dict[str, Any] = {
            k: (math.nan if v is None and k in _FLOATS else v) for k, v in data.items()
        }
        for key in ("clean_ci", "baseline_ci", "scrubbed_ci", "recovered_ci"):
            restored[key] = tuple(math.nan if v is None else v for v in restored[key])
        return cls(**restored)


_FLOATS = {"clean", "baseline", "scrubbed"}


def methodology(hyp, ablation=None) -> dict[str, Any]:
    """The six choices of Miller et al. (2024) a score depends on, plus baseline and ablation.

    scrub fixes some by construction (granularity: whole components at the positions given;
    direction: the whole output, no subspace; circuit: the mapped paths are kept and every other
    input ablated); the rest come from the file.

    Args:
        hyp: the :class:`~scrub.Hypothesis`.
        ablation: its :class:`~scrub.engine._ablation.Ablation`, for the means' reference.
    """
    from scrub._positions import format_positions

    means = getattr(ablation, "means", None)
    reference = None
    if means is not None:
        reference = {
            "dataset": means.dataset,
            "params": dict(means.params),
            "classes": list(means.classes),
            "by": list(means.by),
            "size": int(means.counts.sum()),
            "positions_per_class": means.counts.tolist(),
        }
    return {
        "granularity": "components (attention heads, MLPs, embeddings) at the positions given",
        "components": {
            name: [str(mc) for mc in hyp.node(name).components]
            for name in hyp.graph
            if name != hyp.root
        },
        "ablation": hyp.spec.ablation.kind,
        "ablation_reference": reference,
        "token_positions": {
            f"{c}->{p}": format_positions(hyp.edge(c, p).positions) for c, p in hyp.graph.edges
        },
        "direction": "the whole component output (no subspace)",
        "circuit_vs_complement": "circuit: the mapped paths are kept, every other input ablated",
        "baseline": hyp.spec.baseline_kind,
    }


def _clean_nan(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_nan(v) for v in value]
    return value
