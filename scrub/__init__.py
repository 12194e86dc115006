"""scrub: causal scrubbing of interpretability hypotheses on TransformerLens models.

The pipeline, one module each::

    hypothesis file ──load_hypothesis──▶ Hypothesis (interpretation graph + correspondence)
        ──bind──▶ BoundHypothesis (checked against a model and a dataset)
        ──sample_tree──▶ SampledTree (every node's data and other inputs drawn)
        ──engine──▶ treeified output ──metrics──▶ ScrubResult ──report──▶ table / JSON

Start with :func:`run`; ``scrub run FILE`` is the same from the shell.
"""

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
