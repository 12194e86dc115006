"""Sections of experiment results: comparisons (diagnoses: :mod:`scrub.report._diagnosis_sections`;
patching grids and attention maps: :mod:`scrub.report._patch_sections`), and the experiment,
warnings and provenance sections they share.

Every section reads its fields through the defensive getters and skips, with the reason, what
it does not find, so a file written by an older scrub (``scrub compare`` and ``scrub diagnose``
JSON had no ``kind`` before; :func:`~scrub.report._documents.detect_kind` recognises them by
their keys) draws what it can. The shapes drawn here, as the commands write them:

- ``comparison`` (:meth:`scrub.Comparison.to_dict`): ``experiment`` (with ``methods``),
  ``clean``, ``baseline``, ``hypotheses`` (``name``, ``file``, ``sha256``, ``recovered``,
  ``ci``, ``per_draw``, ``draws_half_width``, ``total_ci``, ``complete``, ``controls``,
  ``per_example``, ``warnings``) and ``pairs`` (``a``, ``b``, ``difference``, ``ci``,
  ``total_ci``, ``p``, ``p_holm``, ``verdict``).

Pitfall: a comparison's hypothesis is drawn only if its file is found and still has the sha256
the comparison recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from scrub.report import figures
from scrub.report._context import Context, locate_hypothesis
from scrub.report._documents import Skip, get_ci, get_dict, get_floats, get_num, get_str
from scrub.report._html import ci_text, figure, kv_table, note, num_text, table

__all__ = [
    "COMPARISON_SECTIONS",
    "experiment_section",
    "p_text",
    "provenance_section",
    "records",
    "warnings_section",
]


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def records(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise Skip(f"the result records no {key}")
    records = [r for r in value if isinstance(r, dict)]
    if len(records) != len(value):
        raise Skip(f"the result's {key} are not records")
    return records


def p_text(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def experiment_section(ctx: Context) -> Markup:
    experiment = ctx.doc.data.get("experiment")
    if not isinstance(experiment, dict) or not experiment:
        raise Skip("the result records no experiment")
    pairs = [(k, _short(v)) for k, v in experiment.items() if k != "methods"]
    methods = experiment.get("methods")
    if isinstance(methods, dict):
        pairs += [(f"method: {k.replace('_', ' ')}", _short(v)) for k, v in methods.items()]
    for key in ("clean", "baseline", "clean_mean", "base_mean"):
        if get_num(ctx.doc.data, key) is not None:
            pairs.append((f"{key} (mean metric)", num_text(get_num(ctx.doc.data, key))))
    return kv_table(pairs)


def provenance_section(ctx: Context, *, hide: frozenset[str] = frozenset()) -> Markup:
    """Every other recorded field (but those in ``hide``, shown elsewhere), and the command
    line when known."""
    data = ctx.doc.data
    shown = {"experiment", "hypotheses", "pairs", "rows", "axes", "methodology", "versions"}
    shown |= {"warnings", "skipped"} | hide  # their own sections
    pairs: list[tuple[str, object]] = [("source", ctx.doc.source)]
    command = ctx.doc.context.get("command_line")
    pairs.append(("command line", " ".join(command) if command else "not recorded in the result"))
    for h in data.get("hypotheses") or []:
        if isinstance(h, dict):
            where = f"{h.get('file') or 'no file'} (sha256 {h.get('sha256') or '—'})"
            pairs.append((f"hypothesis {h.get('name', '?')}", where))
    methodology = data.get("methodology")
    if not isinstance(methodology, dict):
        first = next((h for h in data.get("hypotheses") or [] if isinstance(h, dict)), {})
        methodology = first.get("methodology")
    if isinstance(methodology, dict):
        pairs += [
            (f"methodology: {k.replace('_', ' ')}", _short(v)) for k, v in methodology.items()
        ]
    versions = data.get("versions")
    if isinstance(versions, dict) and versions:
        pairs.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    for k, v in sorted(data.items()):
        if k in shown:
            continue
        if isinstance(v, list | dict) and len(json.dumps(v, default=str)) > 300:
            size = "entries" if isinstance(v, dict) else "items"
            pairs.append((k, f"{type(v).__name__} of {len(v)} {size} (in the JSON file)"))
        else:
            pairs.append((k, _short(v)))
    return kv_table(pairs)


def warnings_section(ctx: Context) -> Markup:
    data = ctx.doc.data
    if "warnings" not in data and not isinstance(data.get("hypotheses"), list):
        raise Skip("the result records no warnings list")
    messages: list[str] = [str(m) for m in data.get("warnings") or [] if isinstance(m, str)]
    for h in data.get("hypotheses") or []:
        if isinstance(h, dict):
            messages += [f"{h.get('name')}: {m}" for m in h.get("warnings") or []]
    if not messages:
        return note("No warnings recorded.", cls="ok")
    return Markup(
        '<ul class="warnings">' + "".join(f"<li>{escape(m)}</li>" for m in messages) + "</ul>"
    )


# --------------------------------------------------------------------------------------------
def comparison_scores(ctx: Context) -> Markup:
    hyps = records(ctx.doc.data, "hypotheses")
    experiment = ctx.doc.data.get("experiment")
    margin = get_num(experiment, "margin") if isinstance(experiment, dict) else None
    several = any(get_ci(h, "total_ci") for h in hyps)
    controls = any(isinstance(h.get("controls"), dict) for h in hyps)
    rows, forest_rows = [], []
    for h in hyps:
        name = str(h.get("name", "?"))
        value, ci = get_num(h, "recovered"), get_ci(h, "ci")
        total = get_ci(h, "total_ci")
        complete = get_dict(h, "complete")
        row = [name, "undefined" if value is None else num_text(value, 3), ci_text(ci, 3)]
        if several:
            draws = get_floats(h, "per_draw") or []
            spread = float(np.std(draws, ddof=1)) if len(draws) > 1 else None
            row += [f"{len(draws)}, sd {num_text(spread, 3)}", ci_text(total, 3) if total else "—"]
        row += [
            p_text(get_num(complete, "p_incomplete")),
            p_text(get_num(complete, "p_equivalent")),
        ]
        if controls:
            c = get_dict(h, "controls")
            pct, count = get_num(c, "percentile"), c.get("count")
            row.append(
                f"{pct:.0f} of {count} ({num_text(get_num(c, 'median'), 3)})"
                if pct is not None
                else "—"
            )
        rows.append(tuple(row))
        why = (
            get_str(h, "recovered_undefined_reason")
            or get_str(complete, "reason")
            or "not recorded"
        )
        forest_rows.append(
            figures.ForestRow(name, value, total or ci, None if value is not None else why)
        )
    svg = figures.forest(forest_rows, xlabel="fraction of the metric recovered", key=f"{ctx.key}-f")
    header = ["hypothesis", "recovered", "CI (examples)"]
    if several:
        header += ["draws", "CI (examples and draws)"]
    eps = f"ε = {margin:g}" if margin is not None else "ε not recorded"
    header += ["p(recovered < 1)", f"TOST p ({eps})"]
    if controls:
        header.append("percentile among random controls (their median)")
    parts = [
        figure(
            svg,
            "Fraction recovered by each hypothesis on one experiment (paired), with its CI "
            "(over examples and draws where both are recorded).",
            kind="forest",
        ),
        table(header, rows),
        note(
            "p(recovered < 1): one-sided paired sign-flip test of scrubbed against clean (small: "
            "the hypothesis misses something). TOST p: equivalence to the clean model within the "
            "margin ε (small: recovered is shown to lie within 1 ± ε)."
        ),
    ]
    return Markup("").join(parts)


def comparison_distribution(ctx: Context) -> Markup:
    hyps = records(ctx.doc.data, "hypotheses")
    series = [(str(h.get("name", "?")), get_floats(h, "per_example")) for h in hyps]
    drawn = [(name, values) for name, values in series if values]
    if not drawn:
        raise Skip("the comparison records no per-example scrubbed metrics")
    experiment = ctx.doc.data.get("experiment")
    metric = experiment.get("metric") if isinstance(experiment, dict) else None
    kind = metric.get("kind") if isinstance(metric, dict) else None
    svg = figures.distribution(
        drawn, xlabel=f"scrubbed metric per example ({kind or 'metric'})", key=f"{ctx.key}-dist"
    )
    caption = "Per-example scrubbed metric of each hypothesis on the shared reference batch"
    clean, base = get_num(ctx.doc.data, "clean"), get_num(ctx.doc.data, "baseline")
    if clean is not None and base is not None:
        caption += f" (mean clean {clean:.4g}, mean baseline {base:.4g})"
    return figure(svg, caption + "; dashed lines: means.", kind="distribution")


def comparison_pairs(ctx: Context) -> Markup:
    pairs = records(ctx.doc.data, "pairs")
    several = any(get_ci(p, "total_ci") for p in pairs)
    rows, forest_rows = [], []
    for p in pairs:
        label = f"{p.get('a', '?')} − {p.get('b', '?')}"
        diff, ci, total = get_num(p, "difference"), get_ci(p, "ci"), get_ci(p, "total_ci")
        row = [label, num_text(diff, 3), ci_text(ci, 3)]
        if several:
            row.append(ci_text(total, 3) if total else "—")
        row += [p_text(get_num(p, "p")), p_text(get_num(p, "p_holm")), str(p.get("verdict", ""))]
        rows.append(tuple(row))
        forest_rows.append(figures.ForestRow(label, diff, total or ci, "undefined"))
    svg = figures.forest(
        forest_rows,
        xlabel="difference in fraction recovered",
        key=f"{ctx.key}-pairs",
        references=((0.0, "0: no difference"),),
    )
    header = ["pair", "difference", "CI (examples)"]
    if several:
        header.append("CI (examples and draws)")
    header += ["p", "p (Holm)", "verdict"]
    caption = "Paired differences in fraction recovered, with CIs" + (
        " over examples and draws." if several else " over reference examples."
    )
    return Markup("").join([figure(svg, caption, kind="pairs"), table(header, rows)])


def comparison_graphs(ctx: Context) -> Markup:
    from scrub._render import GraphvizMissing, to_svg

    hyps = records(ctx.doc.data, "hypotheses")
    parts = []
    for i, h in enumerate(hyps):
        name = str(h.get("name", "?"))
        parts.append(Markup(f"<h4>{escape(name)}</h4>"))
        file = get_str(h, "file")
        if file is None:
            parts.append(note("Not shown: no hypothesis file recorded.", cls="note skipped"))
            continue
        try:
            svg = to_svg(
                locate_hypothesis(ctx.doc, file, get_str(h, "sha256")), id_prefix=f"{ctx.key}-{i}-"
            )
        except Skip as exc:
            parts.append(note(f"Not shown: {exc}", cls="note skipped"))
            continue
        except GraphvizMissing as exc:
            raise Skip(f"{exc}") from None
        parts.append(figure(svg, f"The hypothesis {name}, as its file writes it.", kind="graph"))
    return Markup("").join(parts)


COMPARISON_SECTIONS = (
    ("experiment", "Experiment", experiment_section),
    ("forest", "Recovered", comparison_scores),
    ("pairs", "Pairwise differences", comparison_pairs),
    ("distribution", "Per-example metrics", comparison_distribution),
    ("graph", "Hypotheses", comparison_graphs),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)
