"""The hypothesis file format, as frozen Pydantic models.

A hypothesis file is YAML::

    name: induction-kcomp
    model: induction                      # shipped model, local HF directory, or hub name
    dataset: {generator: induction, params: {size: 2000}}
    metric: {kind: loss, positions: REP, labels: next}
    defaults: {n: 200, seed: 0}
    nodes:
      out:                                # the root: maps the model output
        components: [logits]
        inputs:
          - {node: induction, channels: in, positions: REP}
      induction:
        components: [a1.h2, a1.h3]
        sampler: exact
        inputs:
          - {node: prev, channels: k}
      prev:
        components: [a0.h1]
        feature: segment
        sampler: {kind: generate, feature: segment}

Every model here is frozen and forbids unknown keys, so a typo is an error, not a silent no-op.
Samplers are a discriminated union on ``kind``; a bare string (``sampler: exact``) is shorthand
for ``{kind: exact}``. Nothing in a file is evaluated as code: features, generators and metrics
are registered names or ``package.module:function`` references.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scrub._errors import HypothesisError
from scrub._positions import parse_positions

__all__ = [
    "CondSpec",
    "DatasetSpec",
    "DefaultsSpec",
    "EdgeSpec",
    "ExactSpec",
    "FixedSpec",
    "GenerateSpec",
    "HypothesisSpec",
    "MetricSpec",
    "NodeSpec",
    "SamplerSpec",
    "UncondSpec",
    "UncondTogetherSpec",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExactSpec(_Frozen):
    """The node's data is its parent's data, row for row."""

    kind: Literal["exact"] = "exact"


class UncondSpec(_Frozen):
    """A random pool example for every row."""

    kind: Literal["uncond"] = "uncond"


class UncondTogetherSpec(_Frozen):
    """Like ``uncond``, but every node naming the same ``group`` shares one draw."""

    kind: Literal["uncond_together"] = "uncond_together"
    group: str


class CondSpec(_Frozen):
    """For each row, a random pool example that agrees with the parent's row on ``features``.

    ``features`` defaults to the node's own ``feature``.
    """

    kind: Literal["cond"] = "cond"
    features: tuple[str, ...] | None = None

    @field_validator("features", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FixedSpec(_Frozen):
    """Always the given pool rows (tiled to the batch)."""

    kind: Literal["fixed"] = "fixed"
    rows: tuple[int, ...] = Field(min_length=1)


class GenerateSpec(_Frozen):
    """Make a new example sharing ``feature`` with each parent row (the dataset's generator).

    ``feature`` defaults to the node's own ``feature``.
    """

    kind: Literal["generate"] = "generate"
    feature: str | None = None


SamplerSpec = Annotated[
    ExactSpec | UncondSpec | UncondTogetherSpec | CondSpec | FixedSpec | GenerateSpec,
    Field(discriminator="kind"),
]


def _sampler_shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


def _positions(value: Any) -> Any:
    try:
        return parse_positions(value)
    except HypothesisError as exc:
        raise ValueError(f"{exc.problem} ({exc.hint})" if exc.hint else exc.problem) from None


Positions = tuple[int | str, ...] | None


class EdgeSpec(_Frozen):
    """One input of a node: the paths from a child node's components into this node's.

    Attributes:
        node: the child node.
        channels: input channels of this node's components the paths end in (``q``, ``k``,
            ``v`` for heads, ``in`` for MLPs and logits); default every channel.
        positions: residual positions at which the child's outputs are spliced (default: the
            child component's own positions, else every position).
        paths: ``direct`` (through the residual stream only) or ``all`` (also through the
            components in between: an activation patch).
    """

    node: str
    channels: tuple[Literal["q", "k", "v", "in"], ...] | None = None
    positions: Positions = None
    paths: Literal["direct", "all"] = "direct"

    _parse_positions = field_validator("positions", mode="before")(
        classmethod(lambda cls, v: _positions(v))
    )

    @field_validator("channels", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [c.strip() for c in value.split(",")]
        return value


class NodeSpec(_Frozen):
    """An interpretation node: a feature, a sampler, and the components it maps to.

    Attributes:
        components: model components, e.g. ``a1.h3``, ``a9.h9@END``, ``m0``, ``embed``.
        feature: what this node computes, as a feature name (documentation, and the default
            feature of ``cond`` / ``generate`` samplers).
        sampler: how this node's data is drawn from its parent's (default ``exact``).
        other: how the node's other inputs are drawn from its own data (default ``uncond``).
        inputs: the child nodes whose outputs this node reads.
        description: free text.
    """

    components: tuple[Any, ...] = Field(min_length=1)
    feature: str | None = None
    sampler: SamplerSpec | None = None
    other: SamplerSpec | None = None
    inputs: tuple[EdgeSpec, ...] = ()
    description: str | None = None

    _shorthand_sampler = field_validator("sampler", "other", mode="before")(
        classmethod(lambda cls, v: _sampler_shorthand(v))
    )


class DatasetSpec(_Frozen):
    """Which dataset to scrub on: a generator and its parameters.

    In a hypothesis file, ``dataset:`` is either this mapping or the path of a YAML file holding
    it (relative to the hypothesis file, e.g. ``../../datasets/induction.yaml``), so that
    competing hypotheses share one definition.
    """

    generator: str
    params: dict[str, Any] = Field(default_factory=dict)


class MetricSpec(_Frozen):
    """What is measured on the root's output.

    Attributes:
        kind: ``loss`` (CE on the label token), ``logit_diff`` (correct − wrong), ``kl`` (to the
            clean model) or ``accuracy``.
        positions: where the output is read (named positions of the root's rows).
        labels: label tokens for ``loss`` / ``accuracy``: ``next`` (the reference example's next
            token at each position) or a dataset field.
        correct, wrong: label fields (or ``next``) for ``logit_diff``.
    """

    kind: Literal["loss", "logit_diff", "kl", "accuracy"]
    positions: Positions = None
    labels: str | None = None
    correct: str | None = None
    wrong: str | None = None

    _parse_positions = field_validator("positions", mode="before")(
        classmethod(lambda cls, v: _positions(v))
    )

    @model_validator(mode="after")
    def _labels_fit_kind(self) -> MetricSpec:
        if self.kind in ("loss", "accuracy") and self.labels is None:
            raise ValueError(f"metric {self.kind!r} needs 'labels' (e.g. 'labels: next')")
        if self.kind == "logit_diff" and (self.correct is None or self.wrong is None):
            raise ValueError("metric 'logit_diff' needs 'correct' and 'wrong' label fields")
        return self


class DefaultsSpec(_Frozen):
    """Run defaults, overridable from the command line."""

    n: int = Field(default=200, gt=0)
    seed: int = Field(default=0, ge=0)


BaselineKind = Literal["resample_all"]
"""Baseline kinds a file may name (see :mod:`scrub.engine.baseline`)."""


class HypothesisSpec(_Frozen):
    """A whole hypothesis file.

    ``baseline`` names the experiment's baseline (default ``resample_all``: the whole model on
    unconditionally resampled inputs); it never depends on the hypothesis's own nodes.
    """

    name: str | None = None
    description: str | None = None
    model: str
    dataset: DatasetSpec
    metric: MetricSpec
    features: dict[str, str] = Field(default_factory=dict)
    defaults: DefaultsSpec = DefaultsSpec()
    baseline: BaselineKind = "resample_all"
    nodes: dict[str, NodeSpec] = Field(min_length=1)
