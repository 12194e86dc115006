"""Treeify a hypothesis and sample every node's data.

**Treeify.** The interpretation graph may be a DAG: a node with two parents becomes two tree
nodes, each sampled on its own. A tree node's ``path`` (``out/induction/prev``) is its identity;
its ``name`` is the interp node's name when the node occurs once in the tree, else
``parent>name``.

**Sample.** Top-down, per DESIGN.md:

1. the reference batch ``x``: ``n`` distinct pool rows; the root's data is ``x``;
2. for each other node, ``D_n = sampler(D_parent)``, row-aligned with the parent;
3. for each non-leaf node and the root, its other inputs ``O_n = other_sampler(D_n)``.

**Randomness.** Every draw comes from the run's ``seed``, through a stream keyed by what is being
drawn: ``("reference",)``, ``("data", path)``, ``("other", path)``, ``("together", group)``.
The same seed gives the same draws bit for bit, and two hypotheses that share a node (same path,
same sampler, same parent data) get the same draws for it, which is what makes comparisons
between hypotheses paired.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from scrub._bind import BoundHypothesis
from scrub._components import Component
from scrub._errors import HypothesisError
from scrub._hypothesis import Correspondence, Hypothesis, InterpNode
from scrub._samplers import SampleContext
from scrub.data import Dataset

__all__ = ["SampledTree", "TreeNode", "sample_tree", "stream", "treeify"]


def stream(seed: int, *key: str) -> np.random.Generator:
    """The random stream for ``key`` under ``seed`` (stable across runs and platforms)."""
    words = [
        int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in key
    ]
    return np.random.default_rng([seed, *words])


@dataclass
class TreeNode:
    """One node of the treeified hypothesis.

    Attributes:
        name: unique display name in this tree.
        path: the interp-node names from the root, joined by ``/``.
        interp: the interpretation node it is a copy of.
        edge: the correspondence to its parent (``None`` for the root).
        children: child tree nodes, in the order the parent lists its inputs.
    """

    name: str
    path: str
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


def treeify(hyp: Hypothesis) -> TreeNode:
    """Turn the hypothesis's DAG into a tree rooted at its output node."""

    def build(name: str, path: str, edge: Correspondence | None) -> TreeNode:
        node = TreeNode(name=name, path=path, interp=hyp.node(name), edge=edge)
        for child in hyp.children(name):
            node.children.append(build(child, f"{path}/{child}", hyp.edge(child, name)))
        return node

    root = build(hyp.root, hyp.root, None)
    counts = Counter(n.interp.name for n in root.walk())

    def rename(node: TreeNode, parent: TreeNode | None) -> None:
        if counts[node.interp.name] > 1 and parent is not None:
            node.name = f"{parent.name}>{node.interp.name}"
        for child in node.children:
            rename(child, node)

    rename(root, None)
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
    """

    root: TreeNode
    data: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    dataset: Dataset
    warnings: list[str]

    @property
    def reference(self) -> np.ndarray:
        return self.data[self.root.name]

    def rows(self, node: TreeNode) -> np.ndarray:
        """The rows a node's components are computed on: ``O_n``, or ``D_n`` for a leaf.

        The root always computes on ``O_root``: with no children, that is the baseline.
        """
        return self.other[node.name] if node.name in self.other else self.data[node.name]

    def draws(self) -> dict[str, list[int]]:
        """Every draw, as ``{node: rows, "node.other": rows}`` (JSON-ready)."""
        out: dict[str, list[int]] = {}
        for node in self.root.walk():
            out[node.name] = self.data[node.name].tolist()
            if node.name in self.other:
                out[f"{node.name}.other"] = self.other[node.name].tolist()
        return out


def reference_rows(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """The reference batch: ``n`` distinct pool rows."""
    if n > dataset.n_base:
        raise HypothesisError(
            f"n = {n} reference examples, but the dataset pool has only {dataset.n_base}",
            key=("dataset", "params", "size"),
            hint="lower n or raise the dataset's size",
        )
    return np.sort(stream(seed, "reference").choice(dataset.n_base, size=n, replace=False))


def sample_tree(
    bound: BoundHypothesis, *, n: int, seed: int, reference_seed: int | None = None
) -> SampledTree:
    """Draw every node's data for ``n`` reference examples (see the module docstring).

    ``reference_seed`` draws the reference batch from another seed than the rest of the tree
    (default: ``seed``), so that the tree can be re-drawn on one reference batch.
    """
    root = treeify(bound.hypothesis)
    dataset = bound.dataset
    together: dict[str, np.ndarray] = {}
    messages: list[str] = []
    data: dict[str, np.ndarray] = {}
    other: dict[str, np.ndarray] = {}

    def ctx(node: TreeNode, role: str) -> SampleContext:
        return SampleContext(
            dataset=dataset,
            rng=stream(seed, role, node.path),
            node=node.name,
            together=together,
            together_rng=lambda group: stream(seed, "together", group),
            warnings=messages,
        )

    try:
        x = reference_rows(dataset, n, seed if reference_seed is None else reference_seed)
    except HypothesisError as exc:
        raise exc.with_context(file=bound.hypothesis.file) from None

    def visit(node: TreeNode, parent_rows: np.ndarray | None) -> None:
        if parent_rows is None:
            data[node.name] = x
        else:
            assert node.interp.sampler is not None
            data[node.name] = node.interp.sampler.sample(parent_rows, ctx(node, "data"))
        if not node.is_leaf or parent_rows is None:
            other[node.name] = node.interp.other.sample(data[node.name], ctx(node, "other"))
        for child in node.children:
            visit(child, data[node.name])

    visit(root, None)
    return SampledTree(root, data, other, dataset, messages)
