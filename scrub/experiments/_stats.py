"""Statistics for comparing scrubs: paired differences, sign-flip tests, Holm, TOST, two levels.

Every statistic here is computed on per-example arrays that share one reference batch: the clean
metric ``c``, the baseline ``b`` and a scrubbed metric ``s`` per hypothesis, each ``(n,)`` (with
several draws of the tree, averaged over draws per example first).

- **Recovered** is a ratio of means, ``(mean s − mean b) / (mean c − mean b)``. Bootstrap
  intervals resample *examples* and recompute the ratio on each resample (never a mean of
  per-example ratios, which blow up where ``c ≈ b`` for one example).
- **Paired difference** of two hypotheses on one experiment: ``rec_A − rec_B``. Both share the
  denominator, so the difference is ``mean(s_A − s_B) / (mean c − mean b)`` and a **sign-flip
  test** (swap A and B within each example, at random) tests it exactly: the denominator does
  not change under a swap. The p-value counts the observed assignment, so it is never 0, and is
  exactly 1 when ``s_A == s_B`` everywhere.
- **Holm** controls the family-wise error over all pairs.
- **Completeness**: "recovered < 1" is a one-sided sign-flip test of scrubbed against clean
  (H0: the scrub changes nothing); **equivalence** within a margin ε is TOST: two one-sided
  t-tests that ``rec > 1 − ε`` and ``rec < 1 + ε``, each linearised (Fieller) into a mean of
  per-example values: ``rec > 1 − ε`` ⇔ ``mean(s − b − (1 − ε)(c − b)) > 0`` when ``c > b``.
- **Two sources of variance** (``--seeds K``): a bootstrap over examples treats the draws of the
  tree as fixed. With K draws on one reference batch, the spread of the K per-draw values is the
  draws' share; the **combined** interval widens each side of the examples' interval by the
  draws' half-width in quadrature (law of total variance): ``est − sqrt((est − lo)² + h²)``,
  ``est + sqrt((hi − est)² + h²)``, with ``h = t_{K−1} · sd / sqrt(K)``. It always contains the
  examples' interval, and is conservative (the examples' bootstrap already sees some draw noise,
  since each example's draws are resampled with it). It is deliberately not a literal two-level
  ("pigeonhole", Owen 2007) bootstrap that resamples examples and, independently, the K draws:
  that percentile interval need not contain the examples' BCa interval, its draw level has only
  K values to resample (few distinct resamples for K = 2–10, variance biased low by
  (K − 1)/K), and on a crossed design (every draw covers every example) its variance is itself
  only approximate (mildly conservative, Owen 2007).

Pitfall: p-values and intervals are only meaningful when the denominator is: with clean ≈
baseline the fraction recovered is undefined, and these functions return NaN rather than a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from scrub._result import bootstrap_ci, recovered_of

__all__ = [
    "combined_interval",
    "completeness",
    "difference_ci",
    "holm",
    "recovered_difference",
    "sign_flip_p",
]


def recovered_difference(clean, baseline, a, b, axis: int = -1):
    """``recovered(a) − recovered(b)`` on shared clean and baseline (vectorised)."""
    return recovered_of(clean, baseline, a, axis=axis) - recovered_of(clean, baseline, b, axis=axis)


def difference_ci(
    clean: np.ndarray,
    baseline: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Paired bootstrap CI of :func:`recovered_difference`, examples resampled together."""
    if np.array_equal(a, b):
        return (0.0, 0.0)  # every resample's difference is exactly 0
    return bootstrap_ci(
        (clean, baseline, a, b), recovered_difference, rng=rng, confidence=confidence
    )


def sign_flip_p(
    values: np.ndarray,
    *,
    rng: np.random.Generator,
    alternative: str = "two-sided",
    n_resamples: int = 9999,
) -> float:
    """p-value of a paired sign-flip test that ``mean(values)`` is 0.

    Each example's value keeps or flips its sign at random (exhaustively when there are at most
    ``n_resamples`` assignments). The observed assignment counts, so ``p > 0``; ``values`` all
    zero gives ``p = 1``.

    Args:
        values: per-example paired differences.
        rng: the seeded stream for the random assignments.
        alternative: ``two-sided``, ``less`` (mean < 0) or ``greater`` (mean > 0).
        n_resamples: random assignments when exhaustive enumeration is too large.
    """
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"unknown alternative {alternative!r}")
    d = np.asarray(values, dtype=np.float64)
    if len(d) == 0 or not np.all(np.isfinite(d)):
        return math.nan
    scale = float(np.abs(d).max())
    if scale == 0.0:
        return 1.0
    observed = float(d.mean())
    tol = 1e-9 * scale  # the observed assignment must count as "at least as extreme"

    def hits(null: np.ndarray) -> int:
        if alternative == "two-sided":
            return int((np.abs(null) >= abs(observed) - tol).sum())
        if alternative == "less":
            return int((null <= observed + tol).sum())
        return int((null >= observed - tol).sum())

    n = len(d)
    if n <= 20 and 2**n <= n_resamples:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        return hits(((1 - 2 * codes) * d).mean(axis=1)) / 2**n
    count, done = 0, 0
    while done < n_resamples:
        m = min(2048, n_resamples - done)
        signs = 1 - 2 * rng.integers(0, 2, size=(m, n))
        count += hits((signs * d).mean(axis=1))
        done += m
    return (count + 1) / (n_resamples + 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(p), math.nan)
    defined = [i for i in np.argsort(p, kind="stable") if np.isfinite(p[i])]
    m = len(defined)
    running = 0.0
    for rank, i in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


def _one_sided_t(values: np.ndarray, alternative: str) -> float:
    """One-sided one-sample t-test that the mean is 0 (``greater``: H1 mean > 0)."""
    mean = float(values.mean())
    if len(values) < 2:
        return math.nan
    if float(values.std()) == 0.0:
        right_side = mean > 0 if alternative == "greater" else mean < 0
        return 0.0 if right_side else 1.0
    return float(stats.ttest_1samp(values, 0.0, alternative=alternative).pvalue)


def completeness(
    clean: np.ndarray,
    baseline: np.ndarray,
    scrubbed: np.ndarray,
    *,
    margin: float,
    alpha: float,
    rng: np.random.Generator,
) -> dict[str, float | bool | str | None]:
    """Is the hypothesis complete? The test of recovered < 1 and TOST within ``margin``.

    Returns:
        ``p_incomplete`` (one-sided sign-flip, H1: recovered < 1), ``incomplete`` (at
        ``alpha``), ``margin``, ``p_equivalent`` (TOST: the larger of the two one-sided
        p-values), ``p_lower`` / ``p_upper`` and ``equivalent``; NaN p-values with a
        ``reason`` when clean and baseline agree.
    """
    gap = float(clean.mean() - baseline.mean())
    if gap == 0.0 or not math.isfinite(gap):
        return {
            "margin": margin,
            "p_incomplete": math.nan,
            "incomplete": None,
            "p_lower": math.nan,
            "p_upper": math.nan,
            "p_equivalent": math.nan,
            "equivalent": None,
            "reason": "clean and baseline agree: recovered is undefined",
        }
    sign = 1.0 if gap > 0 else -1.0
    p_incomplete = sign_flip_p(sign * (scrubbed - clean), rng=rng, alternative="less")
    lower = sign * (scrubbed - baseline - (1 - margin) * (clean - baseline))
    upper = sign * (scrubbed - baseline - (1 + margin) * (clean - baseline))
    p_lower = _one_sided_t(lower, "greater")
    p_upper = _one_sided_t(upper, "less")
    p_equivalent = max(p_lower, p_upper)
    return {
        "margin": margin,
        "p_incomplete": p_incomplete,
        "incomplete": bool(p_incomplete < alpha),
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p_equivalent": p_equivalent,
        "equivalent": bool(p_equivalent < alpha),
        "reason": None,
    }


def combined_interval(
    estimate: float,
    examples_ci: tuple[float, float],
    per_draw: Sequence[float],
    *,
    confidence: float = 0.95,
) -> tuple[tuple[float, float], float] | None:
    """The interval over both sources (examples and draws), and the draws' half-width.

    ``None`` with fewer than two draws (their spread is unknown). See the module docstring.
    """
    draws = np.asarray(per_draw, dtype=np.float64)
    k = len(draws)
    if k < 2 or not np.all(np.isfinite(draws)) or not all(map(math.isfinite, examples_ci)):
        return None
    t = float(stats.t.ppf((1 + confidence) / 2, k - 1))
    half = t * float(draws.std(ddof=1)) / math.sqrt(k)
    lo, hi = examples_ci
    return (
        estimate - math.hypot(estimate - lo, half),
        estimate + math.hypot(hi - estimate, half),
    ), half
