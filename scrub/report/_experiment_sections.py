"""Sections of experiment results: comparisons, diagnoses, patching grids, attention maps.

These formats (``scrub compare``, ``scrub diagnose``, ``scrub patch``) are young, so every
section reads its fields through the defensive getters and skips, with the reason, what it does
not find. The shapes drawn here:

- ``comparison``: ``experiment``, ``hypotheses`` (``name``, ``file``, ``sha256``,
  ``recovered``, ``ci``, ``warnings``) and ``pairs`` (``a``, ``b``, ``difference``, ``ci``,
  ``p``, ``p_holm``, ``verdict``);
- ``diagnosis``: ``hypothesis``, ``recovered``, ``ci`` and ``rows`` (``node``, ``change``,
  ``recovered``, ``difference``, ``ci``, ``p``);
- ``attention``: ``heads``, ``tokens`` (per example), ``clean`` and ``under`` (head →
  patterns per example, query × key), ``under_label``, ``mean_abs_change``;
- ``patching`` (kinds ``activation``, ``path``, ``iterative_path``): ``axes`` (name → labels)
  and statistic arrays shaped like them (``normalized``, ``effect``, ``mean``), NaN/null where a
  cell is not a path of the model.

Pitfall: a patching grid with more than two axes is drawn over its two longest axes, one
heatmap per combination of the other axes' labels, at most :data:`MAX_FACETS`; more are not
drawn (the note says so).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from markupsafe import Markup, escape

from scrub.report import figures
from scrub.report._context import Context, locate_hypothesis
from scrub.report._documents import Skip, get_ci, get_num, get_str
from scrub.report._html import ci_text, figure, kv_table, note, num_text, table

__all__ = [
    "ATTENTION_SECTIONS",
    "COMPARISON_SECTIONS",
    "DIAGNOSIS_SECTIONS",
    "PATCHING_SECTIONS",
]

MAX_FACETS = 8


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _records(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise Skip(f"the result records no {key}")
    records = [r for r in value if isinstance(r, dict)]
    if len(records) != len(value):
        raise Skip(f"the result's {key} are not records")
    return records


def _p_text(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def experiment_section(ctx: Context) -> Markup:
    experiment = ctx.doc.data.get("experiment")
    if not isinstance(experiment, dict) or not experiment:
        raise Skip("the result records no experiment")
    pairs = [(k, _short(v)) for k, v in experiment.items()]
    for key in ("clean", "baseline", "clean_mean", "base_mean"):
        if get_num(ctx.doc.data, key) is not None:
            pairs.append((f"{key} (mean metric)", num_text(get_num(ctx.doc.data, key))))
    return kv_table(pairs)


def provenance_section(ctx: Context) -> Markup:
    """Every other recorded field, and the command line when known."""
    data = ctx.doc.data
    shown = {"experiment", "hypotheses", "pairs", "rows", "axes"}
    pairs: list[tuple[str, object]] = [("source", ctx.doc.source)]
    command = ctx.doc.context.get("command_line")
    pairs.append(("command line", " ".join(command) if command else "not recorded in the result"))
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
    hyps = _records(ctx.doc.data, "hypotheses")
    rows, forest_rows = [], []
    for h in hyps:
        name = str(h.get("name", "?"))
        value, ci = get_num(h, "recovered"), get_ci(h, "ci")
        total = get_ci(h, "total_ci")
        rows.append(
            (
                name,
                "undefined" if value is None else num_text(value, 3),
                ci_text(ci, 3),
                ci_text(total, 3) if total else "—",
            )
        )
        why = get_str(h, "recovered_undefined_reason") or "not recorded"
        forest_rows.append(
            figures.ForestRow(name, value, total or ci, None if value is not None else why)
        )
    svg = figures.forest(forest_rows, xlabel="fraction of the metric recovered", key=f"{ctx.key}-f")
    return Markup("").join(
        [
            figure(
                svg,
                "Fraction recovered by each hypothesis on one experiment (paired), with its CI "
                "(over examples and draws where both are recorded).",
                kind="forest",
            ),
            table(("hypothesis", "recovered", "CI", "CI (examples and draws)"), rows),
        ]
    )


def comparison_pairs(ctx: Context) -> Markup:
    pairs = _records(ctx.doc.data, "pairs")
    rows, forest_rows = [], []
    for p in pairs:
        label = f"{p.get('a', '?')} − {p.get('b', '?')}"
        diff, ci = get_num(p, "difference"), get_ci(p, "ci")
        rows.append(
            (
                label,
                num_text(diff, 3),
                ci_text(ci, 3),
                _p_text(get_num(p, "p")),
                _p_text(get_num(p, "p_holm")),
                str(p.get("verdict", "")),
            )
        )
        forest_rows.append(figures.ForestRow(label, diff, get_ci(p, "total_ci") or ci, "undefined"))
    svg = figures.forest(
        forest_rows,
        xlabel="difference in fraction recovered",
        key=f"{ctx.key}-pairs",
        references=((0.0, "0: no difference"),),
    )
    return Markup("").join(
        [
            figure(svg, "Paired differences in fraction recovered, with CIs.", kind="pairs"),
            table(("pair", "difference", "CI", "p", "p (Holm)", "verdict"), rows),
        ]
    )


def comparison_graphs(ctx: Context) -> Markup:
    from scrub._render import GraphvizMissing, to_svg

    hyps = _records(ctx.doc.data, "hypotheses")
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
    ("graph", "Hypotheses", comparison_graphs),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)


# --------------------------------------------------------------------------------------------
def diagnosis_ranking(ctx: Context) -> Markup:
    rows_in = _records(ctx.doc.data, "rows")
    rows, forest_rows = [], []
    for r in rows_in:
        label = f"{r.get('node', '?')}: {r.get('change', '?')}"
        diff, ci = get_num(r, "difference"), get_ci(r, "ci")
        rows.append(
            (
                label,
                num_text(get_num(r, "recovered"), 3),
                num_text(diff, 3),
                ci_text(ci, 3),
                _p_text(get_num(r, "p")),
            )
        )
        forest_rows.append(figures.ForestRow(label, diff, ci, "undefined"))
    svg = figures.forest(
        forest_rows,
        xlabel="change in fraction recovered",
        key=f"{ctx.key}-diag",
        references=((0.0, "0: no change"),),
    )
    return Markup("").join(
        [
            figure(svg, "Variants of the hypothesis ranked as recorded, with CIs.", kind="ranking"),
            table(("variant", "recovered", "difference", "CI", "p"), rows),
        ]
    )


DIAGNOSIS_SECTIONS = (
    ("experiment", "Experiment", experiment_section),
    ("ranking", "Diagnosis", diagnosis_ranking),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)


# --------------------------------------------------------------------------------------------
def patching_grid(ctx: Context) -> Markup:
    data = ctx.doc.data
    axes = data.get("axes")
    if (
        not isinstance(axes, dict)
        or not axes
        or not all(isinstance(v, list) for v in axes.values())
    ):
        raise Skip("the result records no grid axes")
    names = list(axes)
    shape = tuple(len(axes[n]) for n in names)
    stat = next((s for s in ("normalized", "effect", "mean") if _finite_any(data.get(s))), None)
    if stat is None:
        raise Skip("the result records no statistic with a finite value")
    try:
        values = np.array(
            [[np.nan if v is None else v for v in _flat(data[stat])]], dtype=float
        ).reshape(shape)
    except (TypeError, ValueError):
        raise Skip(f"the {stat} array does not have the axes' shape {shape}") from None
    if len(names) == 1:
        values, names, shape = values[:, None], [*names, ""], (*shape, 1)
        axes = {**axes, "": [""]}
    # The two longest axes (in their order) make the grid; the others make facets.
    longest = sorted(sorted(range(len(names)), key=lambda i: -shape[i])[:2])
    order = longest + [i for i in range(len(names)) if i not in longest]
    values = np.transpose(values, order)
    names = [names[i] for i in order]
    rest = names[2:]
    combos = list(itertools.product(*[range(len(axes[n])) for n in rest]))
    parts = []
    if stat != "normalized":
        why = get_str(data, "normalized_undefined")
        parts.append(
            note(
                f"Showing {stat}: the normalized effect is undefined ({why or 'not recorded'}).",
                cls="note warn",
            )
        )
    for k, combo in enumerate(combos[:MAX_FACETS]):
        facet = " · ".join(f"{n} = {axes[n][i]}" for n, i in zip(rest, combo, strict=True))
        index: tuple[Any, ...] = (slice(None), slice(None), *combo)
        grid = values[index]
        svg = figures.heatmap(
            grid,
            rows=[str(x) for x in axes[names[0]]],
            columns=[str(x) for x in axes[names[1]]],
            ylabel=names[0],
            xlabel=names[1],
            value_label=stat,
            key=f"{ctx.key}-grid{k}",
        )
        caption = f"{stat} of each patch" + (f" ({facet})" if facet else "") + "; grey: not a path."
        parts.append(figure(svg, caption, kind="heatmap"))
    if len(combos) > MAX_FACETS:
        parts.append(note(f"{len(combos) - MAX_FACETS} more grids are not drawn."))
    return Markup("").join(parts)


def _flat(value: Any) -> list:
    if isinstance(value, list):
        return (
            [x for item in value for x in _flat(item)]
            if value and isinstance(value[0], list)
            else value
        )
    return [value]


def _finite_any(value: Any) -> bool:
    try:
        flat = np.array([np.nan if v is None else v for v in _flat(value)], dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(flat).any())


MAX_HEADS = 4


def attention_section(ctx: Context) -> Markup:
    data = ctx.doc.data
    heads = data.get("heads")
    clean, under = data.get("clean"), data.get("under")
    tokens, lengths = data.get("tokens"), data.get("lengths")
    if not isinstance(heads, list) or not heads:
        raise Skip("the result records no heads")
    if not isinstance(clean, dict) or not isinstance(tokens, list) or not tokens:
        raise Skip("the result records no clean attention patterns with their tokens")
    example_tokens = [str(t) for t in tokens[0]]
    size = len(example_tokens)
    if isinstance(lengths, list) and lengths and isinstance(lengths[0], int):
        size = min(size, lengths[0])
    label = get_str(data, "under_label") or "intervention"
    recorded_change = data.get("mean_abs_change")
    change: dict[str, Any] = recorded_change if isinstance(recorded_change, dict) else {}
    parts = []
    for i, head in enumerate(heads[:MAX_HEADS]):
        maps = []
        for title, source in (("clean", clean), (f"under {label}", under)):
            if not isinstance(source, dict) or head not in source:
                continue
            pattern = np.array(_none_to_nan(source[head]), dtype=float)
            if pattern.ndim == 3:
                pattern = pattern[0]
            maps.append((title, pattern[:size, :size]))
        if not maps:
            parts.append(note(f"Not shown: no patterns recorded for {head}.", cls="note skipped"))
            continue
        svg = figures.attention_maps(maps, tokens=example_tokens[:size], key=f"{ctx.key}-att{i}")
        moved = get_num(change, str(head))
        caption = f"{head}: attention on the first reference example" + (
            f"; mean |change| over all examples {moved:.3f}" if moved is not None else ""
        )
        parts.append(figure(svg, caption + ".", kind="attention"))
    if len(heads) > MAX_HEADS:
        parts.append(note(f"{len(heads) - MAX_HEADS} more heads are not drawn."))
    return Markup("").join(parts)


def _none_to_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_none_to_nan(v) for v in value]
    return np.nan if value is None else value


ATTENTION_SECTIONS = (
    ("attention", "Attention patterns", attention_section),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)

PATCHING_SECTIONS = (
    ("heatmap", "Patching grid", patching_grid),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", provenance_section),
)
