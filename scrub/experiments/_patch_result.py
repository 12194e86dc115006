"""The result of a patching grid: labelled arrays, a long table, JSON, npz and figures.

Every statistic is an array shaped like the grid's **axes** (``component × position`` for
activation patching, ``sender × receiver × channel × position`` for path patching, ``sender ×
position`` for iterative path patching), with NaN where a cell is not a path of the model
(``valid`` is False: a receiver upstream of its sender). Axis labels are component names,
channel names and position names (integers or the dataset's named positions); ``tokens`` are the
first reference example's tokens, for labelling integer positions.

``normalized`` is withheld (NaN, with ``normalized_undefined`` saying why) when the source run
is not distinguishable from the base run: the baseline is named in ``baseline`` and the scale in
``scale``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scrub.data import Dataset
from scrub.experiments._patch_stats import GridStats

__all__ = ["STATS", "PatchResult", "token_labels"]

STATS = (
    "mean",
    "mean_low",
    "mean_high",
    "effect",
    "effect_low",
    "effect_high",
    "p",
    "p_adjusted",
    "normalized",
    "normalized_low",
    "normalized_high",
)


def token_labels(dataset: Dataset, row: int) -> list[str]:
    """Readable tokens of one dataset row (word vocabularies and GPT-2 decoded; else ids)."""
    ids = dataset.tokens[row].tolist()
    if dataset.name in ("ioi_toy", "ioi_names", "ioi_names_abc"):
        from scrub.data.ioi_names import VOCAB_FILE as NAMES_VOCAB
        from scrub.data.ioi_toy import Vocab

        default = None if dataset.name == "ioi_toy" else NAMES_VOCAB
        vocab = Vocab.load(dataset.params.get("vocab") or default)
        return [str(vocab.tokens[i]) for i in ids]
    if dataset.params.get("family") in ("ioi", "ioi_abc"):
        from scrub._tokenizer import gpt2_tokenizer

        tok = gpt2_tokenizer()
        return [str(tok.decode([i])) for i in ids]
    return [str(i) for i in ids]


@dataclass
class PatchResult:
    """A scored patching grid (see the module docstring).

    Attributes:
        kind, name, file, sha256: the experiment.
        model, model_sha256, dataset, metric, n, seed: how it was run.
        base, source: the samplers of the base run and of the patched values.
        baseline, scale: what ``effect`` is measured from and what ``normalized`` divides by.
        correction: the multiple-comparison control of ``p_adjusted``.
        axes: axis name → labels, in array order.
        valid: which cells are paths of the model.
        arrays: statistic name → array shaped like the axes (see :data:`STATS`).
        per_example: ``axes + (n,)`` per-example metric of every cell.
        clean, base_values, scale_values: per-example metric of the clean, base and source runs.
        normalized_undefined: why ``normalized`` is NaN, if it is.
        reference, base_rows, source_rows: the dataset rows used.
        tokens: the first reference example's tokens.
        cells: each cell's hypothesis ``nodes:`` (``None`` where not valid), in flat order.
        device, dtype: where and in which type the model ran.
    """

    kind: str
    name: str
    file: str | None
    sha256: str
    model: str
    model_sha256: str | None
    dataset: dict[str, Any]
    metric: dict[str, Any]
    n: int
    seed: int
    base: str
    source: str
    baseline: str
    scale: str
    correction: str
    confidence: float
    axes: dict[str, list]
    valid: np.ndarray
    arrays: dict[str, np.ndarray]
    per_example: np.ndarray
    clean: np.ndarray
    base_values: np.ndarray
    scale_values: np.ndarray
    normalized_undefined: str | None
    reference: np.ndarray
    base_rows: np.ndarray
    source_rows: np.ndarray
    tokens: list[str]
    cells: list[Any] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def build(
        cls,
        *,
        setup,
        axes: dict[str, list],
        valid: np.ndarray,
        values: np.ndarray,
        stats: GridStats,
        clean: np.ndarray,
        base: np.ndarray,
        scale: np.ndarray,
        cells: list[Any],
        versions: dict[str, str],
    ) -> PatchResult:
        """Shape flat per-cell statistics into arrays over ``axes``."""
        exp = setup.experiment
        spec = exp.spec
        shape = tuple(len(v) for v in axes.values())
        arrays = {}
        for name in STATS:
            flat = np.full(len(valid), np.nan)
            flat[valid] = getattr(stats, name)
            arrays[name] = flat.reshape(shape)
        return cls(
            kind=spec.kind,
            name=exp.name,
            file=exp.file,
            sha256=exp.sha256,
            model=setup.model.source,
            model_sha256=setup.model.checkpoint_sha256(),
            dataset={
                "generator": spec.dataset.generator,
                "params": dict(spec.dataset.params),
                "spec_file": exp.dataset_file,
            },
            metric=spec.metric.model_dump(),
            n=setup.n,
            seed=setup.seed,
            base=_describe(spec.base),
            source=_describe(spec.source),
            baseline=f"the unpatched base run ({_describe(spec.base)})",
            scale=f"the run entirely on the source examples ({_describe(spec.source)})",
            correction=spec.correction,
            confidence=spec.confidence,
            axes=axes,
            valid=valid.reshape(shape),
            arrays=arrays,
            per_example=values.reshape((*shape, setup.n)),
            clean=clean,
            base_values=base,
            scale_values=scale,
            normalized_undefined=stats.normalized_undefined,
            reference=setup.reference,
            base_rows=setup.base,
            source_rows=setup.source,
            tokens=token_labels(setup.dataset, int(setup.reference[0])),
            cells=cells,
            warnings=list(setup.warnings),
            versions=versions,
            **setup.model.precision,
        )

    def __repr__(self) -> str:
        dims = " × ".join(f"{k} {len(v)}" for k, v in self.axes.items())
        return (
            f"PatchResult({self.name!r}, kind={self.kind!r}, {dims}, "
            f"{self.metric['kind']}: clean={self.clean.mean():.4g}, "
            f"base={self.base_values.mean():.4g}, n={self.n}, seed={self.seed})"
        )

    def to_frame(self):
        """A long pandas table: one row per valid cell, axis labels and every statistic."""
        import pandas as pd

        rows = []
        names = list(self.axes)
        for index in np.ndindex(self.valid.shape):
            if not self.valid[index]:
                continue
            row: dict[str, Any] = {n: self.axes[n][i] for n, i in zip(names, index, strict=True)}
            for stat in STATS:
                row[stat] = float(self.arrays[stat][index])
            rows.append(row)
        return pd.DataFrame(rows, columns=[*names, *STATS])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays as nested lists over the axes, NaN as ``None``."""
        return _clean(
            {
                "kind": self.kind,
                "name": self.name,
                "file": self.file,
                "sha256": self.sha256,
                "model": self.model,
                "model_sha256": self.model_sha256,
                "dataset": self.dataset,
                "metric": self.metric,
                "n": self.n,
                "seed": self.seed,
                "base": self.base,
                "source": self.source,
                "baseline": self.baseline,
                "scale": self.scale,
                "correction": self.correction,
                "confidence": self.confidence,
                "clean": float(self.clean.mean()),
                "base_mean": float(self.base_values.mean()),
                "scale_mean": float(self.scale_values.mean()),
                "normalized_undefined": self.normalized_undefined,
                "axes": self.axes,
                "valid": self.valid.tolist(),
                **{k: v.tolist() for k, v in self.arrays.items()},
                "reference": self.reference.tolist(),
                "base_rows": self.base_rows.tolist(),
                "source_rows": self.source_rows.tolist(),
                "tokens": self.tokens,
                "warnings": self.warnings,
                "versions": self.versions,
                "device": self.device,
                "dtype": self.dtype,
            }
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, out: str | Path, *, figures: bool = True) -> list[Path]:
        """Write ``NAME.json``, ``NAME.npz`` (arrays with axis labels) and figures to ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / f"{self.name}.json", out / f"{self.name}.npz"]
        written[0].write_text(self.to_json() + "\n")
        arrays: dict[str, Any] = {
            f"axis_{k}": np.asarray([str(x) for x in v]) for k, v in self.axes.items()
        }
        arrays |= {
            "valid": self.valid,
            "per_example": self.per_example,
            "clean": self.clean,
            "base": self.base_values,
            "scale": self.scale_values,
            "axes": np.asarray(list(self.axes)),
            **self.arrays,
        }
        np.savez_compressed(written[1], **arrays)
        if figures:
            from scrub.experiments._patch_plots import grid_figures

            written += grid_figures(self, out)
        return written


def _describe(spec: Any) -> str:
    fields = {k: v for k, v in spec.model_dump().items() if k != "kind" and v is not None}
    inner = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in fields.items())
    return f"{spec.kind}({inner})" if inner else spec.kind


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value
