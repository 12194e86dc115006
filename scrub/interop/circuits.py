"""Circuits from other tools: the edge-level circuit JSON of EAP-IG and the MIB benchmark.

The format (EAP-IG's ``Graph.to_json``, which MIB's circuit-localisation track reads):

- ``cfg``: ``n_layers``, ``n_heads``, ``parallel_attn_mlp``, ``d_model``;
- ``nodes``: ``{"input" | "a{L}.h{H}" | "m{L}" | "logits": {"in_graph": bool, "score"?: float}}``;
- ``edges``: ``{"SRC->DST<q|k|v>" | "SRC->DST": {"score": float, "in_graph": bool}}``, the
  ``<q|k|v>`` suffix exactly when DST is a head. ``input`` is the embedding (scrub's ``embed``).

**Import** (:func:`circuit_to_spec`): every kept edge (``in_graph: true``) becomes a direct-path
correspondence through that channel, every circuit node an interpretation node with one
component and the ``exact`` sampler; everything else is resampled (each node's other inputs
drawn with ``uncond``: causal scrubbing). Kept edges that no path from ``input`` to ``logits``
uses through kept edges change nothing the output sees, and are dropped, as EAP-IG's ``prune``
does (the count is reported).

**Export** (:func:`hypothesis_to_circuit`): the edges a hypothesis keeps, one per (child
component, parent component, channel) of each of its direct-path inputs. Scores are indicators
(1.0 for kept edges), since a hypothesis has none; the file lists only kept edges and nodes,
which ``Graph.from_json`` reads as "everything else out of the graph".

Pitfalls: the two methods do not resample alike. EAP-IG evaluates a circuit with one corrupted
input shared by every removed edge; scrub draws each (treeified) node's other inputs separately,
so scores differ even on the same circuit. Edge circuits have no positions and no all-paths
edges: exporting a hypothesis with either is refused, and samplers other than ``exact`` are
listed under ``scrub.dropped`` (the circuit keeps the paths, not the features). Under
grouped-query attention an edge into ``<k>`` or ``<v>`` of one head is a path into its group's
key or value as that head reads it (see :mod:`scrub._architectures`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from scrub._components import Component, ModelShape
from scrub._errors import HypothesisError
from scrub._samplers import ExactSampler

__all__ = ["Circuit", "circuit_to_spec", "hypothesis_to_circuit", "read_circuit"]

_EDGE = re.compile(r"^(input|a\d+\.h\d+|m\d+)->(a\d+\.h\d+|m\d+|logits)(?:<([qkv])>)?$")
_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")


@dataclass(frozen=True)
class Circuit:
    """A circuit read from EAP-IG / MIB JSON.

    Attributes:
        n_layers, n_heads, parallel, d_model: the ``cfg`` of the model it was found on.
        kept: the kept edges as (source, destination, channel) with their scores; the channel
            is ``q``/``k``/``v`` into heads and ``in`` into MLPs and the logits.
        total: how many edges the file lists (kept or not).
        file: where it was read from.
    """

    n_layers: int
    n_heads: int
    parallel: bool
    d_model: int | None
    kept: tuple[tuple[str, str, str, float], ...]
    total: int
    file: str | None = None

    def __repr__(self) -> str:
        return (
            f"Circuit({self.n_layers} layers x {self.n_heads} heads, "
            f"{len(self.kept)} of {self.total} edges kept)"
        )


def _order(name: str, n_layers: int, parallel: bool) -> tuple[int, int]:
    if name == "input":
        return (-1, 1)
    if name == "logits":
        return (n_layers, 0)
    if m := _HEAD.match(name):
        return (int(m.group(1)), 0)
    return (int(name[1:]), 0 if parallel else 1)


def _layer_ok(name: str, n_layers: int, n_heads: int) -> bool:
    if m := _HEAD.match(name):
        return int(m.group(1)) < n_layers and int(m.group(2)) < n_heads
    if name.startswith("m"):
        return int(name[1:]) < n_layers
    return True


def read_circuit(path: str | Path) -> Circuit:
    """Read and check an EAP-IG / MIB circuit JSON file.

    Raises:
        HypothesisError: the file is not such a circuit (naming the key and what is wrong).
    """
    file = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HypothesisError(f"cannot read circuit file: {exc}", file=file) from None
    if not isinstance(data, dict) or not {"cfg", "edges"} <= set(data):
        raise HypothesisError(
            "not an EAP-IG / MIB circuit: it needs top-level keys 'cfg', 'nodes' and 'edges'",
            file=file,
        )
    cfg = data["cfg"]
    try:
        n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    except (KeyError, TypeError, ValueError):
        raise HypothesisError(
            "the circuit's cfg needs integer 'n_layers' and 'n_heads'", file=file, key=("cfg",)
        ) from None
    parallel = bool(cfg.get("parallel_attn_mlp", False))
    kept = []
    for name, info in data["edges"].items():
        key = ("edges", name)
        m = _EDGE.match(name)
        if m is None:
            raise HypothesisError(
                f"edge name {name!r} is not SRC->DST or SRC->DST<q|k|v>",
                file=file,
                key=key,
                hint="nodes are 'input', 'a{L}.h{H}', 'm{L}' and 'logits'",
            )
        src, dst, qkv = m.groups()
        if (qkv is None) == bool(_HEAD.match(dst)):
            raise HypothesisError(
                f"edge {name!r}: an edge into a head names its channel (<q>, <k> or <v>), and "
                "only an edge into a head does",
                file=file,
                key=key,
            )
        if not (_layer_ok(src, n_layers, n_heads) and _layer_ok(dst, n_layers, n_heads)):
            raise HypothesisError(
                f"edge {name!r} names a component outside the circuit's model "
                f"({n_layers} layers x {n_heads} heads)",
                file=file,
                key=key,
            )
        if not _order(src, n_layers, parallel) < _order(dst, n_layers, parallel):
            raise HypothesisError(
                f"edge {name!r} goes from {src} to {dst}, which does not read it"
                + (" (parallel blocks: m{L} does not read layer L's heads)" if parallel else ""),
                file=file,
                key=key,
            )
        if not isinstance(info, dict) or "in_graph" not in info:
            raise HypothesisError(f"edge {name!r} has no 'in_graph'", file=file, key=key)
        if info["in_graph"]:
            kept.append((src, dst, qkv or "in", float(info.get("score") or 0.0)))
    d_model = cfg.get("d_model")
    return Circuit(
        n_layers, n_heads, parallel, None if d_model is None else int(d_model),
        tuple(kept), len(data["edges"]), file,
    )  # fmt: skip


def _node_name(component: str) -> str:
    return component.replace(".", "_")


def circuit_to_spec(
    circuit: Circuit,
    *,
    model: str,
    dataset: Any,
    metric: dict,
    name: str = "circuit",
    description: str | None = None,
) -> tuple[dict, int]:
    """A hypothesis (as the dict a hypothesis file holds) that keeps exactly the circuit's edges.

    Args:
        circuit: the circuit.
        model: the hypothesis's ``model:``.
        dataset: its ``dataset:`` (a spec path relative to the hypothesis file, or a mapping).
        metric: its ``metric:``.
        name: its ``name:``.
        description: its ``description:`` (default: where the circuit came from).

    Returns:
        the spec, and how many kept edges were dropped as unreachable.
    """
    graph = nx.DiGraph()
    for src, dst, ch, _score in circuit.kept:
        if graph.has_edge(src, dst):
            graph.edges[src, dst]["channels"].append(ch)
        else:
            graph.add_edge(src, dst, channels=[ch])
    live: set[str] = set()
    if "input" in graph and "logits" in graph:
        live = (nx.descendants(graph, "input") | {"input"}) & (
            nx.ancestors(graph, "logits") | {"logits"}
        )
    sub = graph.subgraph(live)
    dropped = len(circuit.kept) - sum(len(d["channels"]) for _, _, d in sub.edges(data=True))
    names = {n: ("out" if n == "logits" else _node_name(n)) for n in sub}
    nodes: dict[str, dict] = {"out": {"components": ["logits"]}}
    order = sorted(sub, key=lambda n: _order(n, circuit.n_layers, circuit.parallel), reverse=True)
    for node in order:
        if node == "logits":
            continue
        nodes[names[node]] = {"components": ["embed" if node == "input" else node]}
    for node in order:
        inputs = []
        for src in sorted(sub.predecessors(node), key=lambda n: _order(n, circuit.n_layers, circuit.parallel), reverse=True):  # fmt: skip
            channels = sorted(sub.edges[src, node]["channels"], key="qkvin".index)
            inputs.append({"node": names[src], "channels": channels})
        if inputs:
            nodes[names[node]]["inputs"] = inputs
    spec = {
        "name": name,
        "description": description
        or f"edges kept by the circuit in {circuit.file or 'a circuit file'} "
        f"({len(circuit.kept) - dropped} of {circuit.total} edges); everything else resampled",
        "model": model,
        "dataset": dataset,
        "metric": metric,
        "nodes": nodes,
    }
    return spec, dropped


def _circuit_name(comp: Component) -> str:
    return "input" if comp.kind in ("tok_embed", "pos_embed") else comp.name


def hypothesis_to_circuit(hypothesis: Any, shape: ModelShape, *, d_model: int) -> dict:
    """The edges ``hypothesis`` keeps, as EAP-IG / MIB circuit JSON (see the module docstring).

    Raises:
        HypothesisError: an all-paths input or positions, which an edge circuit cannot express.
    """
    edges: dict[str, dict] = {}
    nodes: dict[str, dict] = {"logits": {"in_graph": True}}
    dropped = []
    for name in hypothesis.graph:
        node = hypothesis.node(name)
        for i, mc in enumerate(node.components):
            if mc.positions is not None:
                raise HypothesisError(
                    f"node {name!r} maps {mc}: edge circuits have no positions",
                    file=hypothesis.file,
                    key=("nodes", name, "components", i),
                    hint="drop the positions to export the circuit (all positions)",
                )
        sampler = node.sampler
        if (
            name != hypothesis.root
            and sampler is not None
            and not isinstance(sampler, ExactSampler)
        ):
            dropped.append(f"node {name!r}: sampler {sampler!r}")
        for i, child in enumerate(hypothesis.children(name)):
            corr = hypothesis.edge(child, name)
            key = ("nodes", name, "inputs", i)
            if corr.paths != "direct":
                raise HypothesisError(
                    f"input {child!r} of node {name!r} keeps all paths, which an edge circuit "
                    "cannot express (it keeps single edges)",
                    file=hypothesis.file,
                    key=(*key, "paths"),
                    hint="use 'paths: direct' and list the components in between as nodes",
                )
            if corr.positions is not None:
                raise HypothesisError(
                    f"input {child!r} of node {name!r} has positions: edge circuits have none",
                    file=hypothesis.file,
                    key=(*key, "positions"),
                )
            for cmc in hypothesis.node(child).components:
                src = _circuit_name(cmc.component)
                nodes[src] = {"in_graph": True}
                for pmc in node.components:
                    dst = pmc.component
                    for ch in corr.channels:
                        if ch not in dst.channels or not shape.upstream(cmc.component, dst):
                            continue
                        nodes[dst.name] = {"in_graph": True}
                        suffix = f"<{ch}>" if dst.kind == "head" else ""
                        edges[f"{src}->{dst.name}{suffix}"] = {"score": 1.0, "in_graph": True}
    return {
        "cfg": {
            "n_layers": shape.n_layers,
            "n_heads": shape.n_heads,
            "parallel_attn_mlp": shape.parallel,
            "d_model": d_model,
        },
        "nodes": nodes,
        "edges": edges,
        "scrub": {"hypothesis": hypothesis.name, "scores": "indicators", "dropped": dropped},
    }
