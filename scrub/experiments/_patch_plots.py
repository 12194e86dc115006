"""Figures of patching results: grid heatmaps and counterfactual attention maps (PNG and SVG).

matplotlib is an optional dependency (``pip install 'scrub[plots]'``), imported only here and
only when a figure is drawn, with the non-interactive Agg backend.

- A grid is drawn as heatmaps of the normalised effect (the effect when normalisation is
  undefined), diverging around 0: ``component × position`` (activation), one panel per channel
  of ``sender × receiver`` (path), and the REMIX ``layer × (heads + MLP)`` grid (iterative path,
  one panel per position).
- An attention map shows, for one example, the head's clean pattern, its pattern under the
  intervention and their difference, with the example's tokens on both axes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["attention_figures", "grid_figures", "pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or an ImportError with the install hint."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            "figures need matplotlib: pip install 'scrub[plots]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for path in paths:
        fig.savefig(path, dpi=90, bbox_inches="tight", metadata=_metadata(path))
    return paths


def _metadata(path: Path) -> dict[str, Any]:
    # Reproducible files: no creation date in the SVG, no software stamp drift.
    return {"Date": None} if path.suffix == ".svg" else {"Software": None}


def _heat(ax, values: np.ndarray, rows: list, cols: list, title: str, label: str) -> None:
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(image, ax=ax, label=label, shrink=0.8)


def _what(result) -> tuple[str, np.ndarray]:
    if result.normalized_undefined is None:
        return "normalised effect", result.arrays["normalized"]
    return f"effect on {result.metric['kind']}", result.arrays["effect"]


def grid_figures(result, out: Path) -> list[Path]:
    """Heatmaps of a :class:`~scrub.experiments.PatchResult` (see the module docstring)."""
    plt = pyplot()
    label, values = _what(result)
    axes = result.axes
    title = f"{result.name}: {label} (base {result.base}, source {result.source})"
    if result.kind == "activation":
        cols = axes["position"]
        if all(isinstance(p, int) for p in cols) and len(result.tokens) == len(cols):
            cols = [f"{p}:{t}" for p, t in zip(cols, result.tokens, strict=True)]
        fig, ax = plt.subplots(
            figsize=(2 + 0.3 * len(cols), 1.5 + 0.22 * len(axes["component"])),
            layout="constrained",
        )
        _heat(ax, values, axes["component"], cols, title, label)
    elif result.kind == "path":
        channels = axes["channel"]
        fig, panels = plt.subplots(
            len(axes["position"]),
            len(channels),
            figsize=(2 + 0.3 * len(axes["receiver"]) * len(channels),
                     1.5 + 0.25 * len(axes["sender"]) * len(axes["position"])),
            squeeze=False, layout="constrained",
        )  # fmt: skip
        for p, pos in enumerate(axes["position"]):
            for c, ch in enumerate(channels):
                _heat(
                    panels[p][c],
                    values[:, :, c, p],
                    axes["sender"],
                    axes["receiver"],
                    f"into {ch} at {pos}",
                    label,
                )
        fig.suptitle(title, fontsize=9)
    else:
        layers, columns, grid = remix_grid(axes["sender"], values)
        fig, panels = plt.subplots(
            1, len(axes["position"]), figsize=(4 + 3 * len(axes["position"]), 1.6 + 0.5 * len(layers)),
            squeeze=False, layout="constrained",
        )  # fmt: skip
        for p, pos in enumerate(axes["position"]):
            where = "every position" if pos == "all" else pos
            _heat(panels[0][p], grid[..., p], layers, columns, f"senders at {where}", label)
            panels[0][p].set_xlabel("head / MLP")
            panels[0][p].set_ylabel("layer")
        fig.suptitle(title, fontsize=9)
    paths = _save(fig, out, f"{result.name}.grid")
    plt.close(fig)
    return paths


_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")
_MLP = re.compile(r"^m(\d+)$")


def remix_grid(senders: list[str], values: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
    """Senders (heads and MLPs) laid out as ``layer × (h0 .. hH-1, mlp)``, NaN where absent."""
    layers: dict[int, dict[str, int]] = {}
    heads = 0
    for i, name in enumerate(senders):
        if m := _HEAD.match(name):
            layers.setdefault(int(m.group(1)), {})[f"h{m.group(2)}"] = i
            heads = max(heads, int(m.group(2)) + 1)
        elif m := _MLP.match(name):
            layers.setdefault(int(m.group(1)), {})["mlp"] = i
        else:
            layers.setdefault(-1, {})[name] = i
    columns = [f"h{h}" for h in range(heads)] + ["mlp"]
    extra = sorted(layers.get(-1, {}))
    columns += [c for c in extra if c not in columns]
    order = sorted(layers)
    grid = np.full((len(order), len(columns), values.shape[-1]), np.nan)
    for r, layer in enumerate(order):
        for name, i in layers[layer].items():
            grid[r, columns.index(name)] = values[i]
    return [str(layer) if layer >= 0 else "embed" for layer in order], columns, grid


def attention_figures(result, out: Path) -> list[Path]:
    """For each head and shown example: clean, under the intervention, and the difference."""
    plt = pyplot()
    paths: list[Path] = []
    for head in result.heads:
        for e in range(len(result.examples)):
            tokens = result.tokens[e]
            length = result.lengths[e]
            clean = result.clean[head][e][:length, :length]
            under = result.under[head][e][:length, :length]
            side = 1.2 + 0.16 * length
            fig, panels = plt.subplots(1, 3, figsize=(3.6 * side, side + 0.6), layout="constrained")
            for ax, values, title, cmap, lim in (
                (panels[0], clean, "clean", "Blues", (0.0, 1.0)),
                (panels[1], under, f"under {result.under_label}", "Blues", (0.0, 1.0)),
                (panels[2], under - clean, "difference", "RdBu_r", (0.0, 0.0)),
            ):
                if lim == (0.0, 0.0):  # diverging, symmetric around 0
                    bound = float(np.abs(values).max()) or 1.0
                    lim = (-bound, bound)
                image = ax.imshow(values, cmap=cmap, vmin=lim[0], vmax=lim[1])
                ax.set_xticks(range(length), tokens[:length], rotation=90, fontsize=7)
                ax.set_yticks(range(length), tokens[:length], fontsize=7)
                ax.set_xlabel("key (source position)", fontsize=7)
                ax.set_title(title, fontsize=9)
                fig.colorbar(image, ax=ax, shrink=0.7)
            panels[0].set_ylabel("query (destination position)", fontsize=7)
            fig.suptitle(
                f"{result.name}: {head} attention, example {result.examples[e]}", fontsize=9
            )
            paths += _save(fig, out, f"{result.name}.{head}.example{e}")
            plt.close(fig)
    return paths
