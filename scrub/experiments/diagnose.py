"""``scrub.diagnose``: which part of a hypothesis loses the metric.

Each **variant** edits the validated hypothesis's spec and re-validates it (nothing forks
:func:`scrub.run`). For each interpretation node:

- ``sampler → uncond``: its feature claim dropped (its data drawn unconditionally);
- ``cut inputs``: its subtree removed, so everything it read is resampled: the node becomes a
  leaf drawn by its ``other:`` sampler (a leaf computes on its own data, so a leaf drawn by its
  ``sampler`` would keep the very inputs the cut resamples);
- ``drop COMPONENT``: one component unmapped (the node itself, when it maps only one);
- ``drop CHILD→NODE channel CH``: one channel of one input edge unmapped (the edge, when it
  has one channel).

Every variant is scored on the hypothesis's own experiment (one dataset, one
:class:`~scrub.ActivationCache`, the same seed, so nodes a variant keeps get the same draws and
the engine reuses their subtrees) and reported as a **paired difference** against the
hypothesis itself, with a bootstrap CI and a sign-flip p-value (:mod:`scrub.experiments._stats`),
ranked by loss. The first row, ``keep``, is the hypothesis unchanged (difference exactly 0).

Where the dataset has a field that splits examples into kinds (``order``: ABBA vs BABA,
``template``, the paren failure ``kind``), each row also gives recovered within each group.

Pitfalls: a cut node with both a ``cond`` sampler and a ``cond`` other sampler is drawn by the
other sampler from its *parent's* data (samplers do not compose), so it keeps the parent's value
of the other sampler's features rather than its own. A variant can *gain* (a negative loss): unmapping a component whose mapped inputs
hurt (a wrong claim) recovers more. A variant that is not a valid hypothesis (e.g. dropping
the only MLP an ``in`` edge feeds) is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrub._bind import bind
from scrub._errors import HypothesisError
from scrub._hypothesis import Hypothesis, hypothesis_from_dict, load_hypothesis
from scrub._model import ScrubModel
from scrub._positions import format_positions
from scrub._result import _clean_nan, recovered_of
from scrub._run import _count
from scrub._tree import stream
from scrub.data import Dataset
from scrub.engine import ActivationCache
from scrub.experiments import _stats
from scrub.experiments._experiment import experiment_of
from scrub.experiments.compare import Scorer, number, undefined_reason

__all__ = ["BY_FIELDS", "Diagnosis", "VariantScore", "diagnose", "variants"]

BY_FIELDS = ("order", "template", "kind")
"""Dataset fields a diagnosis breaks examples down by, the first one the dataset has."""


@dataclass(frozen=True)
class VariantScore:
    """One row of a diagnosis: a variant and its paired difference against the hypothesis."""

    node: str
    change: str
    recovered: float
    difference: float
    ci: tuple[float, float]
    p: float
    by_group: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Diagnosis:
    """Variants of a hypothesis ranked by loss (see the module docstring).

    Attributes:
        hypothesis: its name; ``recovered`` / ``ci`` its score.
        experiment: model, dataset, metric, baseline, ablation, n, seed, engine.
        by: the dataset field of the per-group breakdown (``None``: none); ``groups`` its
            values, in order.
        rows: ``keep`` first, then the variants by loss (largest first).
        skipped: variants that are not valid hypotheses, with the reason.
        methodology: the choices the scores depend on.
        file, sha256: the hypothesis's file (as given) and its sha256, so that a report can
            draw it.
        clean, baseline: the mean clean and baseline metrics.
        warnings: what the hypothesis's run warned about, then each variant's (prefixed with
            its label).
    """

    hypothesis: str
    experiment: dict[str, Any]
    recovered: float
    ci: tuple[float, float]
    by: str | None
    groups: list[str]
    rows: list[VariantScore]
    skipped: list[str]
    methodology: dict[str, Any]
    file: str | None = None
    sha256: str | None = None
    clean: float = math.nan
    baseline: float = math.nan
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Diagnosis({self.hypothesis!r}, {len(self.rows)} rows, by={self.by!r})"

    def table(self) -> str:
        """The diagnosis as a text table (what ``scrub diagnose`` prints)."""
        from scrub.experiments._format import format_diagnosis

        return format_diagnosis(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes ``None``), with ``kind: diagnosis`` for ``scrub report``."""
        return _clean_nan({"kind": "diagnosis", **asdict(self)})

    def to_json(self, *, indent: int | None = 2) -> str:
        """Strict JSON (no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_frame(self) -> Any:
        """A pandas table, one row per variant."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "node": r.node,
                    "change": r.change,
                    "recovered": r.recovered,
                    "difference": r.difference,
                    "ci_low": r.ci[0],
                    "ci_high": r.ci[1],
                    "p": r.p,
                    **{f"{self.by}={g}": v for g, v in r.by_group.items()},
                }
                for r in self.rows
            ]
        )


# --------------------------------------------------------------------------------------------
def _prune(data: dict, root: str) -> dict:
    """Drop the nodes no longer reachable from the root through ``inputs``."""
    nodes = data["nodes"]
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [e["node"] for e in nodes[name].get("inputs", [])]
    data["nodes"] = {k: v for k, v in nodes.items() if k in seen}
    return data


def _cut(nodes: dict, name: str, is_root: bool) -> None:
    """Remove a node's inputs; it keeps computing on its other inputs (a leaf drawn by them)."""
    spec = nodes[name]
    spec["inputs"] = []
    if not is_root:
        spec["sampler"] = spec.get("other") or "uncond"
        spec.pop("other", None)


def _component_text(mc) -> str:
    c = mc.component
    return c.name if mc.positions is None else f"{c.name}@{format_positions(mc.positions)}"


def variants(hyp: Hypothesis) -> list[tuple[str, str, dict]]:
    """Every variant of ``hyp``: ``(node, change, spec data)`` (see the module docstring)."""
    base = hyp.spec.model_dump(mode="json", exclude_none=True)
    root = hyp.root
    out: list[tuple[str, str, dict]] = []

    def edited(change) -> dict:
        data = copy.deepcopy(base)
        change(data["nodes"])
        return _prune(data, root)

    def without_node(name: str):
        def change(nodes: dict) -> None:
            for spec in nodes.values():
                spec["inputs"] = [e for e in spec.get("inputs", []) if e["node"] != name]

        return change

    for name in hyp.spec.nodes:
        node = hyp.node(name)
        spec = base["nodes"][name]
        if name != root and (spec.get("sampler") or {"kind": "exact"})["kind"] != "uncond":
            out.append(
                (name, "sampler → uncond", edited(lambda n, k=name: n[k].update(sampler="uncond")))
            )
        if spec.get("inputs"):
            out.append((name, "cut inputs", edited(lambda n, k=name: _cut(n, k, k == root))))
        if name != root:
            if len(node.components) == 1:
                out.append(
                    (name, f"drop {node.components[0]} (the node)", edited(without_node(name)))
                )
            else:
                for mc in node.components:
                    rest = [_component_text(m) for m in node.components if m is not mc]
                    out.append(
                        (
                            name,
                            f"drop {mc}",
                            edited(lambda n, k=name, r=rest: n[k].update(components=r)),
                        )
                    )
        for i, child in enumerate(hyp.children(name)):
            channels = hyp.edge(child, name).channels
            for ch in channels:
                label = f"drop {child}→{name} channel {ch}"

                def change(nodes: dict, k=name, i=i, ch=ch, channels=channels) -> None:
                    edge = nodes[k]["inputs"][i]
                    if len(channels) == 1:
                        del nodes[k]["inputs"][i]
                    else:
                        edge["channels"] = [c for c in channels if c != ch]

                if len(channels) == 1:
                    label += " (the edge)"
                out.append((name, label, edited(change)))
    return out


def diagnose(
    hypothesis: Hypothesis | str | Path,
    *,
    model: ScrubModel | str | None = None,
    dataset: Dataset | None = None,
    n: int | None = None,
    seed: int | None = None,
    by: str | None = None,
    engine: str = "fast",
    cache: ActivationCache | None = None,
    max_batch_rows: int = 4096,
    confidence: float = 0.95,
    max_memory: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Diagnosis:
    """Score every variant of a hypothesis against the hypothesis itself.

    Args:
        hypothesis: a hypothesis or the path of a hypothesis file.
        model: a loaded model or a model source (default: the file's ``model``).
        dataset: a dataset to use instead of making the file's.
        n: reference examples (default: ``defaults.n``).
        seed: the seed of every draw (default: ``defaults.seed``).
        by: the dataset field to break examples down by (default: the first of
            :data:`BY_FIELDS` the dataset has; ``""``: none).
        engine: ``fast`` or ``reference``.
        cache: an activation cache to share further.
        max_batch_rows: most rows in one forward pass.
        confidence: confidence level of the intervals.
        max_memory: activation budget of one forward pass in bytes (fast engine), as in
            :func:`scrub.run` (``None``: its default). Results do not depend on it.
        device, dtype: where and in which type to load ``model`` (default ``cpu``,
            ``float32``), as in :func:`scrub.run`; a loaded ``model`` must match them.

    Raises:
        HypothesisError: the hypothesis is invalid, or ``by`` names no dataset field.
        ValueError: ``max_memory`` is not a positive integer.
    """
    if max_memory is not None:
        max_memory = _count("max_memory", max_memory, minimum=1)
    hyp = hypothesis if isinstance(hypothesis, Hypothesis) else load_hypothesis(hypothesis)
    scorer = Scorer.on(
        hyp,
        model=model,
        dataset=dataset,
        cache=cache,
        n=n,
        seed=seed,
        draws=1,
        engine=engine,
        max_batch_rows=max_batch_rows,
        confidence=confidence,
        max_memory=max_memory,
        device=device,
        dtype=dtype,
    )
    model, dataset, n, seed = scorer.model, scorer.dataset, scorer.n, scorer.seed
    if by is None:
        by = next((f for f in BY_FIELDS if f in dataset.fields), "")
    if by and by not in dataset.fields:
        raise HypothesisError(
            f"dataset {dataset.name!r} has no field {by!r} to break examples down by",
            hint=f"fields: {', '.join(sorted(dataset.fields))}",
        )
    base = scorer.results(hyp)[0]
    C, B, S0 = scorer.arrays(hyp)
    c, b, s0 = C[0], B[0], S0[0]
    reference = np.asarray(base.reference)
    labels = np.asarray(dataset.fields[by])[reference] if by else None
    groups = [str(g) for g in np.unique(labels)] if labels is not None else []

    def by_group(s: np.ndarray) -> dict[str, float]:
        if labels is None:
            return {}
        keys = np.asarray([str(v) for v in labels])
        return {g: float(recovered_of(c[keys == g], b[keys == g], s[keys == g])) for g in groups}

    if undefined_reason([base]) is not None:
        raise HypothesisError(
            f"cannot diagnose {hyp.name!r}: its fraction recovered is undefined "
            f"({undefined_reason([base])})",
            file=hyp.file,
            hint="use a metric or dataset on which clean and baseline differ, or a larger n",
        )
    rows = [VariantScore("—", "keep", number(base.recovered), 0.0, (0.0, 0.0), 1.0, by_group(s0))]
    skipped = []
    scored = []
    messages = list(base.warnings)
    for node, change, data in variants(hyp):
        label = f"{node}: {change}"
        try:
            variant = hypothesis_from_dict(data, file=hyp.file, default_name=f"{hyp.name}~{label}")
            bind(variant, model, dataset)
        except HypothesisError as exc:
            skipped.append(f"{label}: {exc.problem}")
            continue
        _, _, S = scorer.arrays(variant)
        s = S[0]
        messages += [f"{label}: {w}" for w in scorer.results(variant)[0].warnings]
        diff = float(_stats.recovered_difference(c, b, s, s0))
        ci = _stats.difference_ci(
            c, b, s, s0, rng=stream(seed, "diagnose", label), confidence=confidence
        )
        p = _stats.sign_flip_p(s - s0, rng=stream(seed, "diagnose", "sign-flip", label))
        recovered = float(recovered_of(c, b, s))
        scored.append(VariantScore(node, change, recovered, diff, ci, p, by_group(s)))
    rows += sorted(scored, key=lambda r: (r.difference, r.node, r.change))
    exp = experiment_of(hyp)
    exp.update(n=n, seed=seed, draw_seeds=[seed], engine=engine, confidence=confidence)
    exp.update(model.precision)
    return Diagnosis(
        hypothesis=hyp.name,
        experiment=exp,
        recovered=number(base.recovered),
        ci=base.recovered_ci,
        by=by or None,
        groups=groups,
        rows=rows,
        skipped=skipped,
        methodology=base.methodology,
        file=hyp.file,
        sha256=hyp.sha256,
        clean=float(c.mean()),
        baseline=float(b.mean()),
        warnings=list(dict.fromkeys(messages)),
    )
