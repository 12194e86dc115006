"""Draw a hypothesis: the interpretation graph with its correspondence, as Graphviz DOT.

Nodes show their components and sampler; edges (child → parent, as data flows) show channels,
positions and direct/all paths. ``to_dot`` needs only the Python package; rendering to SVG or PNG
needs Graphviz's ``dot`` program (Debian: ``apt-get install graphviz``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from scrub._hypothesis import Hypothesis
from scrub._positions import format_positions

__all__ = ["render", "to_dot"]


def to_dot(hyp: Hypothesis) -> graphviz.Digraph:
    """The hypothesis as a ``graphviz.Digraph`` (output at the top)."""
    dot = graphviz.Digraph(hyp.name, graph_attr={"rankdir": "BT", "label": hyp.name})
    for name in hyp.graph:
        node = hyp.node(name)
        comps = ", ".join(str(mc) for mc in node.components)
        lines = [f"<b>{name}</b>", comps]
        if node.feature:
            lines.append(f"feature: {node.feature}")
        if node.sampler is not None:
            lines.append(repr(node.sampler))
        shape = "doubleoctagon" if name == hyp.root else "box"
        label = (
            "<" + "<br/>".join(_escape(line) if i else line for i, line in enumerate(lines)) + ">"
        )
        dot.node(name, label=label, shape=shape)
    for child, parent in hyp.graph.edges:
        corr = hyp.edge(child, parent)
        label = f"{','.join(corr.channels)} @{format_positions(corr.positions)}"
        style = "solid" if corr.paths == "direct" else "dashed"
        dot.edge(
            child, parent, label=label + ("" if corr.paths == "direct" else " (all)"), style=style
        )
    return dot


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(hyp: Hypothesis, out: Path) -> Path:
    """Write ``out``: DOT source for ``.dot``/``.gv``, else render with Graphviz's ``dot``."""
    dot = to_dot(hyp)
    if out.suffix in (".dot", ".gv"):
        out.write_text(dot.source)
        return out
    if shutil.which("dot") is None:
        raise RuntimeError(
            f"rendering {out.name} needs Graphviz's 'dot' program, which is not installed; "
            "install it (Debian: apt-get install graphviz) or write a .dot file instead"
        )
    fmt = out.suffix.lstrip(".") or "svg"
    return Path(dot.render(outfile=out, format=fmt, cleanup=True))
