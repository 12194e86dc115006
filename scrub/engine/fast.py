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
  reads (the unembedding is a large share of a small model's cost).

What makes it fast, beyond batching: leaves come from an :class:`ActivationCache` (computed once
per dataset row and shared across hypotheses and seeds), and so do subtrees that an earlier call
with the same cache already evaluated on the same draws; each group stops after the last layer
it is read at; per-head outputs are computed only for the heads a hypothesis maps (from ``z`` and
``W_O``), never for the whole model. ``max_batch_rows`` chunks the reference batch (every group
is row-aligned with it), so memory is capped without changing any result.

It must agree with :func:`scrub.engine.evaluate_reference` to 1e-4 on every hypothesis; the
tests check it on every shipped hypothesis and on random ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._model import ScrubModel, select, write, write_at
from scrub._positions import PositionSpec, resolve_positions
from scrub._tree import SampledTree
from scrub.engine._kernels import Kernels, kernel_status, kernels_for
from scrub.engine._plan import Group, Move, Plan, make_plan
from scrub.engine.cache import ActivationCache

__all__ = ["FastEngine"]


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
    """

    cache: ActivationCache | None = None
    max_batch_rows: int = 4096
    kernels: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, not {self.max_batch_rows}")

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
        tick = on_pass or (lambda: None)
        cache = self.cache or ActivationCache(max_batch_rows=self.max_batch_rows)
        dataset = tree.dataset
        kernels = kernels_for(model) if self.kernels else None
        plan = make_plan(
            model,
            tree,
            known=lambda sig: cache.knows(model, dataset, sig),
            kernels=kernels is not None,
        )
        by_row = [(src, comp) for src, comp in plan.leaves if src.known is None]
        leaves = {
            (src.node.name, comp): values
            for (src, comp), values in zip(
                by_row,
                cache.outputs(model, dataset, [(c, s.rows) for s, c in by_row], on_pass=tick),
                strict=True,
            )
        }
        for src, comp in plan.leaves:
            if src.known is not None:
                leaves[src.node.name, comp] = cache.subtree(src.known, comp)
        widest = max(sum(not plan.groups[g].virtual for g in gids) for _, gids in plan.passes)
        chunk = max(1, self.max_batch_rows // widest)
        n = len(tree.reference)
        # A cache made for this call alone would never be read again.
        keep = self.cache is not None and self.cache.subtrees
        pieces: list[Tensor] = []
        kept: dict[tuple[int, Component], list[Tensor]] = {}
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            chunk_leaves = {key: v[rows] for key, v in leaves.items()}
            run = _ChunkRun(model, tree, plan, rows, chunk_leaves, positions, kernels)
            pieces.append(run.evaluate(tick))
            for gid in plan.signatures if keep else ():
                for mc in plan.groups[gid].node.interp.components:
                    kept.setdefault((gid, mc.component), []).append(run.store[gid, mc.component])
        for gid, sig in plan.signatures.items() if keep else ():
            node = plan.groups[gid].node
            cache.keep_subtree(
                sig,
                {mc.component: torch.cat(kept[gid, mc.component]) for mc in node.interp.components},
            )
        return torch.cat(pieces)


class _ChunkRun:
    """The passes of one chunk of reference rows."""

    def __init__(
        self,
        model: ScrubModel,
        tree: SampledTree,
        plan: Plan,
        rows: slice,
        leaves: dict[tuple[str, Component], Tensor],
        positions: np.ndarray | None,
        kernels: Kernels | None,
    ) -> None:
        self.model = model
        self.kernels = kernels
        self.pending: dict[tuple[int, Component, Channel], Tensor] = {}
        self.dataset = tree.dataset
        self.plan = plan
        self.rows = rows
        self.leaves = leaves
        self.positions = None if positions is None else positions[rows]
        self.size = rows.stop - rows.start
        self.batch = torch.arange(self.size, device=model.device)[:, None]
        self.store: dict[tuple[int, Component], Tensor] = {}
        self.where: dict[int, slice] = {}  # gid -> its rows in the current pass
        self._resolved: dict[tuple[PositionSpec, int], Tensor] = {}
        self.final_resid: Tensor | None = None  # the root's assembled final residual stream

    # -- helpers ----------------------------------------------------------------------------
    def resolve(self, spec: PositionSpec, rows: np.ndarray) -> Tensor:
        key = (spec, id(rows))
        if key not in self._resolved:
            pos = resolve_positions(spec, self.dataset, rows[self.rows])
            self._resolved[key] = torch.as_tensor(
                np.ascontiguousarray(pos), device=self.model.device
            )
        return self._resolved[key]

    def source_output(self, move: Move, live: Tensor | None) -> Tensor:
        """The child's treeified output of ``move.component``, ``(rows, pos, d)``."""
        src = move.source
        if src.group is None:
            return self.leaves[src.node.name, move.component]
        if live is not None and src.group in self.where:
            return select(live, move.component, self.where[src.group])
        return self.store[src.group, move.component]

    # -- passes -----------------------------------------------------------------------------
    def evaluate(self, tick: Callable[[], None]) -> Tensor:
        logits: Tensor | None = None
        for stop, gids in self.plan.passes:
            groups = [self.plan.groups[g] for g in gids]
            stacked = [g for g in groups if not g.virtual]
            self.where = {
                g.gid: slice(i * self.size, (i + 1) * self.size) for i, g in enumerate(stacked)
            }
            tokens = torch.cat(
                [self.dataset.tokens[torch.as_tensor(g.rows[self.rows])] for g in stacked]
            )
            final = stop >= self.model.shape.n_layers
            hooks = self.hooks(groups, final=final)
            bridge = self.model.bridge
            try:
                with bridge.hooks(fwd_hooks=list(hooks.items())):
                    if final:
                        bridge(tokens.to(self.model.device))
                        raise AssertionError("the final pass did not reach ln_final")
                    bridge(tokens.to(self.model.device), stop_at_layer=stop)
            except _Stop:
                pass
            tick()
            if final:
                assert self.final_resid is not None
                logits = self.unembed(self.final_resid)
        assert logits is not None
        return logits

    def unembed(self, resid: Tensor) -> Tensor:
        if self.positions is not None:
            pos = torch.as_tensor(self.positions, device=resid.device)
            resid = resid[self.batch, pos]
        return self.model.unembed(resid)

    def hooks(self, groups: list[Group], *, final: bool) -> dict[str, Callable]:
        """Hook functions by hook name for one pass over ``groups``."""
        model = self.model
        outputs: dict[str, set[Component]] = {}
        inputs: dict[str, set[tuple[Component, Channel]]] = {}
        for group in groups:
            for move in group.patches:
                outputs.setdefault(model.output_hook(move.component), set()).add(move.component)
            for comp in group.record if not group.virtual else ():
                outputs.setdefault(model.output_hook(comp), set()).add(comp)
            for comp, ch in group.targets:
                if comp.kind != "logits":
                    inputs.setdefault(model.input_hook(comp, ch), set()).add((comp, ch))
        hooks: dict[str, Callable] = {}
        for name, comps in outputs.items():
            hooks[name] = self._output_hook(groups, comps)
        for name, targets in inputs.items():
            hooks[name] = self._input_hook(groups, targets)
        if final:
            hooks["ln_final.hook_in"] = self._final_hook()
        return hooks

    def _output_hook(self, groups: list[Group], comps: set[Component]) -> Callable:
        def hook(t: Tensor, hook=None) -> Tensor:
            t = t.clone()
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
        value = resid
        for move in group.splices[target]:
            src = self.resolve(move.spec, move.source.rows)
            dst = self.resolve(move.spec, group.rows)
            comp = move.component
            new = self.model.contribution(comp, self.source_output(move, None)[self.batch, src])
            old = self.model.contribution(comp, self.store[group.gid, comp][self.batch, dst])
            value = value.index_put((self.batch.expand_as(dst), dst), new - old, accumulate=True)
        return value

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

    def _final_hook(self) -> Callable:
        root = self.plan.groups[self.plan.root]
        (key,) = [t for t in root.splices if t[0].kind == "logits"]

        def hook(t: Tensor, hook=None) -> Tensor:
            resid = t[self.where[root.gid]]
            self.final_resid = self.assemble(root, key, resid)
            raise _Stop

        return hook
