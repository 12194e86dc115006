"""Node-level knockout: the IOI paper's faithfulness check, F(C) / F(M).

Wang et al. (2022, section 4) define a circuit C as a set of nodes, each an attention head at a
class of token positions (the name movers at END, the induction heads at S2, ...). The circuit's
performance F(C) is the metric of the model in which every node *not* in C is knocked out: its
output replaced by its mean over a reference distribution (the ABC prompts: same templates, no
right answer; the paper's means are per template and position), while every node of C, and every
component that is not a candidate (the MLPs and embeddings, in the paper), is computed as usual
from the residual stream the knockouts leave. F(M) is the clean model's metric.

``kind: knockout`` (:class:`~scrub.experiments._patch_schema.KnockoutSpec`) runs this in one
forward pass per row chunk of the reference examples, with :class:`~scrub._model.OutputPatch`
es (activation patches) whose values come from the same :class:`~scrub.engine._ablation.Ablation`
a hypothesis's ``ablation:`` uses: the scrubbed examples are never resampled, so the only
randomness is which reference examples are drawn.

It reports F(M), F(C), the all-knocked-out baseline F(∅) (every candidate knocked out, for
context), F(C) / F(M) (the paper's number) and ``recovered`` = (F(C) − F(∅)) / (F(M) − F(∅)),
each with a paired bootstrap CI over the reference examples. With ``completeness: true`` it also
runs the paper's class-based completeness check: for each class K of ``keep``, F(C \\ K) (the
circuit without K) and F(M \\ K) (the whole model with K's nodes knocked out), and the
incompleteness |F(C \\ K) − F(M \\ K)|, which is small for every K when C is complete.

Pitfalls:

- This is not a treeified hypothesis: a kept node reads the knocked-out model's residual stream
  through every path (the paper's semantics), where the path-level ``circuit_mean`` hypothesis
  keeps only the edges it names. The two numbers differ, and both are reported.
- ``knock_out: heads`` leaves MLPs and embeddings computed (as the paper does); with ``all`` the
  MLPs are knocked out too, and a circuit must then keep the MLPs it needs.
- A head's output is its ``z``: zero ablation leaves the attention output bias ``b_O``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scrub._components import Component
from scrub._errors import HypothesisError
from scrub._means import EACH
from scrub._metrics import per_example_metric
from scrub._model import OutputPatch, ScrubModel
from scrub._positions import resolve_positions
from scrub._result import bootstrap_ci
from scrub._run import _clean, _gather, _versions
from scrub._tree import stream
from scrub.data import Dataset
from scrub.engine import ActivationCache
from scrub.engine._ablation import Ablation, ablation_from_spec
from scrub.experiments._cells import components_of
from scrub.experiments._patch_schema import KnockoutSpec

__all__ = ["KnockoutResult", "knocked_out_logits", "knockout"]

Kept = dict[Component, tuple | None]
"""Component → the positions it is kept at (``None``: every position)."""


@dataclass
class KnockoutResult:
    """F(M), F(C) and F(∅) per reference example, and their ratios with paired bootstrap CIs.

    Attributes:
        clean, circuit, baseline: per-example metric of the clean model (F(M)), of the model
            with every node outside ``keep`` knocked out (F(C)), and with every candidate
            knocked out (F(∅)).
        faithfulness: F(C) / F(M) (means over examples), ``faithfulness_ci`` its interval.
        recovered: (F(C) − F(∅)) / (F(M) − F(∅)), ``recovered_ci`` its interval.
        knock_out: the candidates; ``keep``: the circuit (class → components, positions).
        completeness: with ``completeness: true``, per class K: ``circuit_without`` F(C \\ K),
            ``model_without`` F(M \\ K), ``incompleteness`` |difference| and its CI.
        ablation: how knocked-out outputs are replaced (kind, reference, classes, by).
        device, dtype: where and in which type the model ran.
    """

    name: str
    file: str | None
    sha256: str
    model: str
    dataset: dict[str, Any]
    metric: dict[str, Any]
    n: int
    seed: int
    knock_out: list[str]
    keep: dict[str, dict[str, Any]]
    ablation: dict[str, Any]
    clean: np.ndarray
    circuit: np.ndarray
    baseline: np.ndarray
    confidence: float
    faithfulness: float
    faithfulness_ci: tuple[float, float]
    recovered: float
    recovered_ci: tuple[float, float]
    means_ci: dict[str, tuple[float, float]]
    completeness: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "knockout"
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"

    def __repr__(self) -> str:
        return (
            f"KnockoutResult({self.name!r}, F(C)/F(M)={self.faithfulness:.3f}, "
            f"recovered={self.recovered:.3f}, n={self.n})"
        )

    @property
    def kept_nodes(self) -> int:
        """How many (component, positions) nodes the circuit keeps."""
        return sum(len(entry["components"]) for entry in self.keep.values())

    def methodology(self) -> dict[str, Any]:
        """The choices a faithfulness score depends on (Miller et al. 2024), as recorded."""
        return {
            "granularity": "nodes: a component at the positions its class lists",
            "components": "knock_out candidates outside the kept nodes; every other component "
            "is computed",
            "ablation": self.ablation["kind"],
            "token_positions": {cls: e["positions"] or "all" for cls, e in self.keep.items()},
            "direction": "the whole component output (no subspace)",
            "circuit_vs_complement": "the circuit's nodes computed, their complement knocked out",
        }

    def table(self) -> str:
        """The numbers as plain text (what ``scrub patch`` prints)."""
        lo, hi = self.means_ci["clean"], self.means_ci["circuit"]
        bl = self.means_ci["baseline"]
        abl = self.ablation
        ref = f" over {abl['dataset']}" if abl.get("dataset") else ""
        per = (
            f", per {'position' if abl.get('classes') == EACH else 'position class'}"
            + (f" and {', '.join(abl['by'])}" if abl.get("by") else "")
            if abl["kind"] == "mean"
            else ""
        )
        lines = [
            f"{self.name} (knockout): model {self.model}, n = {self.n}, seed = {self.seed}, "
            f"metric {self.metric['kind']}",
            f"  knocked out: {len(self.knock_out)} candidates outside {self.kept_nodes} kept "
            f"nodes, {abl['kind']}-ablated{ref}{per}",
            f"  F(M) clean            {self.clean.mean():9.4f}  [{_f(lo[0])}, {_f(lo[1])}]",
            f"  F(C) circuit          {self.circuit.mean():9.4f}  [{_f(hi[0])}, {_f(hi[1])}]",
            f"  F(∅) all knocked out  {self.baseline.mean():9.4f}  [{_f(bl[0])}, {_f(bl[1])}]",
            f"  F(C) / F(M)           {_f(self.faithfulness):>9}  "
            f"[{_f(self.faithfulness_ci[0])}, {_f(self.faithfulness_ci[1])}]",
            f"  recovered             {_f(self.recovered):>9}  "
            f"[{_f(self.recovered_ci[0])}, {_f(self.recovered_ci[1])}]  "
            "(F(C) − F(∅)) / (F(M) − F(∅))",
        ]
        if self.completeness:
            lines.append("  completeness (K a class):   F(C \\ K)   F(M \\ K)   |difference|")
            for row in self.completeness:
                lo, hi = row["incompleteness_ci"]
                lines.append(
                    f"    {row['removed']:<22} {row['circuit_without']:9.4f} "
                    f"{row['model_without']:9.4f} {row['incompleteness']:9.4f}  [{_f(lo)}, {_f(hi)}]"
                )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN as ``null``)."""
        out = {
            "kind": self.kind,
            "name": self.name,
            "file": self.file,
            "sha256": self.sha256,
            "model": self.model,
            "dataset": self.dataset,
            "metric": self.metric,
            "n": self.n,
            "seed": self.seed,
            "knock_out": self.knock_out,
            "keep": self.keep,
            "ablation": self.ablation,
            "methodology": self.methodology(),
            "confidence": self.confidence,
            "clean_mean": float(self.clean.mean()),
            "circuit_mean": float(self.circuit.mean()),
            "baseline_mean": float(self.baseline.mean()),
            "means_ci": {k: list(v) for k, v in self.means_ci.items()},
            "faithfulness": self.faithfulness,
            "faithfulness_ci": list(self.faithfulness_ci),
            "recovered": self.recovered,
            "recovered_ci": list(self.recovered_ci),
            "completeness": self.completeness,
            "per_example": {
                "clean": self.clean.tolist(),
                "circuit": self.circuit.tolist(),
                "baseline": self.baseline.tolist(),
            },
            "warnings": list(self.warnings),
            "versions": dict(self.versions),
            "device": self.device,
            "dtype": self.dtype,
        }
        return _finite(out)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, out: str | Path, *, figures: bool = True) -> list[Path]:
        """Write ``NAME.json`` into the folder ``out`` (a knockout has no figures)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        path.write_text(self.to_json() + "\n")
        return [path]


def _f(x: float) -> str:
    return "undefined" if not math.isfinite(x) else f"{x:.3f}"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


Nodes = list[tuple[Component, tuple | None]]
"""One class's nodes: each component and the positions it is kept at (``None``: every one)."""


def _kept(spec: KnockoutSpec, model: ScrubModel, dataset: Dataset, rows: np.ndarray):
    """The candidates and each class's nodes, checked against the model and dataset."""
    candidates = components_of(spec.knock_out, model.shape, key=("knock_out",))
    classes: dict[str, Nodes] = {}
    record: dict[str, dict[str, Any]] = {}
    for cls, entry in spec.keep.items():
        key = ("keep", cls)
        comps = components_of(entry.components, model.shape, key=(*key, "components"))
        record[cls] = {"components": [c.name for c in comps], "positions": _maybe(entry.positions)}
        for i, item in enumerate(entry.positions or ()):
            try:
                resolve_positions((item,), dataset, rows)
            except HypothesisError as exc:
                raise exc.with_context(key_prefix=(*key, "positions", i)) from None
        for comp in comps:
            if comp not in candidates:
                raise HypothesisError(
                    f"{comp.name} is kept, but it is not knocked out anyway "
                    f"(knock_out: {_label(spec.knock_out)})",
                    key=(*key, "components"),
                    hint="keep only candidates, or add it to 'knock_out' (heads, mlps, all, "
                    "or a list)",
                )
        classes[cls] = [(comp, entry.positions) for comp in comps]
    return candidates, classes, record


def _merge(nodes: Nodes) -> Kept:
    """Where each component is kept: the union of its nodes' positions."""
    kept: Kept = {}
    for comp, where in nodes:
        if where is None or kept.get(comp, ()) is None:
            kept[comp] = None
        else:
            kept[comp] = (*(kept.get(comp) or ()), *where)
    return kept


def _model_without(candidates: list[Component], nodes: Nodes) -> tuple[Kept, Kept]:
    """M \\ K: every candidate kept everywhere but ``nodes`` (kept map, knocked-at map)."""
    kept: Kept = {c: None for c in candidates}
    knocked: Kept = {}
    for comp, where in nodes:
        if where is None:
            kept.pop(comp, None)
        elif comp in kept:
            knocked[comp] = (*(knocked.get(comp) or ()), *where)
    return kept, knocked


def _label(value: Any) -> str:
    return value if isinstance(value, str) else "[" + ", ".join(value) + "]"


def _knocked_positions(keep: Tensor, comp: Component) -> Tensor:
    """Each row's knocked-out positions (``~keep``), ``(batch, K)``, padded with a repeat."""
    knocked = ~keep
    counts = knocked.sum(1)
    if bool((counts == 0).any()):
        raise HypothesisError(
            f"{comp.name} is kept at every position of some examples",
            key=("keep",),
            hint="to keep a component everywhere, list it without 'positions'",
        )
    width = int(counts.max())
    order = torch.argsort((~knocked).to(torch.int8), dim=1, stable=True)  # knocked ones first
    cols = torch.arange(width, device=keep.device)[None, :]
    return torch.where(cols < counts[:, None], order[:, :width], order[:, :1])


def knocked_out_logits(
    model: ScrubModel,
    dataset: Dataset,
    rows: np.ndarray,
    *,
    candidates: list[Component],
    kept: Kept,
    ablation: Ablation,
    positions: np.ndarray,
    chunk: int,
    knocked: Kept | None = None,
) -> Tensor:
    """Logits at ``positions`` with every candidate knocked out except where it is kept.

    ``knocked``: component → positions where it is knocked out although ``kept`` keeps it
    everywhere (the whole model minus some nodes).

    Returns:
        ``(len(rows), K, vocab)`` logits, ``K`` the metric's positions per row.
    """
    pieces = []
    seq_len = dataset.seq_len
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        classes = ablation.classes(dataset, part)
        batch = torch.arange(len(part), device=model.device)[:, None]
        patches = []
        for comp in candidates:
            where, gone = kept.get(comp, ()), (knocked or {}).get(comp) or ()
            if where is None and not gone:
                continue
            keep = torch.full(
                (len(part), seq_len), where is None, dtype=torch.bool, device=model.device
            )
            for value, at in ((True, where), (False, gone)):
                if at:
                    idx = torch.as_tensor(resolve_positions(at, dataset, part), device=model.device)
                    keep[batch, idx] = value
            pos = _knocked_positions(keep, comp)
            values = ablation.values(model, comp, classes, (len(part), seq_len))
            patches.append(OutputPatch(comp, pos, values[batch, pos]))
        logits = model.run(dataset.tokens[torch.as_tensor(part)], patches=patches)[0]
        pieces.append(_gather(logits, positions[start : start + chunk]))
    return torch.cat(pieces)


def _describe_ablation(ablation: Ablation) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": ablation.kind}
    means = ablation.means
    if means is not None:
        out.update(
            dataset=means.dataset,
            params=dict(means.params),
            classes=EACH if means.per_position else list(means.classes),
            by=list(means.by),
            reference_positions=int(means.counts.sum()),
        )
    return out


def knockout(su, *, max_batch_rows: int, cache: ActivationCache | None = None) -> KnockoutResult:
    """Run a ``kind: knockout`` experiment on its :class:`~scrub.experiments.patching.Setup`."""
    exp = su.experiment
    spec: KnockoutSpec = exp.spec
    model, ds, x = su.model, su.dataset, su.reference
    try:
        candidates, classes, record = _kept(spec, model, ds, x)
        ablation = ablation_from_spec(
            spec.ablation, model, ds, cache or ActivationCache(), file=exp.file
        )
    except HypothesisError as exc:
        raise exc.with_context(file=exp.file) from None
    assert ablation is not None  # the schema refuses 'resample'
    positions = resolve_positions(spec.metric.positions, ds, x)
    clean_logits = _clean(model, ds, x, positions, max_batch_rows)

    def metric(logits: Tensor) -> np.ndarray:
        return per_example_metric(
            spec.metric, logits, reference=x, dataset=ds, clean_logits=clean_logits
        )

    def run(keep: Kept, knocked: Kept | None = None) -> np.ndarray:
        logits = knocked_out_logits(
            model,
            ds,
            x,
            candidates=candidates,
            kept=keep,
            knocked=knocked,
            ablation=ablation,
            positions=positions,
            chunk=max_batch_rows,
        )
        return metric(logits)

    kept = _merge([node for nodes in classes.values() for node in nodes])
    clean, circuit, baseline = metric(clean_logits), run(kept), run({})
    rng = stream(su.seed, "knockout-stats")
    level, reps = spec.confidence, spec.n_resamples

    def ci(data: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
        return bootstrap_ci(data, statistic, rng=rng, confidence=level, n_resamples=reps)

    def ratio(c, m, axis=-1):
        return np.mean(c, axis=axis) / np.mean(m, axis=axis)

    def recovered(c, m, b, axis=-1):
        base = np.mean(b, axis=axis)
        return (np.mean(c, axis=axis) - base) / (np.mean(m, axis=axis) - base)

    with np.errstate(divide="ignore", invalid="ignore"):
        faith = float(ratio(circuit, clean))
        rec = float(recovered(circuit, clean, baseline))
        faith_ci = ci((circuit, clean), ratio)
        rec_ci = ci((circuit, clean, baseline), recovered)
    means_ci = {"clean": ci((clean,), np.mean), "circuit": ci((circuit,), np.mean)}
    means_ci["baseline"] = ci((baseline,), np.mean)

    def gap(c, m, axis=-1):
        return np.abs(np.mean(c, axis=axis) - np.mean(m, axis=axis))

    completeness = []
    for cls in classes if spec.completeness else ():
        rest = _merge([node for k, nodes in classes.items() if k != cls for node in nodes])
        c_wo, m_wo = run(rest), run(*_model_without(candidates, classes[cls]))
        completeness.append(
            {
                "removed": cls,
                "circuit_without": float(c_wo.mean()),
                "model_without": float(m_wo.mean()),
                "incompleteness": float(gap(c_wo, m_wo)),
                "incompleteness_ci": list(ci((c_wo, m_wo), gap)),
            }
        )
    warnings = list(su.warnings)
    if not kept:
        warnings.append("the circuit keeps no node: F(C) is the all-knocked-out baseline")
    elif all(kept.get(c, ()) is None for c in candidates):
        warnings.append("the circuit keeps every candidate everywhere: F(C) is the clean model")
    return KnockoutResult(
        name=exp.name,
        file=exp.file,
        sha256=exp.sha256,
        model=model.source,
        dataset=spec.dataset.model_dump(),
        metric=spec.metric.model_dump(exclude_none=True),
        n=su.n,
        seed=su.seed,
        knock_out=[c.name for c in candidates],
        keep=record,
        ablation=_describe_ablation(ablation),
        clean=clean,
        circuit=circuit,
        baseline=baseline,
        confidence=level,
        faithfulness=faith,
        faithfulness_ci=faith_ci,
        recovered=rec,
        recovered_ci=rec_ci,
        means_ci=means_ci,
        completeness=completeness,
        warnings=warnings,
        versions=dict(_versions()),
        **model.precision,
    )


def _maybe(value: tuple | None) -> list | None:
    return None if value is None else list(value)
