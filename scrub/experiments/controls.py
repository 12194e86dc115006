"""Random controls: how a hypothesis ranks among random hypotheses of the same shape.

A circuit that recovers 0.9 says little if random circuits of the same size recover 0.85. A
**random control** of a hypothesis keeps everything but *which* components its nodes map: the
same nodes, samplers, edges (channels, positions, paths) and position restrictions, and the
same number of components per node, each drawn at random among the model's components of the
same kind (a head for a head, an MLP for an MLP; embeddings and the logits stay, there is only
one of each). Draws respect the model's order (a child's components write before the parent
components they feed read) and are rejected and redrawn when the result is not a valid
hypothesis (e.g. two inputs splicing one component into one channel).

The hypothesis's **percentile** is the share of controls it beats (ties count half).

Pitfalls: controls keep the node names, so they share the hypothesis's draws (the same rows for
each node): the comparison is paired. Controls are drawn from ``stream(seed, "controls", name,
i)``: the same seed gives the same controls. A tiny model has few distinct controls: several may
coincide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from scrub._bind import bind
from scrub._components import Component, ModelShape
from scrub._errors import HypothesisError
from scrub._hypothesis import Hypothesis, hypothesis_from_dict
from scrub._positions import format_positions
from scrub._tree import stream

if TYPE_CHECKING:
    from scrub.experiments.compare import Scorer

__all__ = ["control_scores", "random_controls"]

MAX_TRIES = 2000


def _draw(hyp: Hypothesis, shape: ModelShape, rng: np.random.Generator) -> dict | None:
    """One random assignment of components (``None`` when a node has no valid choice)."""
    n_layers = shape.n_layers
    pool = {
        "head": [c for c in shape.all_components() if c.kind == "head"],
        "mlp": [c for c in shape.all_components() if c.kind == "mlp"],
    }
    chosen: dict[str, list[Component]] = {hyp.root: [Component("logits")]}
    for name in reversed(list(nx.topological_sort(hyp.graph))):  # parents first
        if name == hyp.root:
            continue
        limit = (n_layers + 1, 0)
        for parent in hyp.graph.successors(name):
            channels = hyp.edge(name, parent).channels
            for pc in chosen[parent]:
                if set(channels) & set(pc.channels):
                    limit = min(limit, pc.order(n_layers))
        picks: list[Component] = []
        for mc in hyp.node(name).components:
            kind = mc.component.kind
            if kind not in pool:
                picks.append(mc.component)
                continue
            free = [c for c in pool[kind] if c.order(n_layers) < limit and c not in picks]
            if not free:
                return None
            picks.append(free[int(rng.integers(len(free)))])
        chosen[name] = picks
    return chosen


def random_controls(
    hyp: Hypothesis, model: Any, dataset: Any, *, count: int, seed: int
) -> list[Hypothesis]:
    """``count`` random controls of ``hyp`` (see the module docstring), valid on ``model``.

    Raises:
        HypothesisError: no valid control found in many tries (the hypothesis's shape leaves
            no freedom, e.g. every node maps embeddings only).
    """
    out = []
    for i in range(count):
        rng = stream(seed, "controls", hyp.name, str(i))
        for _ in range(MAX_TRIES):
            chosen = _draw(hyp, model.shape, rng)
            if chosen is None:
                continue
            data = hyp.spec.model_dump(mode="json", exclude_none=True)
            for name, comps in chosen.items():
                if name == hyp.root:
                    continue
                node = hyp.node(name)
                data["nodes"][name]["components"] = [
                    c.name if mc.positions is None else f"{c.name}@{format_positions(mc.positions)}"
                    for c, mc in zip(comps, node.components, strict=True)
                ]
            data["name"] = f"{hyp.name}~control{i}"
            try:
                control = hypothesis_from_dict(data, file=hyp.file)
                bind(control, model, dataset)
            except HypothesisError:
                continue
            out.append(control)
            break
        else:
            raise HypothesisError(
                f"found no valid random control of {hyp.name!r} in {MAX_TRIES} draws",
                file=hyp.file,
                hint="its nodes' components leave no room for a random choice; drop "
                "--random-controls for it",
            )
    return out


def control_scores(scorer: Scorer, hyp: Hypothesis, *, count: int, seed: int) -> dict[str, Any]:
    """Recovered of ``count`` random controls, and ``hyp``'s percentile among them."""
    from scrub._result import recovered_of

    def pooled(h: Hypothesis) -> float:
        C, B, S = scorer.arrays(h)
        return float(recovered_of(C.mean(axis=0), B.mean(axis=0), S.mean(axis=0)))

    mine = pooled(hyp)
    values = [
        pooled(c)
        for c in random_controls(hyp, scorer.model, scorer.dataset, count=count, seed=seed)
    ]
    arr = np.asarray(values)
    percentile = 100.0 * (float((arr < mine).sum()) + 0.5 * float((arr == mine).sum())) / count
    return {
        "count": count,
        "seed": seed,
        "recovered": values,
        "median": float(np.median(arr)),
        "percentile": percentile,
        "method": "same nodes, edges, samplers and positions; each head / MLP replaced by a "
        "random one of the same kind, respecting the model's order",
    }
