"""The fast engine's plan: which row groups a sampled tree needs, and what each hook does.

Context: DESIGN.md's evaluation stacks one **row group** per non-leaf node (its other inputs
``O_n``, or ``O_root`` for the root) and one per leaf (``D_n``), and runs them in one forward pass
in layer order. Leaves are plain forward passes, so here they are served from the
:class:`~scrub.engine.cache.ActivationCache` instead of being stacked.

For a non-leaf node n, each of its components' input channels is *assembled* exactly as the
reference evaluator does it: the residual stream of a pass on ``O_n`` in which the all-paths
inputs reaching that channel are activation patches, plus, for every direct input,
``out_d(child) − out_d(this pass)`` at the spliced positions. Channels that different all-paths
patches reach need different passes, so a node gets one **reading group** per distinct set of
all-paths patches.

Pitfall (isolation): two components of one node see each other's *plain* outputs on ``O_n``,
not their treeified ones (the path between them is not mapped). If a node's treeified output
were written into its reading group, a later component or a later read in that group would see
it. So a node's components are treeified *in* its reading group (``fused``) only when nothing in
that group reads after them: one reading group, and all its components at the same point of the
residual stream (the same layer's heads, one MLP, or the logits). Otherwise the node's components are computed
directly from their assembled inputs (:mod:`scrub.engine._kernels`): a **virtual output group**,
not stacked in the batch. Where those kernels do not reproduce the model (or the node maps an
embedding), the node gets a real **output group** on ``O_n`` whose components' inputs are *set*
to the assembled values, and whose other activations are never read.

Identical subtrees (a DAG node copied under two parents with the same draws) are planned once.
A subtree whose treeified outputs are already known (the cache holds them under the subtree's
:func:`signature`: its structure and every row drawn in it) is not planned at all: like a leaf,
its outputs are served from the cache. Competing hypotheses that share a node share its draws,
so they share these subtrees.

Several trees that share a dataset can be planned together (one group list, one set of passes):
discovery experiments (activation and path patching grids, :mod:`scrub.experiments`) evaluate
thousands of small trees, one per grid cell, as row groups of a few batched passes. Each tree
keeps its own root group; identical subtrees are still planned once, across trees too.

Every group stops after the last layer it is read at (``stop``). Groups are evaluated in passes
by increasing ``stop``: a child's groups never stop later than its parent's, so everything a
pass reads from another group was computed by then.

**Late start** (the mirror of the early stop): up to the first layer at which a group patches,
ablates, sets or reads anything (``start``), its residual stream is that of a plain pass on its
rows, so the engine starts it there from the residual stream the activation cache holds for
those rows, skipping blocks ``0 .. start - 1`` (an activation patch of a layer-L head on the
base run starts at L). Outputs it records from before ``start`` (the "this pass" values a
direct path subtracts) are plain outputs on its rows, also served by the cache (``served``).
``start == n_layers``: no block at all (the final residual stream comes from the cache). Groups
that read each other in one pass share a start, the lowest of theirs; passes are keyed by
(``stop``, ``start``). A start can always be lowered to 0 (a pass from the tokens) without
changing any value, which is what the engine does where the bridge cannot skip blocks.
Starting late pays where the starting residual stream is shared (a grid's cells all start
from the base run's) or already cached; a group alone on rows whose residual stream is not
cached (nor filled for a leaf) starts from the tokens: the cache would compute the same blocks.

**Fused children** (``fuse``): a child whose only reader is its parent's group, on the same
rows, and which only assembles its own components' inputs (direct splices, no all-paths patch
of its own), computes in its group exactly what the parent's group would compute if it
assembled those inputs itself: up to the child's layer both are plain passes on the same rows.
So the parent's group takes the child's targets over (``into``: the child's group runs no pass
of its own) and drops its patches of the child's outputs, as long as nothing else in the
parent's group changes the residual stream at or before the child's components. A path patch
(sender → receiver → logits, all on the base run) becomes one group, as in TransformerLens.
Refused under grouped-query attention, where a head's k/v input slot is shared by other heads.

**Kernel heads stop at the block input**: a fused group of layer L's heads (head kernels, no
mean / zero ablation) whose other reads are all before L stops at block L's input (``stop =
L``): its heads' ``z`` come from the kernels there (kcomp's induction node). Starting late at
L (cached there), it runs block L after all.

**Dead patches** (``read_at``): the logits are often read at a few positions only (the
metric's). A component's output at position p reaches the residual stream at positions >= p
only (causal attention), and a last-layer component's only at p. A root's activation patch
that reaches none of the read positions on any row changes nothing and is dropped (an
activation grid's last-layer cells off the metric's positions then cost nothing). Not under
mean / zero ablation, where a patched component would otherwise count as unmapped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from scrub._components import Channel, Component
from scrub._model import ScrubModel
from scrub._positions import PositionSpec, resolve_positions
from scrub._tree import SampledTree, TreeNode
from scrub.engine._ablation import ablated_in_reading

__all__ = ["Group", "Move", "Plan", "Source", "make_plan", "signature"]

Target = tuple[Component, Channel]


@dataclass(frozen=True)
class Source:
    """Where a child's treeified component outputs are: a leaf's cached rows, or a group.

    Attributes:
        node: the child tree node.
        rows: the dataset rows its outputs were computed on.
        group: the group that computes them, or ``None`` when the cache serves them.
        known: the subtree's signature when the cache holds its outputs (``None`` for a
            leaf, whose outputs are cached by dataset row).
        tree: the index of the tree the node belongs to (several trees planned together).
    """

    node: TreeNode
    rows: np.ndarray
    group: int | None
    known: str | None = None
    tree: int = 0

    def leaf_key(self, comp: Component) -> tuple[int, str, Component]:
        """The key of a served (leaf or known) output: unique across the planned trees."""
        return (self.tree, self.node.name, comp)


@dataclass(frozen=True)
class Move:
    """One child component's output moved into a group: a patch (all paths) or a splice.

    Attributes:
        component: the child's component.
        source: where its treeified output is.
        spec: positions, resolved on the source's rows and on the group's rows.
    """

    component: Component
    source: Source
    spec: PositionSpec


@dataclass
class Group:
    """One row group of the stacked batch.

    Attributes:
        gid: its index; children's groups have smaller indices than their parents'.
        node: the tree node it belongs to.
        rows: the dataset rows (``O_n``), one per reference example.
        patches: all-paths patches applied in this group, in the reference's order.
        splices: direct splices added to each assembled target.
        fused: the node's components are treeified in this group.
        sets: (output group) target → the reading group whose assembled value it takes.
        virtual: (output group) computed by kernels from the assembled inputs, not stacked.
        record: components whose outputs (after patches) later hooks read from this group.
        ablate: components whose outputs are replaced by their ablation values (mean or zero
            ablation; :mod:`scrub.engine._ablation`), before the patches.
        stop: ``stop_at_layer`` after which nothing more is read from this group.
        start: the first block the group must compute (0: from the tokens; see the module
            docstring, "late start").
        served: recorded components computed before ``start``: plain outputs on ``rows``.
        into: a fused child's group: the group that took its targets over (it runs no pass).
    """

    gid: int
    node: TreeNode
    rows: np.ndarray
    patches: list[Move] = field(default_factory=list)
    splices: dict[Target, list[Move]] = field(default_factory=dict)
    fused: bool = False
    sets: dict[Target, int] = field(default_factory=dict)
    record: set[Component] = field(default_factory=set)
    stop: int = 0
    virtual: bool = False
    ablate: list[Component] = field(default_factory=list)
    start: int = 0
    served: list[Component] = field(default_factory=list)
    into: int | None = None

    @property
    def targets(self) -> list[Target]:
        """Targets assembled in this group (reading groups) or set in it (output groups)."""
        return list(self.splices) if not self.sets else list(self.sets)

    def __repr__(self) -> str:
        role = "fused" if self.fused else ("output" if self.sets else "reading")
        role = "virtual " + role if self.virtual else role
        start = f"start={self.start}, " if self.start else ""
        return f"Group({self.gid}, {self.node.name!r}, {role}, {start}stop={self.stop})"


@dataclass
class Plan:
    """Row groups and the leaves they read, for one or several sampled trees.

    Attributes:
        groups: every group, children's before parents'.
        roots: each tree's root group (fused: it assembles the final residual stream).
        leaves: (source, component) pairs served from the activation cache: leaves and known
            subtrees.
        passes: groups by (``stop``, ``start``), in increasing order; every group of a pass
            has the pass's ``stop`` and ``start``.
        signatures: output group → signature of its node's subtree, for non-root nodes.
        outputs: (tree index, node name) → where that node's treeified outputs are.
    """

    groups: list[Group]
    roots: list[int]
    leaves: list[tuple[Source, Component]]
    passes: list[tuple[int, list[int]]]
    signatures: dict[int, str]
    outputs: dict[tuple[int, str], Source] = field(default_factory=dict)

    @property
    def root(self) -> int:
        """The root group of the first (usually only) tree."""
        return self.roots[0]


def signature(tree: SampledTree, node: TreeNode, *, salt: str = "") -> str:
    """What a node's treeified outputs depend on: its subtree's structure and draws.

    ``salt`` names what else they depend on (the ablation of unmapped inputs).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(salt.encode())

    def feed(n: TreeNode) -> None:
        digest.update(repr(n.interp.components).encode())
        digest.update(tree.rows(n).tobytes())
        for child in n.children:
            corr = child.corr
            digest.update(repr(("in", corr.channels, corr.positions, corr.paths)).encode())
            feed(child)
            digest.update(b"out")

    feed(node)
    return digest.hexdigest()


def make_plan(
    model: ScrubModel,
    trees: SampledTree | Sequence[SampledTree],
    *,
    known: Callable[[str], bool] = lambda sig: False,
    kernels: bool = False,
    ablation: str | None = None,
    late_start: bool = False,
    fuse: bool = False,
    cached: Callable[[int, np.ndarray], bool] = lambda layer, rows: False,
    read_at: np.ndarray | None = None,
) -> Plan:
    """Plan the row groups of one tree, or of several trees on one dataset, together.

    Args:
        model: the model.
        trees: the sampled tree, or several (same dataset, same number of reference rows).
        known: whether the cache holds the outputs of a subtree with this signature.
        kernels: compute non-fused nodes' components by kernels (virtual output groups).
        ablation: the key of the mean / zero ablation of unmapped inputs (``None``: resample).
        late_start: start each group at its first modified layer (module docstring); else
            every group starts from the tokens.
        fuse: let parents' groups take their children's targets over where they coincide
            (module docstring, "fused children").
        cached: whether the cache holds the residual stream entering this layer on these
            rows (late start: a group alone on its rows starts late only then).
        read_at: ``(batch, K)`` positions (in the roots' rows) the logits are read at; a
            root's activation patch that cannot reach any of them is dropped (module docstring,
            "dead patches"). ``None``: every position is read.
    """
    if isinstance(trees, SampledTree):
        trees = [trees]
    assert trees and all(t.dataset is trees[0].dataset for t in trees), "one dataset"
    assert len({len(t.reference) for t in trees}) == 1, "one reference batch size"
    n_layers = model.shape.n_layers
    groups: list[Group] = []
    outputs: dict[tuple[int, str], Source] = {}
    leaves: list[tuple[Source, Component]] = []
    served: set[tuple[int, str, Component]] = set()

    def new_group(node: TreeNode, rows: np.ndarray) -> Group:
        group = Group(gid=len(groups), node=node, rows=rows)
        groups.append(group)
        return group

    def need(source: Source, comp: Component) -> None:
        if source.group is None:
            if source.leaf_key(comp) not in served:
                served.add(source.leaf_key(comp))
                leaves.append((source, comp))
        else:
            groups[source.group].record.add(comp)

    signatures: dict[int, str] = {}
    planned: dict[str, Source] = {}  # signature -> the group computing it (in any tree)

    def visit(node: TreeNode, t: int, tree: SampledTree) -> None:
        if node.is_leaf and node.edge is not None:
            outputs[t, node.name] = Source(node, tree.rows(node), None, tree=t)
            return
        sig = signature(tree, node, salt=ablation or "") if node.edge is not None else None
        if sig is not None and known(sig):
            outputs[t, node.name] = Source(node, tree.rows(node), None, known=sig, tree=t)
            return
        if sig is not None and sig in planned:  # an identical copy (a DAG node, same draws)
            outputs[t, node.name] = planned[sig]
            return
        for child in node.children:
            visit(child, t, tree)
        comps = [mc.component for mc in node.interp.components]
        by_patches: dict[tuple, list[Target]] = {}
        for target in [(c, ch) for c in comps for ch in c.channels]:
            by_patches.setdefault(node.patch_key(target[1]), []).append(target)

        def moves(child: TreeNode, *, patch: bool = False) -> list[Move]:
            source = outputs[t, child.name]
            out = []
            for mc in child.interp.components:
                move = Move(mc.component, source, child.corr.splice_positions(mc))
                if patch and node is tree.root and not _reaches(model, tree, move, read_at):
                    continue  # the logits cannot see it: the patch changes nothing
                out.append(move)
                need(source, mc.component)
            return out

        reading: list[Group] = []
        for targets in by_patches.values():
            group = new_group(node, tree.rows(node))
            for child in node.inputs(targets[0][1], "all"):
                group.patches += moves(child, patch=ablation is None)
            for target in targets:
                group.splices[target] = [
                    move for child in node.inputs(target[1], "direct") for move in moves(child)
                ]
                for move in group.splices[target]:
                    group.record.add(move.component)  # "this pass"'s output, subtracted
            group.stop = max(model.stop_layer(c) for c, _ in targets)
            if ablation is not None:
                group.ablate = ablated_in_reading(
                    model.shape, [m.component for m in group.patches], [c for c, _ in targets]
                )
            reading.append(group)

        orders = {model.shape.order(c) for c in comps}
        if len(reading) == 1 and len(orders) == 1:
            out = reading[0]
            out.fused = True
        else:
            out = new_group(node, tree.rows(node))
            out.virtual = kernels and all(c.kind in ("head", "mlp") for c in comps)
            out.stop = max(model.stop_layer(c) for c in comps)
            if ablation is not None and not out.virtual:
                out.ablate = [c for c in comps if c.kind in ("tok_embed", "pos_embed")]
            for group in reading:
                for target in group.splices:
                    out.sets[target] = group.gid
                group.stop = out.stop  # the output group takes their values in the same pass
        outputs[t, node.name] = Source(node, out.rows, out.gid, tree=t)
        if sig is not None:
            signatures[out.gid] = sig
            planned[sig] = outputs[t, node.name]
            out.record.update(comps)

    roots: list[int] = []
    for t, tree in enumerate(trees):
        visit(tree.root, t, tree)
        root = outputs[t, tree.root.name].group
        assert root is not None
        roots.append(root)
    if fuse and ablation is None and model.shape.kv_group == 1:
        _fuse_children(model, groups)
    if kernels and ablation is None and model.shape.kv_group == 1:
        _stop_at_block_inputs(model, groups)
    _check_stops(groups, n_layers)
    if late_start:
        filled = {src.rows.tobytes() for src, _ in leaves if src.known is None}
        _set_starts(
            model, groups, lambda layer, rows: rows.tobytes() in filled or cached(layer, rows)
        )
    run = [g for g in groups if g.into is None]
    keys = sorted({(g.stop, g.start) for g in run})
    passes = [
        (stop, [g.gid for g in run if (g.stop, g.start) == (stop, start)]) for stop, start in keys
    ]
    return Plan(
        groups=groups,
        roots=roots,
        leaves=leaves,
        passes=passes,
        signatures=signatures,
        outputs=outputs,
    )


def _stop_at_block_inputs(model: ScrubModel, groups: list[Group]) -> None:
    """Module docstring, "kernel heads stop at the block input"."""
    for group in groups:
        comps = {c for c, _ in group.targets}
        layers = {c.layer for c in comps}
        if not group.fused or group.virtual or group.into is not None or len(layers) != 1:
            continue
        layer = layers.pop()
        later = [m.component for m in group.patches] + list(group.record - comps)
        heads = layer >= 1 and all(c.kind == "head" for c in comps)
        if heads and all(model.stop_layer(c) <= layer for c in later):  # nothing read at L+
            group.stop = layer


def _check_stops(groups: list[Group], n_layers: int) -> None:
    """Internal invariant: every group a group reads from stops no later than it."""
    for group in groups:
        moves = group.patches + [m for ms in group.splices.values() for m in ms]
        for move in moves:
            if move.source.group is not None:
                assert groups[move.source.group].stop <= group.stop, (group, move)
        for gid in group.sets.values():
            assert groups[gid].stop == group.stop, (group, gid)
        assert 0 <= group.stop <= n_layers


def first_layer(model: ScrubModel, comp: Component) -> int:
    """The first block that computes ``comp`` (embeddings: 0; the logits: ``n_layers``)."""
    if comp.kind in ("tok_embed", "pos_embed"):
        return 0
    return model.stop_layer(comp) - 1 if comp.kind != "logits" else model.shape.n_layers


def _set_starts(
    model: ScrubModel, groups: list[Group], cached: Callable[[int, np.ndarray], bool]
) -> None:
    """Each group's ``start`` and ``served`` (module docstring, "late start")."""
    n_layers = model.shape.n_layers
    on_rows: dict[bytes, list[Group]] = {}
    for group in groups:
        if group.into is not None:
            continue
        touched = [m.component for m in group.patches] + group.ablate
        touched += [c for c, _ in group.targets]
        group.start = min((first_layer(model, c) for c in touched), default=n_layers)
        if group.start and not group.virtual:
            on_rows.setdefault(group.rows.tobytes(), []).append(group)
    # A residual stream the cache must compute for one group alone (on rows it holds or fills
    # for nothing else) costs what the group would have computed: it starts from the tokens.
    for late in on_rows.values():
        if len(late) == 1 and not cached(late[0].start, late[0].rows):
            late[0].start = 0
    # A group stopped at a block's input that would start there (that residual stream cached)
    # runs that block after all, as it would have without the early stop.
    for group in groups:
        if group.into is None and group.start >= group.stop < n_layers:
            group.stop = group.start + 1
    # Groups of one stop that read each other run in one pass: they share the lowest start.
    parent = list(range(len(groups)))

    def find(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    run = [g for g in groups if g.into is None]
    for group in run:
        moves = group.patches + [m for ms in group.splices.values() for m in ms]
        linked = [m.source.group for m in moves] + list(group.sets.values())
        for other in linked:
            if other is not None and groups[other].stop == group.stop:
                parent[find(other)] = find(group.gid)
    lowest: dict[int, int] = {}
    for group in run:
        root = find(group.gid)
        lowest[root] = min(lowest.get(root, n_layers), group.start)
    for group in run:
        group.start = lowest[find(group.gid)]
        group.served = sorted(
            (c for c in group.record if first_layer(model, c) < group.start), key=repr
        )


def _fuse_children(model: ScrubModel, groups: list[Group]) -> None:
    """Parents' groups take over the targets of children that coincide with them (module
    docstring, "fused children")."""
    shape = model.shape
    readers: dict[int, set[int]] = {}
    for group in groups:
        moves = group.patches + [m for ms in group.splices.values() for m in ms]
        for gid in [m.source.group for m in moves] + list(group.sets.values()):
            if gid is not None:
                readers.setdefault(gid, set()).add(group.gid)
    for parent in groups:
        if parent.virtual or parent.sets or not parent.fused or parent.into is not None:
            continue
        for gid in sorted({m.source.group for m in parent.patches if m.source.group is not None}):
            child = groups[gid]
            comps = {mc.component for mc in child.node.interp.components}
            if not (
                child.fused
                and not child.virtual
                and not child.patches
                and readers.get(child.gid) == {parent.gid}
                and all(c.kind in ("head", "mlp") for c in comps)
                and {c for c, _ in child.targets} == comps  # its own targets only
                and np.array_equal(child.rows, parent.rows)
            ):
                continue
            mine = [m for m in parent.patches if m.source.group == child.gid]
            if {m.component for m in mine} != comps or any(m.spec is not None for m in mine):
                continue  # patched at some positions only: not the child's whole output
            last = max(shape.order(c) for c in comps)
            others = [m.component for m in parent.patches if m.source.group != child.gid]
            others += [c for c, _ in parent.targets]
            if any(shape.order(c) <= last for c in others):
                continue  # the parent changes the stream before the child reads it
            parent.patches = [m for m in parent.patches if m.source.group != child.gid]
            parent.splices = {**child.splices, **parent.splices}
            parent.record |= child.record
            parent.stop = max(parent.stop, child.stop)
            child.into = parent.gid


def _reaches(model: ScrubModel, tree: SampledTree, move: Move, read_at: np.ndarray | None) -> bool:
    """Whether a patch of ``move`` in the root's group can change the logits at ``read_at``."""
    if read_at is None or move.spec is None or move.component.kind not in ("head", "mlp"):
        return True
    written = resolve_positions(move.spec, tree.dataset, tree.rows(tree.root))  # (batch, P)
    if move.component.layer == model.shape.n_layers - 1:  # straight into the final stream
        return bool((written[:, :, None] == read_at[:, None, :]).any())
    return bool((written.min(1) <= read_at.max(1)).any())
