"""scrub: causal scrubbing of interpretability hypotheses on TransformerLens models.

The pipeline, one module each::

    hypothesis file ──load_hypothesis──▶ Hypothesis (interpretation graph + correspondence)
        ──bind──▶ BoundHypothesis (checked against a model and a dataset)
        ──sample_tree──▶ SampledTree (every node's data and other inputs drawn)
        ──engine──▶ treeified output ──metrics──▶ ScrubResult ──report──▶ table / JSON

Start with :func:`run`; ``scrub run FILE`` is the same from the shell.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below, imported on first use (``scrub --help`` loads no torch)
    from scrub._bind import BoundHypothesis, bind, make_dataset_for
    from scrub._components import Component, ModelShape
    from scrub._errors import HypothesisError, ScrubWarning
    from scrub._hypothesis import (
        Correspondence,
        Hypothesis,
        InterpNode,
        MappedComponent,
        hypothesis_from_dict,
        load_hypothesis,
    )
    from scrub._imports import dataset_generator, feature
    from scrub._means import ComponentMeans, component_means
    from scrub._model import ScrubModel, load_model
    from scrub._precision import PrecisionError
    from scrub._result import ScrubResult
    from scrub._run import run
    from scrub._samplers import (
        CondSampler,
        ExactSampler,
        FixedSampler,
        GenerateSampler,
        UncondSampler,
        UncondTogetherSampler,
    )
    from scrub._tokenizer import gpt2_tokenizer
    from scrub._tree import SampledTree, TreeNode, sample_tree, treeify
    from scrub.data import Dataset, make_dataset
    from scrub.engine import ActivationCache, FastEngine, evaluate_reference
    from scrub.experiments import Comparison, Diagnosis, compare, diagnose

_LAZY = {
    "ActivationCache": "scrub.engine",
    "BoundHypothesis": "scrub._bind",
    "Comparison": "scrub.experiments",
    "Component": "scrub._components",
    "ComponentMeans": "scrub._means",
    "CondSampler": "scrub._samplers",
    "Correspondence": "scrub._hypothesis",
    "Dataset": "scrub.data",
    "Diagnosis": "scrub.experiments",
    "ExactSampler": "scrub._samplers",
    "FastEngine": "scrub.engine",
    "FixedSampler": "scrub._samplers",
    "GenerateSampler": "scrub._samplers",
    "Hypothesis": "scrub._hypothesis",
    "HypothesisError": "scrub._errors",
    "InterpNode": "scrub._hypothesis",
    "MappedComponent": "scrub._hypothesis",
    "ModelShape": "scrub._components",
    "PrecisionError": "scrub._precision",
    "SampledTree": "scrub._tree",
    "ScrubModel": "scrub._model",
    "ScrubResult": "scrub._result",
    "ScrubWarning": "scrub._errors",
    "TreeNode": "scrub._tree",
    "UncondSampler": "scrub._samplers",
    "UncondTogetherSampler": "scrub._samplers",
    "bind": "scrub._bind",
    "compare": "scrub.experiments",
    "component_means": "scrub._means",
    "dataset_generator": "scrub._imports",
    "diagnose": "scrub.experiments",
    "evaluate_reference": "scrub.engine",
    "feature": "scrub._imports",
    "gpt2_tokenizer": "scrub._tokenizer",
    "hypothesis_from_dict": "scrub._hypothesis",
    "load_hypothesis": "scrub._hypothesis",
    "load_model": "scrub._model",
    "make_dataset": "scrub.data",
    "make_dataset_for": "scrub._bind",
    "run": "scrub._run",
    "sample_tree": "scrub._tree",
    "treeify": "scrub._tree",
}


def __getattr__(name: str):
    """Import a public name's module on first use (PEP 562), so that importing ``scrub`` (and
    ``scrub --help``) does not load torch, transformer-lens or scipy."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scrub' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__version__ = "0.1.0"

__all__ = [
    "ActivationCache",
    "BoundHypothesis",
    "Comparison",
    "Component",
    "ComponentMeans",
    "CondSampler",
    "Correspondence",
    "Dataset",
    "Diagnosis",
    "ExactSampler",
    "FastEngine",
    "FixedSampler",
    "GenerateSampler",
    "Hypothesis",
    "HypothesisError",
    "InterpNode",
    "MappedComponent",
    "ModelShape",
    "PrecisionError",
    "SampledTree",
    "ScrubModel",
    "ScrubResult",
    "ScrubWarning",
    "TreeNode",
    "UncondSampler",
    "UncondTogetherSampler",
    "bind",
    "compare",
    "component_means",
    "dataset_generator",
    "diagnose",
    "evaluate_reference",
    "feature",
    "gpt2_tokenizer",
    "hypothesis_from_dict",
    "load_hypothesis",
    "load_model",
    "make_dataset",
    "make_dataset_for",
    "run",
    "sample_tree",
    "treeify",
]
