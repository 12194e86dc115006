"""Draw a hypothesis: the interpretation graph with its correspondence, as Graphviz DOT.

The drawing speaks the file's own words. A node shows its name, its components (``a1.h0``,
``m1@END``), its feature, its sampler (``exact``, ``cond on [template, order]``, ``generate
segment``) and its ``other:`` sampler when the file sets one; the root, which runs on the
reference batch, is drawn with a double border. Edges point child → parent (as data flows) and
show the channels, the positions of the splice and whether the paths are ``direct`` (residual
stream only, solid) or ``all paths`` (an activation patch, dashed).

``to_dot`` needs only the Python package. Rendering to SVG or PNG needs Graphviz's ``dot``
program (Debian: ``apt-get install graphviz``); without it :func:`render` and :func:`to_svg`
raise :class:`GraphvizMissing`, a ``RuntimeError`` whose message says how to install it.

An :class:`Overlay` colours nodes and edges and adds a line to their labels (a report draws
``scrub diagnose`` losses this way); the drawing itself stays the file's.

Pitfall: a sampler the file leaves out is ``exact`` (``other:`` is ``uncond``); the drawing says
``exact (default)`` so that a reader can tell an explicit claim from a default.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphviz

from scrub._hypothesis import Correspondence, Hypothesis, InterpNode
from scrub._positions import format_positions
from scrub._schema import (
    CondSpec,
    ExactSpec,
    FixedSpec,
    GenerateSpec,
    NodeSpec,
    UncondSpec,
    UncondTogetherSpec,
)

__all__ = [
    "FORMATS",
    "GraphvizMissing",
    "Overlay",
    "edge_label",
    "render",
    "sampler_label",
    "to_dot",
    "to_svg",
]

FORMATS = (".dot", ".gv", ".svg", ".png")
"""The file types :func:`render` writes."""

_FONT = "Helvetica,Arial,sans-serif"
_INK = "#333333"
_MUTED = "#666666"


class GraphvizMissing(RuntimeError):
    """Graphviz's ``dot`` program is needed and not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs Graphviz's 'dot' program, which is not installed; install it "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) or write "
            "a .dot file instead"
        )


@dataclass(frozen=True)
class Overlay:
    """Colours and notes drawn over a hypothesis's diagram (e.g. ``scrub diagnose`` losses).

    Attributes:
        node_fill: node name → fill colour (``#rrggbb``); other nodes keep theirs.
        node_note: node name → one more line at the foot of the node's label.
        edge_colour: ``(child, parent)`` → the edge's colour (drawn thicker).
        edge_note: ``(child, parent)`` → one more line of the edge's label.
    """

    node_fill: Mapping[str, str] = field(default_factory=dict)
    node_note: Mapping[str, str] = field(default_factory=dict)
    edge_colour: Mapping[tuple[str, str], str] = field(default_factory=dict)
    edge_note: Mapping[tuple[str, str], str] = field(default_factory=dict)


def sampler_label(spec: Any, *, node_feature: str | None, default: str) -> str:
    """A sampler in the file's words: ``exact``, ``cond on [a, b]``, ``generate f``, ...

    Args:
        spec: the sampler's spec from the file, or ``None`` when the file leaves it out.
        node_feature: the node's ``feature:`` as written (the default feature of ``cond`` and
            ``generate``).
        default: what a missing sampler means (``exact`` for ``sampler:``, ``uncond`` for
            ``other:``).
    """
    if spec is None:
        return f"{default} (default)"
    if isinstance(spec, ExactSpec):
        return "exact"
    if isinstance(spec, UncondSpec):
        return "uncond"
    if isinstance(spec, UncondTogetherSpec):
        return f"uncond_together group {spec.group}"
    if isinstance(spec, CondSpec):
        features = spec.features or ((node_feature,) if node_feature else ())
        return f"cond on [{', '.join(features)}]"
    if isinstance(spec, GenerateSpec):
        return f"generate {spec.feature or node_feature}"
    if isinstance(spec, FixedSpec):
        rows = ", ".join(str(r) for r in spec.rows[:6]) + (", ..." if len(spec.rows) > 6 else "")
        return f"fixed rows [{rows}]"
    raise AssertionError(f"unhandled sampler spec {spec!r}")


def edge_label(corr: Correspondence, child: InterpNode) -> str:
    """An edge's channels, positions and paths: ``k at A1_NEXT, direct``."""
    channels = ",".join(corr.channels)
    if corr.positions is not None:
        where = f"at {format_positions(corr.positions)}"
    elif all(mc.positions is None for mc in child.components):
        where = "at all positions"
    else:
        where = "at the components' positions"
    paths = "direct" if corr.paths == "direct" else "all paths"
    return f"{channels} {where}\n{paths}"


def _node_lines(hyp: Hypothesis, name: str) -> list[tuple[str, str]]:
    """(kind, text) lines of a node's label, in the file's words."""
    spec: NodeSpec = hyp.spec.nodes[name]
    comps = ", ".join(_component_text(item) for item in spec.components)
    lines = [("name", name)]
    lines += [("components", part) for part in textwrap.wrap(comps, 44) or [comps]]
    if spec.feature:
        lines.append(("detail", f"feature: {spec.feature}"))
    if name == hyp.root:
        lines.append(("detail", "runs on the reference batch"))
    else:
        label = sampler_label(spec.sampler, node_feature=spec.feature, default="exact")
        lines.append(("detail", f"sampler: {label}"))
    if spec.other is not None:
        label = sampler_label(spec.other, node_feature=spec.feature, default="uncond")
        lines.append(("detail", f"other: {label}"))
    return lines


def _component_text(item: Any) -> str:
    """A ``components:`` entry as written: ``embed``, ``a1.h0@REP``, or its mapping form."""
    if isinstance(item, dict):
        positions = item.get("positions")
        if positions is None:
            return str(item.get("component"))
        if isinstance(positions, list | tuple):
            positions = ",".join(str(p) for p in positions)
        return f"{item.get('component')}@{positions}"
    return str(item)


def _html_label(lines: list[tuple[str, str]]) -> str:
    rows = []
    for kind, text in lines:
        text = _escape(text)
        if kind == "name":
            cell = f'<b><font point-size="13">{text}</font></b>'
        elif kind == "components":
            cell = f'<font face="monospace" point-size="11">{text}</font>'
        elif kind == "overlay":
            cell = f'<b><font point-size="11">{text}</font></b>'
        else:
            cell = f'<font point-size="11" color="{_MUTED}">{text}</font>'
        rows.append(f'<tr><td align="left">{cell}</td></tr>')
    return (
        '<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">'
        + "".join(rows)
        + "</table>>"
    )


def to_dot(hyp: Hypothesis, *, overlay: Overlay | None = None) -> graphviz.Digraph:
    """The hypothesis as a ``graphviz.Digraph`` (output at the top), with ``overlay`` drawn on."""
    overlay = overlay or Overlay()
    dot = graphviz.Digraph(
        hyp.name,
        graph_attr={
            "rankdir": "BT",
            "label": hyp.name,
            "labelloc": "t",
            "fontname": _FONT,
            "fontsize": "14",
            "nodesep": "0.35",
            "ranksep": "0.45",
            "bgcolor": "transparent",
        },
        node_attr={"fontname": _FONT, "color": _INK, "fontcolor": _INK, "penwidth": "1.2"},
        edge_attr={"fontname": _FONT, "fontsize": "10", "color": _INK, "fontcolor": "#444444"},
    )
    for name in hyp.graph:
        is_root = name == hyp.root
        description = hyp.node(name).description
        lines = _node_lines(hyp, name)
        if name in overlay.node_note:
            lines.append(("overlay", overlay.node_note[name]))
        dot.node(
            name,
            label=_html_label(lines),
            shape="box",
            style="rounded,filled",
            fillcolor=overlay.node_fill.get(name, "#e6eef8" if is_root else "#f6f6f4"),
            peripheries="2" if is_root else "1",
            tooltip=description or name,
        )
    for child, parent in hyp.graph.edges:
        corr = hyp.edge(child, parent)
        label = edge_label(corr, hyp.node(child))
        extra: dict[str, str] = {}
        if (child, parent) in overlay.edge_note:
            label += "\n" + overlay.edge_note[(child, parent)]
        if (child, parent) in overlay.edge_colour:
            extra = {"color": overlay.edge_colour[(child, parent)], "penwidth": "2.6"}
        dot.edge(
            child,
            parent,
            label=label,
            style="solid" if corr.paths == "direct" else "dashed",
            **extra,
        )
    return dot


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_svg(hyp: Hypothesis, *, id_prefix: str = "", overlay: Overlay | None = None) -> str:
    """The drawing as an SVG document (no XML prolog, so it can be inlined in HTML).

    Args:
        hyp: the hypothesis.
        id_prefix: prefixed to Graphviz's element ids (``node1``, ``edge1``), so that several
            drawings can share one page.
        overlay: colours and notes to draw over it.

    Raises:
        GraphvizMissing: ``dot`` is not installed.
    """
    if shutil.which("dot") is None:
        raise GraphvizMissing("drawing the hypothesis as SVG")
    try:
        svg = to_dot(hyp, overlay=overlay).pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing("drawing the hypothesis as SVG") from None
    svg = svg[svg.index("<svg") :]
    if id_prefix:
        svg = re.sub(r'id="((?:graph|node|edge|clust|a_)[^"]*)"', rf'id="{id_prefix}\1"', svg)
    return svg


def render(hyp: Hypothesis, out: Path, *, overlay: Overlay | None = None) -> Path:
    """Write ``out``: DOT source for ``.dot``/``.gv``, else render with Graphviz's ``dot``
    (with ``overlay`` drawn on, if given).

    Raises:
        GraphvizMissing: an SVG or PNG was asked for and ``dot`` is not installed.
        ValueError: ``out`` has a suffix other than :data:`FORMATS`.
    """
    if out.suffix not in FORMATS:
        raise ValueError(
            f"cannot draw {out.name}: write one of {', '.join(FORMATS)} (DOT source, SVG or PNG)"
        )
    dot = to_dot(hyp, overlay=overlay)
    if out.suffix in (".dot", ".gv"):
        out.write_text(dot.source)
        return out
    if shutil.which("dot") is None:
        raise GraphvizMissing(f"rendering {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(dot.render(outfile=out, format=out.suffix.lstrip("."), cleanup=True))
