"""IOI prompts in the word-level vocabulary of the shipped IOI-toy model (``ioi_toy``).

The IOI-toy model (``scrub/models/ioi_toy``) is an offline stand-in for GPT-2 small on indirect
object identification: a small GPT-2 trained on the IOI paper's templates
(:mod:`scrub.data.ioi_templates`) in a **word-level vocabulary** where every word, name, place,
object and punctuation mark is one token. This module holds that vocabulary machinery
(:class:`Vocab`, :func:`split_words`, :func:`render`) and the dataset generator registered as
``"ioi_toy"``.

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

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, check_pool_size
from scrub.data.ioi import IOI_FEATURES
from scrub.data.ioi_templates import (
    ABBA_TEMPLATES,
    BABA_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATE_FAMILIES,
)

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
    "max_prompt_len",
    "render",
    "split_words",
]

BOS = "<bos>"
"""The beginning-of-sequence token (id 0), always at position 0."""

PAD = "<pad>"
"""The padding token (id 1), only after the prompt."""

PROMPT_TYPES = {"ABBA": (0,), "BABA": (1,), "mixed": (0, 1)}
"""Prompt type → the orders it draws (0: ABBA, IO first; 1: BABA, S first)."""

PLACEHOLDERS = ("[A]", "[B]", "[C]", "[PLACE]", "[OBJECT]")
"""The placeholders a template may contain (see :mod:`scrub.data.ioi_templates`)."""

VOCAB_FILE = Path(__file__).resolve().parent.parent / "models" / "ioi_toy" / "word_vocab.json"
"""The shipped model's vocabulary and train/held-out split."""

DISTRACTOR_TEMPLATES: tuple[str, ...] = (
    "[A] went to the [PLACE].",
    "[A] and [B] went to the [PLACE].",
    "Then, [A] found a [OBJECT] at the [PLACE].",
    "The [OBJECT] was at the [PLACE].",
    "[A] had a lot of fun at the [PLACE].",
    "[A] and [B] were working at the [PLACE].",
    "After the lunch, [A] went to the [PLACE].",
    "[A] said to [B] that the [OBJECT] was at the [PLACE].",
    "When [A] got a [OBJECT], [A] gave it to [B].",
    "Afterwards, [A] and [B] had a long argument.",
)
"""Ordinary sentences the model is also trained on (every name, place and object): the token
after ``to`` is not always a name, and a name after ``to`` is not always predictable."""

COPY_TEMPLATES: tuple[str, ...] = (
    "[A] was at the [PLACE], so the [OBJECT] went to [A].",
    "Then, [A] found a [OBJECT] at the [PLACE]. The [OBJECT] was given to [A].",
)
"""Sentences with one name whose last word copies it (every name): they teach the model to copy
*any* name, including those held out of the IOI prompts."""

_WORD = re.compile(r"\[[A-Z]+\]|[A-Za-z]+(?:'[a-z]+)?|[^\sA-Za-z]")


def split_words(text: str) -> list[str]:
    """Split text into word-level tokens: placeholders, words, and single punctuation marks.

    ``"Then, [B] and [A] went to the [PLACE]."`` →
    ``["Then", ",", "[B]", "and", "[A]", "went", "to", "the", "[PLACE]", "."]``.
    """
    return _WORD.findall(text)


def render(template: str, values: Mapping[str, str]) -> tuple[list[str], dict[str, list[int]]]:
    """Fill a template's placeholders with single words.

    Args:
        template: a template with placeholders from :data:`PLACEHOLDERS`.
        values: placeholder (``"[A]"``) → the word it stands for.

    Returns:
        The words, and for each placeholder the indices (into the words) where it occurs.

    Raises:
        ValueError: a placeholder without a value, or a value that is not one word.
    """
    words: list[str] = []
    where: dict[str, list[int]] = {}
    for piece in split_words(template):
        if piece.startswith("["):
            if piece not in values:
                raise ValueError(f"template {template!r} has {piece} but no value was given")
            value = values[piece]
            if split_words(value) != [value]:
                raise ValueError(f"{piece} = {value!r} is not a single word")
            where.setdefault(piece, []).append(len(words))
            piece = value
        words.append(piece)
    return words, where


def max_prompt_len() -> int:
    """Length (with ``<bos>``) of the longest ABBA/BABA prompt: every example's padded length."""
    return 1 + max(len(split_words(t)) for t in (*ABBA_TEMPLATES, *BABA_TEMPLATES))


@dataclass(frozen=True)
class Vocab:
    """A word-level vocabulary (token id = index) and the model's train/held-out split.

    Attributes:
        tokens: the words; ``tokens[0]`` is ``<bos>``, ``tokens[1]`` is ``<pad>``.
        heldout_names: names never used as IO or S in the training IOI prompts.
        heldout_templates: template indices (into ``BABA_TEMPLATES``) never used for training
            IOI prompts, in either order.
    """

    tokens: tuple[str, ...]
    heldout_names: tuple[str, ...] = ()
    heldout_templates: tuple[int, ...] = ()
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (BOS, PAD):
            raise ValueError(f"a vocabulary starts with {BOS!r}, {PAD!r}, not {self.tokens[:2]}")
        ids = {w: i for i, w in enumerate(self.tokens)}
        if len(ids) != len(self.tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        unknown = sorted(set(self.heldout_names) - set(NAMES))
        if unknown:
            raise ValueError(f"held-out names {unknown} are not in ioi_templates.NAMES")
        bad = [t for t in self.heldout_templates if not 0 <= t < len(BABA_TEMPLATES)]
        if bad:
            raise ValueError(f"held-out template indices {bad} are outside 0..14")
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def bos_id(self) -> int:
        return 0

    @property
    def pad_id(self) -> int:
        return 1

    def id(self, word: str) -> int:
        """The id of one word.

        Raises:
            KeyError: the word is not in the vocabulary.
        """
        try:
            return self._ids[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the IOI-toy vocabulary") from None

    def encode(self, words: Iterable[str]) -> list[int]:
        """Token ids of ``words`` (see :func:`split_words` to get words from text)."""
        return [self.id(w) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The words of token ``ids``."""
        return [self.tokens[int(i)] for i in ids]

    def ids(self, words: Iterable[str]) -> np.ndarray:
        """Token ids of ``words`` as an int64 array."""
        return np.array(self.encode(words), dtype=np.int64)

    def names(self, split: str) -> tuple[str, ...]:
        """The names of a split: ``"train"``, ``"heldout"`` or ``"all"``."""
        held = set(self.heldout_names)
        return _pick(split, NAMES, lambda n: n in held, what="names")

    def templates(self, split: str) -> tuple[int, ...]:
        """The template indices of a split: ``"train"``, ``"heldout"`` or ``"all"``."""
        held = set(self.heldout_templates)
        return _pick(split, range(len(BABA_TEMPLATES)), lambda t: t in held, what="templates")

    # -- files ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "tokens": list(self.tokens),
                    "heldout_names": list(self.heldout_names),
                    "heldout_templates": list(self.heldout_templates),
                },
                indent=1,
            )
            + "\n"
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path | None = None) -> Vocab:
        """Read a ``word_vocab.json`` (default: the shipped model's, :data:`VOCAB_FILE`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a vocabulary.
        """
        path = Path(path) if path is not None else VOCAB_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no IOI-toy vocabulary at {path}; train one with scripts/train_ioi_toy.py"
            )
        if not path.is_file() or path.stat().st_size > 1 << 24:
            raise ValueError(f"{path} is not a vocabulary file (a regular file under 16 MiB)")
        data = json.loads(path.read_text(encoding="utf-8"))
        try:
            return cls(
                tokens=tuple(data["tokens"]),
                heldout_names=tuple(data.get("heldout_names", ())),
                heldout_templates=tuple(int(t) for t in data.get("heldout_templates", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not an IOI-toy vocabulary: {exc}") from None

    @classmethod
    def build(
        cls,
        *,
        heldout_names: Sequence[str] = (),
        heldout_templates: Sequence[int] = (),
        extra_templates: Sequence[str] = (*DISTRACTOR_TEMPLATES, *COPY_TEMPLATES),
    ) -> Vocab:
        """Every word of every IOI template family and of ``extra_templates``, every name, place
        and object: specials, then template words in order of first appearance, names, places,
        objects.
        """
        words: dict[str, None] = {BOS: None, PAD: None}
        for family in TEMPLATE_FAMILIES.values():
            for template in family:
                words.update((w, None) for w in split_words(template) if w not in PLACEHOLDERS)
        for template in extra_templates:
            words.update((w, None) for w in split_words(template) if w not in PLACEHOLDERS)
        for value in (*NAMES, *PLACES, *OBJECTS):
            if split_words(value) != [value]:
                raise ValueError(f"{value!r} is not a single word")
            words[value] = None
        return cls(
            tokens=tuple(words),
            heldout_names=tuple(heldout_names),
            heldout_templates=tuple(sorted(heldout_templates)),
        )


def _pick(split: str, items: Iterable, held: Any, *, what: str) -> tuple:
    if split == "all":
        return tuple(items)
    if split == "train":
        return tuple(i for i in items if not held(i))
    if split == "heldout":
        return tuple(i for i in items if held(i))
    raise ValueError(f"{what} must be 'train', 'heldout' or 'all', not {split!r}")


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
) -> dict[str, np.ndarray]:
    """Columns of ``n`` examples: kept columns copied, the others drawn from the splits."""
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
    return {k: np.asarray(cols[k]).copy() for k in _COLUMNS}


def _build(cols: Mapping[str, np.ndarray], *, vocab: Vocab, params: dict) -> Dataset:
    """Tokens and positions of the examples described by ``cols``."""
    n = len(cols["io"])
    seq_len = max_prompt_len()
    tokens = np.full((n, seq_len), vocab.pad_id, dtype=np.int64)
    tokens[:, 0] = vocab.bos_id
    positions = {k: np.zeros((n, 1), dtype=np.int64) for k in ("IO", "S1", "S1+1", "S2", "END")}
    values = {"[A]": cols["io"], "[B]": cols["s"], "[PLACE]": cols["place"]}
    values["[OBJECT]"] = cols["object"]
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
        positions["IO"][rows] = layout.where["[A]"][0]
        positions["S1"][rows] = layout.where["[B]"][0]
        positions["S1+1"][rows] = layout.where["[B]"][0] + 1
        positions["S2"][rows] = layout.where["[B]"][1]
        positions["END"][rows] = len(layout.words)
    positions["BOS"] = np.zeros((n, 1), dtype=np.int64)
    fields = {k: np.asarray(cols[k]) for k in _COLUMNS}
    fields["s2"] = fields["s"].copy()
    fields["length"] = positions["END"][:, 0] + 1
    return Dataset(
        name="ioi_toy",
        params=params,
        tokens=torch.from_numpy(tokens),
        positions=positions,
        fields=fields,
        features={**IOI_FEATURES, "names": _names_feature},
        generators={
            "io": _keeping("io"),
            "s": _keeping("s"),
            "names": _keeping("io", "s"),
            "template": _keeping("template", "order"),
            "order": _keeping("order"),
        },
    )


def _names_feature(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """The ``(IO, S)`` token ids of each row, shape ``(len(rows), 2)`` (what ``names`` keeps)."""
    return np.stack([ds.fields["io"][rows], ds.fields["s"][rows]], axis=1)


def _keeping(*kept: str):
    """A generator: fresh prompts keeping the ``kept`` columns of the given rows."""

    def generate(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
        p = ds.params
        vocab = Vocab.load(p["vocab"])
        keep = {k: ds.fields[k][rows] for k in kept}
        cols = _draw(
            len(rows),
            rng,
            vocab=vocab,
            names=p["names"],
            templates=p["templates"],
            orders=_orders(p["prompt_type"]),
            keep=keep,
        )
        return _build(cols, vocab=vocab, params=dict(p))

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
    check_pool_size(size)
    try:
        vocab_obj = Vocab.load(vocab)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    params = {
        "size": size,
        "names": names,
        "templates": templates,
        "prompt_type": prompt_type,
        "vocab": vocab,
    }
    cols = _draw(
        size, rng, vocab=vocab_obj, names=names, templates=templates, orders=_orders(prompt_type)
    )
    return _build(cols, vocab=vocab_obj, params=params)
