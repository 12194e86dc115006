"""scrub._bootstrap.interval against scipy.stats.bootstrap: the same interval, bit for bit."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from scrub._bootstrap import MeanResamples, interval
from scrub._result import bootstrap_ci, recovered_from_means, recovered_of


def _scipy(data, statistic, *, paired, method, seed, confidence, n_resamples):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            data,
            statistic,
            paired=paired,
            vectorized=True,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method=method,
            random_state=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _data(seed: int, n: int, kind: str) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(3, n))
    if kind == "ties":
        x = np.round(x)
    elif kind == "constant":
        x[:] = 1.0
    return x


@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize("kind", ["normal", "ties", "constant"])
@pytest.mark.parametrize("n", [2, 3, 17, 400])
def test_interval_is_scipys_bit_for_bit(method, kind, n):
    x = _data(n, n, kind)
    cases = [((x[0],), np.mean, False), ((x[0] + 3, x[1], x[2] + 1), recovered_of, True)]
    for data, statistic, paired in cases:
        for seed, confidence, n_resamples in ((0, 0.95, 2000), (7, 0.9, 999)):
            want = _scipy(
                data,
                statistic,
                paired=paired,
                method=method,
                seed=seed,
                confidence=confidence,
                n_resamples=n_resamples,
            )
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                got = interval(
                    data,
                    statistic,
                    paired=paired,
                    confidence=confidence,
                    n_resamples=n_resamples,
                    method=method,
                    rng=np.random.default_rng(seed),
                )
            np.testing.assert_array_equal(np.array(got), np.array(want))


def test_bootstrap_ci_draws_in_scipys_order():
    """Several CIs on one generator: each takes the draws scipy's would, in turn."""
    x = _data(1, 300, "normal")
    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    for data, statistic in (((x[0],), np.mean), ((x[0] + 3, x[1], x[2] + 1), recovered_of)):
        got = bootstrap_ci(data, statistic, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                data,
                statistic,
                paired=len(data) > 1,
                vectorized=True,
                n_resamples=2000,
                method="BCa",
                random_state=ref,
            )
        want = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        assert got == want
        assert np.isfinite(got).all()


def test_several_unpaired_samples_are_refused():
    x = _data(0, 10, "normal")
    with pytest.raises(ValueError, match="paired"):
        interval(
            (x[0], x[1]),
            recovered_of,
            paired=False,
            confidence=0.95,
            n_resamples=10,
            method="BCa",
            rng=np.random.default_rng(0),
        )


@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("n", [2, 17, 400])
def test_mean_resamples_give_scipys_intervals_in_turn_bit_for_bit(method, kind, n):
    """Several intervals on one generator: each is the scipy call that would come next."""
    x = _data(n, n, kind)
    c, b, s = x[0] + 3, x[1], x[2] + 1
    resamples = MeanResamples((c, b, s), n_resamples=999, rng=np.random.default_rng(5))
    ref = np.random.default_rng(5)
    cases = [
        ((c,), np.mean, lambda m: m, (0,)),
        ((b,), np.mean, lambda m: m, (1,)),
        ((c, b, s), recovered_of, recovered_from_means, (0, 1, 2)),
        ((s,), np.mean, lambda m: m, (2,)),
        ((c, b, s), recovered_of, recovered_from_means, (0, 1, 2)),
    ]
    for data, statistic, of_means, which in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                data,
                statistic,
                paired=len(data) > 1,
                vectorized=True,
                confidence_level=0.9,
                n_resamples=999,
                method=method,
                random_state=ref,
            )
        want = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            got = resamples.interval(of_means, which, confidence=0.9, method=method)
        np.testing.assert_array_equal(np.array(got), np.array(want))


def test_a_runs_intervals_are_scipys_in_turn_on_its_bootstrap_stream():
    """``scrub.run``'s intervals: scipy.stats.bootstrap (BCa) called on ``stream(seed,
    "bootstrap")`` for clean, baseline, scrubbed, then the fraction, bit for bit."""
    import scrub
    from scrub._tree import stream

    kcomp = Path(__file__).resolve().parents[1] / "hypotheses" / "induction" / "kcomp.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scrub.run(kcomp, n=60, seed=3)
    c, b, s = (np.array(result.per_example_clean), np.array(result.per_example_baseline),
               np.array(result.per_example))  # fmt: skip
    assert result.recovered is not None
    ref = stream(3, "bootstrap")

    def scipy_ci(data, statistic):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(
                data,
                statistic,
                paired=len(data) > 1,
                vectorized=True,
                n_resamples=2000,
                method="BCa",
                random_state=ref,
            )
        return (float(res.confidence_interval.low), float(res.confidence_interval.high))

    assert result.clean_ci == scipy_ci((c,), np.mean)
    assert result.baseline_ci == scipy_ci((b,), np.mean)
    assert result.scrubbed_ci == scipy_ci((s,), np.mean)
    assert result.recovered_ci == scipy_ci((c, b, s), recovered_of)
    assert np.isfinite(result.recovered_ci).all()


@pytest.mark.filterwarnings(
    "ignore:invalid value encountered in multiply:RuntimeWarning"
)  # ±inf inputs: 0 * inf, in scipy too
def test_the_intervals_quantile_is_scipys_bit_for_bit():
    from scrub._bootstrap import _quantile

    rng = np.random.default_rng(3)
    samples = [
        rng.normal(size=2000),
        np.round(rng.normal(size=999)),  # ties
        np.full(7, 2.5),
        np.array([1.0]),
        np.array([-0.0, 0.0, 0.0, -0.0, 1.0]),
        np.array([-np.inf, 0.0, 1.0, np.inf]),
        np.array([1.0, np.nan, 2.0]),  # scipy's NaN handling (not the fast path)
        rng.normal(size=100).astype(np.float32),  # scipy's promotion (not the fast path)
    ]
    probabilities = [
        np.array([0.025, 0.975]),
        np.array([0.0, 1.0]),
        np.array([0.5, 0.5]),
        rng.uniform(size=2),
        np.array([np.nan, 0.3]),
        np.array([-0.1, 1.2]),
        1 / 3 + np.zeros(2),
    ]
    for x in samples:
        for p in probabilities:
            want = stats.quantile(x, p, axis=-1)
            got = _quantile(x, p)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want, equal_nan=True)
            assert np.array_equal(np.signbit(got), np.signbit(want))
