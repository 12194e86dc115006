"""Hypotheses: an interpretation graph and its correspondence to model components.

:func:`load_hypothesis` reads a YAML file (see :mod:`scrub._schema`), validates it and builds a
:class:`Hypothesis`: a ``networkx.DiGraph`` whose nodes are :class:`InterpNode` and whose edges
``child -> parent`` carry a :class:`Correspondence` edge (channels, positions, direct/all paths).
The root is the one node that maps the model output (``logits``); data flows towards it, so a
topological order is a bottom-up evaluation order.

Checks that need only the file are made here; checks that need the model (component ranges) or
the dataset (named positions, overlapping splices) are made when binding (:mod:`scrub._bind`).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pydantic

from scrub._components import Channel, Component, parse_component
from scrub._errors import HypothesisError
from scrub._positions import PositionSpec, format_positions, parse_positions
from scrub._samplers import (
    CondSampler,
    ExactSampler,
    FixedSampler,
    GenerateSampler,
    Sampler,
    UncondSampler,
    UncondTogetherSampler,
)
from scrub._schema import (
    CondSpec,
    ExactSpec,
    FixedSpec,
    GenerateSpec,
    HypothesisSpec,
    NodeSpec,
    UncondSpec,
    UncondTogetherSpec,
    schema_error,
)
from scrub._yaml import YamlDocument, read_yaml_document
from scrub.data._spec import in_dataset_file, load_dataset_spec

__all__ = [
    "Correspondence",
    "Hypothesis",
    "InterpNode",
    "MappedComponent",
    "hypothesis_from_dict",
    "load_hypothesis",
]


@dataclass(frozen=True)
class MappedComponent:
    """A model component an interpretation node maps to, optionally at some positions."""

    component: Component
    positions: PositionSpec = None

    def __str__(self) -> str:
        pos = "" if self.positions is None else "@" + format_positions(self.positions)
        return f"{self.component.name}{pos}"

    def __repr__(self) -> str:
        return f"MappedComponent({str(self)!r})"


@dataclass(frozen=True)
class InterpNode:
    """A node of the interpretation graph.

    Attributes:
        name: the node's name in the file.
        components: the model components it maps to.
        feature: the feature it computes (a name), if given.
        sampler: draws this node's data from its parent's (``None`` for the root).
        other: draws the node's other inputs from its own data.
    """

    name: str
    components: tuple[MappedComponent, ...]
    feature: str | None
    sampler: Sampler | None
    other: Sampler
    description: str | None = None

    @property
    def is_output(self) -> bool:
        return any(mc.component.kind == "logits" for mc in self.components)

    def __repr__(self) -> str:
        comps = ", ".join(str(c) for c in self.components)
        return f"InterpNode({self.name!r}, [{comps}], sampler={self.sampler!r})"


@dataclass(frozen=True)
class Correspondence:
    """The model paths an interpretation edge ``child -> parent`` stands for.

    Attributes:
        child, parent: node names.
        channels: the parent's input channels the paths end in.
        positions: residual positions of the splice (``None``: see :meth:`splice_positions`).
        paths: ``"direct"`` (residual stream only) or ``"all"`` (activation patch).
    """

    child: str
    parent: str
    channels: tuple[Channel, ...]
    positions: PositionSpec
    paths: str

    def splice_positions(self, mapped: MappedComponent) -> PositionSpec:
        """Where ``mapped`` (a child component) is spliced: the edge's positions, else its own."""
        return self.positions if self.positions is not None else mapped.positions

    def __repr__(self) -> str:
        return (
            f"Correspondence({self.child!r} -> {self.parent!r}, channels={list(self.channels)}, "
            f"positions={format_positions(self.positions)}, paths={self.paths!r})"
        )


@dataclass(frozen=True)
class Hypothesis:
    """A validated hypothesis: the spec it came from and its interpretation graph.

    Attributes:
        name: from the file's ``name`` key, else the file's stem.
        spec: the validated file.
        graph: ``nx.DiGraph``; node attribute ``interp`` is an :class:`InterpNode`, edge
            attribute ``corr`` a :class:`Correspondence`; edges point child -> parent.
        root: the node that maps ``logits``.
        file: where it was loaded from, if anywhere.
        sha256: hash of the file's bytes (or of the canonical spec), for provenance.
        dataset_file: the dataset spec file when ``dataset:`` names one, as written there
            (relative to the hypothesis file, so it reads the same in every checkout).
        dataset_path: where that spec file was read (the path errors name).
        source, dataset_source: the YAML documents read (for the lines of errors).
    """

    name: str
    spec: HypothesisSpec
    graph: nx.DiGraph
    root: str
    file: str | None
    sha256: str
    dataset_file: str | None = None
    dataset_path: str | None = None
    source: YamlDocument | None = field(default=None, repr=False, compare=False)
    dataset_source: YamlDocument | None = field(default=None, repr=False, compare=False)

    @property
    def base_dir(self) -> Path | None:
        """The directory relative paths in the file are relative to (``None``: no file)."""
        return Path(self.file).parent if self.file else None

    def locate(self, error: HypothesisError) -> HypothesisError:
        """``error`` with the lines of its keys, where they are in the files read."""
        for doc in (self.source, self.dataset_source):
            if doc is not None:
                error = doc.locate(error)
        return error

    def node(self, name: str) -> InterpNode:
        return self.graph.nodes[name]["interp"]

    def children(self, name: str) -> list[str]:
        """Child nodes of ``name``, in the order its ``inputs`` list them."""
        return [e.node for e in self.spec.nodes[name].inputs]

    def edge(self, child: str, parent: str) -> Correspondence:
        return self.graph.edges[child, parent]["corr"]

    def __repr__(self) -> str:
        return (
            f"Hypothesis({self.name!r}, model={self.spec.model!r}, "
            f"nodes={self.graph.number_of_nodes()}, root={self.root!r})"
        )


# --------------------------------------------------------------------------------------------
def load_hypothesis(path: str | Path) -> Hypothesis:
    """Load and validate a hypothesis file.

    Raises:
        HypothesisError: the file is missing, not YAML, or not a valid hypothesis; the message
            names the file, the key (and its line) and a fix, and lists every independent
            problem the schema found.
    """
    doc = read_yaml_document(path, what="hypothesis file")
    try:
        return hypothesis_from_dict(
            doc.data,
            file=str(path),
            sha256=hashlib.sha256(doc.raw).hexdigest(),
            default_name=Path(path).stem,
            source=doc,
        )
    except HypothesisError as exc:
        raise doc.locate(exc) from None


def hypothesis_from_dict(
    data: Any,
    *,
    file: str | None = None,
    sha256: str | None = None,
    default_name: str = "hypothesis",
    source: YamlDocument | None = None,
) -> Hypothesis:
    """Validate a hypothesis given as plain data (what ``yaml.safe_load`` returns)."""
    if not isinstance(data, dict):
        raise HypothesisError(
            f"a hypothesis file must be a mapping of keys, not {type(data).__name__}",
            file=file,
            hint="start with 'model:', 'dataset:', 'metric:' and 'nodes:' keys",
        )
    dataset_file = dataset_path = dataset_source = None
    if isinstance(data.get("dataset"), str):
        dataset_file = data["dataset"]
        dataset_source = load_dataset_spec(dataset_file, file)
        dataset_path = dataset_source.file
        data = {**data, "dataset": dataset_source.data}
    ablation = data.get("ablation")
    if isinstance(ablation, dict) and isinstance(ablation.get("dataset"), str):
        reference = load_dataset_spec(ablation["dataset"], file)
        data = {**data, "ablation": {**ablation, "dataset": reference.data}}
    try:
        spec = HypothesisSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        err = schema_error(exc, file)
        if dataset_source is not None:
            err = HypothesisError.collect([in_dataset_file(e, dataset_source) for e in err.errors])
            err = dataset_source.locate(err)
        raise err from None
    try:
        graph, root = _build_graph(spec)
    except HypothesisError as exc:
        raise exc.with_context(file=file) from None
    if sha256 is None:
        sha256 = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    return Hypothesis(
        name=spec.name or default_name,
        spec=spec,
        graph=graph,
        root=root,
        file=file,
        sha256=sha256,
        dataset_file=dataset_file,
        dataset_path=dataset_path,
        source=source,
        dataset_source=dataset_source,
    )


# --------------------------------------------------------------------------------------------
def _sampler(
    spec: Any, node: str, feature: str | None, key: tuple, aliases: dict[str, str]
) -> Sampler:
    """Build a sampler; feature names go through the file's ``features:`` aliases."""
    if isinstance(spec, ExactSpec):
        return ExactSampler()
    if isinstance(spec, UncondSpec):
        return UncondSampler()
    if isinstance(spec, UncondTogetherSpec):
        return UncondTogetherSampler(spec.group)
    if isinstance(spec, FixedSpec):
        return FixedSampler(spec.rows)
    if isinstance(spec, CondSpec):
        features = (
            tuple(aliases.get(f, f) for f in spec.features)
            if spec.features
            else ((feature,) if feature else None)
        )
        if not features:
            raise HypothesisError(
                f"node {node!r}: a 'cond' sampler needs a feature",
                key=key,
                hint="give the node a 'feature:' or the sampler 'features: [...]'",
            )
        return CondSampler(tuple(features))
    if isinstance(spec, GenerateSpec):
        feat = aliases.get(spec.feature, spec.feature) if spec.feature else feature
        if not feat:
            raise HypothesisError(
                f"node {node!r}: a 'generate' sampler needs a feature",
                key=key,
                hint="give the node a 'feature:' or the sampler 'feature: ...'",
            )
        return GenerateSampler(feat)
    raise AssertionError(f"unhandled sampler spec {spec!r}")


def _mapped_components(name: str, spec: NodeSpec) -> tuple[MappedComponent, ...]:
    out: list[MappedComponent] = []
    seen: set[Component] = set()
    for i, item in enumerate(spec.components):
        key = ("nodes", name, "components", i)
        if isinstance(item, dict):
            extra = set(item) - {"component", "positions"}
            if "component" not in item or extra:
                raise HypothesisError(
                    "a component entry is a name like 'a1.h3@REP' or a mapping with keys "
                    "'component' and 'positions'",
                    key=key,
                    hint="e.g. 'a1.h3@REP' or {component: a1.h3, positions: [REP]}",
                )
            text, positions_value = str(item["component"]), item.get("positions")
        elif isinstance(item, str):
            text, _, pos_text = item.partition("@")
            positions_value = pos_text if pos_text else None
            if "@" in item and not pos_text:
                raise HypothesisError(
                    f"nothing after '@' in {item!r}",
                    key=key,
                    hint=f"name the positions ('{text}@END') or drop the '@'",
                )
        else:
            raise HypothesisError(
                f"a component must be a name, not {item!r}",
                key=key,
                hint="e.g. 'a1.h3', 'm0', 'embed', 'a9.h9@END' (quote it if YAML reads a number)",
            )
        try:
            comps = parse_component(text)
            positions = parse_positions(positions_value)
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=key) from None
        for comp in comps:
            if comp.kind == "logits" and positions is not None:
                raise HypothesisError(
                    "'logits' takes no positions: the metric's 'positions' say where the "
                    "output is read",
                    key=key,
                    hint="write 'logits' and set 'metric: {positions: ...}'",
                )
            if comp in seen:
                raise HypothesisError(
                    f"node {name!r} maps {comp.name!r} twice", key=key, hint="remove one"
                )
            seen.add(comp)
            out.append(MappedComponent(comp, positions))
    return tuple(out)


def _build_graph(spec: HypothesisSpec) -> tuple[nx.DiGraph, str]:
    graph = nx.DiGraph()
    for name, node_spec in spec.nodes.items():
        comps = _mapped_components(name, node_spec)
        feature = (
            spec.features.get(node_spec.feature, node_spec.feature) if node_spec.feature else None
        )
        is_root = any(mc.component.kind == "logits" for mc in comps)
        if is_root and len(comps) > 1:
            raise HypothesisError(
                f"node {name!r} maps 'logits' together with other components",
                key=("nodes", name, "components"),
                hint="the root maps only 'logits'; put the other components in a child node",
            )
        if is_root and node_spec.sampler is not None:
            raise HypothesisError(
                f"the root node {name!r} cannot have a sampler: its data is the reference batch",
                key=("nodes", name, "sampler"),
                hint="remove 'sampler' from the root; 'other' sets how its other inputs are drawn",
            )
        sampler = None
        if not is_root:
            # A node that names a feature is resampled keeping that feature, unless its sampler
            # says otherwise; never silently exact.
            sampler_spec = node_spec.sampler or (CondSpec() if feature else ExactSpec())
            sampler = _sampler(
                sampler_spec, name, feature, ("nodes", name, "sampler"), spec.features
            )
        other = _sampler(
            node_spec.other or UncondSpec(), name, feature, ("nodes", name, "other"), spec.features
        )
        graph.add_node(
            name,
            interp=InterpNode(name, comps, feature, sampler, other, node_spec.description),
        )

    roots = [n for n in graph if graph.nodes[n]["interp"].is_output]
    if len(roots) != 1:
        raise HypothesisError(
            "no node maps the model output"
            if not roots
            else f"several nodes map 'logits': {', '.join(roots)}",
            key=("nodes",),
            hint="exactly one node, the root, has 'components: [logits]'",
        )
    root = roots[0]

    for parent, node_spec in spec.nodes.items():
        parent_node: InterpNode = graph.nodes[parent]["interp"]
        for i, edge in enumerate(node_spec.inputs):
            _add_edge(graph, parent_node, edge, ("nodes", parent, "inputs", i))

    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        names = " -> ".join([cycle[0][0], *[v for _, v in cycle]])
        raise HypothesisError(
            f"the interpretation graph has a cycle: {names}",
            key=("nodes",),
            hint="inputs must point to nodes upstream in the model; remove one of these inputs",
        )
    for parent, node_spec in spec.nodes.items():
        for i, edge in enumerate(node_spec.inputs):
            _check_upstream(graph, edge.node, parent, ("nodes", parent, "inputs", i))
    for name in graph:
        if name != root and not nx.has_path(graph, name, root):
            raise HypothesisError(
                f"node {name!r} is not an input of any node, so it cannot affect the output",
                key=("nodes", name),
                hint=f"list it under some node's 'inputs' (e.g. the root {root!r}) or remove it",
            )
    return graph, root


def _check_upstream(graph: nx.DiGraph, child_name: str, parent_name: str, key: tuple) -> None:
    """Every child component must write before every parent component it feeds reads.

    The model is not known yet, so this uses sequential blocks (GPT-2's order), the most
    permissive order of any family: what fails here fails everywhere. Binding adds what a
    family forbids beyond it (parallel blocks: a head of layer L does not feed ``m{L}``; see
    :func:`scrub._architectures.check_paths`).
    """
    child: InterpNode = graph.nodes[child_name]["interp"]
    parent: InterpNode = graph.nodes[parent_name]["interp"]
    channels = graph.edges[child_name, parent_name]["corr"].channels
    for cmc in child.components:
        for pmc in parent.components:
            if not any(ch in pmc.component.channels for ch in channels):
                continue
            if not cmc.component.order(10**6) < pmc.component.order(10**6):
                raise HypothesisError(
                    f"{cmc.component.name} (node {child_name!r}) is not upstream of "
                    f"{pmc.component.name} (node {parent_name!r}): a child's components must "
                    "write into the residual stream before its parent's read it",
                    key=(*key, "node"),
                    hint="a head of layer L reads layers < L; the MLP of layer L also reads "
                    "layer L's heads (except in parallel blocks, GPT-NeoX/Pythia)",
                )


def _add_edge(graph: nx.DiGraph, parent: InterpNode, edge: Any, key: tuple) -> None:
    child_name = edge.node
    if child_name not in graph:
        close = difflib.get_close_matches(child_name, list(graph), n=1)
        raise HypothesisError(
            f"input names unknown node {child_name!r}",
            key=(*key, "node"),
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"nodes in this file: {', '.join(graph)}",
        )
    if child_name == parent.name:
        raise HypothesisError(
            f"node {parent.name!r} lists itself as an input",
            key=(*key, "node"),
            hint="an input is another node, upstream in the model; remove this entry",
        )
    if graph.has_edge(child_name, parent.name):
        raise HypothesisError(
            f"node {parent.name!r} lists input {child_name!r} twice",
            key=(*key, "node"),
            hint="merge the two entries (list several channels in one 'channels:')",
        )
    child: InterpNode = graph.nodes[child_name]["interp"]
    if child.is_output:
        raise HypothesisError(
            f"the root {child_name!r} cannot be an input",
            key=(*key, "node"),
            hint="the root maps the output, which nothing reads; remove this input",
        )
    parent_channels = {ch for mc in parent.components for ch in mc.component.channels}
    if not parent_channels:
        raise HypothesisError(
            f"node {parent.name!r} maps only embeddings, which read no input, so it cannot "
            f"have inputs (it lists {child_name!r})",
            key=(*key, "node"),
            hint=f"remove this input, or make {child_name!r} an input of a node that reads it",
        )
    channels = edge.channels or tuple(c for c in ("q", "k", "v", "in") if c in parent_channels)
    for ch in channels:
        if ch not in parent_channels:
            raise HypothesisError(
                f"channel {ch!r}: node {parent.name!r} maps no component that reads through it "
                f"({', '.join(str(mc) for mc in parent.components)})",
                key=(*key, "channels"),
                hint="heads read through q, k, v; MLPs and logits through 'in'",
            )
    positions = edge.positions
    if positions is not None:
        for mc in child.components:
            if mc.positions is not None and mc.positions != positions:
                raise HypothesisError(
                    f"positions of input {child_name!r} ({format_positions(positions)}) differ "
                    f"from those of its component {mc}",
                    key=(*key, "positions"),
                    hint="give positions on the component or on the input, not both",
                )
    graph.add_edge(
        child_name,
        parent.name,
        corr=Correspondence(child_name, parent.name, tuple(channels), positions, edge.paths),
    )
