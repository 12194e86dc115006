"""Indirect object identification (IOI) prompts in GPT-2's tokens.

Every example is one of the templates of :mod:`scrub.data.ioi_templates` filled with names, a
place and an object, tokenized with GPT-2's tokenizer (:func:`scrub.gpt2_tokenizer`)::

    <|endoftext|> Then , ␣Mary ␣and ␣John ␣went ␣to ␣the ␣store . ␣John ␣gave ␣a ␣ring ␣to  <pad>...
    BOS               IO        S1                                   S2                END

- position 0 is always the BOS token ``<|endoftext|>`` (50256), as GPT-2 was trained with;
- the prompt stops before the answer: the model should predict the IO name (``" Mary"``) at END,
  the last prompt token;
- templates tokenize to different lengths (15 to 21 tokens with BOS), so every example is
  right-padded with 50256 to one length T, the longest template of *every* family, so that
  ``ioi`` and ``ioi_abc`` pools, their flips and generated examples all share T. A causal model
  never looks at the padding from END or before.

Two generators are registered: ``ioi`` (the IO and S names; S appears twice, S1 and S2) and
``ioi_abc`` (S2 replaced by a third name: three distinct names, no right answer; the reference
distribution for mean ablation in the IOI paper). ``prompt_type`` picks ``ABBA`` (IO first),
``BABA`` (S first) or ``mixed`` (each example one of the two at random); for ``ioi_abc``,
``ABBA``/``ABC`` means the IO-slot name comes first and ``BABA``/``BAC`` the other.

**Named positions**, ``(N, 1)`` per example, never aligned across templates: ``BOS`` (0),
``IO``, ``S1``, ``S2`` (in ``ioi_abc``: the slot of the third name), ``S1+1`` (the token after S1)
and ``END``. ``ioi_abc`` also has ``IO1`` / ``IO2`` (the first / second name of the prompt),
``S`` (the third name, = ``S2``) and ``IO1+1``. Names containing ``+`` are fine in hypothesis
files (``a0.h1@S1+1``, ``positions: [S1+1, END]``).

**Fields** (every field is a feature), one value per example:

- ``io``, ``s``, ``s2``: the GPT-2 token ids at IO, S1 and S2 (``s2 == s`` unless S2 was replaced
  or flipped). ``io`` and ``s`` are the labels of ``metric: {kind: logit_diff, correct: io,
  wrong: s, positions: END}``;
- ``template`` (index into the template list, the same sentence in every family), ``order``
  (0: ABBA, IO first; 1: BABA, S first), ``place``, ``object`` (token ids), ``length`` (real
  tokens including BOS; padding starts there).

Extra **features**: ``io_name`` / ``s_name`` (aliases of ``io`` / ``s``), ``s_duplicated``
(``s == s2``; false in ``ioi_abc``) and ``positions`` (the ``(IO, S1, S2)`` positions).

**Generators** (``sampler: {generate: FEATURE}``) make new prompts sharing one feature with each
row, everything else drawn afresh from the dataset's own distribution (its templates and
prompt type):

- ``io``: the same IO name;
- ``template``: the same template *and order* (so the same positions), new names, place, object;
- ``positions``: the same ``(IO, S1, S2)`` positions, from any allowed template and order that
  has them (often only the row's own);
- ``names``: the same ``io``, ``s`` and ``s2`` names in another template (a random order).

**Flips** (:func:`flip`) make the paper's counterfactual datasets: a new pool in which exactly
one thing changed. ``IO``, ``S``, ``S1`` and ``S2`` replace that name with a fresh random one;
``order`` swaps the first two name slots (ABBA ↔ BABA: same names, same template, positions
recomputed). Flips compose: ``flip(flip(ds, "IO", rng=rng), "order")`` or
``flip(ds, ["IO", "order"], rng=rng)``.

Pitfall: ``template`` alone does not fix the positions (ABBA and BABA of one template put IO at
different positions); condition on ``positions`` or use the ``template`` generator, which keeps
the order too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from scrub._imports import dataset_generator
from scrub.data._dataset import Dataset, Feature, check_pool_size, token_tensor
from scrub.data.ioi_templates import (
    ABC_TEMPLATES,
    BAC_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
)

__all__ = ["BOS", "FLIPS", "IOI_FEATURES", "PROMPT_TYPES", "flip", "ioi", "ioi_abc"]

BOS = 50256
"""GPT-2's ``<|endoftext|>``: the BOS at position 0 and the padding after END."""

PROMPT_TYPES = ("ABBA", "BABA", "mixed")
"""Values of ``prompt_type`` (``ioi_abc`` also takes ``ABC`` = ABBA and ``BAC`` = BABA)."""

FLIPS = ("IO", "S", "S1", "S2", "order")
"""What :func:`flip` can change."""

_SLOT = re.compile(r"\[(A|B|C|PLACE|OBJECT)\]")


# -- templates as token layouts -----------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """One template in tokens: fixed ids with holes, and where each placeholder goes."""

    ids: tuple[int, ...]  # BOS + prompt, -1 at the placeholders
    slots: dict[str, tuple[int, ...]]  # placeholder → its positions

    def at(self, slot: str) -> int:
        (pos,) = self.slots[slot]
        return pos


@functools.cache
def _layout(template: str) -> _Layout:
    """Tokenize ``template`` piece by piece; every placeholder becomes one token."""
    from scrub._tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    ids: list[int] = [BOS]
    slots: dict[str, list[int]] = {}
    pos = 0
    for m in _SLOT.finditer(template):
        text = template[pos : m.start()]
        if m.start() > 0:
            if not text.endswith(" "):
                raise ValueError(f"placeholder {m.group(0)} not preceded by a space: {template!r}")
            text = text[:-1]  # the space belongs to the (single) token that fills the slot
        ids += tok.encode(text) if text else []
        slots.setdefault(m.group(1), []).append(len(ids))
        ids.append(-1)
        pos = m.end()
    ids += tok.encode(template[pos:]) if template[pos:] else []
    return _Layout(tuple(ids), {k: tuple(v) for k, v in slots.items()})


def _single_token_ids(words: Sequence[str]) -> np.ndarray:
    from scrub._tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    out = []
    for word in words:
        ids = tok.encode(" " + word)
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} GPT-2 tokens with a leading space, not 1")
        out.append(ids[0])
    arr = np.asarray(out, dtype=np.int64)
    arr.flags.writeable = False
    return arr


@functools.lru_cache(maxsize=1)
def _words() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of NAMES, PLACES, OBJECTS (read-only)."""
    return _single_token_ids(NAMES), _single_token_ids(PLACES), _single_token_ids(OBJECTS)


def _templates(order: int) -> tuple[str, ...]:
    # Every example is rendered from the three-name form; ``ioi`` puts the S name at [C].
    return ABC_TEMPLATES if order == 0 else BAC_TEMPLATES


@functools.lru_cache(maxsize=1)
def _seq_len() -> int:
    """T: the longest template of every family, with BOS."""
    return max(len(_layout(t).ids) for ts in (ABC_TEMPLATES, BAC_TEMPLATES) for t in ts)


# -- examples -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prompts:
    """What determines a batch of prompts (all ``(n,)`` int64; names as token ids)."""

    template: np.ndarray
    order: np.ndarray
    io: np.ndarray
    s: np.ndarray
    s2: np.ndarray
    place: np.ndarray
    object: np.ndarray

    @classmethod
    def of(cls, ds: Dataset, rows: np.ndarray) -> _Prompts:
        return cls(**{name: ds.fields[name][rows].copy() for name in cls.__dataclass_fields__})


def _orders(n: int, prompt_type: str, rng: np.random.Generator) -> np.ndarray:
    if prompt_type in ("ABBA", "ABC"):
        return np.zeros(n, dtype=np.int64)
    if prompt_type in ("BABA", "BAC"):
        return np.ones(n, dtype=np.int64)
    return rng.integers(0, 2, size=n, dtype=np.int64)


def _fresh_names(
    n: int, k: int, *, exclude: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """``(n, k)`` name token ids, distinct within a row and from that row's ``exclude`` ids."""
    names = _words()[0]
    keys = rng.random((n, len(names)))
    for ids in exclude:
        keys[ids[:, None] == names[None, :]] = np.inf
    return names[np.argsort(keys, axis=1, kind="stable")[:, :k]]


def _draw(
    n: int,
    *,
    rng: np.random.Generator,
    nb_templates: int,
    prompt_type: str,
    abc: bool,
    template: np.ndarray | None = None,
    order: np.ndarray | None = None,
    io: np.ndarray | None = None,
) -> _Prompts:
    """Fresh prompts; ``template``, ``order`` and ``io`` are kept where given."""
    _, places, objects = _words()
    if template is None:
        template = rng.integers(0, nb_templates, size=n, dtype=np.int64)
    if order is None:
        order = _orders(n, prompt_type, rng)
    if io is None:
        io = _fresh_names(n, 1, exclude=(), rng=rng)[:, 0]
    others = _fresh_names(n, 2, exclude=(io,), rng=rng)
    s = others[:, 0]
    s2 = others[:, 1] if abc else s.copy()
    return _Prompts(
        template=template,
        order=order,
        io=io,
        s=s,
        s2=s2,
        place=places[rng.integers(0, len(places), size=n)],
        object=objects[rng.integers(0, len(objects), size=n)],
    )


def _build(p: _Prompts, *, name: str, params: dict) -> Dataset:
    """Render prompts to tokens, positions and fields."""
    n, seq_len = len(p.template), _seq_len()
    tokens = np.full((n, seq_len), BOS, dtype=np.int64)
    pos = {k: np.zeros(n, dtype=np.int64) for k in ("IO", "S1", "S2", "END")}
    first = np.zeros(n, dtype=np.int64)
    second = np.zeros(n, dtype=np.int64)
    fill = {"A": p.io, "B": p.s, "C": p.s2, "PLACE": p.place, "OBJECT": p.object}
    for t, o in sorted(set(zip(p.template.tolist(), p.order.tolist(), strict=True))):
        rows = np.flatnonzero((p.template == t) & (p.order == o))
        lay = _layout(_templates(o)[t])
        tokens[rows, : len(lay.ids)] = lay.ids
        for slot, where in lay.slots.items():
            for at in where:
                tokens[rows, at] = fill[slot][rows]
        pos["IO"][rows], pos["S1"][rows], pos["S2"][rows] = lay.at("A"), lay.at("B"), lay.at("C")
        pos["END"][rows] = len(lay.ids) - 1
        first[rows] = min(lay.at("A"), lay.at("B"))
        second[rows] = max(lay.at("A"), lay.at("B"))
    positions = {k: v[:, None] for k, v in pos.items()}
    positions["BOS"] = np.zeros((n, 1), dtype=np.int64)
    positions["S1+1"] = positions["S1"] + 1
    if params["family"] == "ioi_abc":
        positions["IO1"], positions["IO2"] = first[:, None], second[:, None]
        positions["S"] = positions["S2"].copy()
        positions["IO1+1"] = positions["IO1"] + 1
    fields = {k: getattr(p, k) for k in _Prompts.__dataclass_fields__}
    fields["length"] = pos["END"] + 1
    return Dataset(
        name=name,
        params=params,
        tokens=token_tensor(tokens),
        positions=positions,
        fields=fields,
        features=dict(IOI_FEATURES),
        generators={
            "io": _same_io,
            "template": _same_template,
            "positions": _same_positions,
            "names": _same_names,
        },
    )


def _positions_feature(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """The ``(IO, S1, S2)`` positions of each row, shape ``(len(rows), 3)``."""
    return np.concatenate([ds.positions[k][rows] for k in ("IO", "S1", "S2")], axis=1)


IOI_FEATURES: dict[str, Feature] = {
    "io_name": lambda ds, rows: ds.fields["io"][rows],
    "s_name": lambda ds, rows: ds.fields["s"][rows],
    "s_duplicated": lambda ds, rows: ds.fields["s"][rows] == ds.fields["s2"][rows],
    "positions": _positions_feature,
}
"""Features of every IOI-layout dataset (fields ``io``, ``s``, ``s2``; positions IO, S1, S2)."""


# -- generators ---------------------------------------------------------------------------------
def _remake(ds: Dataset, p: _Prompts) -> Dataset:
    return _build(p, name=ds.name, params=dict(ds.params))


def _opts(ds: Dataset) -> dict:
    return {
        "nb_templates": int(ds.params["nb_templates"]),
        "prompt_type": str(ds.params["prompt_type"]),
        "abc": ds.params["family"] == "ioi_abc",
    }


def _same_io(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New prompts with the IO name of ``rows``; everything else fresh."""
    io = ds.fields["io"][rows].copy()
    return _remake(ds, _draw(len(rows), rng=rng, io=io, **_opts(ds)))


def _same_template(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New prompts with the template and order of ``rows``; new names, place and object."""
    p = _Prompts.of(ds, rows)
    return _remake(ds, _draw(len(rows), rng=rng, template=p.template, order=p.order, **_opts(ds)))


def _same_positions(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """New prompts whose (IO, S1, S2) positions are those of ``rows``."""
    opts = _opts(ds)
    orders = {"ABBA": (0,), "ABC": (0,), "BABA": (1,), "BAC": (1,)}.get(opts["prompt_type"], (0, 1))
    allowed = [(t, o) for t in range(opts["nb_templates"]) for o in orders]
    key = _positions_feature(ds, rows)
    template = ds.fields["template"][rows].copy()
    order = ds.fields["order"][rows].copy()
    for i in range(len(rows)):
        own = (int(template[i]), int(order[i]))
        candidates = sorted({own, *allowed})
        match = [c for c in candidates if _slot_positions(*c) == tuple(key[i])]
        if match:  # always, unless the row's positions were edited by hand
            template[i], order[i] = match[int(rng.integers(0, len(match)))]
    return _remake(ds, _draw(len(rows), rng=rng, template=template, order=order, **opts))


@functools.cache
def _slot_positions(template: int, order: int) -> tuple[int, int, int]:
    lay = _layout(_templates(order)[template])
    return lay.at("A"), lay.at("B"), lay.at("C")


def _same_names(ds: Dataset, rows: np.ndarray, rng: np.random.Generator) -> Dataset:
    """The names of ``rows`` (``io``, ``s``, ``s2``) in another template, at a random order."""
    opts = _opts(ds)
    p = _Prompts.of(ds, rows)
    n, nb = len(rows), opts["nb_templates"]
    # A uniformly random *other* template (the same one when there is only one).
    shift = rng.integers(1, nb, size=n) if nb > 1 else 0
    template = (p.template + shift) % nb
    fresh = _draw(n, rng=rng, template=template, **opts)
    return _remake(ds, replace(fresh, io=p.io, s=p.s, s2=p.s2))


# -- flips --------------------------------------------------------------------------------------
def flip(
    ds: Dataset, what: str | Sequence[str], *, rng: np.random.Generator | None = None
) -> Dataset:
    """A new pool of ``ds``'s examples with ``what`` changed and nothing else.

    Args:
        ds: an ``ioi`` or ``ioi_abc`` dataset (its pool rows are flipped).
        what: one of :data:`FLIPS`, or a sequence of them applied in order:

            - ``"IO"``: the IO name becomes a fresh name (not one of the prompt's names);
            - ``"S"``: every occurrence of the S name (S1, and S2 where it is S) becomes one
              fresh name;
            - ``"S1"`` / ``"S2"``: only that occurrence becomes a fresh name (S is then no
              longer duplicated);
            - ``"order"``: the first two name slots swap (ABBA ↔ BABA, ABC ↔ BAC): the same
              names, template, place and object; positions are recomputed.
        rng: draws the fresh names (needed for every flip but ``"order"``).

    Returns:
        a dataset with the same name, generators and T, whose params record the flips.

    Raises:
        ValueError: an unknown flip, a dataset that is not IOI, or no ``rng`` for a name flip.
    """
    if ds.params.get("family") not in ("ioi", "ioi_abc"):
        raise ValueError(f"flip needs an ioi or ioi_abc dataset, not {ds.name!r}")
    steps = [what] if isinstance(what, str) else list(what)
    p = _Prompts.of(ds, np.arange(ds.n_base))
    for step in steps:
        p = _flip_one(p, step, rng)
    params = {**ds.params, "flips": [*ds.params.get("flips", []), *steps]}
    return _build(p, name=ds.name, params=params)


def _flip_one(p: _Prompts, what: str, rng: np.random.Generator | None) -> _Prompts:
    if what == "order":
        return replace(p, order=1 - p.order)
    if what not in FLIPS:
        raise ValueError(f"unknown flip {what!r}; flips are {', '.join(FLIPS)}")
    if rng is None:
        raise ValueError(f"flipping {what!r} draws a fresh name: pass rng=")
    new = _fresh_names(len(p.io), 1, exclude=(p.io, p.s, p.s2), rng=rng)[:, 0]
    if what == "IO":
        return replace(p, io=new)
    if what == "S":
        return replace(p, s=new, s2=np.where(p.s2 == p.s, new, p.s2))
    if what == "S1":
        return replace(p, s=new)
    return replace(p, s2=new)


# -- the registered generators ------------------------------------------------------------------
def _check(size: int, prompt_type: str, nb_templates: int, *, abc: bool) -> None:
    types = PROMPT_TYPES + (("ABC", "BAC") if abc else ())
    if prompt_type not in types:
        raise ValueError(f"prompt_type must be one of {', '.join(types)}, not {prompt_type!r}")
    if not 1 <= nb_templates <= len(ABC_TEMPLATES):
        raise ValueError(f"nb_templates must be 1..{len(ABC_TEMPLATES)}, not {nb_templates}")
    check_pool_size(size)


@dataset_generator
def ioi(
    *,
    rng: np.random.Generator,
    size: int = 1000,
    prompt_type: str = "mixed",
    nb_templates: int = 15,
) -> Dataset:
    """Make ``size`` IOI prompts (see the module docstring).

    Args:
        rng: every template, order, name, place and object is drawn from it.
        size: number of prompts in the pool.
        prompt_type: ``"ABBA"`` (IO first), ``"BABA"`` (S first) or ``"mixed"`` (each prompt
            one of the two, uniformly).
        nb_templates: use the first ``nb_templates`` of the paper's 15 templates.
    """
    return _make("ioi", rng=rng, size=size, prompt_type=prompt_type, nb_templates=nb_templates)


@dataset_generator
def ioi_abc(
    *,
    rng: np.random.Generator,
    size: int = 1000,
    prompt_type: str = "mixed",
    nb_templates: int = 15,
) -> Dataset:
    """Make ``size`` ABC prompts: the IOI templates with S2 replaced by a third name.

    Args:
        rng: every template, order, name, place and object is drawn from it.
        size: number of prompts in the pool.
        prompt_type: ``"ABBA"``/``"ABC"`` (the IO-slot name first), ``"BABA"``/``"BAC"`` or
            ``"mixed"``.
        nb_templates: use the first ``nb_templates`` templates.
    """
    return _make("ioi_abc", rng=rng, size=size, prompt_type=prompt_type, nb_templates=nb_templates)


def _make(
    family: str, *, rng: np.random.Generator, size: int, prompt_type: str, nb_templates: int
) -> Dataset:
    """``ioi`` and ``ioi_abc``: check the parameters, draw the prompts, build the dataset."""
    abc = family == "ioi_abc"
    _check(size, prompt_type, nb_templates, abc=abc)
    params = {
        "family": family,
        "size": size,
        "prompt_type": prompt_type,
        "nb_templates": nb_templates,
    }
    p = _draw(size, rng=rng, nb_templates=nb_templates, prompt_type=prompt_type, abc=abc)
    return _build(p, name=family, params=params)
