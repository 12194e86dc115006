"""The experiment a score belongs to, and the methodology it records.

An **experiment** is what rival hypotheses must share for their scores to be comparable: the
model, the dataset, the metric, the baseline and the ablation of unmapped inputs. Two
hypotheses that differ in any of them answer different questions, so :func:`same_experiment`
refuses them, naming the field; ``--experiment FILE`` imposes one experiment on all of them
(:func:`impose`).

The **methodology** (Miller et al. 2024's six choices, the baseline, the ablation's reference
distribution and its size) is recorded with every result (:func:`scrub._result.methodology`):
rivals share the experiment-level ones, and differ in components and positions by design.

Pitfall: ``defaults`` (n, seed) are part of the experiment too (they pick the reference batch);
rivals with different defaults are refused unless ``n`` and ``seed`` are given explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrub._errors import HypothesisError
from scrub._hypothesis import Hypothesis, hypothesis_from_dict
from scrub._yaml import read_yaml
from scrub.data._spec import load_dataset_spec

__all__ = ["EXPERIMENT_KEYS", "experiment_of", "impose", "same_experiment"]

EXPERIMENT_KEYS = ("model", "dataset", "metric", "ablation", "baseline")
"""The top-level keys of a hypothesis file that make up its experiment."""


def _dump(value: Any) -> Any:
    return (
        value.model_dump(mode="json", exclude_none=True) if hasattr(value, "model_dump") else value
    )


def experiment_of(hyp: Hypothesis) -> dict[str, Any]:
    """The experiment a hypothesis is scored on (JSON-ready)."""
    spec = hyp.spec
    return {
        "model": _dump(spec.model),
        "dataset": _dump(spec.dataset),
        "metric": _dump(spec.metric),
        "baseline": {"kind": spec.baseline_kind},
        "ablation": _dump(spec.ablation),
    }


def _where(hyp: Hypothesis) -> str:
    return hyp.file or hyp.name


def same_experiment(
    hyps: list[Hypothesis], *, n: int | None = None, seed: int | None = None
) -> dict[str, Any]:
    """The experiment all ``hyps`` share.

    Raises:
        HypothesisError: two hypotheses differ in a field, named in the message.
    """
    first = hyps[0]
    ref = experiment_of(first)
    for other in hyps[1:]:
        exp = experiment_of(other)
        for key in EXPERIMENT_KEYS:
            if exp[key] != ref[key]:
                raise HypothesisError(
                    f"hypotheses {first.name!r} ({_where(first)}) and {other.name!r} differ in "
                    f"{key!r}: {ref[key]!r} vs {exp[key]!r}, so they are not scored on one "
                    "experiment",
                    file=other.file,
                    key=(key,),
                    hint="give them the same "
                    f"{key!r}, or impose one experiment with --experiment FILE",
                )
        for key, given in (("n", n), ("seed", seed)):
            mine, theirs = getattr(first.spec.defaults, key), getattr(other.spec.defaults, key)
            if given is None and mine != theirs:
                raise HypothesisError(
                    f"hypotheses {first.name!r} and {other.name!r} differ in defaults.{key} "
                    f"({mine} vs {theirs}), so they would not share a reference batch",
                    file=other.file,
                    key=("defaults", key),
                    hint=f"pass --{key} to score both on one reference batch",
                )
    return ref


def impose(hyps: list[Hypothesis], file: str | Path) -> list[Hypothesis]:
    """Re-validate every hypothesis with the experiment keys of ``file`` imposed on it.

    ``file`` is YAML with any of :data:`EXPERIMENT_KEYS` (and ``defaults``); a ``dataset`` path
    is relative to that file.

    Raises:
        HypothesisError: the file is unreadable, has other keys, or makes a hypothesis invalid.
    """
    path = Path(file)
    data = read_yaml(path, what="experiment file") or {}
    allowed = (*EXPERIMENT_KEYS, "defaults")
    if not isinstance(data, dict) or set(data) - set(allowed):
        extra = sorted(set(data) - set(allowed)) if isinstance(data, dict) else []
        raise HypothesisError(
            "an experiment file is a mapping of experiment keys"
            + (f"; unknown key {extra[0]!r}" if extra else ""),
            file=path,
            key=(extra[0],) if extra else (),
            hint=f"allowed keys: {', '.join(allowed)}",
        )
    if isinstance(data.get("dataset"), str):
        data["dataset"] = load_dataset_spec(data["dataset"], str(path)).data
    out = []
    for hyp in hyps:
        spec = hyp.spec.model_dump(mode="json", exclude_none=True)
        spec.update(data)
        out.append(hypothesis_from_dict(spec, file=hyp.file, default_name=hyp.name))
    return out
