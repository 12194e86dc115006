"""The fast evaluator: the treeified model as a few batched forward passes over row groups.

Intuition: every splice of the treeified model moves row r of a child's data into row r of its
parent's, so the whole tree is a stack of row groups (:mod:`scrub.engine._plan`) evaluated side
by side, in layer order, in one forward pass. At each hook, every group's patches and splices
read what other groups computed at earlier hooks of the same pass (or of an earlier pass, for
groups that stopped sooner):

- a component's **output hook** (``hook_z`` for heads, ``hook_mlp_out``, the embeddings): apply
  the all-paths patches, children's groups first, then record the outputs later hooks read;
- an **input hook** (``hook_q_input`` / ``k`` / ``v``, ``hook_mlp_in``, ``ln_final.hook_in``):
  assemble each target (residual + direct-path deltas), write it where the node's components are
  treeified (the fused group, or the output group);
- the logits are computed from the root's final residual stream only at the positions the metric
  reads (the unembedding is a large share of a small model's cost), and where a final pass
  reads nothing inside the last block, that block too (:mod:`scrub.engine._last`).

What makes it fast, beyond batching: leaves come from an :class:`ActivationCache` (computed once
per dataset row and shared across hypotheses and seeds), and so do subtrees that an earlier call
with the same cache already evaluated on the same draws; each group stops after the last layer
it is read at, and starts at the first layer it changes, from the plain residual stream the
cache holds for its rows, where that stream is shared (:mod:`scrub.engine._start`); a parent's
group takes over a child's that coincides with it; per-head outputs are computed only for the
heads a hypothesis maps (from ``z`` and ``W_O``), never for the whole model. ``max_batch_rows`` chunks the reference batch (every group
is row-aligned with it), so memory is capped without changing any result.

It must agree with :func:`scrub.engine.evaluate_reference` to 1e-4 on every hypothesis; the
tests check it on every shipped hypothesis and on random ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._hooks import unmasked_rows_softmax
from scrub._model import ScrubModel, select, write, write_at
from scrub._positions import PositionSpec, resolve_positions
from scrub._tree import SampledTree
from scrub.data import Dataset
from scrub.engine._ablation import Ablation
from scrub.engine._kernels import Kernels, kernel_status, kernels_for
from scrub.engine._last import LastBlock, last_block_for, reads_only_before
from scrub.engine._plan import Group, Move, Plan, make_plan
from scrub.engine._start import late_pass, late_start_works
from scrub.engine.cache import ActivationCache, Key, Residual, pass_rows, split_qkv_inputs

__all__ = ["Evaluated", "FastEngine"]


class _Stop(Exception):
    """Raised at the final residual stream: the engine unembeds only what it needs."""


@dataclass
class FastEngine:
    """The batched evaluator (see the module docstring).

    Attributes:
        cache: leaf activations (and memoised clean/baseline outputs); shared across calls to
            reuse them, e.g. when comparing hypotheses on one dataset. A fresh one by default.
        max_batch_rows: most rows in one forward pass; the reference batch is chunked to fit.
        kernels: compute the components of nodes that span several layers directly from their
            assembled inputs (checked against the model once), instead of in an extra row group.
        joint_qkv: passes that need no per-head q/k/v input use the joint projection.
        ablation: mean or zero ablation of unmapped inputs (``None``: resample them).
        max_memory: activation budget of one pass in bytes (:func:`pass_rows`); passes take as
            many rows as fit, at most ``max_batch_rows``. ``None``: :data:`scrub.engine.cache.PASS_MEMORY`.
        late_start: start each group at the first layer it changes, from the cached residual
            stream of its rows (where the bridge allows it; :mod:`scrub.engine._start`), instead
            of from the tokens. Off while attention patterns are read.
        fuse: a parent's group takes over a child's group that coincides with it (same rows,
            nothing changed before the child; :mod:`scrub.engine._plan`, "fused children").
            Off while attention patterns are read.
        last_block: in a final pass where nothing after the last block's input is read but
            the roots' logits at the metric's positions, compute the last block at those
            positions only, by the verified kernels (:mod:`scrub.engine._last`). Off while
            attention patterns are read, without kernels, or when every position is read.
    """

    cache: ActivationCache | None = None
    max_batch_rows: int = 4096
    kernels: bool = True
    joint_qkv: bool = field(
        default=False, repr=False
    )  # default: every pass split, so no result depends on its pass-mates
    ablation: Ablation | None = None
    max_memory: int | None = None
    # Levers that change no result (beyond float rounding): left out of the public repr.
    late_start: bool = field(default=True, repr=False)
    fuse: bool = field(default=True, repr=False)
    last_block: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, not {self.max_batch_rows}")
        if self.max_memory is not None and self.max_memory < 1:
            raise ValueError(
                f"max_memory must be a positive number of bytes, not {self.max_memory}"
            )

    def rows_per_pass(self, model: ScrubModel, seq_len: int) -> int:
        """Rows of one pass: ``max_batch_rows``, or fewer if they would exceed the budget."""
        return min(self.max_batch_rows, pass_rows(model, seq_len, max_memory=self.max_memory))

    def describe(self, model: ScrubModel) -> str:
        """How this engine evaluates on ``model``, as results record it: ``"fast"`` with
        kernels, else ``"fast (output groups: why)"``."""
        if not self.kernels:
            return "fast (output groups: kernels turned off)"
        status = kernel_status(model)
        return "fast" if status == "kernels" else f"fast ({status})"

    @torch.inference_mode()
    def __call__(
        self,
        model: ScrubModel,
        tree: SampledTree,
        *,
        positions: np.ndarray | None = None,
        on_pass: Callable[[], None] | None = None,
    ) -> Tensor:
        """The treeified model's logits on the root's rows.

        Args:
            model: the model.
            tree: the sampled tree.
            positions: ``(batch, K)`` positions (in the root's rows) to compute logits at; the
                result is then ``(batch, K, vocab)``. ``None``: every position.
            on_pass: called after every forward pass (for progress bars).
        """
        return self.evaluate_many(model, [tree], positions=positions, on_pass=on_pass).logits[0]

    @torch.inference_mode()
    def evaluate_many(
        self,
        model: ScrubModel,
        trees: Sequence[SampledTree],
        *,
        positions: np.ndarray | None = None,
        patterns: Sequence[Component] = (),
        reduce: Callable[[Tensor], Any] | None = None,
        on_pass: Callable[[], None] | None = None,
    ) -> Evaluated:
        """Several trees on one dataset and one reference batch, planned and run together.

        Every tree's groups are stacked into the same passes (as many trees per pass as
        ``max_batch_rows`` allows), so a grid of small trees (one per patching cell) costs a
        few batched passes instead of one pass per tree. Each tree's logits are those
        :meth:`__call__` would return for it alone (up to float32 rounding).

        Args:
            model: the model.
            trees: sampled trees on one dataset, with reference batches of one size (the
                root's rows, and so ``positions``, are usually the same for all of them).
            positions: ``(batch, K)`` logit positions in the root's rows (shared by all trees).
            patterns: heads whose attention patterns to return, each read where the head is
                evaluated in each tree: in the group of the non-root node that maps it, else
                in the root's pass.
            reduce: applied to each tree's logits as soon as they are computed (e.g. the
                per-example metric), so that thousands of trees need not hold their logits.
            on_pass: called after every forward pass.

        Returns:
            Per tree: its logits (or ``reduce`` of them) and its attention patterns.

        Raises:
            ValueError: a requested head is mapped only by a leaf (computed on its own data;
                read its pattern from a plain pass instead).
        """
        trees = list(trees)
        if not trees:
            return Evaluated([], [])
        tick = on_pass or (lambda: None)
        cache = self.cache or ActivationCache(
            max_batch_rows=self.max_batch_rows, max_memory=self.max_memory
        )
        dataset = trees[0].dataset
        kernels = kernels_for(model) if self.kernels and not patterns else None
        late = self.late_start and not patterns and late_start_works(model)
        n = len(trees[0].reference)

        def plan_of(batch: Sequence[SampledTree]) -> Plan:
            return make_plan(
                model,
                batch,
                known=lambda sig: cache.knows(model, dataset, sig),
                kernels=kernels is not None,
                ablation=None if self.ablation is None else self.ablation.key,
                late_start=late,
                fuse=self.fuse and not patterns,
                cached=lambda layer, rows: cache.holds(model, dataset, Residual(layer), rows),
                read_at=positions,
            )

        first = plan_of(trees[:1])
        per_batch = max(1, self.rows_per_pass(model, dataset.seq_len) // (_widest(first) * n))
        out = Evaluated([], [])
        for start in range(0, len(trees), per_batch):
            batch = trees[start : start + per_batch]
            plan = first if start == 0 and len(batch) == 1 else plan_of(batch)
            done = self._evaluate(model, batch, plan, cache, positions, patterns, kernels, tick)
            for logits in done.logits:
                out.logits.append(logits if reduce is None else reduce(logits))
            out.patterns.extend(done.patterns)
        return out

    def _evaluate(
        self,
        model: ScrubModel,
        trees: list[SampledTree],
        plan: Plan,
        cache: ActivationCache,
        positions: np.ndarray | None,
        patterns: Sequence[Component],
        kernels: Kernels | None,
        tick: Callable[[], None],
    ) -> Evaluated:
        dataset = trees[0].dataset
        by_row = [(src, comp) for src, comp in plan.leaves if src.known is None]
        # Late groups' starting residual streams and served outputs, each fetched once per rows.
        unique: dict[tuple[Key, bytes], tuple[Key, np.ndarray]] = {}
        wanted: dict[tuple[int, Key], tuple[Key, bytes]] = {}
        for group in plan.groups:
            for key in ([Residual(group.start)] if group.start else []) + list(group.served):
                if not group.virtual and group.into is None:
                    wanted[group.gid, key] = (key, group.rows.tobytes())
                    unique.setdefault(wanted[group.gid, key], (key, group.rows))
        needs = [(c, s.rows) for s, c in by_row] + list(unique.values())
        values = cache.outputs(model, dataset, needs, on_pass=tick)
        leaves = {src.leaf_key(comp): v for (src, comp), v in zip(by_row, values, strict=False)}
        fetched = dict(zip(unique, values[len(by_row) :], strict=True))
        early = {gk: fetched[u] for gk, u in wanted.items()}
        for src, comp in plan.leaves:
            if src.known is not None:
                leaves[src.leaf_key(comp)] = cache.subtree(src.known, comp)
        reads = _pattern_groups(plan, trees, patterns)
        chunk = max(1, self.rows_per_pass(model, dataset.seq_len) // _widest(plan))
        n = len(trees[0].reference)
        # A cache made for this call alone would never be read again.
        keep = self.cache is not None and self.cache.subtrees
        pieces: list[list[Tensor]] = []
        read: list[dict[tuple[int, Component], Tensor]] = []
        kept: dict[tuple[int, Component], list[Tensor]] = {}
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            chunk_leaves = {key: v[rows] for key, v in leaves.items()}
            run = _ChunkRun(
                model, dataset, plan, rows, chunk_leaves, positions, kernels, reads, self.ablation
            )
            run.start_from({key: v[rows] for key, v in early.items()})
            run.joint_qkv = self.joint_qkv
            if self.last_block and kernels is not None and positions is not None:
                run.last_block = last_block_for(model)
            pieces.append(run.evaluate(tick))
            read.append(run.patterns)
            for gid in plan.signatures if keep else ():
                owner = plan.groups[gid].into  # a fused child's outputs are its parent's
                owner = gid if owner is None else owner
                for mc in plan.groups[gid].node.interp.components:
                    kept.setdefault((gid, mc.component), []).append(run.store[owner, mc.component])
        for gid, sig in plan.signatures.items() if keep else ():
            node = plan.groups[gid].node
            cache.keep_subtree(
                sig,
                {mc.component: torch.cat(kept[gid, mc.component]) for mc in node.interp.components},
            )
        logits = [torch.cat([p[i] for p in pieces]) for i in range(len(trees))]
        found = [
            {head: torch.cat([r[gid, head] for r in read]) for head, gid in wanted.items()}
            for wanted in reads
        ]
        return Evaluated(logits, found)


@dataclass
class Evaluated:
    """What :meth:`FastEngine.evaluate_many` returns, one entry per tree.

    Attributes:
        logits: each tree's logits ``(batch, K, vocab)`` (or what ``reduce`` made of them).
        patterns: each tree's requested attention patterns, head → ``(batch, pos, pos)``.
    """

    logits: list[Any]
    patterns: list[dict[Component, Tensor]]


def _move_key(move: Move) -> tuple:
    """What a splice's value depends on in one group: the child's output and the positions."""
    src = move.source
    return (move.component, src.group, src.tree, src.node.name, move.spec)


def _widest(plan: Plan) -> int:
    """The most stacked groups in one pass of ``plan``."""
    return max(sum(not plan.groups[g].virtual for g in gids) for _, gids in plan.passes)


def _pattern_groups(
    plan: Plan, trees: list[SampledTree], heads: Sequence[Component]
) -> list[dict[Component, int]]:
    """Per tree, the group in which each requested head is evaluated."""
    out: list[dict[Component, int]] = []
    for t, tree in enumerate(trees):
        wanted: dict[Component, int] = {}
        for head in heads:
            owner = next(
                (
                    n
                    for n in tree.root.walk()
                    if n.edge is not None
                    and any(mc.component == head for mc in n.interp.components)
                ),
                None,
            )
            gid = plan.roots[t] if owner is None else plan.outputs[t, owner.name].group
            if gid is None:
                assert owner is not None
                raise ValueError(
                    f"{head.name} is mapped by {owner.name!r}, which the engine does not "
                    "evaluate (a leaf, or a subtree served from the cache): its pattern is that "
                    "of a plain pass on the node's own rows"
                )
            wanted[head] = gid
        out.append(wanted)
    return out


class _ChunkRun:
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
        return self._resolved[key]

    def at(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x[b, pos[b, k]]`` for each row b: ``(rows, K, ...)``."""
        cols = self._columns.get(id(pos))
        return x[self.batch, pos] if cols is None else x.index_select(1, cols)

    def add_at(self, value: Tensor, pos: Tensor, delta: Tensor) -> None:
        """``value[b, pos[b, k]] += delta[b, k]`` in place (repeated positions add up)."""
        cols = self._columns.get(id(pos))
        if cols is None:
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
        for stop, gids in self.plan.passes:
            groups = [self.plan.groups[g] for g in gids]
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
            if final and self._last_block_applies(groups, stacked, hooks):
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

    def assemble(self, group: Group, target: tuple[Component, Channel], resid: Tensor) -> Tensor:
        """A target's input in a reading group: its residual plus the direct-path deltas."""
        moves = group.splices[target]
        if not moves:
            return resid
        value = resid.clone()  # one copy per target; the deltas are added in place
        for move in moves:
            src = self.resolve(move.spec, move.source.rows)
            dst = self.resolve(move.spec, group.rows)
            comp = move.component
            new = self.model.contribution(comp, self.at(self.source_output(move, None), src))
            old = self.model.contribution(comp, self.at(self.store[group.gid, comp], dst))
            self.add_at(value, dst, new - old)
        return value

    def assemble_shared(
        self,
        memo: dict[tuple, Tensor],
        group: Group,
        target: tuple[Component, Channel],
        resid: Tensor,
    ) -> Tensor:
        """:meth:`assemble`, once per group, residual and set of splices: the targets of one
        block input that the same children reach (a node's heads, each read through the same
        channel) share one tensor, which the kernels then normalise once."""
        key = (group.gid, id(resid), *(_move_key(m) for m in group.splices[target]))
        if key not in memo:
            memo[key] = self.assemble(group, target, resid)
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
            for group in groups:
                if group.sets:
                    continue
                resid = t[self.where[group.gid]]
                for target in group.splices:
                    if target in targets:
                        value = self.assemble_shared(memo, group, target, resid)
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
                for comp, z in self.kernels.heads(heads).items():
                    if group.virtual:
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

    def _last_block_applies(self, groups: list[Group], stacked: list[Group], hooks: dict) -> bool:
        """Whether this final pass reads nothing after the last block's input but the roots'
        final residual streams at the metric's positions (:mod:`scrub.engine._last`): every
        stacked group a root, no hook of the last block but the kernels' heads (computed from
        the block's input; their ``z`` replaces the block's own), nothing patched, ablated or
        recorded there but the kernels' heads (whose ``z`` is the kernels' value)."""
        if self.last_block is None or self.positions is None:
            return False
        layer = self.model.shape.n_layers - 1
        roots = set(self.plan.roots)
        if not all(g.gid in roots for g in stacked):
            return False
        for group in stacked:
            touched = [m.component for m in group.patches] + list(group.ablate)
            own = {c for c, _ in group.targets if c.kind == "head"} if self.head_kernels else set()
            touched += list(group.record - set(group.served) - own)
            if any(c.kind in ("head", "mlp") and c.layer == layer for c in touched):
                return False
        kernel_heads = (f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z")
        names = [name for name in hooks if name not in kernel_heads]
        return reads_only_before(names, layer)

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
