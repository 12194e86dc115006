"""Sections of ``scrub patch`` results: patching grids as heatmaps, their largest cells, and
attention maps with token labels.

The shapes drawn here, as :meth:`PatchResult.to_dict` and :meth:`AttentionResult.to_dict` write
them:

- ``attention``: ``heads``, ``tokens`` (per example), ``clean`` and ``under`` (head →
  patterns per example, query × key), ``under_label``, ``mean_abs_change``;
- ``patching`` (kinds ``activation``, ``path``, ``iterative_path``): ``axes`` (name → labels)
  and statistic arrays shaped like them (``normalized``, ``effect``, ``mean``, their ``_low``
  / ``_high`` bounds, ``p_adjusted``), NaN/null where a cell is not a path of the model;
- ``knockout``: ``clean_mean``, ``circuit_mean``, ``baseline_mean`` (F(M), F(C), F(∅)) with
  ``means_ci``, ``faithfulness`` and ``recovered`` with their ``_ci``, ``keep``, ``ablation``,
  ``completeness`` (rows ``removed``, ``circuit_without``, ``model_without``, ``incompleteness``).

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
from markupsafe import Markup

from scrub.report import figures
from scrub.report._context import Context
from scrub.report._documents import Skip, get_ci, get_dict, get_num, get_str
from scrub.report._experiment_sections import provenance_section, warnings_section
from scrub.report._html import ci_text, figure, kv_table, note, num_text, table

__all__ = ["ATTENTION_SECTIONS", "KNOCKOUT_SECTIONS", "MAX_FACETS", "PATCHING_SECTIONS"]

MAX_FACETS = 8
TOP_CELLS = 12


SETUP_KEYS = (
    ("kind", "kind"),
    ("model", "model"),
    ("dataset", "dataset"),
    ("metric", "metric"),
    ("n", "n"),
    ("seed", "seed"),
    ("base", "base run (what is patched)"),
    ("source", "source (where patched values come from)"),
    ("baseline", "effect measured from"),
    ("scale", "normalized by"),
    ("correction", "multiple-comparison correction of p"),
    ("confidence", "confidence of the intervals"),
    ("heads", "heads"),
    ("under_label", "intervention"),
    ("examples", "examples shown (dataset rows)"),
    ("ablation", "knocked-out outputs replaced by"),
)


def setup_section(ctx: Context) -> Markup:
    """What was patched, on what, and the means of the clean, base and source runs."""
    data = ctx.doc.data
    pairs = [(label, _short(data[key])) for key, label in SETUP_KEYS if key in data]
    for key, label in (
        ("clean", "clean run (mean metric)"),
        ("base_mean", "base run (mean metric)"),
        ("scale_mean", "source run (mean metric)"),
    ):
        if get_num(data, key) is not None:
            pairs.append((label, num_text(get_num(data, key))))
    if not pairs:
        raise Skip("the result records no set-up")
    return kv_table(pairs)


STAT_KEYS = frozenset(
    f"{stat}{end}" for stat in ("mean", "effect", "normalized") for end in ("", "_low", "_high")
) | {"p", "p_adjusted", "valid"}
"""The grid's statistic arrays: drawn in the grid and the largest cells, not in provenance."""


def patch_provenance(ctx: Context) -> Markup:
    hidden = {key for key, _ in SETUP_KEYS} | {"clean", "base_mean", "scale_mean"}
    return provenance_section(ctx, hide=frozenset(STAT_KEYS | hidden | {"clean", "under"}))


def _short(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _grid_axes(data: Mapping[str, Any]) -> tuple[dict[str, list], list[str], tuple[int, ...]]:
    """The grid's labelled axes, their names and its shape (skips the section without them)."""
    axes = data.get("axes")
    if (
        not isinstance(axes, dict)
        or not axes
        or not all(isinstance(v, list) for v in axes.values())
    ):
        raise Skip("the result records no grid axes")
    names = list(axes)
    return axes, names, tuple(len(axes[n]) for n in names)


def top_cells(ctx: Context) -> Markup:
    """The cells with the largest |normalized| (or |effect|) effect, with CIs and p-values."""
    data = ctx.doc.data
    axes, names, shape = _grid_axes(data)
    key = "normalized" if _finite_any(data.get("normalized")) else "effect"
    arrays = {}
    for stat in (key, f"{key}_low", f"{key}_high", "p_adjusted"):
        try:
            arrays[stat] = np.array(
                [np.nan if v is None else v for v in _flat(data.get(stat))], dtype=float
            ).reshape(shape)
        except (TypeError, ValueError):
            arrays[stat] = np.full(shape, np.nan)
    values = arrays[key]
    if not np.isfinite(values).any():
        raise Skip("the result records no finite effect")
    order = np.argsort(-np.nan_to_num(np.abs(values), nan=-1.0), axis=None)[:TOP_CELLS]
    rows = []
    for flat in order:
        index = np.unravel_index(flat, shape)
        if not np.isfinite(values[index]):
            break
        coords = [str(axes[n][i]) for n, i in zip(names, index, strict=True)]
        low, high = arrays[f"{key}_low"][index], arrays[f"{key}_high"][index]
        ci = "—" if not (np.isfinite(low) and np.isfinite(high)) else f"[{low:.3f}, {high:.3f}]"
        p = arrays["p_adjusted"][index]
        rows.append(
            (*coords, f"{values[index]:.3f}", ci, "—" if not np.isfinite(p) else f"{p:.3g}")
        )
    header = (*names, key, "CI", "p (adjusted)")
    caption = f"The {len(rows)} cells with the largest |{key}|"
    return Markup("").join(
        [note(caption + "."), table(header, rows, numeric_from=len(names), cls="top-cells")]
    )


def patching_grid(ctx: Context) -> Markup:
    data = ctx.doc.data
    axes, names, shape = _grid_axes(data)
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


def knockout_numbers(ctx: Context) -> Markup:
    """F(M), F(C), F(∅), F(C) / F(M) and recovered, each with its interval."""
    data = ctx.doc.data
    if get_num(data, "clean_mean") is None:
        raise Skip("the result records no knockout means")
    cis = get_dict(data, "means_ci")
    rows = [
        (label, num_text(get_num(data, key)), ci_text(get_ci(where, ci)))
        for label, key, where, ci in (
            ("F(M): clean model", "clean_mean", cis, "clean"),
            ("F(C): outside the circuit knocked out", "circuit_mean", cis, "circuit"),
            ("F(∅): every candidate knocked out", "baseline_mean", cis, "baseline"),
            ("F(C) / F(M)", "faithfulness", data, "faithfulness_ci"),
            ("recovered: (F(C) − F(∅)) / (F(M) − F(∅))", "recovered", data, "recovered_ci"),
        )
    ]
    return table(["quantity", "value", "CI"], rows)


def knockout_circuit(ctx: Context) -> Markup:
    """The kept nodes, class by class."""
    keep = get_dict(ctx.doc.data, "keep")
    if not keep:
        raise Skip("the circuit keeps no node")
    rows = [
        (
            str(cls),
            ", ".join(map(str, entry.get("components") or [])),
            ", ".join(map(str, entry.get("positions") or [])) or "every position",
        )
        for cls, entry in keep.items()
        if isinstance(entry, dict)
    ]
    return table(["class", "components", "kept at"], rows, numeric_from=3)


def knockout_completeness(ctx: Context) -> Markup:
    """The class-based completeness check, one row per removed class K."""
    rows = ctx.doc.data.get("completeness")
    if not isinstance(rows, list) or not rows:
        raise Skip("the knockout did not run the completeness check (completeness: true)")
    return table(
        ["K (class removed)", "F(C \\ K)", "F(M \\ K)", "|difference|", "CI"],
        [
            (
                str(r.get("removed")),
                num_text(get_num(r, "circuit_without")),
                num_text(get_num(r, "model_without")),
                num_text(get_num(r, "incompleteness")),
                ci_text(get_ci(r, "incompleteness_ci")),
            )
            for r in rows
            if isinstance(r, dict)
        ],
    )


def knockout_provenance(ctx: Context) -> Markup:
    hidden = {key for key, _ in SETUP_KEYS} | {"clean_mean", "circuit_mean", "baseline_mean"}
    hidden |= {"means_ci", "faithfulness", "faithfulness_ci", "recovered", "recovered_ci"}
    hidden |= {"keep", "per_example", "completeness"}
    return provenance_section(ctx, hide=frozenset(hidden))


KNOCKOUT_SECTIONS = (
    ("setup", "Experiment", setup_section),
    ("faithfulness", "Faithfulness (node-level knockout)", knockout_numbers),
    ("circuit", "Circuit (kept nodes)", knockout_circuit),
    ("completeness", "Completeness (class-based)", knockout_completeness),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", knockout_provenance),
)

ATTENTION_SECTIONS = (
    ("setup", "Experiment", setup_section),
    ("attention", "Attention patterns", attention_section),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", patch_provenance),
)

PATCHING_SECTIONS = (
    ("setup", "Experiment", setup_section),
    ("heatmap", "Patching grid", patching_grid),
    ("cells", "Largest effects", top_cells),
    ("warnings", "Warnings", warnings_section),
    ("provenance", "Provenance", patch_provenance),
)
