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
  reads nothing inside the last block, that block too (:mod:`scrub.engine._last`);
- roots changed only by activation patches at positions >= s (a grid's cells) skip the bridge:
  their blocks are computed at positions >= s only, from the plain stream of their rows, the
  first changed one at the patched positions only and the last at the metric's
  (:mod:`scrub.engine._suffix`).

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

from scrub._components import Component
from scrub._model import ScrubModel
from scrub._tree import SampledTree
from scrub.engine._ablation import Ablation
from scrub.engine._chunk import ChunkRun
from scrub.engine._kernels import Kernels, kernel_status, kernels_for
from scrub.engine._last import last_block_for
from scrub.engine._plan import Plan, make_plan
from scrub.engine._start import late_start_works
from scrub.engine._suffix import SuffixBlocks, suffix_blocks_for
from scrub.engine._suffix_pass import plain_keys, suffix_roots
from scrub.engine.cache import ActivationCache, Key, Residual, balanced, pass_rows

__all__ = ["Evaluated", "FastEngine"]


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
        suffix: roots changed only by activation patches of heads and MLPs (or direct-path
            receivers' inputs) at positions >= s compute their blocks at positions >= s only
            (the first at the patched positions, the last at the metric's), from the plain
            stream there, by the verified suffix blocks (:mod:`scrub.engine._suffix_pass`).
            Off where :attr:`last_block` is, and under mean / zero ablation.
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
    suffix: bool = field(default=True, repr=False)

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

        # Root rows several trees share (a grid's base run): the suffix blocks' plain pass on
        # them is worth filling even for a plan that holds one of those trees only.
        roots = [t.rows(t.root).tobytes() for t in trees]
        shared = frozenset(r for r in set(roots) if roots.count(r) > 1)
        first = plan_of(trees[:1])
        per_batch = max(1, self.rows_per_pass(model, dataset.seq_len) // (_widest(first) * n))
        out = Evaluated([], [])
        for start in range(0, len(trees), per_batch):
            batch = trees[start : start + per_batch]
            plan = first if start == 0 and len(batch) == 1 else plan_of(batch)
            done = self._evaluate(
                model, batch, plan, cache, positions, patterns, kernels, tick, shared
            )
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
        shared: frozenset[bytes] = frozenset(),
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
        blocks = self._suffix_blocks(model, kernels, positions, patterns)
        suffix: dict[int, int] = {}
        if blocks is not None:
            suffix = suffix_roots(
                model,
                plan,
                lambda key, rows: cache.holds(model, dataset, key, rows),
                receivers=model.shape.kv_group == 1,  # the chunk's head kernels (_chunk.py)
                shared=shared,
            )
        streams: dict[tuple[bytes, Key], tuple[Key, np.ndarray]] = {}
        for gid, begin in suffix.items():  # the plain pass the suffix blocks start from
            on = plan.groups[gid].rows
            for key in plain_keys(model, begin):
                streams.setdefault((on.tobytes(), key), (key, on))
        needs = [(c, s.rows) for s, c in by_row] + list(unique.values()) + list(streams.values())
        values = cache.outputs(model, dataset, needs, on_pass=tick)
        leaves = {src.leaf_key(comp): v for (src, comp), v in zip(by_row, values, strict=False)}
        fetched = dict(zip(unique, values[len(by_row) : len(by_row) + len(unique)], strict=True))
        plain = dict(zip(streams, values[len(by_row) + len(unique) :], strict=True))
        early = {gk: fetched[u] for gk, u in wanted.items()}
        for src, comp in plan.leaves:
            if src.known is not None:
                leaves[src.leaf_key(comp)] = cache.subtree(src.known, comp)
        reads = _pattern_groups(plan, trees, patterns)
        n = len(trees[0].reference)
        # chunks of about one size: a small last chunk would pay a pass's fixed cost for little
        chunk = balanced(n, max(1, self.rows_per_pass(model, dataset.seq_len) // _widest(plan)))
        # A cache made for this call alone would never be read again.
        keep = self.cache is not None and self.cache.subtrees
        pieces: list[list[Tensor]] = []
        read: list[dict[tuple[int, Component], Tensor]] = []
        kept: dict[tuple[int, Component], list[Tensor]] = {}
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            chunk_leaves = {key: v[rows] for key, v in leaves.items()}
            run = ChunkRun(
                model, dataset, plan, rows, chunk_leaves, positions, kernels, reads, self.ablation
            )
            run.start_from({key: v[rows] for key, v in early.items()})
            run.joint_qkv = self.joint_qkv
            if keep:  # kept subtrees' outputs whole: later calls may read them anywhere
                run.whole = {_owner(plan, g) for g in plan.signatures}
            if self.last_block and kernels is not None and positions is not None:
                run.last_block = last_block_for(model)
            if suffix:
                assert blocks is not None
                run.use_suffix(blocks, suffix, {key: v[rows] for key, v in plain.items()})
            pieces.append(run.evaluate(tick))
            read.append(run.patterns)
            for gid in plan.signatures if keep else ():
                owner = _owner(plan, gid)
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

    def _suffix_blocks(
        self,
        model: ScrubModel,
        kernels: Kernels | None,
        positions: np.ndarray | None,
        patterns: Sequence[Component],
    ) -> SuffixBlocks | None:
        """The verified suffix blocks, where this call may use them (:attr:`suffix`)."""
        if not (self.suffix and self.last_block) or kernels is None or positions is None:
            return None
        if patterns or self.ablation is not None:
            return None
        return suffix_blocks_for(model)


@dataclass
class Evaluated:
    """What :meth:`FastEngine.evaluate_many` returns, one entry per tree.

    Attributes:
        logits: each tree's logits ``(batch, K, vocab)`` (or what ``reduce`` made of them).
        patterns: each tree's requested attention patterns, head → ``(batch, pos, pos)``.
    """

    logits: list[Any]
    patterns: list[dict[Component, Tensor]]


def _owner(plan: Plan, gid: int) -> int:
    """The group that computes ``gid``'s outputs: a fused child's are its parent's."""
    into = plan.groups[gid].into
    return gid if into is None else into


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
