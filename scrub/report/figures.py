"""Figures for reports, drawn with matplotlib as SVG text to inline in the page.

Every figure is a plain ``matplotlib.figure.Figure`` (no ``pyplot``, so no global figure
registry), drawn inside ``matplotlib.rc_context`` with a fixed style, and saved as SVG whose text
stays text (``svg.fonttype: none``: small, sharp, searchable). A fixed ``svg.hashsalt`` per
figure makes the SVG's element ids deterministic and distinct between figures, so the same
results give the same page and several figures can share one page.

Pitfall: an undefined value (``None``) is never drawn as a number: forest-plot rows without a
value show the word "undefined" and their reason instead of a point.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib import cm
from matplotlib import colors as mcolors
from matplotlib.figure import Figure

__all__ = [
    "COLOURS",
    "PALETTE",
    "ForestRow",
    "attention_maps",
    "distribution",
    "forest",
    "heatmap",
    "loss_colour",
    "loss_legend",
]

COLOURS = {"clean": "#009E73", "baseline": "#E69F00", "scrubbed": "#0072B2", "ink": "#333333"}
"""Okabe–Ito colours (distinguishable with the common colour-vision deficiencies)."""

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
"""Okabe–Ito colours for series without a colour of their own, in order."""

LOSS_CMAP = "RdBu_r"
_LOSS_REACH = 0.3
"""Loss colours use the middle ``0.5 ± 0.3`` of the colour map, so dark text stays legible."""

_STYLE: Any = {  # matplotlib types rc keys as a Literal of every rc name
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["Helvetica", "Arial", "Liberation Sans", "DejaVu Sans"],
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.edgecolor": "#555555",
    "axes.labelcolor": COLOURS["ink"],
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.7,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.frameon": False,
    "figure.dpi": 100,
}


@dataclass(frozen=True)
class ForestRow:
    """One row of a forest plot: an estimate and its interval, or why there is none.

    Attributes:
        label: the row's name (left axis).
        value: the point estimate, ``None`` when undefined.
        ci: ``(low, high)``, ``None`` when unknown.
        note: shown instead of the point when ``value`` is ``None``.
    """

    label: str
    value: float | None
    ci: tuple[float, float] | None = None
    note: str | None = None


def _svg(fig: Figure, salt: str) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # matplotlib names elements figure_1, axes_1, ... in every figure: make them page-unique.
    text = re.sub(r'\bid="([^"]+)"', rf'id="{salt}-\1"', text)
    return re.sub(r'(url\(#|xlink:href="#|href="#)([^")]+)', rf"\1{salt}-\2", text)


# No RDF block: it would only carry the date, the creator and namespace URLs.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def forest(
    rows: Sequence[ForestRow],
    *,
    xlabel: str,
    key: str,
    references: Sequence[tuple[float, str]] = ((0.0, "0: baseline"), (1.0, "1: clean")),
) -> str:
    """Estimates with their intervals, one row each, top to bottom in the given order.

    Args:
        rows: the rows.
        xlabel: the x axis's label.
        key: unique name of the figure on its page (makes its SVG ids).
        references: vertical reference lines ``(x, label)``.

    Returns:
        The SVG element, as text.
    """
    if not rows:
        raise ValueError("a forest plot needs at least one row")
    with matplotlib.rc_context(_STYLE):
        height = 0.85 + 0.36 * len(rows)
        fig = Figure(figsize=(8.4, height))
        ax = fig.add_subplot()
        ys = np.arange(len(rows))[::-1]
        xs = [x for x, _ in references]
        for row in rows:
            if row.ci is not None:
                xs += list(row.ci)
            if row.value is not None:
                xs.append(row.value)
        lo, hi = min(xs), max(xs)
        pad = 0.06 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        for x, label in references:
            ax.axvline(x, color="#999999", linewidth=0.9, linestyle=(0, (4, 3)), zorder=1)
            ax.annotate(
                label,
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8.5,
                color="#777777",
            )
        for y, row in zip(ys, rows, strict=True):
            if row.value is None:
                ax.annotate(
                    "undefined" + (f": {row.note}" if row.note else ""),
                    (lo - pad, y),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8.5,
                    color="#a33",
                    style="italic",
                )
                continue
            if row.ci is not None:
                ax.hlines(y, row.ci[0], row.ci[1], color=COLOURS["scrubbed"], linewidth=2.2)
                for end in row.ci:
                    ax.vlines(end, y - 0.13, y + 0.13, color=COLOURS["scrubbed"], linewidth=1.2)
            ax.plot([row.value], [y], "o", color=COLOURS["scrubbed"], markersize=6.5, zorder=3)
            text = f"{row.value:.3f}" + (
                f"  [{row.ci[0]:.3f}, {row.ci[1]:.3f}]" if row.ci is not None else ""
            )
            ax.annotate(
                text,
                (1.0, y),
                xycoords=("axes fraction", "data"),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
                color=COLOURS["ink"],
                family="monospace",
            )
        ax.set_yticks(ys, [row.label for row in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="y", length=0)
        return _svg(fig, key)


def distribution(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    xlabel: str,
    key: str,
    bins: int = 40,
) -> str:
    """Histograms of per-example values, one outline per series, on shared bins.

    Args:
        series: ``(name, values)``; names ``clean``, ``baseline``, ``scrubbed`` get their
            colours. NaN values are left out (and counted in the legend).
        xlabel: the x axis's label (the metric).
        key: unique name of the figure on its page.
        bins: number of bins.

    Returns:
        The SVG element, as text.
    """
    arrays = [(name, np.asarray(values, dtype=float)) for name, values in series]
    finite = np.concatenate([a[np.isfinite(a)] for _, a in arrays])
    if finite.size == 0:
        raise ValueError("no finite values to draw")
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(8.4, 3.2))
        ax = fig.add_subplot()
        others = iter(PALETTE * (1 + len(arrays) // len(PALETTE)))
        for name, values in arrays:
            ok = values[np.isfinite(values)]
            colour = COLOURS.get(name) or next(others)
            mean = float(ok.mean()) if ok.size else math.nan
            dropped = values.size - ok.size
            label = f"{name} (mean {mean:.4g}" + (f", {dropped} NaN left out)" if dropped else ")")
            ax.hist(
                ok, bins=edges.tolist(), histtype="step", linewidth=1.6, color=colour, label=label
            )
            if ok.size:
                ax.axvline(mean, color=colour, linewidth=1.0, linestyle=(0, (4, 3)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("examples")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(arrays), fontsize=9)
        return _svg(fig, key)


def heatmap(
    values: np.ndarray,
    *,
    rows: Sequence[str],
    columns: Sequence[str],
    ylabel: str,
    xlabel: str,
    value_label: str,
    key: str,
) -> str:
    """A grid of values on a diverging scale centred at 0; NaN cells (not a path) are grey.

    Args:
        values: shape ``(len(rows), len(columns))``.
        rows, columns: the axes' labels.
        ylabel, xlabel: what the axes are.
        value_label: what the colour means (the colour bar's label).
        key: unique name of the figure on its page.

    Returns:
        The SVG element, as text.
    """
    values = np.asarray(values, dtype=float)
    if values.shape != (len(rows), len(columns)):
        raise ValueError(f"a {values.shape} grid with {len(rows)} × {len(columns)} labels")
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    scale = scale or 1.0
    with matplotlib.rc_context(_STYLE):
        width = min(11.0, 2.8 + 0.42 * len(columns))
        height = min(14.0, 1.4 + 0.3 * len(rows))
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
        image = ax.imshow(
            np.ma.masked_invalid(values),
            cmap=cmap,
            vmin=-scale,
            vmax=scale,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_xticks(range(len(columns)), list(columns), rotation=60, ha="right", fontsize=8.5)
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        bar.set_label(value_label)
        return _svg(fig, key)


def attention_maps(
    maps: Sequence[tuple[str, np.ndarray]],
    *,
    tokens: Sequence[str],
    key: str,
) -> str:
    """Attention patterns side by side (query rows × key columns), on one 0–1 scale.

    Args:
        maps: ``(title, pattern)``, each pattern ``(len(tokens), len(tokens))``.
        tokens: the tokens, labelling both axes.
        key: unique name of the figure on its page.

    Returns:
        The SVG element, as text.
    """
    size = len(tokens)
    with matplotlib.rc_context(_STYLE):
        side = min(5.5, 1.2 + 0.16 * size)
        fig = Figure(figsize=(side * len(maps) + 0.8, side + 0.4), layout="constrained")
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        image = None
        for ax, (title, pattern) in zip(axes, maps, strict=True):
            pattern = np.asarray(pattern, dtype=float)
            if pattern.shape != (size, size):
                raise ValueError(f"an attention pattern of shape {pattern.shape} for {size} tokens")
            image = ax.imshow(
                np.ma.masked_invalid(pattern), cmap="Blues", vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_title(title, fontsize=10)
            ax.set_xticks(range(size), list(tokens), rotation=90, fontsize=7)
            ax.set_yticks(range(size), list(tokens), fontsize=7)
            ax.set_xlabel("key token")
            ax.set_ylabel("query token")
            ax.grid(False)
        assert image is not None, "maps is not empty"
        bar = fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
        bar.set_label("attention")
        return _svg(fig, key)


def loss_colour(loss: float, scale: float) -> str:
    """The fill of a loss on the diverging scale of :func:`loss_legend` (red: loses)."""
    scale = scale or 1.0
    where = 0.5 + _LOSS_REACH * max(-1.0, min(1.0, loss / scale))
    return mcolors.to_hex(matplotlib.colormaps[LOSS_CMAP](where))


def loss_legend(scale: float, *, label: str, key: str) -> str:
    """A horizontal colour bar of :func:`loss_colour` from ``-scale`` to ``scale``.

    Returns:
        The SVG element, as text.
    """
    scale = scale or 1.0
    base = matplotlib.colormaps[LOSS_CMAP]
    cmap = mcolors.ListedColormap(base(np.linspace(0.5 - _LOSS_REACH, 0.5 + _LOSS_REACH, 256)))
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(5.6, 0.95))
        ax = fig.add_axes((0.05, 0.55, 0.9, 0.28))
        norm = mcolors.Normalize(vmin=-scale, vmax=scale)
        bar = fig.colorbar(
            cm.ScalarMappable(norm=norm, cmap=cmap), cax=ax, orientation="horizontal"
        )
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=8.5)
        return _svg(fig, key)
