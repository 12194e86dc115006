"""``scipy.stats.bootstrap``'s interval, the same numbers bit for bit, for less work.

scrub's CIs are ``scipy.stats.bootstrap`` (DESIGN.md) over 1-D samples with a vectorised
statistic: one sample, or several resampled together (``paired=True``), ``n_resamples`` draws,
BCa or percentile, two-sided. :func:`interval` does the same arithmetic in the same order with
the same draws from the same generator, and differs only in how it gathers: ``np.take`` instead
of fancy indexing (same values, about 3× faster on the 2000 × n resampled arrays), a paired
resample's index array used as it is (scipy gathers it from ``arange(n)``, which is itself),
and the jackknife's leave-one-out indices built arithmetically instead of through a boolean
mask. ``tests/test_bootstrap.py`` checks it against ``scipy.stats.bootstrap`` bit for bit (so a
scipy that changes its algorithm fails there, not silently).

:class:`MeanResamples` goes further for the intervals one ``scrub.run`` reports, which are all
statistics of sample **means** over the same examples (each metric's mean, the fraction
recovered): each interval still takes its own draw from the generator, in turn, exactly as
successive ``scipy.stats.bootstrap`` calls on it would (so every number is the one the
one-call-per-interval code gave), but a paired statistic gathers each sample once, and each
sample's jackknife (its n leave-one-out means, the BCa acceleration's input) is computed once
for every interval that reads it (the mean's and the fraction's), with the leave-one-out
index built once.

The interval's two quantiles of the resampled statistic are ``scipy.stats.quantile``'s
(``method="linear"``) computed by :func:`_quantile` in the same operations and order, without
``quantile``'s array-API input validation and broadcasting, which cost 0.2 ms a call, ~90% of
it (five a run: a quarter of the bootstrap's time at n = 64). Where the inputs are not the
plain case it handles (1-D float64 resamples without NaN, two float64 probabilities in
[0, 1]) it calls ``scipy.stats.quantile`` itself.

Pitfall: the statistic must be computed from the means exactly as the original statistic
computes it (:func:`scrub._result.recovered_of` is ``recovered_from_means`` of ``np.mean``), or
the bits differ; the draws cannot be shared between intervals without changing every interval
the results and the README report (measured: five intervals at n = 1000 from one draw cost a
third of five draws, but e.g. the parens table's CIs move in the third decimal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import special, stats

__all__ = ["MeanResamples", "interval"]


def interval(
    data: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    paired: bool,
    confidence: float,
    n_resamples: int,
    method: str,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """``scipy.stats.bootstrap(data, statistic, paired=paired, vectorized=True, method=method,
    confidence_level=confidence, n_resamples=n_resamples, random_state=rng)``'s interval."""
    samples = [np.asarray(d) for d in data]
    if not paired and len(samples) != 1:
        raise ValueError("several samples are resampled together only (paired=True)")
    n = samples[0].shape[-1]
    if paired:

        def stat(i: np.ndarray, axis: int = -1) -> np.ndarray:
            return statistic(*(np.take(s, i) for s in samples), axis=axis)

        sample = np.arange(n)
    else:
        stat, sample = statistic, samples[0]
    # scipy: rng_integers(rng, 0, n, (n_resamples, n)), then sample[..., i]; for the paired
    # index sample arange(n)[..., i] is i itself
    i = rng.integers(0, n, (n_resamples, n), dtype="int64")
    theta_b = stat(i if paired else np.take(sample, i), axis=-1)
    theta_hat = np.expand_dims(stat(sample, axis=-1), axis=-1)
    leave_out = _leave_one_out(n) if method.lower() == "bca" else None
    jackknife = None
    if leave_out is not None:
        jackknife = stat(leave_out if paired else np.take(sample, leave_out), axis=-1)
    return _interval(theta_hat, theta_b, jackknife, confidence)


class MeanResamples:
    """Bootstrap intervals of statistics of means over ``n`` examples, one draw each.

    ``samples``: the 1-D per-example arrays (each ``n`` long) the intervals' statistics read.
    Each :meth:`interval` draws ``rng.integers(0, n, (n_resamples, n))`` as scipy does; each
    sample's leave-one-out means (BCa) are computed once, when an interval first reads them.
    ``like``: another ``MeanResamples`` over ``n`` examples whose leave-one-out index this one
    reuses (the index, ``n × (n − 1)``, costs 2.3 ms to build at n = 1000).
    """

    def __init__(
        self,
        samples: Sequence[np.ndarray],
        *,
        n_resamples: int,
        rng: np.random.Generator,
        like: MeanResamples | None = None,
    ) -> None:
        self.samples = [np.asarray(s) for s in samples]
        self.n = self.samples[0].shape[-1]
        self.n_resamples = n_resamples
        self.rng = rng
        self._like = like if like is not None and like.n == self.n else None
        self._leave_out: np.ndarray | None = None
        self._jackknife: dict[int, np.ndarray] = {}

    def interval(
        self,
        statistic: Callable[..., np.ndarray],
        which: Sequence[int],
        *,
        confidence: float,
        method: str,
    ) -> tuple[float, float]:
        """``scipy.stats.bootstrap([samples[k] for k in which], s, paired=len(which) > 1,
        vectorized=True, method=method, random_state=rng, ...)``'s interval, where
        ``s(*arrays, axis) == statistic(*(np.mean(a, axis) for a in arrays))``."""
        means = [np.mean(self.samples[k], axis=-1) for k in which]
        theta_hat = np.expand_dims(statistic(*means), axis=-1)
        # scipy: one index array for one sample or several paired ones (arange(n)[..., i])
        index = self.rng.integers(0, self.n, (self.n_resamples, self.n), dtype="int64")
        theta_b = statistic(*(_take_means(self.samples[k], index) for k in which))
        jackknife = None
        if method.lower() == "bca":
            jackknife = statistic(*(self._leave_one_out_means(k) for k in which))
        return _interval(theta_hat, theta_b, jackknife, confidence)

    def leave_one_out(self) -> np.ndarray:
        """Row r: ``0..n-1`` without r, built once (or ``like``'s)."""
        if self._leave_out is None:
            like = self._like
            self._leave_out = like.leave_one_out() if like is not None else _leave_one_out(self.n)
        return self._leave_out

    def _leave_one_out_means(self, k: int) -> np.ndarray:
        if k not in self._jackknife:
            self._jackknife[k] = _take_means(self.samples[k], self.leave_one_out())
        return self._jackknife[k]


_BLOCK = 2**16
"""Elements gathered at a time by :func:`_take_means` (512 KiB of float64)."""


def _take_means(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``np.mean(np.take(x, index), axis=-1)`` for a 2-D ``index``, bit for bit, gathered a
    block of rows at a time into one reused buffer: each row's mean is reduced on its own
    (the same pairwise sum whatever the other rows), and the 2000 × n gathered array is never
    made whole (16 MB at n = 1000: fresh pages to fault in, and out of the CPU's caches)."""
    rows = max(1, _BLOCK // max(1, index.shape[-1]))
    if rows >= len(index):
        return np.mean(np.take(x, index), axis=-1)
    out = np.empty(len(index), dtype=np.result_type(x.dtype, np.float64))
    buf = np.empty((rows, index.shape[-1]), dtype=x.dtype)
    for start in range(0, len(index), rows):
        part = index[start : start + rows]
        block = buf[: len(part)]
        np.take(x, part, out=block, mode="clip")  # in range: "raise" would buffer `out`
        out[start : start + len(part)] = np.mean(block, axis=-1)
    return out


def _leave_one_out(n: int) -> np.ndarray:
    """Row r: ``0..n-1`` without r (scipy: ``arange(n)`` masked off the diagonal)."""
    cols = np.arange(n - 1)
    return cols + (cols[None, :] >= np.arange(n)[:, None])


def _interval(
    theta_hat: np.ndarray,
    theta_b: np.ndarray,
    jackknife: np.ndarray | None,
    confidence: float,
) -> tuple[float, float]:
    """The interval from the statistic, its resampled values and, for BCa, its jackknife
    values (``None``: percentile), as scipy's ``bootstrap`` computes it."""
    alpha = (1 - confidence) / 2
    if jackknife is not None:
        alpha_1, alpha_2 = _bca(theta_hat, theta_b, jackknife, alpha)
        probabilities = np.stack((alpha_1, alpha_2), axis=-1)
    else:
        a = np.asarray(alpha, dtype=theta_b.dtype)
        probabilities = np.stack((a, 1 - a), axis=-1)
    ci = _quantile(theta_b, probabilities)
    return float(ci[..., 0]), float(ci[..., 1])


def _quantile(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``scipy.stats.quantile(x, p, axis=-1)`` (``method="linear"``), bit for bit.

    The plain case, 1-D float64 ``x`` without NaN and 1-D float64 ``p`` in [0, 1], is
    computed here as scipy's ``_quantile_hf`` computes it (the same sort, the same
    ``p * n + (1 - p)`` and floor, the same interpolation); anything else goes to scipy.
    """
    plain = (
        x.ndim == 1
        and p.ndim == 1
        and len(x) > 0
        and x.dtype == np.float64
        and p.dtype == np.float64
        and not np.isnan(x).any()
        and bool(((p >= 0) & (p <= 1)).all())  # False for NaN
    )
    if not plain:
        return stats.quantile(x, p, axis=-1)
    y = np.sort(x)  # scipy: xp.sort(stable=False), numpy's default sort
    n = np.asarray(len(y), dtype=np.float64)
    jg = p * n + (1 - p)  # scipy: m = 1 - p for "linear"; jg = p * n + m
    jp1 = jg // 1
    j = jp1 - 1
    g = jg % 1
    g[j < 0] = 0
    j = np.clip(j, 0.0, n - 1)
    jp1 = np.clip(jp1, 0.0, n - 1)
    return (1 - g) * y[j.astype(np.int64)] + g * y[jp1.astype(np.int64)]


def _bca(
    theta_hat: np.ndarray, theta_b: np.ndarray, theta_hat_i: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """scipy's ``_bca_interval`` from the statistic, its resamples and its jackknife."""
    count = np.count_nonzero(theta_b < theta_hat, axis=-1) + np.count_nonzero(
        theta_b <= theta_hat, axis=-1
    )
    percentile = np.asarray(count.astype(theta_hat.dtype) / (2 * theta_b.shape[-1]))
    z0_hat = special.ndtri(percentile.astype(theta_hat.dtype))
    theta_hat_i = np.concatenate([theta_hat_i], axis=-1)
    n_j = float(theta_hat_i.shape[-1])
    theta_hat_dot = np.mean(theta_hat_i, axis=-1, keepdims=True)
    u = (n_j - 1) * (theta_hat_dot - theta_hat_i)
    num = np.sum(u**3, axis=-1) / n_j**3
    den = np.sum(u**2, axis=-1) / n_j**2
    a_hat = 1 / 6 * sum([num]) / sum([den]) ** (3 / 2)
    z_alpha = float(special.ndtri(alpha))
    num1 = z0_hat + z_alpha
    alpha_1 = special.ndtr(z0_hat + num1 / (1 - a_hat * num1))
    num2 = z0_hat + -z_alpha
    alpha_2 = special.ndtr(z0_hat + num2 / (1 - a_hat * num2))
    return alpha_1, alpha_2
