"""Evaluators: compute the treeified model's output for a sampled tree.

- :func:`evaluate_reference`: obviously correct, one forward pass per node and patch set.
- :class:`FastEngine`: the whole tree as a few batched passes over row groups, with an
  :class:`ActivationCache` for leaves; the default.
- :mod:`scrub.engine.baseline`: an experiment's baseline (``resample_all``, ...).
"""

from scrub.engine.baseline import BASELINES, Baseline, BaselineRun, ResampleAll, baseline_for
from scrub.engine.cache import ActivationCache
from scrub.engine.fast import FastEngine
from scrub.engine.reference import evaluate_reference

__all__ = [
    "BASELINES",
    "ActivationCache",
    "Baseline",
    "BaselineRun",
    "FastEngine",
    "ResampleAll",
    "baseline_for",
    "evaluate_reference",
]
