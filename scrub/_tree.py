"""Treeify a hypothesis and sample every node's data.

**Treeify.** The interpretation graph may be a DAG: a node with two parents becomes two tree
nodes, each sampled on its own. A tree node's identity is its ``path``: the tuple of interp-node
names from the root down to it, *without* the root's own name (the root's path is ``()``), so
that no joining of strings can make two tree nodes one. Its ``name`` is for display and for the
result's ``draws``: the interp node's name when the node occurs once in the tree, else
``parent>name`` (treeify refuses a tree whose display names collide).

Pitfall: a DAG's tree can be exponentially larger than the DAG (8 layers of 8 nodes, each
reading every node of the layer below, is 8^8 tree nodes). :func:`tree_size` counts the tree by
dynamic programming over the DAG, and treeify refuses trees above ``max_nodes``
(:data:`MAX_TREE_NODES` by default) before building anything.

**Sample.** Top-down, per DESIGN.md:

1. the reference batch ``x``: ``n`` distinct pool rows; the root's data is ``x``;
2. for each other node, ``D_n = sampler(D_parent)``, row-aligned with the parent;
3. for each non-leaf node and the root, its other inputs ``O_n = other_sampler(D_n)``.

**Randomness.** Every draw comes from the run's ``seed``, through a stream keyed by what is being
drawn: ``("reference",)``, ``("data", path)``, ``("other", path)``, ``("together", group)``,
where ``path`` is the canonical JSON encoding of the path tuple (:func:`path_key`). The same seed
gives the same draws bit for bit, and two hypotheses that share a node (same path, same sampler,
same parent data) get the same draws for it, which is what makes comparisons between hypotheses
paired. The root's path is ``()`` whatever it is called, so the root's default (``uncond``)
other inputs are the same rows in every hypothesis on one experiment: they are the rows of the
``resample_all`` baseline (:func:`baseline_rows`), and the empty hypothesis *is* the baseline.

**Self-draws.** A ``cond`` or ``generate`` draw can return the parent's own example (a class of
size one, or a small class, or a generator that happened to remake it); for those rows the node
is not scrubbed at all. :class:`SampledTree` records, for every such draw, the fraction of rows
whose example is token for token the parent's (``self_draws``), and warns above 10%.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from scrub._bind import BoundHypothesis
from scrub._components import Component
from scrub._errors import HypothesisError
from scrub._hypothesis import Correspondence, Hypothesis, InterpNode
from scrub._samplers import (
    SELF_DRAW_WARN_FRACTION,
    CondSampler,
    GenerateSampler,
    SampleContext,
    UncondSampler,
    self_draw_fraction,
)
from scrub.data import Dataset

__all__ = [
    "MAX_TREE_NODES",
    "SampledTree",
    "TreeNode",
    "baseline_rows",
    "path_key",
    "reference_rows",
    "sample_tree",
    "stream",
    "tree_size",
    "treeify",
]

MAX_TREE_NODES = 10_000
"""Most tree nodes :func:`treeify` builds unless told otherwise (``max_nodes``)."""

Path = tuple[str, ...]


def stream(seed: int, *key: str) -> np.random.Generator:
    """The random stream for ``key`` under ``seed`` (stable across runs and platforms)."""
    words = [
        int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in key
    ]
    return np.random.default_rng([seed, *words])


def path_key(path: Path) -> str:
    """The canonical encoding of a tree path for stream keys: a JSON list of names.

    ``("a/b",)`` and ``("a", "b")`` encode differently, whatever the names contain.
    """
    return json.dumps(list(path), ensure_ascii=False, separators=(",", ":"))


@dataclass
class TreeNode:
    """One node of the treeified hypothesis.

    Attributes:
        name: unique display name in this tree.
        path: the interp-node names from the root (excluded) down to this node; ``()`` for
            the root. The node's identity, and the key of its random streams.
        interp: the interpretation node it is a copy of.
        edge: the correspondence to its parent (``None`` for the root).
        children: child tree nodes, in the order the parent lists its inputs.
    """

    name: str
    path: Path
    interp: InterpNode
    edge: Correspondence | None
    children: list[TreeNode] = field(default_factory=list)

    @property
    def corr(self) -> Correspondence:
        """The correspondence to the parent (the root has none)."""
        assert self.edge is not None, f"{self.name} is the root"
        return self.edge

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def inputs(self, channel: str, paths: str) -> list[TreeNode]:
        """Children whose edges reach this node's ``channel`` by ``paths`` (direct / all)."""
        return [c for c in self.children if c.corr.paths == paths and channel in c.corr.channels]

    def patch_key(self, channel: str) -> tuple[tuple[str, Component], ...]:
        """The all-paths patches (child, component) that reach ``channel``."""
        return tuple(
            (child.name, mc.component)
            for child in self.inputs(channel, "all")
            for mc in child.interp.components
        )

    def walk(self):
        """This node and its descendants, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def __repr__(self) -> str:
        return f"TreeNode({self.name!r}, children={[c.name for c in self.children]})"


def tree_size(hyp: Hypothesis) -> int:
    """How many tree nodes treeifying ``hyp`` makes, counted over the DAG (nothing is built)."""
    size: dict[str, int] = {}
    for name in nx.topological_sort(hyp.graph):  # children (sources) before parents
        size[name] = 1 + sum(size[child] for child in hyp.children(name))
    return size[hyp.root]


def treeify(hyp: Hypothesis, *, max_nodes: int = MAX_TREE_NODES) -> TreeNode:
    """Turn the hypothesis's DAG into a tree rooted at its output node.

    Args:
        hyp: the hypothesis.
        max_nodes: refuse to build a tree with more nodes than this.

    Raises:
        HypothesisError: the tree would have more than ``max_nodes`` nodes, or two tree nodes
            would have the same display name.
    """
    size = tree_size(hyp)
    if size > max_nodes:
        raise HypothesisError(
            f"treeifying this interpretation graph would make {size:,} tree nodes (the limit "
            f"is {max_nodes:,}): every node with several parents is copied once per path to "
            "the root, so stacked layers that each read every node below multiply",
            file=hyp.file,
            key=("nodes",),
            hint="give nodes fewer parents (e.g. read a whole layer through one node), or raise "
            "the limit from Python: scrub.run(..., max_tree_nodes=N)",
        )

    def build(name: str, path: Path, edge: Correspondence | None) -> TreeNode:
        node = TreeNode(name=name, path=path, interp=hyp.node(name), edge=edge)
        for child in hyp.children(name):
            node.children.append(build(child, (*path, child), hyp.edge(child, name)))
        return node

    root = build(hyp.root, (), None)
    counts = Counter(n.interp.name for n in root.walk())

    def rename(node: TreeNode, parent: TreeNode | None) -> None:
        if counts[node.interp.name] > 1 and parent is not None:
            node.name = f"{parent.name}>{node.interp.name}"
        for child in node.children:
            rename(child, node)

    rename(root, None)
    names = Counter(n.name for n in root.walk())
    clash = [name for name, k in names.items() if k > 1]
    if clash:
        raise HypothesisError(
            f"two nodes of the treeified graph would both be called {clash[0]!r}",
            file=hyp.file,
            key=("nodes",),
            hint="rename the nodes so that no name contains another node's copy name "
            "('parent>name')",
        )
    return root


@dataclass
class SampledTree:
    """A treeified hypothesis with every node's dataset rows drawn.

    Attributes:
        root: the tree.
        data: tree-node name → rows of its data ``D_n``.
        other: tree-node name → rows of its other inputs ``O_n`` (non-leaf nodes and the root).
        dataset: the dataset the rows index (generated examples appended).
        warnings: sampling warnings (e.g. conditional classes of size one).
        self_draws: tree-node name → ``{"sampler": f, "other": f}`` for every ``cond`` or
            ``generate`` draw: the fraction of rows whose example is the parent's own.
    """

    root: TreeNode
    data: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    dataset: Dataset
    warnings: list[str]
    self_draws: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def reference(self) -> np.ndarray:
        return self.data[self.root.name]

    def rows(self, node: TreeNode) -> np.ndarray:
        """The rows a node's components are computed on: ``O_n``, or ``D_n`` for a leaf.

        The root always computes on ``O_root``: with no children, that is the baseline.
        """
        return self.other[node.name] if node.name in self.other else self.data[node.name]

    def draws(self) -> dict[str, list[int]]:
        """Every draw, as ``{node: rows, "node.other": rows}`` (JSON-ready).

        Raises:
            HypothesisError: a node's name is another's ``name.other``.
        """
        out: dict[str, list[int]] = {}
        for node in self.root.walk():
            for key, rows in ((node.name, self.data), (f"{node.name}.other", self.other)):
                if node.name not in rows:
                    continue
                if key in out:
                    raise HypothesisError(
                        f"the draws of two tree nodes would both be recorded as {key!r}",
                        key=("nodes",),
                        hint="rename the node whose name ends in '.other'",
                    )
                out[key] = rows[node.name].tolist()
        return out

    def generated_rows(self) -> list[int]:
        """The generated (non-pool) rows any draw uses, sorted."""
        rows = [r for r in (*self.data.values(), *self.other.values())]
        used = np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
        return [int(r) for r in used if r >= self.dataset.n_base]


def reference_rows(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """The reference batch: ``n`` distinct pool rows."""
    if n > dataset.n_base:
        raise HypothesisError(
            f"n = {n} reference examples, but the dataset pool has only {dataset.n_base}",
            key=("dataset", "params", "size"),
            hint="lower n or raise the dataset's size",
        )
    return np.sort(stream(seed, "reference").choice(dataset.n_base, size=n, replace=False))


ROOT_OTHER_KEY = ("other", path_key(()))
"""The stream of the root's other inputs; the ``resample_all`` baseline draws from it too."""


def baseline_rows(dataset: Dataset, reference: np.ndarray, seed: int) -> np.ndarray:
    """The ``resample_all`` baseline's rows: one unconditional pool draw per reference row.

    They depend on the dataset, the reference batch and the seed only, never on a hypothesis;
    a root with the default ``other: uncond`` draws exactly these rows.
    """
    ctx = SampleContext(
        dataset=dataset,
        rng=stream(seed, *ROOT_OTHER_KEY),
        node="baseline",
        together={},
        together_rng=lambda group: stream(seed, "together", group),
    )
    return UncondSampler().sample(reference, ctx)


def sample_tree(
    bound: BoundHypothesis,
    *,
    n: int,
    seed: int,
    max_tree_nodes: int = MAX_TREE_NODES,
    reference_seed: int | None = None,
) -> SampledTree:
    """Draw every node's data for ``n`` reference examples (see the module docstring).

    ``reference_seed`` draws the reference batch from another seed than the rest of the tree
    (default: ``seed``), so that the tree can be re-drawn on one reference batch.
    """
    try:
        root = treeify(bound.hypothesis, max_nodes=max_tree_nodes)
    except HypothesisError as exc:
        raise exc.with_context(file=bound.hypothesis.file) from None
    dataset = bound.dataset
    together: dict[str, np.ndarray] = {}
    messages: list[str] = []
    data: dict[str, np.ndarray] = {}
    other: dict[str, np.ndarray] = {}
    self_draws: dict[str, dict[str, float]] = {}

    def ctx(node: TreeNode, role: str) -> SampleContext:
        return SampleContext(
            dataset=dataset,
            rng=stream(seed, role, path_key(node.path)),
            node=node.name,
            together=together,
            together_rng=lambda group: stream(seed, "together", group),
            warnings=messages,
        )

    def draw(node: TreeNode, role: str, sampler, parent_rows: np.ndarray) -> np.ndarray:
        warned = len(messages)
        try:
            rows = sampler.sample(parent_rows, ctx(node, "data" if role == "sampler" else role))
        except HypothesisError as exc:
            key = ("nodes", node.interp.name, role)
            raise exc.with_context(file=bound.hypothesis.file, key_prefix=key) from None
        if isinstance(sampler, CondSampler | GenerateSampler):
            frac = self_draw_fraction(dataset, parent_rows, rows)
            self_draws.setdefault(node.name, {})[role] = frac
            if frac > SELF_DRAW_WARN_FRACTION and len(messages) == warned:
                whose = "its parent's" if role == "sampler" else "its own data's"
                messages.append(
                    f"node {node.name!r}: {sampler!r} ({role}) drew {whose} example itself for "
                    f"{frac:.0%} of rows, so those rows are not scrubbed there; use a "
                    "'generate' sampler (it makes new examples with the same feature), a "
                    "coarser feature or a larger dataset"
                )
        return rows

    try:
        x = reference_rows(dataset, n, seed if reference_seed is None else reference_seed)
    except HypothesisError as exc:
        raise exc.with_context(file=bound.hypothesis.file) from None

    def visit(node: TreeNode, parent_rows: np.ndarray | None) -> None:
        if parent_rows is None:
            data[node.name] = x
        else:
            assert node.interp.sampler is not None
            data[node.name] = draw(node, "sampler", node.interp.sampler, parent_rows)
        if not node.is_leaf or parent_rows is None:
            other[node.name] = draw(node, "other", node.interp.other, data[node.name])
        for child in node.children:
            visit(child, data[node.name])

    visit(root, None)
    return SampledTree(root, data, other, dataset, messages, self_draws)
