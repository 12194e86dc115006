"""Plain-text summaries of patching results for the terminal (``scrub patch``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_patch"]

TOP = 10


def format_patch(result: Any) -> str:
    """The header (what was run) and the cells with the largest effects."""
    if result.kind == "attention":
        return _attention(result)
    if result.kind == "knockout":
        return result.table()
    lines = [
        f"{result.name} ({result.kind}): model {result.model}, n = {result.n}, seed = "
        f"{result.seed}, metric {result.metric['kind']}",
        f"  clean {result.clean.mean():.4g}   base run {result.base_values.mean():.4g} "
        f"({result.base})   source run {result.scale_values.mean():.4g} ({result.source})",
        "  grid: " + " × ".join(f"{len(v)} {k}s" for k, v in result.axes.items())
        + f", {int(result.valid.sum())} cells; p-values adjusted by {result.correction}",
    ]  # fmt: skip
    if result.normalized_undefined:
        lines.append(f"  normalised effect undefined: {result.normalized_undefined}")
    frame = result.to_frame()
    key = "normalized" if result.normalized_undefined is None else "effect"
    frame = frame.reindex(frame[key].abs().sort_values(ascending=False).index).head(TOP)
    axes = list(result.axes)
    lines.append(f"  top {len(frame)} cells by |{key}|:")
    header = "".join(f"{a:>12}" for a in axes) + f"{'effect':>11}{'normalized':>12}{'p_adj':>9}"
    lines.append("  " + header)
    for _, row in frame.iterrows():
        coords = "".join(f"{row[a]!s:>12}" for a in axes)
        norm = "" if row["normalized"] != row["normalized"] else f"{row['normalized']:.3f}"
        lines.append(f"  {coords}{row['effect']:>11.4g}{norm:>12}{row['p_adjusted']:>9.3g}")
    lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _attention(result: Any) -> str:
    lines = [
        f"{result.name} (attention): model {result.model}, n = {result.n}, seed = {result.seed},"
        f" under {result.under_label}"
    ]
    for head, value in result.mean_abs_change.items():
        lines.append(f"  {head}: mean |pattern change| {value:.4f}")
    lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines)
