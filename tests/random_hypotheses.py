"""Random hypotheses over a model's components, for property tests (seeded, reproducible).

Every generated hypothesis claims each model path at most once (DESIGN.md): siblings map
disjoint components, and an all-paths input whose components are upstream of a sibling's
(so that its paths run through the sibling's components) is made a direct input.
"""

from __future__ import annotations

import numpy as np

from scrub._components import ModelShape

POSITIONS = [None, "REP", "A1", "A1_NEXT", [0, 1, 2], "END", "A2"]
SAMPLERS = ["exact", "uncond", {"kind": "uncond_together", "group": "g"},
            {"kind": "cond", "features": ["first_token"]}, {"kind": "generate", "feature": "segment"}]  # fmt: skip


def _name(comp) -> str:
    return comp.name


def random_nodes(
    rng: np.random.Generator, shape: ModelShape, *, sampler=None, other=None, max_depth: int = 3
) -> dict:
    """A random tree of interp nodes: ``nodes:`` of a hypothesis file.

    Args:
        rng: the seeded generator.
        shape: the model's shape.
        sampler: every node's sampler (default: random kinds).
        other: every node's other-inputs sampler (default: uncond).
        max_depth: depth of the tree below the root.
    """
    comps = shape.all_components()
    order = lambda c: c.order(shape.n_layers)  # noqa: E731
    nodes: dict = {"out": {"components": ["logits"], "inputs": []}}
    if other is not None:
        nodes["out"]["other"] = other
    counter = iter(range(10_000))

    def grow(parent: str, parent_comps: list, depth: int) -> None:
        readers = [c for c in parent_comps if c.channels]
        if not readers or depth > max_depth:
            return
        limit = min(order(c) for c in readers)
        upstream = [c for c in comps if order(c) < limit]
        if not upstream:
            return
        taken: set = set()
        siblings: list[tuple[dict, list]] = []
        for _ in range(int(rng.integers(0, 3)) if depth else int(rng.integers(1, 3))):
            free = [c for c in upstream if c not in taken]
            if not free:
                break
            k = int(rng.integers(1, min(3, len(free)) + 1))
            chosen = [free[i] for i in rng.choice(len(free), size=k, replace=False)]
            taken.update(chosen)
            if {"tok_embed", "pos_embed"} <= {c.kind for c in chosen}:
                names = ["embed"] + [_name(c) for c in chosen if "embed" not in c.kind]
            else:
                names = [_name(c) for c in chosen]
            name = f"n{next(counter)}"
            channels = sorted({ch for c in readers for ch in c.channels})
            pick = rng.random(len(channels)) < 0.6
            pick[int(rng.integers(len(channels)))] = True
            edge: dict = {
                "node": name,
                "channels": [c for c, p in zip(channels, pick, strict=True) if p],
            }
            edge["paths"] = "all" if rng.random() < 0.4 else "direct"
            pos = POSITIONS[int(rng.integers(len(POSITIONS)))]
            if pos is not None:
                edge["positions"] = pos
            nodes[parent]["inputs"].append(edge)
            node: dict = {"components": names, "inputs": []}
            node["sampler"] = (
                sampler if sampler is not None else SAMPLERS[int(rng.integers(len(SAMPLERS)))]
            )
            if other is not None:
                node["other"] = other
            nodes[name] = node
            siblings.append((edge, chosen))
            grow(name, chosen, depth + 1)
        for edge, chosen in siblings:
            others = [c for e, cs in siblings if e is not edge for c in cs]
            if any(order(b) < order(a) for b in chosen for a in others):
                edge["paths"] = "direct"  # all paths from b would run through a sibling's a

    from scrub._components import Component

    grow("out", [Component("logits")], 0)
    for node in nodes.values():
        if not node["inputs"]:
            del node["inputs"]
    return nodes
