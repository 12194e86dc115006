"""IOI prompts in the word-level vocabulary of the shipped IOI-toy model (``ioi_toy``).

The IOI-toy model (``scrub/models/ioi_toy``) is an offline stand-in for GPT-2 small on indirect
object identification: a small GPT-2 trained on the IOI paper's templates
(:mod:`scrub.data.ioi_templates`) in a **word-level vocabulary** where every word, name, place,
object and punctuation mark is one token (:mod:`scrub.data._words`: :class:`Vocab`,
:func:`split_words`, :func:`render`, re-exported here). This module holds the dataset generator
registered as ``"ioi_toy"`` and :func:`make_word_ioi`, the body it shares with ``ioi_names``.

Layout of every example: ``[<bos>] prompt [<pad> ...]``. The prompt is an ABBA or BABA template
with ``[A]`` = the IO name, ``[B]`` = the S name, and one place and one object; it stops right
before the answer (the IO name). Templates differ in length, so examples are right-padded with
``<pad>`` to one length: the longest prompt of any template (so every ``ioi_toy`` dataset, and
every example a generator makes, has the same length). The model is causal, so padding after
``END`` never changes the prediction at ``END``.

The dataset follows the conventions of the GPT-2 IOI dataset (:mod:`scrub.data.ioi`), so that a
hypothesis written for one reads the same on the other:

**Named positions**, ``(N, 1)`` each, per example: ``BOS`` (0), ``IO`` (the IO name in the
opening clause), ``S1`` (the first S), ``S1+1`` (the token after it), ``S2`` (the second S),
``END`` (the last prompt token, where the IO name is predicted).

**Fields** (also features): ``io``, ``s``, ``s2`` (token ids at IO, S1 and S2; ``s2 == s``
always here; ``metric: {kind: logit_diff, positions: END, correct: io, wrong: s}`` is the IOI
logit difference), ``template`` (index into :data:`~scrub.data.ioi_templates.BABA_TEMPLATES`;
the ABBA template of the same index is the same sentence with the first two names swapped),
``order`` (0: ABBA, IO first; 1: BABA, S first), ``place``, ``object`` (token ids; drawn for every
example, in the prompt only where the template has that placeholder), ``length`` (tokens
including BOS; padding starts there).

Extra **features**: ``io_name`` / ``s_name`` (aliases of ``io`` / ``s``), ``s_duplicated``
(always true here), ``positions`` (the ``(IO, S1, S2)`` positions) and ``names`` (the
``(IO, S)`` pair, the feature the ``names`` generator keeps).

**Generators** (for ``{kind: generate, feature: F}`` samplers) make a fresh prompt per row that
keeps one feature and draws everything else anew from the dataset's own splits and prompt type:
``io`` (same IO name), ``s`` (same S name), ``names`` (same IO and S names; template, order, place
and object fresh), ``template`` (same template *and* order, so the same token layout) and
``order`` (same order). Use them where a ``cond`` sampler would find only the reference example
itself (an (IO, S) pair is nearly unique in a pool of a few thousand prompts).

Train / held-out splits: the model was trained on IOI prompts built from some templates and some
names only (the split is saved in ``word_vocab.json``). ``names`` and ``templates`` choose
``"train"``, ``"heldout"`` or ``"all"``; held-out names and templates are what the model card's
generalisation numbers are measured on.

Pitfalls:

- Token ids mean nothing to other models: this dataset is for the IOI-toy model only (the GPT-2
  IOI dataset is ``scrub.data.ioi``).
- ``labels: next`` at ``END`` reads a ``<pad>``: the answer is not in the sequence; use the
  ``io`` field.
- The vocabulary file is ``word_vocab.json``, not ``vocab.json``: in a model directory the
  TransformerBridge loader would read a ``vocab.json`` as a GPT-2 BPE tokenizer and fail.
- Held-out names are held out of the IOI *task* only: the model saw them in distractor sentences
  (so their embeddings are trained), never as the IO or S of an IOI prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, check_pool_size, token_tensor
from scrub.data._words import (
    BOS,
    COPY_TEMPLATES,
    DISTRACTOR_TEMPLATES,
    PAD,
    PLACEHOLDERS,
    VOCAB_FILE,
    Vocab,
    max_prompt_len,
    render,
    split_words,
)
from scrub.data.ioi import IOI_FEATURES
from scrub.data.ioi_templates import ABBA_TEMPLATES, BABA_TEMPLATES, OBJECTS, PLACES

__all__ = [
    "BOS",
    "COPY_TEMPLATES",
    "DISTRACTOR_TEMPLATES",
    "PAD",
    "PLACEHOLDERS",
    "PROMPT_TYPES",
    "VOCAB_FILE",
    "Vocab",
    "ioi_toy",
    "make_word_ioi",
    "max_prompt_len",
    "render",
    "split_words",
]

PROMPT_TYPES = {"ABBA": (0,), "BABA": (1,), "mixed": (0, 1)}
"""Prompt type → the orders it draws (0: ABBA, IO first; 1: BABA, S first)."""

# -- the dataset --------------------------------------------------------------------------------
_COLUMNS = ("template", "order", "io", "s", "place", "object")
_FAMILIES = (ABBA_TEMPLATES, BABA_TEMPLATES)  # indexed by order


@dataclass(frozen=True)
class _Layout:
    """One template in one order: its words with placeholders, and where each one is."""

    words: tuple[str, ...]
    where: Mapping[str, tuple[int, ...]]


def _layouts() -> dict[tuple[int, int], _Layout]:
    out = {}
    for order, family in enumerate(_FAMILIES):
        for t, template in enumerate(family):
            pieces = split_words(template)
            where: dict[str, list[int]] = {}
            for i, p in enumerate(pieces):
                if p in PLACEHOLDERS:
                    where.setdefault(p, []).append(i + 1)  # +1 for <bos>
            assert len(where["[A]"]) == 1 and len(where["[B]"]) == 2, template
            out[t, order] = _Layout(tuple(pieces), {k: tuple(v) for k, v in where.items()})
    return out


def _draw_distinct(rng: np.random.Generator, pool: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """One element of ``pool`` per row of ``avoid``, never equal to that row's value."""
    out = rng.choice(pool, size=len(avoid))
    clash = out == avoid
    while clash.any():
        out[clash] = rng.choice(pool, size=int(clash.sum()))
        clash = out == avoid
    return out


def _draw(
    n: int,
    rng: np.random.Generator,
    *,
    vocab: Vocab,
    names: str,
    templates: str,
    orders: tuple[int, ...],
    keep: Mapping[str, np.ndarray] | None = None,
    abc: bool = False,
) -> dict[str, np.ndarray]:
    """Columns of ``n`` examples: kept columns copied, the others drawn from the splits.

    ``s2`` (the name at the second ``[B]`` slot) is ``s``, or with ``abc`` a third name.
    """
    keep = keep or {}
    name_ids = vocab.ids(vocab.names(names))
    template_ids = np.array(vocab.templates(templates), dtype=np.int64)
    if len(name_ids) < 2 or len(template_ids) == 0:
        raise ValueError(f"the {names!r} names / {templates!r} templates split is too small")
    cols: dict[str, np.ndarray] = {}
    cols["template"] = keep.get("template", rng.choice(template_ids, size=n))
    cols["order"] = keep.get("order", rng.choice(np.array(orders, dtype=np.int64), size=n))
    if "io" in keep:
        cols["io"] = keep["io"]
        cols["s"] = keep.get("s", _draw_distinct(rng, name_ids, cols["io"]))
    else:
        cols["s"] = keep.get("s", rng.choice(name_ids, size=n))
        cols["io"] = _draw_distinct(rng, name_ids, cols["s"])
    cols["place"] = keep.get("place", rng.choice(vocab.ids(PLACES), size=n))
    cols["object"] = keep.get("object", rng.choice(vocab.ids(OBJECTS), size=n))
    if abc:
        third = _draw_distinct(rng, name_ids, cols["io"])
        clash = third == cols["s"]
        while clash.any():
            third[clash] = _draw_distinct(rng, name_ids, cols["io"][clash])
            clash = third == cols["s"]
        cols["s2"] = third
    else:
        cols["s2"] = cols["s"]
    return {k: np.asarray(cols[k]).copy() for k in (*_COLUMNS, "s2")}


def _build(
    cols: Mapping[str, np.ndarray],
    *,
    vocab: Vocab,
    params: dict,
    name: str = "ioi_toy",
    default_vocab: Path = VOCAB_FILE,
) -> Dataset:
    """Tokens and positions of the examples described by ``cols``.

    ``cols["s2"]`` (optional, default ``cols["s"]``) is the name written at the second ``[B]``
    slot (S2): a third name makes an ABC-family prompt.

    ``name`` is the dataset's generator name and ``default_vocab`` the vocabulary its
    generators read when ``params["vocab"]`` is None (the shipped model of that generator).
    """
    n = len(cols["io"])
    seq_len = max_prompt_len()
    tokens = np.full((n, seq_len), vocab.pad_id, dtype=np.int64)
    tokens[:, 0] = vocab.bos_id
    positions = {k: np.zeros((n, 1), dtype=np.int64) for k in ("IO", "S1", "S1+1", "S2", "END")}
    values = {"[A]": cols["io"], "[B]": cols["s"], "[PLACE]": cols["place"]}
    values["[OBJECT]"] = cols["object"]
    s2 = np.asarray(cols["s2"] if "s2" in cols else cols["s"])
    layouts = _layouts()
    for t, order in sorted(
        {(int(t), int(o)) for t, o in zip(cols["template"], cols["order"], strict=True)}
    ):
        layout = layouts[t, order]
        rows = np.flatnonzero((cols["template"] == t) & (cols["order"] == order))
        fixed = [(i + 1, w) for i, w in enumerate(layout.words) if w not in PLACEHOLDERS]
        for pos, word in fixed:
            tokens[rows, pos] = vocab.id(word)
        for placeholder, where in layout.where.items():
            for pos in where:
                tokens[rows, pos] = values[placeholder][rows]
        tokens[rows, layout.where["[B]"][1]] = s2[rows]
        positions["IO"][rows] = layout.where["[A]"][0]
        positions["S1"][rows] = layout.where["[B]"][0]
        positions["S1+1"][rows] = layout.where["[B]"][0] + 1
        positions["S2"][rows] = layout.where["[B]"][1]
        positions["END"][rows] = len(layout.words)
    positions["BOS"] = np.zeros((n, 1), dtype=np.int64)
    fields = {k: np.asarray(cols[k]) for k in _COLUMNS}
    fields["s2"] = s2.copy()
    fields["length"] = positions["END"][:, 0] + 1
    keeping = functools.partial(_keeping, name=name, default_vocab=default_vocab)
    return Dataset(
        name=name,
        params=params,
        tokens=token_tensor(tokens),
        positions=positions,
        fields=fields,
        features={**IOI_FEATURES, "names": _names_feature},
        generators={
            "io": keeping("io"),
            "s": keeping("s"),
            "names": keeping("io", "s"),
            "template": keeping("template", "order"),
            "order": keeping("order"),
        },
    )


def _names_feature(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """The ``(IO, S)`` token ids of each row, shape ``(len(rows), 2)`` (what ``names`` keeps)."""
    return np.stack([ds.fields["io"][rows], ds.fields["s"][rows]], axis=1)


def _keeping(*kept: str, name: str, default_vocab: Path):
    """A generator: fresh prompts keeping the ``kept`` columns of the given rows."""

    def generate(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
        p = ds.params
        vocab = Vocab.load(p["vocab"] if p["vocab"] is not None else default_vocab)
        keep = {k: ds.fields[k][rows] for k in kept}
        cols = _draw(
            len(rows),
            rng,
            vocab=vocab,
            names=p["names"],
            templates=p["templates"],
            orders=_orders(p["prompt_type"]),
            keep=keep,
            abc=bool(p.get("abc", False)),
        )
        return _build(cols, vocab=vocab, params=dict(p), name=name, default_vocab=default_vocab)

    generate.__doc__ = f"Fresh IOI-toy prompts with the same {' and '.join(kept)} as ``rows``."
    return generate


def _orders(prompt_type: str) -> tuple[int, ...]:
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be 'mixed', 'ABBA' or 'BABA', not {prompt_type!r}")
    return PROMPT_TYPES[prompt_type]


@dataset_generator
def ioi_toy(
    *,
    rng: np.random.Generator,
    size: int = 2000,
    names: str = "train",
    templates: str = "train",
    prompt_type: str = "mixed",
    vocab: str | None = None,
) -> Dataset:
    """Make ``size`` IOI prompts for the IOI-toy model (see the module docstring).

    Args:
        rng: the generator every template, order, name, place and object is drawn from.
        size: number of examples in the pool.
        names: IO and S names from the model's ``"train"`` names, its ``"heldout"`` names, or
            ``"all"``.
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
        name="ioi_toy",
        default_vocab=VOCAB_FILE,
    )


def make_word_ioi(
    *,
    rng: np.random.Generator,
    size: int,
    names: str,
    templates: str,
    prompt_type: str,
    vocab: str | None,
    name: str,
    default_vocab: Path,
    abc: bool = False,
) -> Dataset:
    """The body of the word-level IOI generators (``ioi_toy``, ``ioi_names``, ``ioi_names_abc``).

    Args:
        rng, size, names, templates, prompt_type, vocab: as :func:`ioi_toy`.
        name: the generator's registered name (the dataset's name).
        default_vocab: the vocabulary read when ``vocab`` is None.
        abc: write a third name at S2 (the ABC family; recorded as ``params["abc"]``).

    Raises:
        ValueError: as :func:`ioi_toy`.
    """
    check_pool_size(size)
    try:
        vocab_obj = Vocab.load(vocab if vocab is not None else default_vocab)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    params = {
        "size": size,
        "names": names,
        "templates": templates,
        "prompt_type": prompt_type,
        "vocab": vocab,
    }
    if abc:
        params["abc"] = True
    cols = _draw(
        size,
        rng,
        vocab=vocab_obj,
        names=names,
        templates=templates,
        orders=_orders(prompt_type),
        abc=abc,
    )
    return _build(cols, vocab=vocab_obj, params=params, name=name, default_vocab=default_vocab)
