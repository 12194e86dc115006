"""Experiments on the treeified engine beyond scoring one hypothesis.

- :func:`patch` (``scrub patch FILE``): discovery grids as special cases of causal scrubbing:
  activation patching, path patching, iterative path patching and counterfactual attention
  (:mod:`scrub.experiments.patching`).
"""

from scrub.experiments._patch_result import PatchResult
from scrub.experiments.patching import Experiment, experiment_from_dict, load_experiment, patch

__all__ = ["Experiment", "PatchResult", "experiment_from_dict", "load_experiment", "patch"]
