"""The suffix blocks' passes: which roots skip the bridge, and the chain over their layers.

Context: :mod:`scrub.engine._suffix` restates a block at a suffix of query positions. Here
the engine picks the roots it evaluates that way (:func:`suffix_roots`, once per plan, as
:mod:`scrub.engine._chunk` checks the last block's lever per pass): roots of final passes
whose only changes are all-paths patches of heads and MLPs (an activation-patching cell) or,
without grouped-query attention, the assembled q/k/v inputs of heads of one layer, patched
there or later only (a direct-path cell's receivers, fused into the root: their ``z`` at every
position by the kernels, as the chunk's block-input hook computes it, then written like a
patch), which record nothing else in their pass (a direct splice of an output computed before
their first changed layer is served by the cache), read no attention pattern, and whose rows'
plain pass is shared with another root (a grid's base run, in this plan or in another of
the same call) or already cached. The cache
serves that plain pass (:func:`plain_keys`): the residual stream entering every block from
the root's first changed one, and every head's ``z`` in that block; the plain keys and values
are computed from those streams once per rows and layer.

:func:`evaluate_suffix` runs them after the chunk's other passes, when every output they
read is known. The suffix start ``s`` of a root is the first position any of its patches or
receivers' splices writes on any row of the chunk, or the first read position if that is
earlier. Roots with the same ``s`` run together, each joining at its first changed layer L.
Block L's input is the plain pass's, so its attention is too but for the patched heads and
the receivers: it is computed from the plain ``z`` (patched, receivers' written), through
``W_O`` and the MLP, only where it changes (an activation cell's patched positions: a head's
``z`` and an MLP's output reach the residual stream at their own position in their block;
a receiver's positions ``s ..``); the plain stream elsewhere. From block L + 1 on, positions
``s ..`` with the plain keys and values before ``s`` (once per rows, tiled over the roots on
them); the last block at the metric's positions only (a root first changed there joins with
the plain stream). The final residual stream is NaN elsewhere: nothing reads it (the logits
are unembedded at the read positions; a root's direct splices into the logits add there
harmlessly). Grouping by ``s`` keeps every tensor rectangular; measured on the IOI-toy
activation grid, coarser buckets (padding: some roots start before their ``s``) save nothing,
and one bucket from position 0 costs 1.5x the suffix blocks' time.

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
from scrub.engine.cache import Key, Residual

__all__ = ["evaluate_suffix", "plain_keys", "suffix_roots"]


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
    holds: Callable[[Key, np.ndarray], bool],
    *,
    receivers: bool = False,
    shared: frozenset[bytes] = frozenset(),
) -> dict[int, int]:
    """The roots the suffix blocks evaluate, each with its first changed layer (module
    docstring). ``holds``: whether the cache holds this plain output or residual stream on
    these rows. ``receivers``: also roots that assemble the q/k/v inputs of heads of
    one layer (direct-path receivers, recomputed by the kernels; not under grouped-query
    attention), patched at that layer or later only. ``shared``: rows (``tobytes``) whose
    plain pass is worth filling anyway (other plans' roots share them)."""
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
    # Worth it where the rows' plain pass is shared (a grid's base run) or already cached.
    count: dict[bytes, int] = {}
    for gid in found:
        key = plan.groups[gid].rows.tobytes()
        count[key] = count.get(key, 0) + 1
    return {
        gid: begin
        for gid, begin in found.items()
        if count[plan.groups[gid].rows.tobytes()] > 1
        or plan.groups[gid].rows.tobytes() in shared
        or all(holds(key, plan.groups[gid].rows) for key in plain_keys(model, begin))
    }


def plain_keys(model: ScrubModel, begin: int) -> list[Key]:
    """What :func:`evaluate_suffix` reads of a plain pass on a root's rows: the residual
    stream entering each block from ``begin`` on, and every head's ``z`` in block ``begin``
    if that is not the last (the last block is computed at the read positions from its input,
    so the cache's plain pass need not run it)."""
    n_layers, n_heads = model.shape.n_layers, model.shape.n_heads
    streams: list[Key] = [Residual(layer) for layer in range(begin, n_layers)]
    if begin == n_layers - 1:
        return streams
    return streams + [Component("head", begin, h) for h in range(n_heads)]


def evaluate_suffix(
    blocks: SuffixBlocks,
    run: _Run,
    roots: list[Group],
    begins: dict[int, int],
    streams: dict[tuple[bytes, Key], Tensor],
) -> None:
    """The roots' final residual streams at the read positions (others NaN: nothing reads
    them), handed to ``run.finish``. ``streams``: what :func:`plain_keys` names of a plain
    pass on each root's rows, on the chunk's rows, by (rows, key)."""
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
            plain[key] = blocks.kv(layer, streams[rows.tobytes(), Residual(layer)])
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
            own: dict[int, dict[Component, Tensor]] = {}
            if last and joining:  # the last block, from the plain stream, as for the others
                own = _receivers(blocks, run, joining, layer, streams)
                fresh = [streams[g.rows.tobytes(), Residual(layer)][:, start:] for g in joining]
                x = torch.cat(fresh if x is None else [x, *fresh])
                active, joining = active + joining, []
            if active:
                assert x is not None
                kv = stacked_kv(active, layer, start) if start else None
                query = read.repeat(len(active), 1) if last else None
                placed = [
                    (g, slice(i * size, (i + 1) * size), slice(None), read if last else None)
                    for i, g in enumerate(active)
                ]
                x = blocks(layer, x, kv, query, _patcher(run, placed, layer, start, own))
            if joining:
                fresh = _first_block(blocks, run, joining, layer, start, streams)
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
    streams: dict[tuple[bytes, Key], Tensor],
) -> list[Tensor]:
    """Block ``layer`` (not the last), the first that ``roots`` change, from the plain pass's
    ``z`` of every head there (:meth:`SuffixBlocks.out`): its input is a plain pass's, so its
    attention is too but for the patched heads and the receivers. Each root's stream entering
    block ``layer + 1`` at positions ``start ..``. Patched roots need the block only where
    their patches write (a head's ``z`` and an MLP's output reach the residual stream at their
    own position in their block); receivers (whose ``z`` changes at every position from
    ``start``) at every position from ``start``."""
    seq_len = next(iter(streams.values())).shape[1]
    suffix = torch.arange(start, seq_len, device=run.batch.device).expand(run.size, -1)
    where: list[Tensor] = []
    for g in roots:
        if _receives(g, layer):
            where.append(suffix)
        else:
            at = [run.resolve(m.spec, g.rows) for m in g.patches if m.component.layer == layer]
            where.append(torch.cat(at, 1))
    batches: dict[tuple[bool, int], list[int]] = {}
    for i, (g, pos) in enumerate(zip(roots, where, strict=True)):
        batches.setdefault((_receives(g, layer), pos.shape[1]), []).append(i)
    out: list[Tensor] = [torch.empty(0)] * len(roots)
    size = run.size
    plain: dict[bytes, Tensor] = {}  # rows -> every head's plain z, batch pos head d_head
    for (receives, _), members in batches.items():
        z_parts, pre_parts = [], []
        own = _receivers(blocks, run, [roots[i] for i in members], layer, streams)
        for i in members:
            key = roots[i].rows.tobytes()
            if key not in plain:
                heads = range(blocks.n_heads)
                plain[key] = torch.stack(
                    [streams[key, Component("head", layer, h)] for h in heads], 2
                )
            z_parts.append(plain[key][run.batch, where[i]].transpose(1, 2))
            pre_parts.append(streams[key, Residual(layer)][run.batch, where[i]])
        z, pre = torch.cat(z_parts), torch.cat(pre_parts)  # batch head Q d_head; batch Q d
        # Receivers' values are at positions ``start ..``; patches map onto their positions.
        placed: list[tuple[Group, slice, slice, Tensor | None]] = [
            (roots[i], slice(k * size, (k + 1) * size), slice(None), None if receives else where[i])
            for k, i in enumerate(members)
        ]
        patch = _patcher(run, placed, layer, start, own)
        if patch is not None:
            patch("z", z)
        result = blocks.out(layer, z, pre, patch)
        for k, i in enumerate(members):
            mine = result[k * size : (k + 1) * size]
            if receives:
                out[i] = mine
                continue
            fresh = streams[roots[i].rows.tobytes(), Residual(layer + 1)][:, start:].clone()
            fresh[run.batch, where[i] - start] = mine
            out[i] = fresh
    return out


def _receives(root: Group, layer: int) -> bool:
    """Whether ``root`` assembles the inputs of heads of block ``layer`` (receivers)."""
    return any(c.kind == "head" and c.layer == layer for c, _ in root.targets)


def _receivers(
    blocks: SuffixBlocks, run: _Run, roots: list[Group], layer: int, streams: dict
) -> dict[int, dict[Component, Tensor]]:
    """The ``z`` of each root's receivers in block ``layer`` (every position), from their
    assembled inputs (the plain stream plus the direct-path deltas, as the chunk's block-input
    hook assembles them), all roots' heads at once (:meth:`SuffixBlocks.head_z`); recorded
    where the roots record them."""
    todo: list[tuple[Group, Component, list[Tensor]]] = []
    for root in roots:
        memo: dict[tuple, Tensor] = {}
        stream = streams[root.rows.tobytes(), Residual(layer)]
        inputs: dict[Component, dict[str, Tensor]] = {}
        for target in root.targets:
            comp, ch = target
            if comp.kind == "head" and comp.layer == layer:
                inputs.setdefault(comp, {})[ch] = run.assemble_shared(memo, root, target, stream)
        todo += [(root, c, [ins[ch] for ch in ("q", "k", "v")]) for c, ins in inputs.items()]
    out: dict[int, dict[Component, Tensor]] = {root.gid: {} for root in roots}
    if not todo:
        return out
    heads = [c.head for _, c, _ in todo]
    q, k, v = (torch.stack([ins[i] for _, _, ins in todo]) for i in range(3))
    for (root, comp, _), z in zip(todo, blocks.head_z(layer, heads, q, k, v), strict=True):
        out[root.gid][comp] = z
        if comp in root.record:
            run.store[root.gid, comp] = z
    return out


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
