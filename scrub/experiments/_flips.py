"""Flipped examples as a sampler: the reference example itself with one thing changed.

The IOI paper's counterfactual datasets (IO flipped, S flipped, the order swapped, the ABC
family) are :func:`scrub.data.ioi.flip` in Python. In an experiment file they are a sampler,
``{kind: flip, flip: [IO]}``: for each reference row, its flipped copy. The flipped pool is
appended to the dataset once per draw (like generated examples), so row ``r`` maps to row
``offset + r``.

Flips by dataset:

- ``ioi`` / ``ioi_abc`` (GPT-2 tokens): ``IO``, ``S``, ``S1``, ``S2``, ``order``; ``ABC`` is
  ``S2`` (the second S becomes a third name: an ABC-family prompt with the same template).
- ``ioi_toy``, ``ioi_names``, ``ioi_names_abc`` (word vocabularies): the same flips; ``S1`` /
  ``S2`` / ``ABC`` write a fresh name at that slot only (S is then no longer duplicated), ``S``
  renames both occurrences (S2 only where it is S). Fresh names come from the dataset's own
  name split and differ from the prompt's names.

Pitfall: a flip is defined on pool rows only (the reference batch is always drawn from the
pool); flipping a generated example is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scrub._errors import HypothesisError
from scrub._samplers import SampleContext
from scrub.data import Dataset

__all__ = ["FLIP_NAMES", "FlipSampler", "flip_pool"]

FLIP_NAMES = ("IO", "S", "S1", "S2", "order", "ABC")
"""Every flip a file may name (not every dataset has every flip)."""

_WORD_DATASETS = ("ioi_toy", "ioi_names", "ioi_names_abc")


def flip_pool(ds: Dataset, what: Sequence[str], rng: np.random.Generator) -> Dataset:
    """The pool of ``ds`` with ``what`` flipped, in order (a new dataset, row for row).

    Raises:
        HypothesisError: the dataset has no such flip.
    """
    family = ds.params.get("family")
    if family in ("ioi", "ioi_abc"):
        from scrub.data.ioi import flip

        return flip(ds, ["S2" if w == "ABC" else w for w in what], rng=rng)
    if ds.name in _WORD_DATASETS:
        return _flip_words(ds, what, rng)
    raise HypothesisError(
        f"dataset {ds.name!r} has no flips",
        hint="flips exist for ioi, ioi_abc, ioi_toy, ioi_names and ioi_names_abc; use another "
        "sampler (uncond, cond, generate) for the source or base",
    )


def _flip_words(ds: Dataset, what: Sequence[str], rng: np.random.Generator) -> Dataset:
    from scrub.data.ioi_names import VOCAB_FILE as NAMES_VOCAB
    from scrub.data.ioi_toy import VOCAB_FILE as TOY_VOCAB
    from scrub.data.ioi_toy import Vocab, _build

    default = TOY_VOCAB if ds.name == "ioi_toy" else NAMES_VOCAB
    vocab_file = ds.params.get("vocab") or default
    vocab = Vocab.load(vocab_file)
    names = vocab.ids(vocab.names(ds.params["names"]))
    cols = {
        k: ds.fields[k][: ds.n_base].copy()
        for k in ("template", "order", "io", "s", "s2", "place", "object")
    }
    for step in what:
        if step == "order":
            cols["order"] = 1 - cols["order"]
            continue
        new = rng.choice(names, size=ds.n_base)
        clash = (new == cols["io"]) | (new == cols["s"]) | (new == cols["s2"])
        while clash.any():
            new[clash] = rng.choice(names, size=int(clash.sum()))
            clash = (new == cols["io"]) | (new == cols["s"]) | (new == cols["s2"])
        if step == "IO":
            cols["io"] = new
        elif step == "S":
            cols["s2"] = np.where(cols["s2"] == cols["s"], new, cols["s2"])
            cols["s"] = new
        elif step == "S1":
            cols["s"] = new
        else:  # S2, ABC
            cols["s2"] = new
    return _build(cols, vocab=vocab, params=dict(ds.params), name=ds.name, default_vocab=default)


@dataclass(frozen=True)
class FlipSampler:
    """For each parent row (a pool row), its copy with ``what`` flipped."""

    what: tuple[str, ...]

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        ds = ctx.dataset
        if (parent_rows >= ds.n_base).any():
            raise HypothesisError(
                f"node {ctx.node!r}: a flip is defined on pool examples only, and its parent's "
                "rows include generated examples",
                hint="flip the reference batch (use the flip for 'base' or 'source')",
            )
        key = ("flip", self.what, repr(ctx.rng.bit_generator.state))
        made = ds.generated.get(key)
        if made is None:
            try:
                flipped = flip_pool(ds, self.what, ctx.rng)
            except HypothesisError as exc:
                raise HypothesisError(f"node {ctx.node!r}: {exc.problem}", hint=exc.hint) from None
            made = ds.extend(flipped)
            ds.generated[key] = made
        return made[parent_rows].copy()

    def __repr__(self) -> str:
        return f"FlipSampler({list(self.what)})"
