"""Experiments built on :func:`scrub.run`: comparisons of rival hypotheses and diagnoses.

- :func:`compare` (``scrub compare``): rivals on one experiment, with paired statistics.
- :func:`diagnose` (``scrub diagnose``): which part of a hypothesis loses the metric.
"""

from scrub.experiments.compare import Comparison, compare
from scrub.experiments.diagnose import Diagnosis, diagnose

__all__ = ["Comparison", "Diagnosis", "compare", "diagnose"]
