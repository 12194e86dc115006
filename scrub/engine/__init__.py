"""Evaluators: compute the treeified model's output for a sampled tree.

- :func:`evaluate_reference`: obviously correct, one forward pass per node and patch set.
- :class:`FastEngine`: the whole tree as a few batched passes over row groups, with an
  :class:`ActivationCache` for leaves; the default.
"""

from scrub.engine.cache import ActivationCache
from scrub.engine.fast import FastEngine
from scrub.engine.reference import evaluate_reference

__all__ = ["ActivationCache", "FastEngine", "evaluate_reference"]
