"""Sections of a ``scrub run`` result (``kind: scrub_result``), and of several compared.

Each section is a function ``(ctx) -> Markup`` that raises
:class:`~scrub.report._documents.Skip` when it does not apply; :data:`SECTIONS` lists them in
page order. Numbers come from the result as recorded; the only numbers computed here are the
per-group means and recovered fractions of the breakdowns, with the same paired bootstrap as
the run (:func:`scrub._result.bootstrap_ci`) on a seeded stream of their own.

Pitfall: ``recovered`` may be undefined (``null``) when clean and baseline agree; it is shown
as "undefined" with the reason the result gives, never as a number.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from scrub._result import bootstrap_ci, recovered_of
from scrub.report import figures
from scrub.report._context import Context
from scrub.report._documents import Document, Skip, get_ci, get_floats, get_num, get_str
from scrub.report._html import ci_text, figure, kv_table, note, num_text, table

__all__ = ["SECTIONS", "compare_results", "metric_text", "recovered_reason"]

MAX_BREAKDOWNS = 3

#: Keys of the ScrubResult JSON that the sections below show; others are listed as extra.
KNOWN_KEYS = frozenset(
    (
        *("hypothesis", "hypothesis_file", "hypothesis_sha256", "model", "model_sha256"),
        *("dataset", "metric", "n", "seed", "engine", "baseline_kind", "confidence", "kind"),
        *("clean", "baseline", "scrubbed", "clean_ci", "baseline_ci", "scrubbed_ci"),
        *("recovered", "recovered_ci", "per_example", "per_example_clean"),
        *("per_example_baseline", "reference", "draws", "warnings", "versions"),
        *("recovered_undefined_reason", "baseline_rows", "self_draws", "generated"),
    )
)


def metric_text(metric: object) -> str:
    """``loss at REP (labels: next)`` from a recorded metric spec."""
    if not isinstance(metric, dict) or not isinstance(metric.get("kind"), str):
        return "metric (not recorded)"
    text = metric["kind"]
    positions = metric.get("positions")
    if isinstance(positions, list | tuple):
        text += " at " + ",".join(str(p) for p in positions)
    extras = [f"{k}: {metric[k]}" for k in ("labels", "correct", "wrong") if metric.get(k)]
    return text + (f" ({', '.join(extras)})" if extras else "")


def _direction(metric: object) -> str:
    kind = metric.get("kind") if isinstance(metric, dict) else None
    if kind in ("loss", "kl"):
        return "lower is better"
    if kind in ("logit_diff", "accuracy"):
        return "higher is better"
    return ""


def recovered_reason(data: Mapping[str, Any]) -> str | None:
    """Why ``recovered`` is undefined, in the result's words if it gives them."""
    for key in ("recovered_undefined_reason", "recovered_reason", "undefined_reason", "reason"):
        if get_str(data, key):
            return data[key]
    return None


def _recovered_row(label: str, data: Mapping[str, Any]) -> figures.ForestRow:
    value = get_num(data, "recovered")
    reason = None if value is not None else (recovered_reason(data) or "not recorded")
    return figures.ForestRow(label, value, get_ci(data, "recovered_ci"), reason)


def _confidence(data: Mapping[str, Any]) -> str:
    conf = get_num(data, "confidence")
    return f"{conf:.0%}" if conf is not None else "?"


# --------------------------------------------------------------------------------------------
def summary(ctx: Context) -> Markup:
    data = ctx.doc.data
    pct = _confidence(data)
    value = get_num(data, "recovered")
    ci = get_ci(data, "recovered_ci")
    if value is None:
        headline = (
            '<p class="headline undefined">recovered: <strong>undefined</strong>'
            f"<span> — {escape(recovered_reason(data) or 'not recorded in the result')}</span></p>"
        )
    else:
        headline = (
            f'<p class="headline">recovered <strong>{escape(num_text(value, 3))}</strong> '
            f"<span>{pct} CI {escape(ci_text(ci, 3))}</span></p>"
        )
    baseline_kind = get_str(data, "baseline_kind") or "baseline"
    rows = []
    for name, label in (
        ("clean", "clean model"),
        ("baseline", f"baseline ({baseline_kind})"),
        ("scrubbed", "scrubbed"),
    ):
        rows.append((label, num_text(get_num(data, name)), ci_text(get_ci(data, f"{name}_ci"))))
    direction = _direction(data.get("metric"))
    intro = note(
        f"{metric_text(data.get('metric'))} on {data.get('n', '?')} reference examples"
        + (f" ({direction})" if direction else "")
        + ". recovered = (scrubbed − baseline) / (clean − baseline): 1 keeps all of the "
        "metric, 0 none of it.",
        cls="lede",
    )
    parts = [Markup(headline), intro, table(("", "mean", f"{pct} CI"), rows)]
    parts.append(
        figure(
            figures.forest(
                [_recovered_row(str(data.get("hypothesis", "result")), data)],
                xlabel="fraction of the metric recovered",
                key=f"{ctx.key}-recovered",
            ),
            f"Fraction recovered with its {pct} paired bootstrap CI.",
            kind="recovered",
        )
    )
    return Markup("").join(parts)


def diagram(ctx: Context) -> Markup:
    from scrub._render import GraphvizMissing, to_dot, to_svg

    hyp = ctx.hypothesis()
    caption = (
        "Interpretation graph and correspondence, as the file writes it. Arrows point from a "
        "node to the node that reads it (data flow); edge labels give the channels, positions "
        "and paths (solid: direct, through the residual stream only; dashed: all paths, an "
        "activation patch). The root (double border) runs on the reference batch."
    )
    try:
        svg = to_svg(hyp, id_prefix=f"{ctx.key}-")
    except GraphvizMissing as exc:
        source = escape(to_dot(hyp).source)
        return Markup("").join(
            [
                note(f"Diagram not drawn: {exc}.", cls="note skipped"),
                Markup(
                    f"<details><summary>DOT source of the diagram</summary><pre>{source}</pre>"
                    "</details>"
                ),
            ]
        )
    return figure(svg, caption, kind="graph")


def distribution(ctx: Context) -> Markup:
    data = ctx.doc.data
    series = []
    for name, key in (
        ("clean", "per_example_clean"),
        ("baseline", "per_example_baseline"),
        ("scrubbed", "per_example"),
    ):
        values = get_floats(data, key)
        if values is not None:
            series.append((name, values))
    if not series:
        raise Skip("the result records no per-example values")
    lengths = {len(v) for _, v in series}
    if len(lengths) != 1:
        raise Skip("the per-example arrays have different lengths, so they cannot be compared")
    svg = figures.distribution(
        series, xlabel=f"per-example {metric_text(data.get('metric'))}", key=f"{ctx.key}-dist"
    )
    return figure(
        svg,
        f"Per-example metric on the {lengths.pop()} reference examples: the clean model, the "
        "baseline and the scrubbed model (dashed lines: means).",
        kind="distribution",
    )


def breakdown(ctx: Context) -> Markup:
    data = ctx.doc.data
    clean = get_floats(data, "per_example_clean")
    base = get_floats(data, "per_example_baseline")
    scrubbed = get_floats(data, "per_example")
    if clean is None or base is None or scrubbed is None:
        raise Skip("the result records no per-example values")
    fields, source = ctx.reference_fields()
    if not fields:
        raise Skip("the dataset has no categorical field (2–12 values) to break the result down by")
    names = _preferred(ctx, list(fields))
    shown, left = names[:MAX_BREAKDOWNS], names[MAX_BREAKDOWNS:]
    arrays = [np.asarray(a, dtype=float) for a in (clean, base, scrubbed)]
    if len({len(a) for a in arrays} | {len(fields[shown[0]])}) != 1:
        raise Skip("the per-example arrays and the reference rows have different lengths")
    seed: int = data["seed"] if isinstance(data.get("seed"), int) else 0
    confidence = get_num(data, "confidence") or 0.95
    parts = [note(f"Fields of the reference rows from {source}.", cls="lede")]
    for name in shown:
        rows, forest_rows = _groups(name, fields[name], arrays, seed=seed, confidence=confidence)
        parts.append(Markup(f"<h4>by {escape(name)}</h4>"))
        parts.append(
            table(
                (f"{name}", "n", "clean", "baseline", "scrubbed", "recovered", "CI"),
                rows,
                cls="breakdown",
            )
        )
        parts.append(
            figure(
                figures.forest(
                    forest_rows, xlabel="fraction recovered", key=f"{ctx.key}-by-{name}"
                ),
                f"Fraction recovered within each value of {name} ({_confidence(data)} paired "
                "bootstrap CIs over that group's examples).",
                kind="breakdown",
            )
        )
    if left:
        parts.append(note(f"Also categorical, not shown: {', '.join(left)}."))
    return Markup("").join(parts)


def _preferred(ctx: Context, names: list[str]) -> list[str]:
    """Fields the hypothesis names (features, cond samplers) first, then the rest."""
    try:
        text = json.dumps(ctx.hypothesis().spec.model_dump(mode="json"))
    except Skip:
        return names
    return sorted(names, key=lambda n: (f'"{n}"' not in text, n))


def _groups(
    name: str,
    values: np.ndarray,
    arrays: Sequence[np.ndarray],
    *,
    seed: int,
    confidence: float,
) -> tuple[list[tuple], list[figures.ForestRow]]:
    from scrub._tree import stream

    rows, forest_rows = [], []
    labels = values.astype(str)
    for value in sorted(set(labels.tolist()), key=_natural):
        mask = labels == value
        c, b, s = (a[mask] for a in arrays)
        size = int(mask.sum())
        if np.isclose(c.mean(), b.mean(), rtol=0, atol=1e-12):
            rec, ci, why = None, None, "clean = baseline in this group"
        else:
            rec = float(recovered_of(c, b, s))
            lo, hi = bootstrap_ci(
                (c, b, s),
                recovered_of,
                rng=stream(seed, "report", "breakdown", name, value),
                confidence=confidence,
            )
            ci, why = (None if np.isnan(lo) else (lo, hi)), None
        rows.append(
            (
                value,
                str(size),
                num_text(float(c.mean())),
                num_text(float(b.mean())),
                num_text(float(s.mean())),
                "undefined" if rec is None else num_text(rec, 3),
                ci_text(ci, 3),
            )
        )
        forest_rows.append(figures.ForestRow(f"{name} = {value} (n={size})", rec, ci, why))
    return rows, forest_rows


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def warnings_section(ctx: Context) -> Markup:
    messages = ctx.doc.data.get("warnings")
    if messages is None:
        raise Skip("the result records no warnings list")
    if not isinstance(messages, list):
        raise Skip("the result's warnings are not a list")
    if not messages:
        return note("The run raised no warnings.", cls="ok")
    items = "".join(f"<li>{escape(str(m))}</li>" for m in messages)
    return Markup(f'<ul class="warnings">{items}</ul>')


def provenance(ctx: Context) -> Markup:
    data = ctx.doc.data
    doc = ctx.doc
    spec: dict[str, Any] = data["dataset"] if isinstance(data.get("dataset"), dict) else {}
    file_status = ""
    try:
        hyp = ctx.hypothesis()
        file_status = f" (checked: the file {hyp.file} matches)" if hyp.file else ""
    except Skip as exc:
        file_status = f" ({exc})"
    n_resamples = inspect.signature(bootstrap_ci).parameters["n_resamples"].default
    command = doc.context.get("command_line")
    pairs: list[tuple[str, object]] = [
        ("hypothesis", data.get("hypothesis", "—")),
        ("hypothesis file", f"{data.get('hypothesis_file') or '—'}{file_status}"),
        ("hypothesis sha256", data.get("hypothesis_sha256") or "—"),
        ("model", data.get("model", "—")),
        ("model weights sha256", data.get("model_sha256") or "—"),
        ("dataset", f"{spec.get('generator', '—')} {json.dumps(spec.get('params', {}))}"),
        ("dataset spec file", spec.get("spec_file") or "—"),
        ("metric", metric_text(data.get("metric"))),
        (
            "n, seed, engine",
            f"{data.get('n', '—')}, {data.get('seed', '—')}, {data.get('engine', '—')}",
        ),
        ("device, dtype", f"{data.get('device', 'cpu')}, {data.get('dtype', 'float32')}"),
        ("baseline", data.get("baseline_kind", "—")),
        (
            "methodology",
            f"recovered = (scrubbed − baseline) / (clean − baseline) of means over the "
            f"reference examples; {_confidence(data)} CIs by a paired bootstrap over examples "
            f"(scipy.stats.bootstrap, BCa, percentile where BCa degenerates; {n_resamples} "
            "resamples in this scrub version)",
        ),
        ("command line", " ".join(command) if command else "not recorded in the result"),
        ("source", doc.source),
    ]
    versions = data.get("versions")
    if isinstance(versions, dict) and versions:
        pairs.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    draws = data.get("draws")
    if isinstance(draws, dict):
        pairs.append(("draws recorded", f"{len(draws)} (node and node.other rows)"))
    self_draws = data.get("self_draws")
    if isinstance(self_draws, dict) and self_draws:
        text = "; ".join(
            f"{node}: " + ", ".join(f"{k} {_fraction(v)}" for k, v in roles.items())
            for node, roles in self_draws.items()
            if isinstance(roles, dict)
        )
        pairs.append(("rows drawn as their parent's own example", text))
    for key, what in (("generated", "generated examples"), ("baseline_rows", "baseline rows")):
        if isinstance(data.get(key), list | dict):
            pairs.append((what + " recorded", str(len(data[key]))))
    extra = sorted(set(data) - KNOWN_KEYS)
    parts = [kv_table(pairs)]
    if extra:
        shown = [(k, _short(data[k])) for k in extra]
        parts.append(Markup("<h4>other recorded fields</h4>"))
        parts.append(kv_table(shown))
    return Markup("").join(parts)


def _fraction(value: object) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else str(value)


def _short(value: object, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


SECTIONS = (
    ("summary", "Summary", summary),
    ("graph", "Hypothesis", diagram),
    ("distribution", "Per-example metric", distribution),
    ("breakdown", "Breakdown by dataset field", breakdown),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance),
)
"""(id, title, renderer) of a ``scrub_result``'s sections, in page order."""


# --------------------------------------------------------------------------------------------
def compare_results(docs: Sequence[Document], key: str) -> Markup:
    """Several ``scrub run`` results side by side: recovered with CIs, and what differs."""
    rows, forest_rows = [], []
    for doc in docs:
        d = doc.data
        name = str(d.get("hypothesis", doc.source))
        value = get_num(d, "recovered")
        rows.append(
            (
                name,
                num_text(get_num(d, "clean")),
                num_text(get_num(d, "baseline")),
                num_text(get_num(d, "scrubbed")),
                "undefined" if value is None else num_text(value, 3),
                ci_text(get_ci(d, "recovered_ci"), 3),
            )
        )
        forest_rows.append(_recovered_row(name, d))
    pcts = {_confidence(doc.data) for doc in docs}
    pct = pcts.pop() if len(pcts) == 1 else "mixed-level"
    differ = [
        label
        for label, field_key in (
            ("model", "model_sha256"),
            ("model", "model"),
            ("dataset", "dataset"),
            ("metric", "metric"),
            ("n", "n"),
            ("seed", "seed"),
            ("reference rows", "reference"),
            ("baseline", "baseline_kind"),
        )
        if len({json.dumps(doc.data.get(field_key), sort_keys=True) for doc in docs}) > 1
    ]
    if differ:
        paired = note(
            "Not paired: these results differ in "
            + ", ".join(dict.fromkeys(differ))
            + ", so their fractions recovered are not measured on the same examples; compare "
            "them with care.",
            cls="note warn",
        )
    else:
        paired = note(
            "Paired: every result has the same model, dataset, metric, seed and reference rows. "
            "For paired differences with adjusted p-values, use 'scrub compare'.",
            cls="ok",
        )
    return Markup("").join(
        [
            paired,
            figure(
                figures.forest(
                    forest_rows, xlabel="fraction of the metric recovered", key=f"{key}-forest"
                ),
                f"Fraction recovered by each hypothesis, with {pct} paired bootstrap CIs "
                "(over each result's reference examples).",
                kind="forest",
            ),
            table(("hypothesis", "clean", "baseline", "scrubbed", "recovered", "CI"), rows),
        ]
    )
