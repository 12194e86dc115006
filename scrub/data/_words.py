"""The word-level vocabulary of the word-level IOI models (IOI-toy, IOI-names).

A word-level model has one token per word: ``<bos>`` (id 0, always at position 0), ``<pad>`` (id
1, right padding), every word and punctuation mark of the IOI templates
(:mod:`scrub.data.ioi_templates`) and of the distractor and copy sentences the models were also
trained on, then the names, places and objects. :func:`split_words` splits text into such words
and :func:`render` fills a template's placeholders. :class:`Vocab` is the token list together
with the model's train / held-out split (names and templates) and its name pool, as saved in the
model's ``word_vocab.json``.

Pitfalls:

- The file is ``word_vocab.json``, not ``vocab.json``: in a model directory the TransformerBridge
  loader would read a ``vocab.json`` as a GPT-2 BPE tokenizer and fail.
- Token ids are the positions in one model's token list; two word-level models do not share
  ids (the IOI-names vocabulary has many more names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    "VOCAB_FILE",
    "Vocab",
    "max_prompt_len",
    "render",
    "split_words",
]

BOS = "<bos>"
"""The beginning-of-sequence token (id 0), always at position 0."""

PAD = "<pad>"
"""The padding token (id 1), only after the prompt."""

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
        name_pool: every name IO and S are drawn from (default: ``ioi_templates.NAMES``; a
            model trained on more names lists them all here, and ``word_vocab.json`` keeps the
            list under ``"names"``).
    """

    tokens: tuple[str, ...]
    heldout_names: tuple[str, ...] = ()
    heldout_templates: tuple[int, ...] = ()
    name_pool: tuple[str, ...] = NAMES
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (BOS, PAD):
            raise ValueError(f"a vocabulary starts with {BOS!r}, {PAD!r}, not {self.tokens[:2]}")
        ids = {w: i for i, w in enumerate(self.tokens)}
        if len(ids) != len(self.tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        missing = sorted(set(self.name_pool) - set(ids))
        if missing:
            raise ValueError(f"names {missing[:5]} of the name pool are not tokens")
        unknown = sorted(set(self.heldout_names) - set(self.name_pool))
        if unknown:
            raise ValueError(f"held-out names {unknown[:5]} are not in the name pool")
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
        return _pick(split, self.name_pool, lambda n: n in held, what="names")

    def templates(self, split: str) -> tuple[int, ...]:
        """The template indices of a split: ``"train"``, ``"heldout"`` or ``"all"``."""
        held = set(self.heldout_templates)
        return _pick(split, range(len(BABA_TEMPLATES)), lambda t: t in held, what="templates")

    # -- files ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        data: dict[str, list] = {
            "tokens": list(self.tokens),
            "heldout_names": list(self.heldout_names),
            "heldout_templates": list(self.heldout_templates),
        }
        if self.name_pool != NAMES:
            data["names"] = list(self.name_pool)
        return json.dumps(data, indent=1) + "\n"

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
                name_pool=tuple(data.get("names", NAMES)),
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
        names: Sequence[str] = NAMES,
    ) -> Vocab:
        """Every word of every IOI template family and of ``extra_templates``, every name, place
        and object: specials, then template words in order of first appearance, names, places,
        objects.

        Raises:
            ValueError: a name, place or object that is not one word, or a name that is also a
                template word.
        """
        words: dict[str, None] = {BOS: None, PAD: None}
        for family in TEMPLATE_FAMILIES.values():
            for template in family:
                words.update((w, None) for w in split_words(template) if w not in PLACEHOLDERS)
        for template in extra_templates:
            words.update((w, None) for w in split_words(template) if w not in PLACEHOLDERS)
        clash = sorted(set(names) & set(words))
        if clash:
            raise ValueError(f"names {clash[:5]} are also template words")
        for value in (*names, *PLACES, *OBJECTS):
            if split_words(value) != [value]:
                raise ValueError(f"{value!r} is not a single word")
            words[value] = None
        return cls(
            tokens=tuple(words),
            heldout_names=tuple(heldout_names),
            heldout_templates=tuple(sorted(heldout_templates)),
            name_pool=tuple(names),
        )


def _pick(split: str, items: Iterable, held: Any, *, what: str) -> tuple:
    if split == "all":
        return tuple(items)
    if split == "train":
        return tuple(i for i in items if not held(i))
    if split == "heldout":
        return tuple(i for i in items if held(i))
    raise ValueError(f"{what} must be 'train', 'heldout' or 'all', not {split!r}")
