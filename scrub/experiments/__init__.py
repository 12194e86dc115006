"""Experiments on the treeified engine beyond scoring one hypothesis.

- :func:`compare` (``scrub compare``): rivals on one experiment, with paired statistics.
- :func:`diagnose` (``scrub diagnose``): which part of a hypothesis loses the metric.
- :func:`patch` (``scrub patch FILE``): discovery grids as special cases of causal scrubbing:
  activation patching, path patching, iterative path patching and counterfactual attention
  (:mod:`scrub.experiments.patching`).
- :func:`scrub.experiments.reproduce.reproduce` (``scrub reproduce ioi``): every IOI circuit
  claim, from the patching grids to the compared hypotheses, in one command.
"""

from scrub.experiments._patch_result import PatchResult
from scrub.experiments.compare import Comparison, compare
from scrub.experiments.diagnose import Diagnosis, diagnose
from scrub.experiments.patching import Experiment, experiment_from_dict, load_experiment, patch

__all__ = [
    "Comparison",
    "Diagnosis",
    "Experiment",
    "PatchResult",
    "compare",
    "diagnose",
    "experiment_from_dict",
    "load_experiment",
    "patch",
]
