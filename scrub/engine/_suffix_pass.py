"""The suffix blocks' passes: which roots skip the bridge, and the chain over their layers.

Context: :mod:`scrub.engine._suffix` restates a block at a suffix of query positions. Here
the engine picks the roots it evaluates that way (:func:`suffix_roots`, once per plan, as
:mod:`scrub.engine._chunk` checks the last block's lever per pass): roots of final passes
whose only changes are all-paths patches of heads and MLPs (an activation-patching cell) or,
without grouped-query attention, the assembled q/k/v inputs of heads of one layer, patched
there or later only (a direct-path cell's receivers, fused into the root; their ``z`` at every
position by the kernels, as the chunk's block-input hook computes it, then written like a
patch), which record nothing else in their pass (a direct splice of an output computed before
their first changed layer is served by the cache), read no attention pattern, and
whose rows' plain residual streams are shared with another such root (a grid's base run) or
already cached: the cache holds those streams at every layer from the root's first changed
one, and the plain keys and values are computed from them once per rows and layer.

:func:`evaluate_suffix` runs them after the chunk's other passes, when every output they
read is known. The suffix start ``s`` of a root is the first position any of its patches or
receivers' splices writes on any row of the chunk, or the first read position if that is
earlier. Roots with the
same ``s`` run together (grouping by ``s`` keeps every tensor rectangular: measured on the
IOI-toy activation grid, coarser buckets, i.e. padding, save nothing and one bucket from 0
costs 1.5x), each joining at its first changed layer, where the block is computed at its
patched positions only (at positions ``s ..`` for receivers, whose ``z`` changes there) (queries of roots on the same rows stacked along the positions over
their shared plain keys); from the next layer on at positions ``s ..`` with the plain keys and
values before ``s`` (shared, tiled), the last block at the metric's positions only. The final
residual stream is NaN elsewhere: nothing reads it (the logits are unembedded at the read
positions; a root's direct splices into the logits add there harmlessly).

Pitfall: causality is what makes positions < s plain; bidirectional models never get here
(the kernels refuse them, so there are no suffix blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from scrub._components import Component
from scrub._model import ScrubModel
from scrub._positions import PositionSpec
from scrub.engine._kernels import Kernels
from scrub.engine._plan import Group, Move, Plan, Target, first_layer
from scrub.engine._suffix import Patch, SuffixBlocks, write_patch

__all__ = ["evaluate_suffix", "suffix_roots"]


class _Run(Protocol):
    """What :func:`evaluate_suffix` needs of the chunk's run (:class:`scrub.engine._chunk.ChunkRun`)."""

    size: int
    positions: np.ndarray | None
    batch: Tensor

    def resolve(self, spec: PositionSpec, rows: np.ndarray) -> Tensor: ...

    def source_output(self, move: Move, live: Tensor | None) -> Tensor: ...

    def finish(self, root: Group, resid: Tensor) -> None: ...

    kernels: Kernels | None
    store: dict[tuple[int, Component], Tensor]

    def assemble_shared(
        self, memo: dict[tuple, Tensor], group: Group, target: Target, resid: Tensor
    ) -> Tensor: ...


def suffix_roots(
    model: ScrubModel,
    plan: Plan,
    holds: Callable[[int, np.ndarray], bool],
    *,
    receivers: bool = False,
) -> dict[int, int]:
    """The roots the suffix blocks evaluate, each with its first changed layer (module
    docstring). ``holds``: whether the cache holds the plain residual stream entering this
    layer on these rows. ``receivers``: also roots that assemble the q/k/v inputs of heads of
    one layer (direct-path receivers, recomputed by the kernels; not under grouped-query
    attention), patched at that layer or later only."""
    n_layers = model.shape.n_layers
    found: dict[int, int] = {}
    for gid in plan.roots:
        group = plan.groups[gid]
        heads = {c for c, _ in group.targets if c.kind == "head"}
        layers = {c.layer for c in heads}
        if (
            group.virtual
            or group.sets
            or not group.fused
            or group.into is not None
            or group.ablate
            or not (group.patches or heads)
            or group.stop != n_layers
            or any(c.kind not in ("logits", "head") for c, _ in group.targets)
            or (heads and not receivers)
            or len(layers) > 1
            or any({(c, ch) for ch in ("q", "k", "v")} - set(group.targets) for c in heads)
            or any(m.component.kind not in ("head", "mlp") for m in group.patches)
            or any(m.component in heads for m in group.patches)  # recorded after the patch
            or not set(group.record) <= set(group.served) | heads  # nothing else recorded
        ):
            continue
        begin = min([first_layer(model, m.component) for m in group.patches] + list(layers))
        if layers and begin < min(layers):
            continue  # the receivers' inputs would not be a plain pass's
        found[gid] = begin
    # A pass left with nothing but virtual groups has no rows to run: keep its roots in it.
    for _, gids in plan.passes:
        rest = [g for g in gids if g not in found]
        if rest and all(plan.groups[g].virtual for g in rest):
            for g in gids:
                found.pop(g, None)
    # Worth it where the rows' plain streams are shared (a grid's base run) or already cached.
    count: dict[bytes, int] = {}
    for gid in found:
        key = plan.groups[gid].rows.tobytes()
        count[key] = count.get(key, 0) + 1
    return {
        gid: begin
        for gid, begin in found.items()
        if count[plan.groups[gid].rows.tobytes()] > 1
        or all(holds(layer, plan.groups[gid].rows) for layer in range(begin, n_layers))
    }


def evaluate_suffix(
    blocks: SuffixBlocks,
    run: _Run,
    roots: list[Group],
    begins: dict[int, int],
    streams: dict[tuple[bytes, int], Tensor],
) -> None:
    """The roots' final residual streams at the read positions (others NaN: nothing reads
    them), handed to ``run.finish``. ``streams``: the plain residual stream entering each
    layer from each root's first changed layer on, on the chunk's rows, by (rows, layer)."""
    assert run.positions is not None
    n_layers = blocks.n_layers
    any_stream = next(iter(streams.values()))
    read = torch.as_tensor(run.positions, device=any_stream.device)
    by_start: dict[int, list[Group]] = {}
    for root in roots:
        moves = list(root.patches)
        moves += [m for (c, _), ms in root.splices.items() if c.kind == "head" for m in ms]
        start = min([int(read.min())] + [int(run.resolve(m.spec, root.rows).min()) for m in moves])
        by_start.setdefault(start, []).append(root)
    plain: dict[tuple[bytes, int], tuple[Tensor, Tensor]] = {}

    def plain_kv(rows: np.ndarray, layer: int) -> tuple[Tensor, Tensor]:
        key = (rows.tobytes(), layer)
        if key not in plain:
            plain[key] = blocks.kv(layer, streams[key])
        return plain[key]

    def stacked_kv(groups: list[Group], layer: int, upto: int) -> tuple[Tensor, Tensor]:
        """The plain keys and values before ``upto`` of the stacked roots: once for all of
        them where they share their rows (:meth:`SuffixBlocks.__call__` tiles them)."""
        if len({g.rows.tobytes() for g in groups}) == 1:
            k, v = plain_kv(groups[0].rows, layer)
            return k[:, :, :upto], v[:, :, :upto]
        keys, values = zip(*(plain_kv(g.rows, layer) for g in groups), strict=True)
        return torch.cat([k[:, :, :upto] for k in keys]), torch.cat(
            [v[:, :, :upto] for v in values]
        )

    size, seq_len = run.size, any_stream.shape[1]
    for start, members in sorted(by_start.items()):
        x: Tensor | None = None  # the active roots' stream at positions start.., stacked
        active: list[Group] = []
        for layer in range(min(begins[g.gid] for g in members), n_layers):
            last = layer == n_layers - 1
            joining = [g for g in members if begins[g.gid] == layer]
            # In the last block, or with receivers (whose z changes at every position from
            # ``start``), the first changed block is computed as the others are.
            whole = [g for g in joining if last or _receives(g, layer)]
            if whole:
                fresh = [streams[g.rows.tobytes(), layer][:, start:] for g in whole]
                x = torch.cat(fresh if x is None else [x, *fresh])
                active += whole
                joining = [g for g in joining if g not in whole]
            if active:
                assert x is not None
                kv = stacked_kv(active, layer, start) if start else None
                query = read.repeat(len(active), 1) if last else None
                placed = [
                    (g, slice(i * size, (i + 1) * size), slice(None), read if last else None)
                    for i, g in enumerate(active)
                ]
                z = {
                    g.gid: _receivers(run, g, layer, streams[g.rows.tobytes(), layer])
                    for g in whole
                }
                patch = _patcher(run, placed, layer, start, z)
                x = blocks(layer, x, kv, query, patch)
            if joining:  # their first changed block, at the positions it patches only
                fresh = _first_block(blocks, run, joining, layer, start, streams, plain_kv)
                x = torch.cat(fresh if x is None else [x, *fresh])
                active += joining
        assert x is not None
        for i, root in enumerate(active):
            resid = x.new_full((size, seq_len, x.shape[-1]), float("nan"))
            resid[run.batch, read] = x[i * size : (i + 1) * size]
            run.finish(root, resid)


def _first_block(
    blocks: SuffixBlocks,
    run: _Run,
    roots: list[Group],
    layer: int,
    start: int,
    streams: dict[tuple[bytes, int], Tensor],
    plain_kv: Callable[[np.ndarray, int], tuple[Tensor, Tensor]],
) -> list[Tensor]:
    """The stream entering block ``layer + 1`` at positions ``start ..`` of roots whose first
    change is a patch in block ``layer``: their input there is a plain pass's, so the block's
    output differs from the plain pass's only where the patches write (a head's ``z`` and an
    MLP's output reach the residual stream at their own position in their block). The block
    is computed there only (the patched positions), with the plain keys and values."""
    where = [
        torch.cat([run.resolve(m.spec, g.rows) for m in g.patches if m.component.layer == layer], 1)
        for g in roots
    ]
    # Roots on the same rows share the plain keys: their queries are stacked along the
    # positions (one attention over those keys), not along the rows.
    shared: dict[tuple[bytes, int], list[int]] = {}
    for i, pos in enumerate(where):
        shared.setdefault((roots[i].rows.tobytes(), pos.shape[1]), []).append(i)
    out: list[Tensor] = [torch.empty(0)] * len(roots)
    for (_, width), members in shared.items():
        rows = roots[members[0]].rows
        stream = streams[rows.tobytes(), layer]
        query = torch.cat([where[i] for i in members], 1)
        cols = [slice(k * width, (k + 1) * width) for k in range(len(members))]
        placed: list[tuple[Group, slice, slice, Tensor | None]] = [
            (roots[i], slice(None), c, where[i]) for i, c in zip(members, cols, strict=True)
        ]
        patch = _patcher(run, placed, layer, 0)
        done = blocks.at(layer, stream[run.batch, query], query, plain_kv(rows, layer), patch)
        after = streams[rows.tobytes(), layer + 1][:, start:]
        for i, c in zip(members, cols, strict=True):
            fresh = after.clone()
            fresh[run.batch, where[i] - start] = done[:, c]
            out[i] = fresh
    return out


def _receives(root: Group, layer: int) -> bool:
    """Whether ``root`` assembles the inputs of heads of block ``layer`` (receivers)."""
    return any(c.kind == "head" and c.layer == layer for c, _ in root.targets)


def _receivers(run: _Run, root: Group, layer: int, stream: Tensor) -> dict[Component, Tensor]:
    """The ``z`` of ``root``'s receivers in block ``layer`` (every position), by the kernels
    from their assembled inputs (the plain stream plus the direct-path deltas), as the chunk's
    block-input hook computes them; recorded where the root records them."""
    if not _receives(root, layer):
        return {}
    assert run.kernels is not None
    memo: dict[tuple, Tensor] = {}
    inputs: dict[Component, dict] = {}
    for target in root.targets:
        comp, ch = target
        if comp.kind == "head" and comp.layer == layer:
            inputs.setdefault(comp, {})[ch] = run.assemble_shared(memo, root, target, stream)
    z = run.kernels.heads(inputs)
    for comp, value in z.items():
        if comp in root.record:
            run.store[root.gid, comp] = value
    return z


def _patcher(
    run: _Run,
    placed: list[tuple[Group, slice, slice, Tensor | None]],
    layer: int,
    offset: int,
    z: dict[int, dict[Component, Tensor]] | None = None,
) -> Patch | None:
    """The patches of block ``layer`` of roots placed at (rows, query columns) of the block's
    values, each at positions ``offset ..`` or at its own ``(rows, Q)`` absolute positions
    (a root's patches in its order), after the receivers' ``z`` (by root, every position),
    as the chunk's output hook writes them."""
    z = z or {}
    todo = [
        (group, rows, cols, read, move)
        for group, rows, cols, read in placed
        for move in group.patches
        if move.component.layer == layer
    ]
    own = [
        (rows, read, comp, value)
        for g, rows, _, read in placed
        for comp, value in z.get(g.gid, {}).items()
    ]
    if not todo and not own:
        return None

    def patch(kind: str, t: Tensor) -> None:
        for rows, read, comp, value in own if kind == "z" else ():
            at = value[:, offset:] if read is None else value[run.batch, read]
            t[rows][:, comp.head] = at.to(t.dtype)
        for group, rows, cols, read, move in todo:
            comp = move.component
            if (comp.kind == "head") != (kind == "z"):
                continue
            src = run.resolve(move.spec, move.source.rows)
            dst = run.resolve(move.spec, group.rows)
            value = run.source_output(move, None)[run.batch, src]
            if comp.kind == "head":
                write_patch(t[rows][:, :, cols], comp.head, dst, value, offset, read)
            else:
                write_patch(t[rows][:, cols], None, dst, value, offset, read)

    return patch
