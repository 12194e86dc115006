"""``scrub._intervals``: intervals shared through a cache are the intervals drawn anew.

The clean and baseline CIs (the bootstrap stream's first two draws) and clean − baseline's are
remembered in a shared cache with the stream's state after them; a later hypothesis on that
cache must report every number it reports alone, and scipy's intervals in turn.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import stats

import scrub
from scrub._intervals import intervals
from scrub._result import recovered_of
from scrub._tree import stream
from scrub.engine import ActivationCache

INDUCTION = Path(__file__).resolve().parents[1] / "hypotheses" / "induction"


def test_hypotheses_on_one_cache_report_what_each_reports_alone():
    files = [INDUCTION / f"{name}.yaml" for name in ("kcomp", "naive", "full", "empty")]
    model = scrub.load_model(scrub.load_hypothesis(files[0]).spec.model, relative_to=INDUCTION)
    dataset = scrub.make_dataset_for(scrub.load_hypothesis(files[0]), seed=3)
    cache = ActivationCache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = [
            scrub.run(f, model=model, dataset=dataset, cache=cache, n=40, seed=3) for f in files
        ]
        alone = [scrub.run(f, model=model, dataset=dataset, n=40, seed=3) for f in files]
    assert [r.to_json() for r in shared] == [r.to_json() for r in alone]
    assert len({r.clean_ci for r in shared}) == 1  # one experiment: the intervals were shared
    assert shared[0].scrubbed_ci != shared[1].scrubbed_ci
    last = shared[1]
    c, b, s = (np.array(v) for v in (last.per_example_clean, last.per_example_baseline,
                                      last.per_example))  # fmt: skip
    ref = stream(3, "bootstrap")

    def scipy_ci(data, statistic):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(data, statistic, paired=len(data) > 1, vectorized=True,
                                  n_resamples=2000, method="BCa", random_state=ref)  # fmt: skip
        return (float(res.confidence_interval.low), float(res.confidence_interval.high))

    assert last.clean_ci == scipy_ci((c,), np.mean)
    assert last.baseline_ci == scipy_ci((b,), np.mean)
    assert last.scrubbed_ci == scipy_ci((s,), np.mean)
    assert last.recovered_ci == scipy_ci((c, b, s), recovered_of)


def test_a_memo_changes_no_interval_and_keys_on_every_input():
    rng = np.random.default_rng(0)
    clean, baseline = rng.normal(size=50) + 1, rng.normal(size=50)
    store: dict = {}

    def memo(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]

    cases = [
        (clean, baseline, rng.normal(size=50) + 0.5, 0, 0.95),
        (clean, baseline, rng.normal(size=50) + 0.2, 0, 0.95),  # served from the memo
        (clean, baseline, rng.normal(size=50), 1, 0.95),  # another seed
        (clean, baseline, rng.normal(size=50), 0, 0.9),  # another confidence
        (clean + 1e-12, baseline, rng.normal(size=50), 0, 0.95),  # another sample
        (clean, baseline.astype(np.float32), rng.normal(size=50), 0, 0.95),
        (baseline, baseline, rng.normal(size=50), 0, 0.95),  # undefined
    ]
    for c, b, s, seed, confidence in cases:
        want = intervals(c, b, s, seed=seed, confidence=confidence)
        got = intervals(c, b, s, seed=seed, confidence=confidence, memo=memo)
        assert got == want
    # two keys per set of inputs (the first two cases share theirs); the undefined case reads
    # clean and baseline only
    assert len(store) == 2 * 5 + 1
