"""Indirect-object-identification (IOI) prompt templates and word lists, as plain data.

The templates follow Wang et al. (2022), "Interpretability in the Wild: a Circuit for Indirect
Object Identification in GPT-2 small". Each template is a prompt that stops right before the
answer, with placeholders:

- ``[A]``: the indirect object (IO) — the name the model should predict next;
- ``[B]``: the subject (S), which appears twice: S1 in the opening clause, S2 in the last one;
- ``[C]``: a third name (ABC family only), replacing S2;
- ``[PLACE]``, ``[OBJECT]``: a place and an object (one value per prompt, used every time the
  placeholder occurs).

Families:

- :data:`BABA_TEMPLATES` (the paper's 15): the S name comes first,
  ``"Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to"`` → ``[A]``;
- :data:`ABBA_TEMPLATES`: the same 15 with the first two names swapped, so the IO comes first,
  ``"Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"`` → ``[A]``.
  ``ABBA_TEMPLATES[i]`` and ``BABA_TEMPLATES[i]`` differ only in that swap;
- :data:`ABC_TEMPLATES` / :data:`BAC_TEMPLATES`: ABBA / BABA with S2 replaced by ``[C]``, three
  distinct names and no right answer (the reference distribution for mean ablation).

Word lists: :data:`NAMES`, :data:`PLACES`, :data:`OBJECTS`. Every entry is a single GPT-2 BPE
token *with a leading space* (``" Mary"`` = 5335); the tests check this with the offline
tokenizer. Pitfall: in a template a placeholder is always preceded by a space and followed by a
space or punctuation, so tokenizing the text between placeholders piece by piece gives the same
ids as tokenizing the whole prompt; keep it that way when adding templates.

Everything here is an immutable tuple; word-level models (the IOI-toy model) may reuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "ABBA_TEMPLATES",
    "ABC_TEMPLATES",
    "BABA_TEMPLATES",
    "BAC_TEMPLATES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TEMPLATE_FAMILIES",
]

BABA_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
"""The paper's 15 BABA templates: S first, then IO; the prompt ends before the IO (``[A]``)."""


def _swap_first_names(template: str) -> str:
    """``"... [B] and [A] ..."`` → ``"... [A] and [B] ..."`` (only the first two names)."""
    first, second = template.index("[B]"), template.index("[A]")
    assert first < second, template
    return template[:first] + "[A]" + template[first + 3 : second] + "[B]" + template[second + 3 :]


def _replace_last_b(template: str) -> str:
    """Replace S2 (the last ``[B]``) with ``[C]``."""
    i = template.rindex("[B]")
    return template[:i] + "[C]" + template[i + 3 :]


ABBA_TEMPLATES: tuple[str, ...] = tuple(_swap_first_names(t) for t in BABA_TEMPLATES)
"""The 15 templates with the IO first: ``[A] ... [B] ... [B] ... to`` → ``[A]``."""

ABC_TEMPLATES: tuple[str, ...] = tuple(_replace_last_b(t) for t in ABBA_TEMPLATES)
"""ABBA with S2 replaced by a third name: ``[A] ... [B] ... [C] ... to``."""

BAC_TEMPLATES: tuple[str, ...] = tuple(_replace_last_b(t) for t in BABA_TEMPLATES)
"""BABA with S2 replaced by a third name: ``[B] ... [A] ... [C] ... to``."""

TEMPLATE_FAMILIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ABBA": ABBA_TEMPLATES,
        "BABA": BABA_TEMPLATES,
        "ABC": ABC_TEMPLATES,
        "BAC": BAC_TEMPLATES,
    }
)
"""Family name → its templates (index i of every family comes from the same sentence)."""

NAMES: tuple[str, ...] = tuple(
    [
        "Mary",
        "John",
        "Tom",
        "James",
        "Michael",
        "David",
        "Robert",
        "William",
        "Richard",
        "Joseph",
        "Thomas",
        "Charles",
        "Christopher",
        "Daniel",
        "Matthew",
        "Anthony",
        "Mark",
        "Paul",
        "Steven",
        "Andrew",
        "Kevin",
        "Brian",
        "George",
        "Edward",
        "Jason",
        "Jeff",
        "Ryan",
        "Jacob",
        "Gary",
        "Eric",
        "Jonathan",
        "Stephen",
        "Justin",
        "Scott",
        "Brandon",
        "Benjamin",
        "Samuel",
        "Frank",
        "Gregory",
        "Alexander",
        "Patrick",
        "Jack",
        "Dennis",
        "Jerry",
        "Tyler",
        "Aaron",
        "Henry",
        "Adam",
        "Nathan",
        "Peter",
        "Kyle",
        "Walter",
        "Ethan",
        "Jeremy",
        "Harold",
        "Keith",
        "Roger",
        "Sean",
        "Austin",
        "Carl",
        "Arthur",
        "Lawrence",
        "Dylan",
        "Jesse",
        "Jordan",
        "Bryan",
        "Billy",
        "Joe",
        "Bruce",
        "Gabriel",
        "Logan",
        "Albert",
        "Alan",
        "Juan",
        "Wayne",
        "Roy",
        "Ralph",
        "Randy",
        "Eugene",
        "Vincent",
        "Russell",
        "Louis",
        "Bobby",
        "Philip",
        "Johnny",
        "Patricia",
        "Jennifer",
        "Linda",
        "Elizabeth",
        "Barbara",
        "Susan",
        "Jessica",
        "Sarah",
        "Karen",
        "Lisa",
        "Nancy",
        "Betty",
        "Margaret",
        "Sandra",
        "Ashley",
        "Kimberly",
        "Emily",
        "Donna",
        "Michelle",
        "Carol",
        "Amanda",
        "Melissa",
        "Deborah",
        "Stephanie",
        "Rebecca",
        "Sharon",
        "Laura",
        "Cynthia",
        "Kathleen",
        "Amy",
        "Anna",
        "Angela",
        "Helen",
        "Emma",
        "Nicole",
        "Rachel",
        "Victoria",
        "Alice",
        "Julia",
        "Grace",
        "Rose",
        "Kate",
        "Lucy",
        "Sophie",
        "Max",
        "Sam",
        "Ben",
        "Dan",
        "Mike",
        "Chris",
        "Alex",
        "Matt",
        "Luke",
        "Simon",
        "Martin",
        "Tim",
        "Jim",
        "Bob",
        "Bill",
        "Steve",
        "Tony",
        "Nick",
        "Fred",
        "Ann",
        "Jane",
        "Anne",
        "Ruth",
        "Joan",
        "Jean",
        "Diana",
        "Claire",
        "Leah",
        "Sara",
        "Eva",
    ]
)
"""First names, each one GPT-2 token with a leading space (``" Mary"``)."""

PLACES: tuple[str, ...] = tuple(
    [
        "store",
        "garden",
        "restaurant",
        "school",
        "hospital",
        "office",
        "house",
        "station",
        "park",
        "beach",
        "library",
        "church",
        "museum",
        "market",
        "airport",
        "hotel",
        "kitchen",
        "bank",
        "cafe",
        "theater",
        "zoo",
        "farm",
        "lake",
        "river",
        "mall",
        "gym",
        "bar",
        "pool",
        "club",
        "shop",
        "hall",
        "city",
        "mountain",
        "forest",
        "island",
        "village",
    ]
)
"""Places, each one GPT-2 token with a leading space (``" store"``)."""

OBJECTS: tuple[str, ...] = tuple(
    [
        "ring",
        "kiss",
        "bone",
        "basketball",
        "computer",
        "necklace",
        "drink",
        "snack",
        "book",
        "ball",
        "gift",
        "letter",
        "key",
        "phone",
        "cake",
        "flower",
        "bag",
        "hat",
        "pen",
        "ticket",
        "watch",
        "box",
        "card",
        "map",
        "bottle",
        "cup",
        "toy",
        "game",
        "shirt",
        "coat",
        "shoe",
        "camera",
        "bike",
        "knife",
        "chair",
    ]
)
"""Objects, each one GPT-2 token with a leading space (``" ring"``)."""
