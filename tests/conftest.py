"""Shared fixtures: offline random GPT-2-shaped models and the induction dataset."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest

import scrub
from scrub.testing import save_random_gpt2


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer, 4-head, d_model 32 GPT-2 with the induction vocabulary (128)."""
    return save_random_gpt2(tmp_path_factory.mktemp("tiny"), init_std=0.2, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    return scrub.load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def one_layer_model(tmp_path_factory):
    d = save_random_gpt2(tmp_path_factory.mktemp("one"), n_layers=1, init_std=0.2, seed=1)
    return scrub.load_model(str(d))


@pytest.fixture(scope="session")
def gpt2_shaped_dir(tmp_path_factory):
    """A random stand-in for GPT-2 small: its layers, heads, context and vocabulary, but narrow.

    Hypothesis files written for ``model: gpt2`` are checked and run on it (mechanics only).
    """
    return save_random_gpt2(
        tmp_path_factory.mktemp("gpt2_shaped"),
        n_layers=12,
        n_heads=12,
        d_model=48,
        d_vocab=50257,
        n_ctx=1024,
        seed=3,
    )


def stand_in(path, gpt2_shaped_dir) -> str | None:
    """The model to run a shipped hypothesis file on offline: ``None`` for its own model."""
    return str(gpt2_shaped_dir) if scrub.load_hypothesis(path).spec.model == "gpt2" else None


@pytest.fixture
def dataset():
    return scrub.make_dataset("induction", {"size": 200}, np.random.default_rng(0))


def base_spec(model_dir, **overrides) -> dict:
    """A valid hypothesis dict on the induction dataset; ``nodes`` must be given.

    The metric is KL to the clean model: on a random model, clean and baseline loss are often
    indistinguishable, which leaves the fraction recovered undefined; KL is 0 for clean.
    """
    spec = {
        "model": str(model_dir),
        "dataset": {"generator": "induction", "params": {"size": 200}},
        "metric": {"kind": "kl", "positions": "REP"},
        "defaults": {"n": 24, "seed": 0},
    }
    spec.update(overrides)
    return spec


def all_components(n_layers: int, n_heads: int) -> list[str]:
    comps = ["embed"]
    for layer in range(n_layers):
        comps += [f"a{layer}.h{h}" for h in range(n_heads)] + [f"m{layer}"]
    return comps


SLOW_SHIPPED = frozenset({"ioi/circuit_mean", "ioi/direct_movers_mean"})
"""Shipped files run in the slow tier only: the GPT-2 mean-ablation claims, whose ABC means on
the GPT-2-shaped stand-in (12 layers, 50257-token vocabulary) take minutes on a shared CPU."""


def shipped_hypotheses() -> list:
    """Every shipped hypothesis file as a pytest param (id ``folder/stem``; slow ones marked)."""
    root = Path(__file__).parent.parent / "hypotheses"
    params = []
    for path in sorted(root.rglob("*.yaml")):
        key = f"{path.parent.name}/{path.stem}"
        marks = [pytest.mark.slow] if key in SLOW_SHIPPED else []
        params.append(pytest.param(path, id=key, marks=marks))
    return params
