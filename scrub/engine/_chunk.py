"""The passes of one chunk of reference rows: the hooks that evaluate a plan's row groups.

:class:`scrub.engine.fast.FastEngine` splits the reference batch into chunks (every row group
is row-aligned with it) and gives each to a :class:`ChunkRun`, which runs the plan's passes in
order (each stopping at its last layer and, where it pays, starting late from a cached residual
stream, :mod:`scrub.engine._start`) with the hooks :mod:`scrub.engine.fast`'s docstring
describes: output hooks apply patches and record outputs, input hooks assemble each target's
input (residual + direct-path deltas), the final hook hands the roots' residual streams to the
unembedding at the metric's positions (or the last block at those positions only,
:mod:`scrub.engine._last`). Roots the suffix blocks take (:mod:`scrub.engine._suffix`) leave
their passes and are evaluated after the last one, when every output they read is known.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._hooks import unmasked_rows_softmax
from scrub._model import ScrubModel, select, write, write_at
from scrub._positions import PositionSpec, resolve_positions
from scrub.data import Dataset
from scrub.engine._ablation import Ablation
from scrub.engine._kernels import Kernels
from scrub.engine._last import LastBlock, last_block_applies
from scrub.engine._plan import Group, Move, Plan
from scrub.engine._reads import query_columns, restricted
from scrub.engine._start import late_pass
from scrub.engine._suffix import SuffixBlocks
from scrub.engine._suffix_pass import evaluate_suffix
from scrub.engine.cache import Key, Residual, split_qkv_inputs

__all__ = ["ChunkRun"]


class _Stop(Exception):
    """Raised at the final residual stream: the engine unembeds only what it needs."""


def _move_key(move: Move) -> tuple:
    """What a splice's value depends on in one group: the child's output and the positions."""
    src = move.source
    return (move.component, src.group, src.tree, src.node.name, move.spec)


class ChunkRun:
    """The passes of one chunk of reference rows."""

    def __init__(
        self,
        model: ScrubModel,
        dataset: Dataset,
        plan: Plan,
        rows: slice,
        leaves: dict[tuple[int, str, Component], Tensor],
        positions: np.ndarray | None,
        kernels: Kernels | None,
        reads: list[dict[Component, int]],
        ablation: Ablation | None = None,
    ) -> None:
        self.model = model
        self.kernels = kernels
        self.ablation = ablation
        self._ablated: dict[tuple[int, Component], Tensor] = {}
        self.pending: dict[tuple[int, Component, Channel], Tensor] = {}
        self.dataset = dataset
        self.reads = {(gid, head) for wanted in reads for head, gid in wanted.items()}
        self.patterns: dict[tuple[int, Component], Tensor] = {}
        self.plan = plan
        self.rows = rows
        self.leaves = leaves
        self.positions = None if positions is None else positions[rows]
        self.size = rows.stop - rows.start
        self.batch = torch.arange(self.size, device=model.device)[:, None]
        self.store: dict[tuple[int, Component], Tensor] = {}
        self.where: dict[int, slice] = {}  # gid -> its rows in the current pass
        self._resolved: dict[tuple[PositionSpec, int], Tensor] = {}
        self._columns: dict[int, Tensor] = {}  # id(resolved) -> its one row, if all rows agree
        self._ranges: dict[int, slice] = {}  # id(resolved) -> that row, if one range
        self.joint_qkv = False
        self.final_resid: dict[int, Tensor] = {}  # root gid -> its assembled final residual
        # Heads whose q/k/v inputs a group assembles are recomputed by the kernels from the
        # block's input, so no pass needs the bridge's split q/k/v inputs (n_heads LayerNorm'd
        # copies of the residual stream). Grouped-query models share k/v slots between heads
        # and keep the split inputs.
        self.head_kernels = kernels is not None and model.shape.kv_group == 1
        self.z_override: dict[tuple[int, Component], Tensor] = {}
        self.start_resid: dict[int, Tensor] = {}  # late group -> its residual at its start
        self.last_block: LastBlock | None = None  # the last block at the read positions only
        self.suffix: tuple[SuffixBlocks, dict[int, int], dict] | None = None
        self.whole: set[int] = set()  # groups whose outputs are kept whole (subtree cache)

    def use_suffix(
        self, blocks: SuffixBlocks, begins: dict[int, int], streams: dict[tuple[bytes, Key], Tensor]
    ) -> None:
        """Roots (gid -> first changed layer) evaluated by suffix blocks from a plain pass on
        their rows (:mod:`scrub.engine._suffix_pass`), after every pass."""
        self.suffix = (blocks, begins, streams)

    def start_from(self, early: dict[tuple[int, Key], Tensor]) -> None:
        """Late groups' starting residual streams and served outputs, from the cache."""
        for (gid, key), value in early.items():
            if isinstance(key, Residual):
                self.start_resid[gid] = value
            else:
                self.store[gid, key] = value

    # -- helpers ----------------------------------------------------------------------------
    def resolve(self, spec: PositionSpec, rows: np.ndarray) -> Tensor:
        key = (spec, id(rows))
        if key not in self._resolved:
            pos = resolve_positions(spec, self.dataset, rows[self.rows])
            tensor = torch.as_tensor(np.ascontiguousarray(pos), device=self.model.device)
            self._resolved[key] = tensor
            if len(pos) and bool((pos == pos[:1]).all()):  # the same positions in every row
                self._columns[id(tensor)] = tensor[0]
                if len(pos[0]) and bool((np.diff(pos[0]) == 1).all()):  # and consecutive
                    self._ranges[id(tensor)] = slice(int(pos[0, 0]), int(pos[0, -1]) + 1)
        return self._resolved[key]

    def at(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x[b, pos[b, k]]`` for each row b: ``(rows, K, ...)``; a view where ``pos`` is
        one range of positions in every row (REP, A1_NEXT), else a gather."""
        cols = self._columns.get(id(pos))
        if cols is None:
            return x[self.batch, pos]
        span = self._ranges.get(id(pos))
        return x.index_select(1, cols) if span is None else x[:, span]

    def add_at(self, value: Tensor, pos: Tensor, delta: Tensor) -> None:
        """``value[b, pos[b, k]] += delta[b, k]`` in place (repeated positions add up)."""
        cols = self._columns.get(id(pos))
        if id(pos) in self._ranges:  # one range: distinct positions, an in-place add
            value[:, self._ranges[id(pos)]] += delta
        elif cols is None:
            value.index_put_((self.batch.expand_as(pos), pos), delta, accumulate=True)
        else:
            value.index_add_(1, cols, delta)

    def ablated(self, group: Group, comp: Component) -> Tensor:
        """``comp``'s ablation value on ``group``'s rows of this chunk, ``(rows, pos, d)``."""
        key = (group.gid, comp)
        if key not in self._ablated:
            assert self.ablation is not None
            rows = group.rows[self.rows]
            classes = self.ablation.classes(self.dataset, rows)
            shape = (len(rows), self.dataset.seq_len)
            self._ablated[key] = self.ablation.values(self.model, comp, classes, shape)
        return self._ablated[key]

    def source_output(self, move: Move, live: Tensor | None) -> Tensor:
        """The child's treeified output of ``move.component``, ``(rows, pos, d)``."""
        src = move.source
        if src.group is None:
            return self.leaves[src.leaf_key(move.component)]
        if live is not None and src.group in self.where:
            return select(live, move.component, self.where[src.group])
        return self.store[src.group, move.component]

    # -- passes -----------------------------------------------------------------------------
    def evaluate(self, tick: Callable[[], None]) -> list[Tensor]:
        """Every pass of this chunk; each tree's logits, in the order of ``plan.roots``."""
        n_layers = self.model.shape.n_layers
        by_suffix = {} if self.suffix is None else self.suffix[1]
        for stop, gids in self.plan.passes:
            groups = [self.plan.groups[g] for g in gids if g not in by_suffix]
            if not groups:
                continue
            stacked = [g for g in groups if not g.virtual]
            self.where = {
                g.gid: slice(i * self.size, (i + 1) * self.size) for i, g in enumerate(stacked)
            }
            start = groups[0].start
            if start >= n_layers:  # no block to run: the final residual streams are cached
                for group in groups:
                    assert group.gid in self.plan.roots, f"{group} starts after every block"
                    self.finish(group, self.start_resid[group.gid])
                continue
            final = stop >= n_layers
            hooks = self.hooks(groups, final=final)
            if final and last_block_applies(self, stacked, hooks):
                layer = n_layers - 1
                first = hooks.pop(f"blocks.{layer}.hook_resid_pre", None)  # the kernels' heads
                hooks.pop(f"blocks.{layer}.attn.hook_z", None)  # their z: see the hook
                del hooks["ln_final.hook_in"]
                hooks[f"blocks.{layer}.hook_resid_pre"] = self._last_block_hook(groups, first)
            bridge = self.model.bridge
            needs_split = any(ch != "in" for g in groups for _, ch in g.targets)
            split = not self.head_kernels and (not self.joint_qkv or needs_split)
            try:
                with (
                    split_qkv_inputs(bridge, split),
                    bridge.hooks(fwd_hooks=list(hooks.items())),
                    unmasked_rows_softmax(bridge),
                ):
                    if start:
                        resid = torch.cat([self.start_resid[g.gid] for g in stacked])
                        late_pass(self.model, resid, start, None if final else stop)
                    else:
                        tokens = torch.cat(
                            [
                                self.dataset.tokens[torch.as_tensor(g.rows[self.rows])]
                                for g in stacked
                            ]
                        ).to(self.model.device)
                        bridge(tokens) if final else bridge(tokens, stop_at_layer=stop)
                    if final:
                        raise AssertionError("the final pass did not reach ln_final")
            except _Stop:
                pass
            tick()
        if self.suffix is not None:
            blocks, begins, streams = self.suffix
            suffixed = [self.plan.groups[g] for g in begins]
            evaluate_suffix(blocks, self, suffixed, begins, streams)
            tick()
        roots = self.plan.roots
        assert set(self.final_resid) == set(roots)
        resid = torch.cat([self.final_resid[g] for g in roots])
        return list(self.unembed(resid).split(self.size))

    def finish(self, root: Group, resid: Tensor) -> None:
        """A root's final residual stream: its own (``resid``) plus its direct-path deltas."""
        key = next(t for t in root.splices if t[0].kind == "logits")
        self.final_resid[root.gid] = self.assemble(root, key, resid)

    def unembed(self, resid: Tensor) -> Tensor:
        """Logits of stacked ``(roots × rows, pos, d)`` residuals at the metric's positions."""
        if self.positions is not None:
            pos = torch.as_tensor(self.positions, device=resid.device)
            copies = resid.shape[0] // self.size
            batch = torch.arange(resid.shape[0], device=resid.device)[:, None]
            resid = resid[batch, pos.repeat(copies, 1)]
        return self.model.unembed(resid)

    def hooks(self, groups: list[Group], *, final: bool) -> dict[str, Callable]:
        """Hook functions by hook name for one pass over ``groups``."""
        model = self.model
        outputs: dict[str, set[Component]] = {}
        inputs: dict[str, set[tuple[Component, Channel]]] = {}
        block_inputs: dict[int, set[tuple[Component, Channel]]] = {}  # layer -> head targets
        for group in groups:
            for move in group.patches:
                outputs.setdefault(model.output_hook(move.component), set()).add(move.component)
            for comp in (
                group.record - set(group.served) | set(group.ablate) if not group.virtual else ()
            ):
                outputs.setdefault(model.output_hook(comp), set()).add(comp)
            for comp, ch in group.targets:
                if comp.kind == "head" and self.head_kernels:
                    block_inputs.setdefault(comp.layer, set()).add((comp, ch))
                    if not group.virtual:  # its z is overwritten by the kernels' value
                        outputs.setdefault(model.output_hook(comp), set()).add(comp)
                elif comp.kind != "logits":
                    inputs.setdefault(model.input_hook(comp, ch), set()).add((comp, ch))
        hooks: dict[str, Callable] = {}
        for name, comps in outputs.items():
            hooks[name] = self._output_hook(groups, comps)
        for name, targets in inputs.items():
            hooks[name] = self._input_hook(groups, targets)
        for layer, targets in block_inputs.items():
            hooks[f"blocks.{layer}.hook_resid_pre"] = self._block_input_hook(groups, targets)
        if final:
            hooks["ln_final.hook_in"] = self._final_hook(groups)
        for layer in sorted({head.layer for gid, head in self.reads if gid in self.where}):
            hooks[f"blocks.{layer}.attn.hook_pattern"] = self._pattern_hook(layer)
        return hooks

    def _pattern_hook(self, layer: int) -> Callable:
        wanted = [(g, h) for g, h in self.reads if h.layer == layer and g in self.where]

        def hook(t: Tensor, hook=None) -> Tensor:
            for gid, head in wanted:
                self.patterns[gid, head] = t[self.where[gid], head.head].clone()
            return t

        return hook

    def _output_hook(self, groups: list[Group], comps: set[Component]) -> Callable:
        heads = [c for c in comps if c.kind == "head"]
        live = [g for g in groups if not g.virtual]
        writes = any(c in comps for g in live for c in g.ablate) or any(
            m.component in comps for g in live for m in g.patches
        )
        overrides = [(g.gid, c) for g in groups for c in heads]

        def hook(t: Tensor, hook=None) -> Tensor:
            if writes or any(key in self.z_override for key in overrides):
                t = t.clone()  # written below; a hook that only records leaves t as it is
            for group in groups:  # heads recomputed from their assembled inputs
                for comp in heads:
                    z = self.z_override.pop((group.gid, comp), None)
                    if z is not None:
                        write(t, comp, z, self.where[group.gid])
            for group in groups:  # ablation first: the patches apply on top
                for comp in group.ablate if not group.virtual else ():
                    if comp in comps:
                        write(t, comp, self.ablated(group, comp), self.where[group.gid])
            for group in groups:  # children's groups first
                if group.virtual:
                    continue
                dst_rows = self.where[group.gid]
                for move in group.patches:
                    if move.component not in comps:
                        continue
                    src = self.resolve(move.spec, move.source.rows)
                    dst = self.resolve(move.spec, group.rows)
                    value = self.source_output(move, t)[self.batch, src]
                    write_at(t, move.component, dst, value, dst_rows)
            for group in groups:
                for comp in group.record & comps if not group.virtual else ():
                    self.store[group.gid, comp] = select(t, comp, self.where[group.gid]).clone()
            return t

        return hook

    def assemble(
        self,
        group: Group,
        target: tuple[Component, Channel],
        resid: Tensor,
        at: Tensor | None = None,
    ) -> Tensor:
        """A target's input in a reading group: its residual plus the direct-path deltas;
        with ``at`` (sorted positions), only at those positions (``rows × len(at) × d``)."""
        moves = group.splices[target]
        if at is not None:
            return restricted(self, group, target, resid, at, self._columns)
        if not moves:
            return resid
        value = resid.clone()  # one copy per target; the deltas are added in place
        for move in moves:
            src = self.resolve(move.spec, move.source.rows)
            dst = self.resolve(move.spec, group.rows)
            comp = move.component
            new = self.at(self.source_output(move, None), src)
            # (new - old) @ W_O for a head: one projection, the difference taken on z
            delta = self.model.contribution(comp, new - self.at(self.store[group.gid, comp], dst))
            self.add_at(value, dst, delta)
        return value

    def assemble_shared(
        self,
        memo: dict[tuple, Tensor],
        group: Group,
        target: tuple[Component, Channel],
        resid: Tensor,
        at: Tensor | None = None,
    ) -> Tensor:
        """:meth:`assemble`, once per group, residual and set of splices: the targets of one
        block input that the same children reach (a node's heads, each read through the same
        channel) share one tensor, which the kernels then normalise once."""
        key = (group.gid, id(resid), at is None, *(_move_key(m) for m in group.splices[target]))
        if key not in memo:
            memo[key] = self.assemble(group, target, resid, at)
        return memo[key]

    def _input_hook(self, groups: list[Group], targets: set[tuple[Component, Channel]]) -> Callable:
        def hook(t: Tensor, hook=None) -> Tensor:
            t = t.clone()
            assembled: dict[tuple[int, Component, Channel], Tensor] = {}
            for group in groups:
                if group.sets:
                    continue
                for target in group.splices:
                    if target not in targets:
                        continue
                    comp, ch = target
                    resid = select(t, self.model.input_slot(comp, ch), self.where[group.gid])
                    assembled[group.gid, comp, ch] = self.assemble(group, target, resid)
            for group in groups:
                for target in group.targets:
                    if target not in targets:
                        continue
                    comp, ch = target
                    if group.virtual:
                        self.compute(group, target, assembled[group.sets[target], comp, ch])
                        continue
                    if group.sets:
                        value = assembled[group.sets[target], comp, ch]
                    elif group.fused:
                        value = assembled[group.gid, comp, ch]
                    else:
                        continue
                    write(t, self.model.input_slot(comp, ch), value, self.where[group.gid])
            return t

        return hook

    def _block_input_hook(
        self, groups: list[Group], targets: set[tuple[Component, Channel]]
    ) -> Callable:
        """At a block's input: assemble the q/k/v inputs of its targeted heads and compute them.

        The kernels' ``z`` goes to the group's store (virtual output groups) or overwrites the
        head's ``z`` in the group's rows at ``hook_z`` (fused and output groups), exactly where
        the bridge would have computed it from the same inputs in its split q/k/v mode.
        """

        def hook(t: Tensor, hook=None) -> Tensor:
            assert self.kernels is not None
            assembled: dict[tuple[int, Component, Channel], Tensor] = {}
            memo: dict[tuple, Tensor] = {}
            consumed = {gid for g in groups for gid in g.sets.values()}
            cols = {  # where the heads each group computes here are read (_reads.py)
                g.gid: None
                if g.gid in self.whole
                else query_columns(self.plan, g, targets, self.resolve, self._columns)
                for g in groups
            }
            for group in groups:
                if group.sets:
                    continue
                resid = t[self.where[group.gid]]
                # a group's own queries, read only at cols: assembled there only
                at = None if group.gid in consumed else cols[group.gid]
                for target in group.splices:
                    if target in targets:
                        q_at = at if target[1] == "q" else None
                        value = self.assemble_shared(memo, group, target, resid, q_at)
                        assembled[group.gid, *target] = value
            for group in groups:
                heads: dict[Component, dict[Channel, Tensor]] = {}
                for target in group.targets:
                    if target not in targets:
                        continue
                    comp, ch = target
                    if group.sets:
                        heads.setdefault(comp, {})[ch] = assembled[group.sets[target], comp, ch]
                    elif group.fused:
                        heads.setdefault(comp, {})[ch] = assembled[group.gid, comp, ch]
                # heads only stored here are computed at the positions they are read at
                at = cols[group.gid]
                given = at is not None and not group.sets and group.gid not in consumed
                reads = None if at is None else dict.fromkeys(heads, at)
                for comp, z in self.kernels.heads(heads, reads, q_at=given).items():
                    # virtual, or the group's pass ends here (plan: "kernel heads stop at the
                    # block input"): no hook_z of this block runs for it
                    if group.virtual or group.stop <= comp.layer:
                        self.store[group.gid, comp] = z
                    else:
                        self.z_override[group.gid, comp] = z
            return t

        return hook

    def compute(self, group: Group, target: tuple[Component, Channel], value: Tensor) -> None:
        """Collect a virtual group's input; on a component's last channel, compute its output."""
        assert self.kernels is not None
        comp, ch = target
        if comp.kind == "mlp":
            self.store[group.gid, comp] = self.kernels.mlp(comp, value)
            return
        self.pending[group.gid, comp, ch] = value
        if ch == "v":  # the bridge reads q, k, then v
            q, k = (self.pending.pop((group.gid, comp, c)) for c in ("q", "k"))
            self.store[group.gid, comp] = self.kernels.head(comp, q, k, value)

    def _last_block_hook(self, groups: list[Group], first: Callable | None) -> Callable:
        """At the last block's input: the block at the read positions only, then the roots'
        final residual streams. Other positions are NaN: nothing reads them (the logits are
        unembedded at the read positions only; a splice adds there harmlessly). ``first``:
        the block-input hook of the kernels' heads, whose ``z`` replaces the block's own."""
        roots = [g for g in groups if g.gid in set(self.plan.roots)]
        layer = self.model.shape.n_layers - 1

        def hook(t: Tensor, hook=None) -> Tensor:
            assert self.last_block is not None and self.positions is not None
            if first is not None:
                first(t)
            pos = torch.as_tensor(self.positions, device=t.device).repeat(len(self.where), 1)
            batch = torch.arange(t.shape[0], device=t.device)[:, None]
            z = self.last_block.z(t, pos)
            for gid, comp in [k for k in self.z_override if k[1].layer == layer]:
                if gid not in self.where:
                    continue
                rows = self.where[gid]
                own = self.z_override.pop((gid, comp))
                z[rows, comp.head] = own[batch[: own.shape[0]], pos[rows]]
                if comp in self.plan.groups[gid].record:  # as the output hook records it
                    self.store[gid, comp] = own
            resid = torch.full_like(t, float("nan"))
            resid[batch, pos] = self.last_block.output(t, pos, z)
            for root in roots:
                self.finish(root, resid[self.where[root.gid]])
            raise _Stop

        return hook

    def _final_hook(self, groups: list[Group]) -> Callable:
        roots = [g for g in groups if g.gid in set(self.plan.roots)]

        def hook(t: Tensor, hook=None) -> Tensor:
            for root in roots:
                self.finish(root, t[self.where[root.gid]])
            raise _Stop

        return hook
