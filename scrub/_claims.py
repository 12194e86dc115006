"""Claims: every path from the input to the output is claimed by at most one tree node.

Context (DESIGN.md, "Claims may not overlap"): an interpretation edge child → parent through
channel ``ch`` at positions ``P`` *claims* model paths:

- a **direct** edge claims the residual paths from each of the child's components, at ``P``,
  straight into ``ch`` of the parent's components;
- an **all-paths** edge claims those and every path from the child's components, at ``P``,
  through any components in between (later in the residual stream) into ``ch``.

A node's claim contains its descendants' claims (their paths continue through it), so two tree
nodes that are not ancestor and descendant claim disjoint paths iff, at their lowest common
ancestor, the two children leading to them do. Treeified siblings are the interp graph's
children of one node, so checking each node's inputs pairwise, on the DAG, checks the tree.

Two inputs A (component a) and B (component b) of one parent share a path ending in the same
parent component and channel when:

1. ``a == b`` and their positions meet in some example (the path ``a -> parent``);
2. B is all-paths and b is upstream of a: the path ``b -> a -> parent`` is B's (all paths
   from b) and A's (everything that flows into a and then on as A's edge says). The same with
   the roles swapped.

Positions in case 2 are compared only when no attention can move information between
positions on the way: a is an MLP and no head lies between b and a in the residual stream.
Otherwise the path may reach any position (attention mixes positions), and the claims are
taken to overlap: conservative, as a false "disjoint" would make the score depend on the order
of ``inputs:``.
"""

from __future__ import annotations

from itertools import combinations, pairwise

import networkx as nx
import numpy as np

from scrub._components import Channel, Component
from scrub._errors import HypothesisError
from scrub._hypothesis import Correspondence, Hypothesis, MappedComponent
from scrub._positions import PositionSpec, format_positions, resolve_positions
from scrub.data import Dataset

__all__ = ["check_claims"]


def check_claims(hyp: Hypothesis, dataset: Dataset, *, n_layers: int) -> None:
    """Raise if two inputs of one node claim a common path (see the module docstring).

    Raises:
        HypothesisError: naming both inputs, one shared path, and the key of the later input.
    """
    checker = _Checker(hyp, dataset, n_layers)
    for parent in hyp.graph:
        children = hyp.children(parent)
        for i, j in combinations(range(len(children)), 2):
            checker.check_pair(parent, children[i], children[j], index=j)


class _Checker:
    def __init__(self, hyp: Hypothesis, dataset: Dataset, n_layers: int) -> None:
        self.hyp = hyp
        self.dataset = dataset
        self.n_layers = n_layers
        self.pool = np.arange(dataset.n_base)
        self._resolved: dict[PositionSpec, np.ndarray] = {}

    def positions(self, spec: PositionSpec) -> np.ndarray:
        if spec not in self._resolved:
            self._resolved[spec] = resolve_positions(spec, self.dataset, self.pool)
        return self._resolved[spec]

    def meet(self, s1: PositionSpec, s2: PositionSpec) -> bool:
        """Whether the two position specs share a position in some pool example."""
        if s1 is None or s2 is None:
            return True
        p1, p2 = self.positions(s1), self.positions(s2)
        return bool((p1[:, :, None] == p2[:, None, :]).any())

    def order(self, comp: Component) -> tuple[int, int]:
        return comp.order(self.n_layers)

    def mixes(self, b: Component, a: Component) -> bool:
        """Whether a path from b into a can change position (a head on the way, or a itself)."""
        if a.kind == "head":
            return True
        lo, hi = self.order(b), self.order(a)
        return any(lo < (layer, 0) < hi for layer in range(self.n_layers))

    def check_pair(self, parent: str, first: str, second: str, *, index: int) -> None:
        hyp = self.hyp
        e1, e2 = hyp.edge(first, parent), hyp.edge(second, parent)
        targets = [
            (pmc.component, ch)
            for pmc in hyp.node(parent).components
            for ch in pmc.component.channels
            if ch in e1.channels and ch in e2.channels
        ]
        if not targets:
            return
        for m1 in hyp.node(first).components:
            for m2 in hyp.node(second).components:
                if m1.component == m2.component:
                    self._same_component(parent, e1, m1, e2, m2, index=index)
                    continue
                for (ea, ma), (eb, mb) in (((e1, m1), (e2, m2)), ((e2, m2), (e1, m1))):
                    # eb is all-paths and b is upstream of a: b -> a -> parent is both's.
                    a, b = ma.component, mb.component
                    if eb.paths != "all" or not self.order(b) < self.order(a):
                        continue
                    pa, pb = ea.splice_positions(ma), eb.splice_positions(mb)
                    if not self.mixes(b, a) and not self.meet(pa, pb):
                        continue
                    target = next(
                        t for t in targets if self.order(a) < self.order(t[0])
                    )  # upstream is checked on loading
                    path = [b.name, _into(a), _into(target[0], target[1])]
                    raise HypothesisError(
                        f"inputs {ea.child!r} and {eb.child!r} of node {parent!r} claim the "
                        f"same model path {self.render(path, parent)}: {eb.child!r} reaches "
                        f"{parent!r} through all paths from {b.name} (positions "
                        f"{format_positions(pb)}), including through {a.name}, which "
                        f"{ea.child!r} maps (positions {format_positions(pa)}); which of the "
                        "two feeds the path would depend on the order of 'inputs'",
                        key=("nodes", parent, "inputs", index),
                        hint=f"make {eb.child!r} a direct input ('paths: direct'), or move "
                        f"{a.name} or {b.name} out of one of the two nodes, so that each path "
                        "is claimed once",
                    )

    def _same_component(
        self,
        parent: str,
        e1: Correspondence,
        m1: MappedComponent,
        e2: Correspondence,
        m2: MappedComponent,
        *,
        index: int,
    ) -> None:
        s1, s2 = e1.splice_positions(m1), e2.splice_positions(m2)
        if not self.meet(s1, s2):
            return
        raise HypothesisError(
            f"the path from {m1.component.name} into node {parent!r} is matched twice, by "
            f"inputs {e1.child!r} (positions {format_positions(s1)}) "
            f"and {e2.child!r} (positions {format_positions(s2)})",
            key=("nodes", parent, "inputs", index),
            hint="split the positions or channels so that each path is matched once",
        )

    def render(self, path: list[str], parent: str) -> str:
        """``b -> a.ch -> p.ch -> ... -> logits``: the path continued up to the root."""
        hyp = self.hyp
        chain = nx.shortest_path(hyp.graph, parent, hyp.root)
        for child, up in pairwise(chain):
            corr = hyp.edge(child, up)
            for pmc in hyp.node(up).components:
                ch = next((c for c in corr.channels if c in pmc.component.channels), None)
                if ch is not None:
                    path.append(_into(pmc.component, ch))
                    break
        return " -> ".join(path)


def _into(comp: Component, channel: Channel | None = None) -> str:
    """A component entered through a channel: ``a0.h1.v``, ``m0.in``; ``logits`` alone."""
    if comp.kind == "logits":
        return "logits"
    ch = channel or ("v" if comp.kind == "head" else "in")
    return f"{comp.name}.{ch}"
