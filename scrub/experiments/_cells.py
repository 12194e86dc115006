"""Grid cells as hypotheses: every patch of a discovery experiment is a small treeified model.

DESIGN.md ("Other experiments that are special cases") fixes what each cell *is*:

- **activation patch** of component c at positions P: the root (``logits``, computed on the base
  run) has one child ``patched`` mapping ``c@P`` through **all paths**, whose data is the source:
  every reader of c's output at P sees c's value on the source example;
- **path patch** sender s → receiver r through channel ch at P: the root has a child
  ``receiver`` (r, all paths, computed on the base run), whose child ``sender`` (s, on the
  source) feeds r's ``ch`` input at P through the **direct** path only. The engine adds
  ``out_s(source) − out_s(base)`` into r's own ``ch`` input and nowhere else (TransformerLens's
  ``get_act_patch_direct_path``, exactly: no frozen LayerNorm); r's new output then reaches
  everything downstream. Into ``logits`` the sender is the root's direct child;
- **iterative path patch** (REMIX): the same with a receiver *set* (one node of several
  components), for every upstream head and MLP as the sender.

Each cell is built as a hypothesis dict (``nodes:``) validated by :func:`scrub.hypothesis_from_dict`
and sampled by :func:`scrub.sample_tree`; the base and source rows are drawn once per experiment
and handed to every cell's nodes by :class:`GivenRows`, so all cells share the reference batch,
the base run and the source examples (their comparisons are paired).

A grid's cells differ only in components, positions and channels, so their draws are the same:
:func:`trees_of` samples the first cell of each tree shape with :func:`scrub.sample_tree` and
gives every later cell of that shape a copy of those draws on its own treeified hypothesis
(:func:`draw_key` says when two trees' draws must be equal). Every cell is still validated on
its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scrub._bind import BoundHypothesis
from scrub._components import Component, ModelShape, parse_component
from scrub._errors import HypothesisError
from scrub._gc import no_gc
from scrub._hypothesis import hypothesis_from_dict
from scrub._model import ScrubModel
from scrub._positions import format_positions
from scrub._samplers import ExactSampler, SampleContext
from scrub._tree import SampledTree, TreeNode, sample_tree, treeify
from scrub.data import Dataset

__all__ = [
    "Cell",
    "GivenRows",
    "activation_cells",
    "components_of",
    "draw_key",
    "path_cells",
    "trees_of",
]


@dataclass(frozen=True, eq=False)
class GivenRows:
    """A sampler that returns rows drawn once for the whole experiment (base or source).

    Two are equal only if they are the same object (the rows are not compared).
    """

    rows: np.ndarray
    role: str

    def sample(self, parent_rows: np.ndarray, ctx: SampleContext) -> np.ndarray:
        assert len(parent_rows) == len(self.rows), "every node is row-aligned with the reference"
        return self.rows.copy()

    def __repr__(self) -> str:
        return f"GivenRows({self.role!r})"


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: its coordinates and its hypothesis ``nodes:`` mapping.

    ``roles`` says which node is computed on which experiment-wide rows: ``("out", "other",
    "base")`` gives the root's other inputs the base rows.
    """

    coords: tuple[Any, ...]
    nodes: dict[str, Any]
    roles: tuple[tuple[str, str, str], ...]


def components_of(
    value: str | Sequence[str], shape: ModelShape, *, key: tuple, allow_logits: bool = False
) -> list[Component]:
    """Expand ``heads`` / ``mlps`` / ``all`` or a list of names; check them against the model."""
    heads = [Component("head", L, h) for L in range(shape.n_layers) for h in range(shape.n_heads)]
    mlps = [Component("mlp", L) for L in range(shape.n_layers)]
    if value == "heads":
        return heads
    if value == "mlps":
        return mlps
    if value == "all":
        return sorted(heads + mlps, key=lambda c: c.order(shape.n_layers))
    out: list[Component] = []
    for i, name in enumerate(value):
        try:
            comps = parse_component(name)
            for comp in comps:
                shape.check(comp)
                if comp.kind == "logits" and not allow_logits:
                    raise HypothesisError(
                        "'logits' is the output, not a component with an output to patch",
                        hint="list heads (a1.h0), MLPs (m0) or embeddings",
                    )
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=(*key, i)) from None
        out.extend(comps)
    return out


def _at(comp: Component, positions: tuple | None) -> str:
    return comp.name if positions is None else f"{comp.name}@{format_positions(positions)}"


def activation_cells(comps: Sequence[Component], positions: Sequence[tuple | None]) -> list[Cell]:
    """One cell per (component, positions): its output from the source, all paths."""
    cells = []
    for comp in comps:
        for pos in positions:
            nodes = {
                "out": {
                    "components": ["logits"],
                    "inputs": [{"node": "patched", "paths": "all", "positions": _list(pos)}],
                },
                "patched": {"components": [comp.name]},
            }
            roles = (("out", "other", "base"), ("patched", "sampler", "source"))
            cells.append(Cell((comp.name, _label(pos)), nodes, roles))
    return cells


def path_cells(
    shape: ModelShape,
    senders: Sequence[Component],
    receivers: Sequence[Sequence[Component]],
    channels: Sequence[str] | None,
    positions: Sequence[tuple | None],
    *,
    by_channel: bool,
) -> list[Cell | None]:
    """Cells sender × receiver set (× channel when ``by_channel``) × positions.

    A cell whose sender is not upstream of every receiver (or whose receivers lack the channel)
    is ``None``: not a path of the model.
    """
    cells: list[Cell | None] = []
    for sender in senders:
        for group in receivers:
            for chans in [[c] for c in channels or ()] if by_channel else [channels]:
                for pos in positions:
                    coords: tuple[Any, ...] = (sender.name, "+".join(r.name for r in group))
                    coords += ((chans[0],) if by_channel and chans else ()) + (_label(pos),)
                    cells.append(_path_cell(shape, sender, group, chans, pos, coords))
    return cells


def _path_cell(shape, sender, group, chans, pos, coords) -> Cell | None:
    readable = {ch for r in group for ch in r.channels}
    chans = list(chans) if chans else sorted(readable)
    if not all(shape.upstream(sender, r) for r in group) or not set(chans) <= readable:
        return None
    edge = {"node": "sender", "channels": chans, "positions": _list(pos)}
    if [r.kind for r in group] == ["logits"]:
        nodes = {"out": {"components": ["logits"], "inputs": [edge]}}
        roles: tuple = (("out", "other", "base"), ("sender", "sampler", "source"))
    else:
        nodes = {
            "out": {
                "components": ["logits"],
                "inputs": [{"node": "receiver", "channels": "in", "paths": "all"}],
            },
            "receiver": {"components": [r.name for r in group], "inputs": [edge]},
        }
        roles = (
            ("out", "other", "base"),
            ("receiver", "other", "base"),
            ("sender", "sampler", "source"),
        )
    nodes["sender"] = {"components": [sender.name]}
    return Cell(coords, nodes, roles)


def _list(pos: tuple | None) -> list | None:
    return None if pos is None else list(pos)


def _label(pos: tuple | None) -> str | int:
    if pos is None:
        return "all"
    return pos[0] if len(pos) == 1 else format_positions(pos)


def trees_of(
    cells: Sequence[Cell],
    base: dict[str, Any],
    model: ScrubModel,
    dataset: Dataset,
    rows: dict[str, np.ndarray],
    *,
    n: int,
    seed: int,
    file: str | None,
) -> list[SampledTree]:
    """Each cell's hypothesis, validated, given the experiment's rows and sampled.

    Cells whose trees have the same :func:`draw_key` share one :func:`scrub.sample_tree` call:
    later ones get copies of the first one's draws.
    """
    samplers = {role: GivenRows(r, role) for role, r in rows.items()}
    drawn: dict[tuple, SampledTree] = {}
    trees = []
    with no_gc():
        for cell in cells:
            bound = _bound(cell, base, model, dataset, samplers, file=file)
            trees.append(_sampled(bound, drawn, n=n, seed=seed))
    return trees


_PURE_SAMPLERS = (GivenRows, ExactSampler)
"""Samplers whose draw is a function of the parent's rows alone (no stream, no dataset change)."""


def draw_key(root: TreeNode) -> tuple | None:
    """What a tree's draws depend on beyond the dataset, ``n`` and ``seed``, or ``None``.

    With only :data:`_PURE_SAMPLERS` (the root's data is the reference batch, every other draw
    a function of its parent's rows), :func:`scrub.sample_tree`'s draws are fixed by each
    node's name, path and samplers in walk order; they make no warnings and no self-draw
    records. ``None`` when some drawn sampler is another kind (its draws are not shared).
    """
    key = []
    for node in root.walk():
        sampler = node.interp.sampler
        other = node.interp.other if (not node.is_leaf or node is root) else None
        for s in (sampler, other):
            if s is not None and type(s) not in _PURE_SAMPLERS:
                return None
        key.append((node.name, node.path, sampler, other))
    return tuple(key)


def _sampled(
    bound: BoundHypothesis, drawn: dict[tuple, SampledTree], *, n: int, seed: int
) -> SampledTree:
    """``sample_tree(bound)``, or the same draws copied from an earlier tree of its shape."""
    try:
        root = treeify(bound.hypothesis)
    except HypothesisError as exc:
        raise exc.with_context(file=bound.hypothesis.file) from None
    key = draw_key(root)
    first = None if key is None else drawn.get(key)
    if first is None:
        tree = sample_tree(bound, n=n, seed=seed)
        if key is not None:
            drawn[key] = tree
        return tree
    assert not first.warnings and not first.self_draws, "pure samplers neither warn nor self-draw"
    return SampledTree(
        root,
        {k: v.copy() for k, v in first.data.items()},
        {k: v.copy() for k, v in first.other.items()},
        first.dataset,
        [],
        {},
    )


def _bound(
    cell: Cell,
    base: dict[str, Any],
    model: ScrubModel,
    dataset: Dataset,
    samplers: dict[str, GivenRows],
    *,
    file: str | None,
) -> BoundHypothesis:
    """The cell's hypothesis, validated, its nodes given the experiment's rows."""
    try:
        hyp = hypothesis_from_dict({**base, "nodes": cell.nodes}, file=file)
    except HypothesisError as exc:
        raise HypothesisError(
            f"grid cell {cell.coords} is not a valid hypothesis: {exc.problem}",
            file=file,
            hint=exc.hint,
        ) from None
    for name, slot, role in cell.roles:
        interp = hyp.graph.nodes[name]["interp"]
        hyp.graph.nodes[name]["interp"] = dataclasses.replace(interp, **{slot: samplers[role]})
    return BoundHypothesis(hyp, model, dataset)
