"""Statistics of a patching grid, vectorised over its cells.

Every cell of a grid is scored on the same reference examples, so every cell's statistics use
the *same* resamples (a paired bootstrap: one set of resampled example indices for the patched,
base and scale runs of every cell) and the same sign-flip patterns. That makes them matrix
products over the whole grid instead of a ``scipy.stats.bootstrap`` call per cell:

- **mean** of the patched metric, with a percentile bootstrap interval;
- **effect** = patched − base run, per example; its mean, interval and a two-sided **sign-flip
  permutation p-value** (the null: each example's effect is symmetric about 0; exact over all
  ``2**n`` sign patterns for n ≤ 12 examples, else Monte Carlo, ``(hits + 1) / (P + 1)``);
- the p-values **adjusted** across the grid: Benjamini–Hochberg (``scipy.stats.
  false_discovery_control``) or Holm;
- **normalised** effect = mean(patched − base) / mean(scale − base), a ratio of means (the
  scale is the run entirely on the source examples), with its bootstrap interval; undefined
  (NaN, with the reason) when the paired interval of scale − base contains 0.

Pitfall: percentile intervals of a ratio are only as good as the denominator is far from 0;
that is why the normalised effect is withheld when the scale is indistinguishable from the base.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["GridStats", "adjust", "grid_stats"]

EXACT_MAX_N = 12


@dataclass
class GridStats:
    """Per-cell statistics, each an array over cells (``(C,)``)."""

    mean: np.ndarray
    mean_low: np.ndarray
    mean_high: np.ndarray
    effect: np.ndarray
    effect_low: np.ndarray
    effect_high: np.ndarray
    p: np.ndarray
    p_adjusted: np.ndarray
    normalized: np.ndarray
    normalized_low: np.ndarray
    normalized_high: np.ndarray
    normalized_undefined: str | None


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """p-values adjusted across cells (NaN cells are left out and stay NaN)."""
    out = np.full_like(p, np.nan, dtype=float)
    ok = np.isfinite(p)
    if method == "none" or not ok.any():
        out[ok] = p[ok]
        return out
    if method == "fdr_bh":
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
        return out
    assert method == "holm", method
    values = p[ok]
    order = np.argsort(values, kind="stable")
    m = len(values)
    stepped = np.maximum.accumulate((m - np.arange(m)) * values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[ok] = adjusted
    return out


def grid_stats(
    values: np.ndarray,
    base: np.ndarray,
    scale: np.ndarray,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    n_permutations: int = 1000,
    correction: str = "fdr_bh",
) -> GridStats:
    """Statistics of every cell (see the module docstring).

    Args:
        values: ``(C, n)`` per-example metric of each patched cell.
        base: ``(n,)`` the unpatched base run.
        scale: ``(n,)`` the run entirely on the source examples (what a full patch gives).
        rng: the seeded stream every resample and sign pattern is drawn from.
        confidence, n_resamples, n_permutations, correction: see the experiment file.
    """
    values = np.asarray(values, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    n = values.shape[1]
    idx = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], idx), 1.0 / n)
    alpha = (1 - confidence) / 2

    def interval(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # nanquantile costs three times quantile; the same numbers where nothing is NaN.
        quantile = np.nanquantile if np.isnan(boot).any() else np.quantile
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            # an all-NaN row (an undefined normalised effect) has a NaN interval, as intended
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            low, high = quantile(boot, [alpha, 1 - alpha], axis=-1)
        return low, high

    effects = values - base
    mean_boot = values @ weights.T
    effect_boot = effects @ weights.T
    gap = scale - base
    gap_boot = weights @ gap
    gap_low, gap_high = interval(gap_boot[None])
    undefined = None
    if not (gap_low[0] > 0 or gap_high[0] < 0):
        undefined = (
            f"the source run and the base run are not distinguishable on this metric (paired "
            f"{confidence:.0%} CI of their difference: [{gap_low[0]:.4g}, {gap_high[0]:.4g}], "
            "contains 0), so a normalised effect would divide by noise"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = effects.mean(1) / gap.mean()
        norm_boot = effect_boot / gap_boot[None]
    norm_low, norm_high = interval(norm_boot)
    if undefined is not None:
        normalized = np.full(len(values), np.nan)
        norm_low = norm_high = normalized
    mean_low, mean_high = interval(mean_boot)
    effect_low, effect_high = interval(effect_boot)
    p = _sign_flip(effects, rng=rng, n_permutations=n_permutations)
    return GridStats(
        mean=values.mean(1),
        mean_low=mean_low,
        mean_high=mean_high,
        effect=effects.mean(1),
        effect_low=effect_low,
        effect_high=effect_high,
        p=p,
        p_adjusted=adjust(p, correction),
        normalized=normalized,
        normalized_low=norm_low,
        normalized_high=norm_high,
        normalized_undefined=undefined,
    )


def _sign_flip(effects: np.ndarray, *, rng: np.random.Generator, n_permutations: int):
    """Two-sided sign-flip p-value of each row's mean effect being 0."""
    n = effects.shape[1]
    if n <= EXACT_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        exact = True
    else:
        signs = rng.choice(np.array([1.0, -1.0]), size=(n_permutations, n))
        exact = False
    observed = np.abs(effects.mean(1))
    null = np.abs(effects @ signs.T / n)
    # A null mean within rounding of the observed one is a tie (counts as a hit).
    tol = 1e-9 * np.maximum(observed, np.abs(effects).max(1, initial=0.0))
    hits = (null >= (observed - tol)[:, None]).sum(1)
    if exact:
        return hits / len(signs)
    return (hits + 1) / (len(signs) + 1)
