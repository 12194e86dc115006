"""IOI prompts for the shipped IOI-names model (``ioi_names``), which solves IOI for unseen names.

The IOI-names model (``scrub/models/ioi_names``) is the second offline stand-in for GPT-2 small
on indirect object identification. Like the IOI-toy model it is a small GPT-2 over a word-level
vocabulary, but its name pool is large (the 159 IOI names and hundreds of made-up ones) and its
name embeddings are fixed random vectors (see its model card and
``scripts/train_ioi_names.py``), so it cannot memorise a name: it solves IOI for names it never
saw in training by moving the name from the context.

This generator is :func:`scrub.data.ioi_toy.ioi_toy` with the IOI-names vocabulary: the same
layout, **named positions** (``BOS``, ``IO``, ``S1``, ``S1+1``, ``S2``, ``END``), **fields**
(``io``, ``s``, ``s2``, ``template``, ``order``, ``place``, ``object``, ``length``), features and
generators, so hypothesis files written for ``ioi_toy`` or the GPT-2 ``ioi`` dataset carry over.
``names`` chooses the model's ``"train"`` names, its ``"heldout"`` names (never in any training
sequence) or ``"all"``; ``templates`` likewise.

Pitfalls:

- Token ids are those of ``scrub/models/ioi_names/word_vocab.json``; they mean nothing to the
  IOI-toy model or to GPT-2.
- ``labels: next`` at ``END`` reads a ``<pad>``: the answer is not in the sequence; use the
  ``io`` field.

``ioi_names_abc`` is the ABC family in the same vocabulary and layout: S2 holds a third name
(field ``s2``; ``s_duplicated`` false), so the prompt has no right answer. It is the reference
distribution for the IOI paper's mean ablation (``ablation: {kind: mean, dataset: ...}``): the
same templates and named positions (``IO``, ``S1``, ``S1+1``, ``S2``, ``END``) as ``ioi_names``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scrub.data._dataset import Dataset
from scrub.data.ioi_toy import make_word_ioi

__all__ = ["VOCAB_FILE", "ioi_names", "ioi_names_abc"]

VOCAB_FILE = Path(__file__).resolve().parent.parent / "models" / "ioi_names" / "word_vocab.json"
"""The shipped IOI-names model's vocabulary, name pool and train/held-out split."""


def ioi_names(
    *,
    rng: np.random.Generator,
    size: int = 2000,
    names: str = "train",
    templates: str = "train",
    prompt_type: str = "mixed",
    vocab: str | None = None,
) -> Dataset:
    """Make ``size`` IOI prompts for the IOI-names model (see the module docstring).

    Args:
        rng: the generator every template, order, name, place and object is drawn from.
        size: number of examples in the pool.
        names: IO and S names from the model's ``"train"`` names, its ``"heldout"`` names
            (never in any training sequence), or ``"all"``.
        templates: templates from the model's ``"train"``, ``"heldout"`` or ``"all"`` templates.
        prompt_type: ``"mixed"`` (each example ABBA or BABA at random), ``"ABBA"`` or
            ``"BABA"``.
        vocab: path of a ``word_vocab.json`` (default: the shipped model's).

    Raises:
        ValueError: an unknown split or prompt type, a non-positive size, or no vocabulary file.
    """
    return make_word_ioi(
        rng=rng,
        size=size,
        names=names,
        templates=templates,
        prompt_type=prompt_type,
        vocab=vocab,
        name="ioi_names",
        default_vocab=VOCAB_FILE,
    )


def ioi_names_abc(
    *,
    rng: np.random.Generator,
    size: int = 2000,
    names: str = "train",
    templates: str = "train",
    prompt_type: str = "mixed",
    vocab: str | None = None,
) -> Dataset:
    """Make ``size`` ABC prompts for the IOI-names model: S2 is a third name (module docstring).

    Args:
        rng, size, names, templates, prompt_type, vocab: as :func:`ioi_names`.

    Raises:
        ValueError: as :func:`ioi_names`.
    """
    return make_word_ioi(
        rng=rng,
        size=size,
        names=names,
        templates=templates,
        prompt_type=prompt_type,
        vocab=vocab,
        name="ioi_names_abc",
        default_vocab=VOCAB_FILE,
        abc=True,
    )
