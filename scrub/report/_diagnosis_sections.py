"""Sections of a ``scrub diagnose`` result: the ranked variants, the hypothesis coloured by loss,
the per-group breakdown and the variants that could not be scored.

The **loss** of a variant is ``−difference``: how much fraction recovered it gives up against
the hypothesis itself (positive: the edit loses; negative: it gains). The diagram colours each
node by the largest loss among its *own* variants (its sampler made unconditional, one of its
components dropped) and each edge by the largest loss among its channels dropped, on one
diverging scale for the whole page, with the number and the variant in the label. A node's
``cut inputs`` variant is not its own: it removes the whole subtree below it (for the root,
everything), so it is named in the label but does not colour the node.

Pitfall: the colours are point estimates; the ranking's table gives each one's CI and p-value.
A hypothesis file that changed since the diagnosis (its sha256 differs) is not drawn, since its
nodes may no longer be the ones the rows name.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from scrub.report import figures
from scrub.report._context import Context, locate_hypothesis
from scrub.report._documents import Skip, get_ci, get_dict, get_num, get_str
from scrub.report._experiment_sections import (
    experiment_section,
    p_text,
    provenance_section,
    records,
    warnings_section,
)
from scrub.report._html import ci_text, figure, note, num_text, table

__all__ = ["DIAGNOSIS_SECTIONS", "loss_overlay"]


def _groups(data: dict[str, Any]) -> list[str]:
    groups = data.get("groups")
    return [str(g) for g in groups] if isinstance(groups, list) else []


def diagnosis_ranking(ctx: Context) -> Markup:
    rows_in = records(ctx.doc.data, "rows")
    by, groups = get_str(ctx.doc.data, "by"), _groups(dict(ctx.doc.data))
    rows, forest_rows = [], []
    for r in rows_in:
        label = f"{r.get('node', '?')}: {r.get('change', '?')}"
        diff, ci = get_num(r, "difference"), get_ci(r, "ci")
        by_group = get_dict(r, "by_group")
        rows.append(
            (
                label,
                num_text(get_num(r, "recovered"), 3),
                num_text(diff, 3),
                ci_text(ci, 3),
                p_text(get_num(r, "p")),
                *(num_text(get_num(by_group, g), 3) for g in groups),
            )
        )
        forest_rows.append(figures.ForestRow(label, diff, ci, "undefined"))
    svg = figures.forest(
        forest_rows,
        xlabel="change in fraction recovered against the hypothesis",
        key=f"{ctx.key}-diag",
        references=((0.0, "0: no change"),),
    )
    header = ["variant", "recovered", "Δ vs hypothesis", "CI", "p"]
    header += [f"{by}={g}" for g in groups]
    caption = (
        "Each variant's paired difference in fraction recovered against the hypothesis itself "
        "(keep first, then largest loss first), with its bootstrap CI over reference examples."
    )
    value, ci = get_num(ctx.doc.data, "recovered"), get_ci(ctx.doc.data, "ci")
    summary = note(
        f"The hypothesis recovers {num_text(value, 3)} {ci_text(ci, 3)} of the metric; each "
        "row edits one part of it."
    )
    parts = [summary, figure(svg, caption, kind="ranking"), table(header, rows)]
    if groups:
        parts.insert(
            2,
            note(
                f"The last columns give recovered within each value of the dataset field {by!r} "
                "(the ratio of means over that group's reference examples)."
            ),
        )
    return Markup("").join(parts)


def loss_overlay(hyp: Any, rows: list[dict[str, Any]]) -> tuple[Any, float, int]:
    """The diagnosis drawn over ``hyp``: node and edge colours, notes, the scale.

    Returns:
        ``(overlay, scale, matched)``: the :class:`~scrub._render.Overlay`, the largest
        ``|loss|`` (the colour scale's end) and how many rows were placed on the diagram.
    """
    from scrub._render import Overlay

    edges = {
        f"drop {child}→{parent} channel ": (child, parent) for child, parent in hyp.graph.edges
    }
    node_worst: dict[str, tuple[float, str]] = {}
    edge_worst: dict[tuple[str, str], tuple[float, str]] = {}
    cuts: dict[str, float] = {}
    matched = 0
    for r in rows:
        node, change, diff = r.get("node"), str(r.get("change", "")), get_num(r, "difference")
        if diff is None or node not in hyp.graph or change == "keep":
            continue
        loss = -diff
        matched += 1
        if change == "cut inputs":
            cuts[str(node)] = loss
            continue
        hit = next(((pre, e) for pre, e in edges.items() if change.startswith(pre)), None)
        if hit is not None:
            prefix, edge = hit
            channel = change[len(prefix) :].removesuffix(" (the edge)")
            if edge not in edge_worst or loss > edge_worst[edge][0]:
                edge_worst[edge] = (loss, f"drop {channel}")
            continue
        if node not in node_worst or loss > node_worst[str(node)][0]:
            node_worst[str(node)] = (loss, change.removesuffix(" (the node)"))
    values = [v for v, _ in node_worst.values()] + [v for v, _ in edge_worst.values()]
    scale = max([abs(v) for v in values] + [1e-9])
    node_note = {}
    for name in hyp.graph:
        parts = []
        if name in node_worst:
            loss, change = node_worst[name]
            parts.append(f"worst: {change}, loss {loss:+.3f}")
        if name in cuts:
            parts.append(f"cut inputs: loss {cuts[name]:+.3f}")
        if parts:
            node_note[name] = "; ".join(parts)
    overlay = Overlay(
        node_fill={n: figures.loss_colour(v, scale) for n, (v, _) in node_worst.items()},
        node_note=node_note,
        edge_colour={e: figures.loss_colour(v, scale) for e, (v, _) in edge_worst.items()},
        edge_note={e: f"{c}: loss {v:+.3f}" for e, (v, c) in edge_worst.items()},
    )
    return overlay, scale, matched


def diagnosis_graph(ctx: Context) -> Markup:
    from scrub._render import GraphvizMissing, to_svg

    data = ctx.doc.data
    hyp = ctx.doc.context.get("hypothesis")
    if hyp is None:
        file = get_str(data, "file")
        if file is None:
            raise Skip("the diagnosis records no hypothesis file (made by an older scrub?)")
        hyp = locate_hypothesis(ctx.doc, file, get_str(data, "sha256"))
    rows = records(data, "rows")
    overlay, scale, matched = loss_overlay(hyp, rows)
    if not matched:
        raise Skip("no row of the diagnosis names a node of the hypothesis file")
    try:
        svg = to_svg(hyp, id_prefix=f"{ctx.key}-", overlay=overlay)
    except GraphvizMissing as exc:
        raise Skip(str(exc)) from None
    legend = figures.loss_legend(
        scale,
        label="loss in fraction recovered (red: the edit loses; blue: it gains)",
        key=f"{ctx.key}-legend",
    )
    caption = (
        "The hypothesis coloured by its diagnosis. Node fill: the largest loss among the node's "
        "own variants (its sampler made unconditional, one of its components dropped); edge "
        "colour: the largest loss among its channels dropped; uncoloured: no such variant. "
        "'cut inputs' (the whole subtree below a node resampled) is named in the label but does "
        "not colour the node. Point estimates; the table above gives their CIs."
    )
    return Markup("").join(
        [
            figure(svg, caption, kind="graph"),
            figure(legend, "Colour scale of the diagram (loss = −Δ vs hypothesis).", kind="legend"),
        ]
    )


def skipped_section(ctx: Context) -> Markup:
    skipped = ctx.doc.data.get("skipped")
    if not isinstance(skipped, list):
        raise Skip("the diagnosis records no list of skipped variants")
    if not skipped:
        return note("Every variant was a valid hypothesis and was scored.", cls="ok")
    items = "".join(f"<li>{escape(str(s))}</li>" for s in skipped)
    return Markup(
        "<p>These variants are not valid hypotheses, so they were not scored:</p>"
        f'<ul class="warnings">{items}</ul>'
    )


DIAGNOSIS_SECTIONS = (
    ("experiment", "Experiment", experiment_section),
    ("ranking", "Diagnosis", diagnosis_ranking),
    ("graph", "Hypothesis coloured by loss", diagnosis_graph),
    ("skipped", "Variants not scored", skipped_section),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)
