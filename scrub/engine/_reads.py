"""Where a group's kernel-computed head output is read: the positions its queries need.

Context: the block-input hook computes a fused or output group's heads with the kernels
(:mod:`scrub.engine._kernels`) and, where the group's pass ends there, only stores their
``z`` for the groups that splice or patch them. Those moves read ``z`` at their own positions
(kcomp: the root reads the induction heads only at REP, 10 of 29 positions), so the kernels need
queries and attention rows only there (:meth:`scrub.engine._kernels.Kernels.heads`, ``at``).

Pitfall: every reader must be known. :func:`read_columns` therefore scans every move of the
plan that reads ``(gid, comp)`` (another group's patch or splice from it, and the group's own
"old" value at a splice's positions) and gives up (``None``: every position) when any of them
reads different positions in different rows, when no move reads it at all, when a fused child
shares the group's outputs, or when the group's outputs are kept whole for later calls (the
subtree cache: other hypotheses may read them elsewhere). The kernels leave every other
position NaN, so a reader this scan missed poisons the result instead of passing silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._model import ScrubModel
from scrub._positions import PositionSpec
from scrub.engine._plan import Group, Move, Plan

__all__ = ["query_columns", "read_columns", "restricted"]

Resolve = Callable[[PositionSpec, np.ndarray], Tensor]


class _Run(Protocol):  # what restricted() uses of a ChunkRun
    model: ScrubModel
    store: dict[tuple[int, Component], Tensor]

    def resolve(self, spec: PositionSpec, rows: np.ndarray) -> Tensor: ...
    def at(self, x: Tensor, pos: Tensor) -> Tensor: ...
    def source_output(self, move: Move, live: Tensor | None) -> Tensor: ...
    def assemble(
        self, group: Group, target: tuple[Component, Channel], resid: Tensor
    ) -> Tensor: ...


def read_columns(
    plan: Plan,
    gid: int,
    comp: Component,
    resolve: Resolve,
    columns: dict[int, Tensor],
) -> Tensor | None:
    """The positions (1-D, unsorted, possibly repeated) at which anything reads ``comp``'s
    output in group ``gid``, or ``None`` when that is not known for every row.

    ``resolve`` is :meth:`scrub.engine._chunk.ChunkRun.resolve` and ``columns`` its map from a
    resolved tensor's id to the one row all rows share (absent: rows differ)."""
    if any(g.into == gid for g in plan.groups):
        return None
    found: list[Tensor] = []
    for group in plan.groups:
        moves = [*group.patches, *(m for ms in group.splices.values() for m in ms)]
        for move in moves:
            if move.component != comp:
                continue
            if move.source.group == gid:
                pos = resolve(move.spec, move.source.rows)
            elif group.gid == gid:  # the group's own output, replaced at a splice
                pos = resolve(move.spec, group.rows)
            else:
                continue
            cols = columns.get(id(pos))
            if cols is None:
                return None
            found.append(cols)
    if not found:
        return None
    return torch.cat(found)


def query_columns(
    plan: Plan,
    group: Group,
    targets: set[tuple[Component, Channel]],
    resolve: Resolve,
    columns: dict[int, Tensor],
) -> Tensor | None:
    """The sorted positions at which anything reads the heads ``group`` computes at a block
    input (its ``targets`` there), if their ``z`` is only stored (a virtual group, or one
    whose pass ends at this block) and every read is known; ``None``: every position."""
    heads = {c for c, ch in group.targets if (c, ch) in targets}
    if not heads or not (group.virtual or all(group.stop <= c.layer for c in heads)):
        return None  # nothing here, or its z feeds the rest of its own pass
    found = [read_columns(plan, group.gid, c, resolve, columns) for c in heads]
    if any(f is None for f in found):
        return None
    return torch.unique(torch.cat([f for f in found if f is not None]))


def restricted(
    run: _Run,
    group: Group,
    target: tuple[Component, Channel],
    resid: Tensor,
    at: Tensor,
    columns: dict[int, Tensor],
) -> Tensor:
    """A target's assembled input (residual plus direct-path deltas) at the sorted positions
    ``at`` only: ``rows × len(at) × d``, what ``run.assemble(...)[:, at]`` would be.

    Context: the kernels' queries at the read positions (:func:`query_columns`) need their
    input only there, so the q input is gathered there instead of copying the whole residual
    stream. Pitfall: a splice's positions outside ``at`` are dropped (no query reads them);
    splices at positions that differ by row fall back to the whole assembly, then gathered."""
    moves = group.splices[target]
    dsts = [run.resolve(m.spec, group.rows) for m in moves]
    if any(id(d) not in columns for d in dsts):
        return run.assemble(group, target, resid).index_select(1, at)
    value = resid.index_select(1, at)
    for move, dst in zip(moves, dsts, strict=True):
        cols = columns[id(dst)]
        idx = torch.searchsorted(at, cols).clamp_(max=len(at) - 1)
        hit = at[idx] == cols
        src = run.resolve(move.spec, move.source.rows)
        comp = move.component
        new = run.at(run.source_output(move, None), src)
        delta = run.model.contribution(comp, new - run.at(run.store[group.gid, comp], dst))
        if not bool(hit.all()):
            idx, delta = idx[hit], delta[:, hit]
        value.index_add_(1, idx, delta)
    return value
