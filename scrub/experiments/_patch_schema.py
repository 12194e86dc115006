"""The patching experiment file format, as frozen Pydantic models.

A patching experiment file shares ``model``, ``dataset``, ``metric``, ``features`` and
``defaults`` with hypothesis files (the same keys, the same position vocabulary) and adds a
``kind`` and the grid::

    kind: activation                     # or path, iterative_path, attention, knockout
    model: induction
    dataset: ../../datasets/induction.yaml
    metric: {kind: loss, positions: REP, labels: next}
    base: {kind: uncond_together, group: base}   # the run being patched (default uncond)
    source: exact                        # where the patched values come from (default exact)
    components: heads                    # heads, mlps, all, or a list (a0.h1, m0, ...)
    positions: each                      # each (every index), a list, or leave out (all at once)

``base`` and ``source`` are samplers (the hypothesis file's sampler kinds) drawn from the
reference batch, plus ``{kind: flip, flip: [IO]}``: the reference example with one thing changed
(IOI datasets: ``IO``, ``S``, ``S1``, ``S2``, ``order``, composable; ``ABC`` turns S2 into a
third name, the ABC family). Denoising (TransformerLens's convention: patch clean values into a
corrupted run) is ``base: {kind: flip, ...}, source: exact``; noising is the other way round.

``kind: knockout`` (the IOI paper's node-level faithfulness) has no base, source or grid: it
runs the reference examples with every ``knock_out`` component's output replaced by its
``ablation`` value, except the circuit's ``keep`` nodes (components × positions)::

    kind: knockout
    knock_out: heads                     # the candidates (heads, mlps, all, or a list)
    ablation: {kind: mean, dataset: ../../datasets/ioi_names_abc.yaml, by: [template], classes: each}
    keep:                                # the circuit: class -> components and positions
      movers: {components: [a3.h1, a3.h4], positions: [END]}

Every model is frozen and forbids unknown keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scrub._schema import (
    AblationSpec,
    CondSpec,
    DatasetSpec,
    DefaultsSpec,
    ExactSpec,
    FixedSpec,
    GenerateSpec,
    MetricSpec,
    ModelField,
    UncondSpec,
    UncondTogetherSpec,
)
from scrub.experiments._flips import FLIP_NAMES

__all__ = [
    "ActivationSpec",
    "AttentionSpec",
    "ExperimentSpec",
    "FlipSpec",
    "IterativePathSpec",
    "KeepSpec",
    "KnockoutSpec",
    "PathSpec",
    "SourceSpec",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FlipSpec(_Frozen):
    """The reference example itself with ``flip`` changed (applied in order)."""

    kind: Literal["flip"] = "flip"
    flip: tuple[str, ...] = Field(min_length=1)

    @field_validator("flip", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("flip")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item not in FLIP_NAMES:
                raise ValueError(f"unknown flip {item!r}; flips are {', '.join(FLIP_NAMES)}")
        return value


SourceSpec = Annotated[
    ExactSpec | UncondSpec | UncondTogetherSpec | CondSpec | FixedSpec | GenerateSpec | FlipSpec,
    Field(discriminator="kind"),
]
SOURCE_KINDS = ("exact", "uncond", "uncond_together", "cond", "fixed", "generate", "flip")


def _shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


def _names(value: Any) -> Any:
    if isinstance(value, str) and value not in ("heads", "mlps", "all"):
        return [v.strip() for v in value.split(",")]
    return value


Components = Literal["heads", "mlps", "all"] | tuple[str, ...]
Positions = Literal["each"] | tuple[int | str, ...] | None


class _Common(_Frozen):
    """What every experiment file has: the hypothesis file's shared keys, and intervals.

    Attributes:
        confidence: level of the bootstrap intervals.
        n_resamples: bootstrap resamples.
    """

    name: str | None = None
    description: str | None = None
    model: ModelField
    dataset: DatasetSpec
    metric: MetricSpec
    features: dict[str, str] = Field(default_factory=dict)
    defaults: DefaultsSpec = DefaultsSpec()
    confidence: float = Field(default=0.95, gt=0, lt=1)
    n_resamples: int = Field(default=1000, ge=10)


class _Experiment(_Common):
    """What every patching experiment has (the shared keys, a base and a source, statistics).

    Attributes:
        base: sampler of the run being patched (the root's other inputs), from the reference.
        source: sampler of the examples the patched values are computed on, from the reference.
        correction: multiple-comparison control across the grid's cells: ``fdr_bh``
            (Benjamini–Hochberg), ``holm`` or ``none``.
        n_permutations: sign-flip permutations (exact enumeration for 12 or fewer examples).
    """

    base: SourceSpec = UncondSpec()
    source: SourceSpec = ExactSpec()
    correction: Literal["fdr_bh", "holm", "none"] = "fdr_bh"
    n_permutations: int = Field(default=1000, ge=10)

    _shorthand = field_validator("base", "source", mode="before")(
        classmethod(lambda cls, v: _shorthand(v))
    )


class ActivationSpec(_Experiment):
    """Activation patching: each component's output (at each position) from the source.

    ``positions``: ``each`` (every index of the sequence, one cell each), a list (one cell per
    item: an integer or a named position), or left out (every position at once).
    """

    kind: Literal["activation"]
    components: Components = "heads"
    positions: Positions = "each"

    _names = field_validator("components", mode="before")(classmethod(lambda cls, v: _names(v)))


class PathSpec(_Experiment):
    """Path patching: each sender's direct path into each receiver's channels.

    The sender's output on the source enters only the receiver's own input channel (at
    ``positions``, default every position); every other reader sees the base run.
    """

    kind: Literal["path"]
    senders: Components = Field(min_length=1)
    receivers: Components = "heads"
    channels: tuple[Literal["q", "k", "v", "in"], ...] = ("q", "k", "v")
    positions: tuple[int | str, ...] | None = None

    _names = field_validator("senders", "receivers", mode="before")(
        classmethod(lambda cls, v: _names(v))
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        return [c.strip() for c in value.split(",")] if isinstance(value, str) else value


class IterativePathSpec(_Experiment):
    """Iterative path patching (REMIX): every head and MLP upstream, into a receiver set.

    One cell per sender (× position, when ``positions`` lists them): the sender's direct path
    into every receiver's ``channels`` at once.
    """

    kind: Literal["iterative_path"]
    receivers: tuple[str, ...] = ("logits",)
    channels: tuple[Literal["q", "k", "v", "in"], ...] | None = None
    senders: Components = "all"
    positions: tuple[int | str, ...] | None = None

    _names = field_validator("senders", "receivers", mode="before")(
        classmethod(lambda cls, v: _names(v))
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> Any:
        return [c.strip() for c in value.split(",")] if isinstance(value, str) else value


class PatchUnder(_Frozen):
    """An activation patch to show attention under: ``components`` at ``positions``."""

    components: tuple[str, ...] = Field(min_length=1)
    positions: tuple[int | str, ...] | None = None

    _names = field_validator("components", mode="before")(classmethod(lambda cls, v: _names(v)))


class AttentionSpec(_Experiment):
    """Counterfactual attention: heads' patterns under a patch or a hypothesis, minus clean.

    ``under`` is an activation patch (components from the source into the base run) or the
    path of a hypothesis file (relative to this file), scrubbed on this file's dataset.
    """

    kind: Literal["attention"]
    heads: tuple[str, ...] = Field(min_length=1)
    under: PatchUnder | str
    examples: int = Field(default=4, ge=1)

    _names = field_validator("heads", mode="before")(classmethod(lambda cls, v: _names(v)))


class KeepSpec(_Frozen):
    """One class of circuit nodes: ``components`` kept at ``positions`` (default: everywhere)."""

    components: Components = Field(min_length=1)
    positions: tuple[int | str, ...] | None = None

    _names = field_validator("components", mode="before")(classmethod(lambda cls, v: _names(v)))

    @field_validator("positions", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | int) else value


class KnockoutSpec(_Common):
    """Node-level knockout (the IOI paper's faithfulness): every ``knock_out`` component's
    output replaced by its ``ablation`` value, except at the ``keep`` nodes, in one forward pass
    of the reference examples; every other component (and every kept node) is computed.

    Attributes:
        knock_out: the candidates (``heads``, the paper's choice; ``mlps``, ``all``, a list).
        keep: the circuit, class name → components and the positions they are kept at.
        ablation: ``{kind: mean, dataset, classes, by}`` or ``zero`` (not ``resample``).
        completeness: also score the paper's class-based completeness: for each class K of
            ``keep``, F(C \\ K) and F(M \\ K) (M \\ K: K's nodes knocked out of the model).
    """

    kind: Literal["knockout"]
    knock_out: Components = "heads"
    keep: dict[str, KeepSpec] = Field(default_factory=dict)
    ablation: AblationSpec
    completeness: bool = False

    _names = field_validator("knock_out", mode="before")(classmethod(lambda cls, v: _names(v)))
    _shorthand = field_validator("ablation", mode="before")(
        classmethod(lambda cls, v: _shorthand(v))
    )

    @field_validator("ablation")
    @classmethod
    def _not_resample(cls, value: AblationSpec) -> AblationSpec:
        if value.kind == "resample":
            raise ValueError(
                "a knockout replaces outputs by their mean or by zero: 'ablation: {kind: mean, "
                "dataset: ..., classes: ...}' or 'ablation: zero' (resampling unmapped inputs "
                "is a hypothesis file's job)"
            )
        return value


ExperimentSpec = Annotated[
    ActivationSpec | PathSpec | IterativePathSpec | AttentionSpec | KnockoutSpec,
    Field(discriminator="kind"),
]
EXPERIMENT_KINDS = ("activation", "path", "iterative_path", "attention", "knockout")
