"""Evaluators: compute the treeified model's output for a sampled tree."""

from scrub.engine.reference import evaluate_reference

__all__ = ["evaluate_reference"]
