"""The reference evaluator: DESIGN.md's evaluation, written to be obviously correct.

Bottom-up over the tree. For each node n, on the rows its components are computed on (``O_n``;
``D_n`` for a leaf; ``O_root`` for the root), and for each component P of n and each of P's input
channels ch, P's input through ch is assembled as:

1. the residual stream of a forward pass on n's rows in which every **all-paths** input into
   (P, ch) has its components' outputs overwritten by the child's (an activation patch);
2. plus, for every **direct** input into (P, ch), ``out_d(child rows) − out_d(this pass)`` for
   each of the child's components d, at the spliced positions (a residual-stream splice).

A final pass on n's rows then *sets* every input channel of every component of n to its
assembled value and records the components' outputs (the logits, for the root). Setting every
channel, rather than editing the residual stream, keeps one component of n from seeing another's
treeified output: paths between two components of the same node are not mapped, so they carry
``O_n`` values.

Named positions are resolved per row group: a child's value at its example's ``END`` is spliced
at the parent example's ``END``.

With mean or zero ablation (:mod:`scrub.engine._ablation`), every pass on ``O_n`` first
overwrites the outputs of the components it ablates with their ablation values (the all-paths
patches then apply on top), and the final pass ablates the node's own embeddings.

Leaves are plain forward passes on their data. Cost: (number of distinct all-paths patch sets
+ 1) forward passes per non-leaf node. Readable over fast; :mod:`scrub.engine` has the fast one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._model import OutputPatch, ScrubModel
from scrub._positions import resolve_positions
from scrub._tree import SampledTree, TreeNode
from scrub.engine._ablation import Ablation, ablated_in_reading

__all__ = ["evaluate_reference"]

Target = tuple[Component, Channel]


def evaluate_reference(
    model: ScrubModel,
    tree: SampledTree,
    *,
    ablation: Ablation | None = None,
    on_pass: Callable[[], None] | None = None,
) -> Tensor:
    """The treeified model's logits, ``(batch, pos, vocab)``, on the root's rows.

    Args:
        model: the model.
        tree: the sampled tree.
        ablation: mean or zero ablation of unmapped inputs (``None``: resample them).
        on_pass: called after every forward pass (for progress bars).
    """
    tick = on_pass or (lambda: None)
    return _Evaluator(model, tree, tick, ablation).outputs(tree.root)[_LOGITS]


_LOGITS = Component("logits")


class _Evaluator:
    def __init__(
        self,
        model: ScrubModel,
        tree: SampledTree,
        tick: Callable[[], None],
        ablation: Ablation | None,
    ) -> None:
        self.model = model
        self.tree = tree
        self.tick = tick
        self.ablation = ablation
        self.batch = torch.arange(len(tree.reference), device=model.device)[:, None]

    def positions(self, spec, node: TreeNode) -> Tensor:
        rows = self.tree.rows(node)
        pos = resolve_positions(spec, self.tree.dataset, rows)
        return torch.as_tensor(np.ascontiguousarray(pos), device=self.model.device)

    def tokens(self, node: TreeNode) -> Tensor:
        return self.tree.dataset.tokens[torch.as_tensor(self.tree.rows(node))]

    def outputs(self, node: TreeNode) -> dict[Component, Tensor]:
        """Raw outputs (``z`` for heads) of ``node``'s components on its rows."""
        comps = [mc.component for mc in node.interp.components]
        if node.is_leaf and node.edge is not None:
            _, _, outs = self.model.run(self.tokens(node), read_outputs=comps)
            self.tick()
            return outs

        child_outs = {child.name: self.outputs(child) for child in node.children}
        targets = [(c, ch) for c in comps for ch in c.channels]

        # Group the targets by the set of all-paths patches that reach them.
        groups: dict[tuple[tuple[str, Component], ...], list[Target]] = {}
        for target in targets:
            groups.setdefault(node.patch_key(target[1]), []).append(target)

        assembled: dict[Target, Tensor] = {}
        for patch_key, group in groups.items():
            patches = [
                self.patch(node, child_name, comp, child_outs) for child_name, comp in patch_key
            ]
            if self.ablation is not None:
                ablated = ablated_in_reading(
                    self.model.shape, [comp for _, comp in patch_key], [c for c, _ in group]
                )
                patches = self.ablated(node, ablated) + patches
            direct = {
                target: [
                    (child, mc)
                    for child in node.inputs(target[1], "direct")
                    for mc in child.interp.components
                ]
                for target in group
            }
            needed = {mc.component for splices in direct.values() for _, mc in splices}
            _, inputs, outs = self.model.run(
                self.tokens(node), patches=patches, read_inputs=group, read_outputs=needed
            )
            self.tick()
            for target in group:
                resid = inputs[target]
                for child, mc in direct[target]:
                    spec = child.corr.splice_positions(mc)
                    src, dst = self.positions(spec, child), self.positions(spec, node)
                    d = mc.component
                    new = self.model.contribution(d, child_outs[child.name][d][self.batch, src])
                    old = self.model.contribution(d, outs[d][self.batch, dst])
                    resid = resid.index_put(
                        (self.batch.expand_as(dst), dst), new - old, accumulate=True
                    )
                assembled[target] = resid

        embeds = [c for c in comps if c.kind in ("tok_embed", "pos_embed")]
        logits, _, outs = self.model.run(
            self.tokens(node),
            patches=self.ablated(node, embeds) if self.ablation is not None else (),
            set_inputs=assembled,
            read_outputs=[c for c in comps if c.kind != "logits"],
        )
        self.tick()
        if node.edge is None:
            outs[_LOGITS] = logits
        return outs

    def ablated(self, node: TreeNode, comps: list[Component]) -> list[OutputPatch]:
        """Patches that write ``comps``' ablation values at every position of ``node``'s rows."""
        assert self.ablation is not None
        rows = self.tree.rows(node)
        shape = (len(rows), self.tree.dataset.seq_len)
        classes = self.ablation.classes(self.tree.dataset, rows)
        every = torch.arange(shape[1], device=self.model.device).expand(*shape)
        return [
            OutputPatch(c, every, self.ablation.values(self.model, c, classes, shape))
            for c in comps
        ]

    def patch(
        self, node: TreeNode, child_name: str, comp: Component, child_outs: dict
    ) -> OutputPatch:
        child = next(c for c in node.children if c.name == child_name)
        mc = next(m for m in child.interp.components if m.component == comp)
        spec = child.corr.splice_positions(mc)
        src, dst = self.positions(spec, child), self.positions(spec, node)
        return OutputPatch(comp, dst, child_outs[child_name][comp][self.batch, src])
