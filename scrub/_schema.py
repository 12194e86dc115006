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
for ``{kind: exact}``. A node without ``sampler:`` is ``exact`` unless it names a ``feature:``,
in which case it is ``cond`` on that feature: a node that says what it computes is resampled
keeping exactly that (write ``sampler: exact`` to keep the whole input).

Node names are identifiers (``[A-Za-z_][A-Za-z0-9_]*``): results name draws ``node`` and
``node.other`` and tree copies ``parent/child``, so ``.``, ``/`` or ``>`` in a name could collide.
Counts (``n``, ``seed``, fixed ``rows``) are strict integers (``n: true`` is an error, not 1).

Nothing in a file is evaluated as code: features, generators and metrics are registered names
or ``package.module:function`` references to functions marked ``@scrub.feature`` /
``@scrub.dataset_generator``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from scrub._errors import HypothesisError
from scrub._positions import parse_positions

__all__ = [
    "MODEL_FORMS",
    "NODE_NAME",
    "AblationSpec",
    "CondSpec",
    "DatasetSpec",
    "DefaultsSpec",
    "EdgeSpec",
    "ExactSpec",
    "FixedSpec",
    "GenerateSpec",
    "HypothesisSpec",
    "MetricSpec",
    "ModelField",
    "ModelRefSpec",
    "NodeSpec",
    "SamplerSpec",
    "UncondSpec",
    "UncondTogetherSpec",
    "schema_error",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def refuse(problem: str, hint: str) -> PydanticCustomError:
    """A validation error with a hint, for validators (the loader reads both back)."""
    return PydanticCustomError("scrub", "{problem}", {"problem": problem, "hint": hint})


NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a node name may be: an identifier (no ``.``, ``/``, ``>``, spaces)."""


def _node_name(name: str) -> str:
    if not NODE_NAME.fullmatch(name):
        suggestion = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not suggestion or not NODE_NAME.fullmatch(suggestion):
            suggestion = f"n_{suggestion}"
        raise refuse(
            f"node name {name!r} is not an identifier",
            f"node names are letters, digits and '_', not starting with a digit (results name "
            f"draws 'node.other' and tree copies 'parent/child'); e.g. {suggestion!r}",
        )
    return name


NodeName = Annotated[str, AfterValidator(_node_name)]


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
        if isinstance(value, list | tuple) and not value:
            raise refuse(
                "an empty list of features conditions on nothing",
                "name the features to keep, or use 'uncond' to condition on nothing",
            )
        return [value] if isinstance(value, str) else value


class FixedSpec(_Frozen):
    """Always the given pool rows (tiled to the batch)."""

    kind: Literal["fixed"] = "fixed"
    rows: tuple[StrictInt, ...] = Field(min_length=1)


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
        raise refuse(exc.problem, exc.hint or "e.g. 'positions: [S2, END]'") from None


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
            value = [c.strip() for c in value.split(",")]
        if isinstance(value, list | tuple):
            if not value:
                raise refuse(
                    "an empty list of channels selects no path",
                    "leave 'channels' out to mean every channel, or name some: q, k, v, in",
                )
            dup = next((c for i, c in enumerate(value) if c in value[:i]), None)
            if dup is not None:
                raise refuse(f"channel {dup!r} is listed twice", "list each channel once")
        return value


class NodeSpec(_Frozen):
    """An interpretation node: a feature, a sampler, and the components it maps to.

    Attributes:
        components: model components, e.g. ``a1.h3``, ``a9.h9@END``, ``m0``, ``embed``.
        feature: what this node computes, as a feature name (the default feature of ``cond``
            / ``generate`` samplers).
        sampler: how this node's data is drawn from its parent's (default: ``cond`` on
            ``feature`` when the node names one, else ``exact``).
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
        given = [k for k in ("labels", "correct", "wrong") if getattr(self, k) is not None]
        if self.kind in ("loss", "accuracy"):
            if self.labels is None:
                raise refuse(
                    f"metric {self.kind!r} needs 'labels' (e.g. 'labels: next')",
                    "'labels' is 'next' (the next token) or a label field of the dataset",
                )
            extra = [k for k in given if k != "labels"]
        elif self.kind == "logit_diff":
            if self.correct is None or self.wrong is None:
                raise refuse(
                    "metric 'logit_diff' needs 'correct' and 'wrong' label fields",
                    "e.g. {kind: logit_diff, positions: END, correct: io, wrong: s}",
                )
            if self.correct == self.wrong:
                raise refuse(
                    f"metric 'logit_diff' has correct == wrong ({self.correct!r}): the "
                    "difference is 0 for every example",
                    "name two different label fields, e.g. correct: io, wrong: s",
                )
            extra = [k for k in given if k not in ("correct", "wrong")]
        else:  # kl
            extra = given
        if extra:
            uses = {
                "loss": "'labels'",
                "accuracy": "'labels'",
                "logit_diff": "'correct' and 'wrong'",
                "kl": "no labels (it compares with the clean model's output)",
            }[self.kind]
            raise refuse(
                f"metric {self.kind!r} takes no {' or '.join(repr(k) for k in extra)}",
                f"{self.kind} uses {uses}; remove {', '.join(repr(k) for k in extra)}",
            )
        return self


class AblationSpec(_Frozen):
    """How the inputs a hypothesis leaves unmapped are ablated (``ablation:``).

    Attributes:
        kind: ``resample`` (causal scrubbing: drawn by each node's ``other:`` sampler; the
            default), ``mean`` (each unmapped component output replaced by its mean over
            ``dataset``, per position class) or ``zero``.
        dataset: the reference distribution of the means (a generator and params, or a dataset
            spec file relative to the hypothesis file); default: the hypothesis's own dataset.
        classes: named positions that get their own mean (e.g. ``[IO, S1, S2, END]``); every
            other real position shares one ``other`` mean. Or ``each``: one mean per position
            index (with ``by``, as the IOI paper's per-template means).
        by: dataset fields whose every value gets its own means (e.g. ``[template]``).
    """

    kind: Literal["resample", "mean", "zero"] = "resample"
    dataset: DatasetSpec | None = None
    classes: tuple[str, ...] | Literal["each"] = ()
    by: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _mean_only(self) -> AblationSpec:
        if self.kind != "mean" and (self.dataset is not None or self.classes or self.by):
            raise ValueError(
                f"'dataset', 'classes' and 'by' are for 'mean' ablation, not {self.kind!r}"
            )
        return self


class DefaultsSpec(_Frozen):
    """Run defaults, overridable from the command line."""

    n: StrictInt = Field(default=200, gt=0)
    seed: StrictInt = Field(default=0, ge=0)


BaselineKind = Literal["resample_all", "mean", "zero", "permuted_labels"]
"""Baseline kinds a file may name (see :mod:`scrub.engine.baseline`): ``resample_all`` (the
whole model on resampled inputs), ``mean`` / ``zero`` (every component output mean- or
zero-ablated; ``mean`` takes the means of ``ablation:``, which must then be ``mean``),
``permuted_labels`` (the clean model scored against another reference example's labels)."""


class ModelRefSpec(_Frozen):
    """``model: {path: ..., layernorm: identity}``: a checkpoint and how to load it, inline.

    The same keys as a model spec file (:mod:`scrub._model_variants`): ``path`` is a shipped
    name, a local Hugging Face directory (relative to the file) or a hub name; ``layernorm:
    identity`` loads a GPT-2 whose LayerNorms were disabled (``gpt2_noLN``) with each LayerNorm
    an exact identity.
    """

    path: str = Field(min_length=1)
    layernorm: Literal["keep", "identity"] = "keep"

    @field_validator("path")
    @classmethod
    def _not_a_spec_file(cls, value: str) -> str:
        if value.endswith((".yaml", ".yml")):
            raise ValueError(
                f"{value!r} is a model spec file, which has its own 'path' and 'layernorm': "
                "write 'model: FILE', or name the checkpoint here"
            )
        return value


def _model_form(value: Any) -> str:
    return "mapping" if isinstance(value, dict | ModelRefSpec) else "source"


ModelField = Annotated[
    Annotated[str, Field(min_length=1), Tag("source")] | Annotated[ModelRefSpec, Tag("mapping")],
    Discriminator(_model_form),
]
"""``model:``: a model source (shipped name, directory, hub name, spec file) or a mapping."""
MODEL_FORMS = ("source", "mapping")
"""The tags of :data:`ModelField`'s two forms (dropped from error locations)."""


class HypothesisSpec(_Frozen):
    """A whole hypothesis file.

    ``baseline`` names the experiment's baseline (default ``resample_all``: the whole model on
    unconditionally resampled inputs); it never depends on the hypothesis's own nodes.
    """

    name: str | None = None
    description: str | None = None
    model: ModelField
    dataset: DatasetSpec
    metric: MetricSpec
    features: dict[str, str] = Field(default_factory=dict)
    defaults: DefaultsSpec = DefaultsSpec()
    ablation: AblationSpec = AblationSpec()
    baseline: BaselineKind | None = None
    nodes: dict[NodeName, NodeSpec] = Field(min_length=1)

    _shorthand = field_validator("ablation", mode="before")(
        classmethod(lambda cls, v: _sampler_shorthand(v))
    )

    @model_validator(mode="after")
    def _baseline_fits_ablation(self) -> HypothesisSpec:
        if self.baseline == "mean" and self.ablation.kind != "mean":
            raise ValueError(
                "baseline 'mean' takes its means from 'ablation', which is "
                f"{self.ablation.kind!r}: set 'ablation: {{kind: mean, ...}}'"
            )
        return self

    @property
    def baseline_kind(self) -> str:
        """The baseline, explicit or the one matching the ablation."""
        if self.baseline is not None:
            return self.baseline
        return {"resample": "resample_all"}.get(self.ablation.kind, self.ablation.kind)


# --------------------------------------------------------------------------------------------
# Validation errors as HypothesisErrors


def schema_error(
    exc: pydantic.ValidationError, file: str | None, *, prefix: tuple = ()
) -> HypothesisError:
    """Every problem pydantic found, located; ``prefix`` locates a sub-file in the schema.

    An unknown key explains a missing one next to it (a typo), so unknown keys come first, and a
    missing key that an unknown sibling misspells is not reported twice.
    """
    raw = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    typos = {
        (tuple(e["loc"][:-1]), str(e["loc"][-1])) for e in raw if e["type"] == "extra_forbidden"
    }
    errors = []
    for err in raw:
        loc = tuple(err["loc"])
        if err["type"] == "missing" and any(
            parent == loc[:-1] and difflib.get_close_matches(str(loc[-1]), [typo], n=1)
            for parent, typo in typos
        ):
            continue
        errors.append(_one_validation_error(err, file, prefix))
    return HypothesisError.collect(errors)


def _one_validation_error(err: Any, file: str | None, prefix: tuple) -> HypothesisError:
    loc = tuple(err["loc"])
    # Drop the discriminated union's tag from the location: ('sampler', 'cond', 'rows'), and
    # pydantic's marker of a mapping key: ('nodes', 'x.y', '[key]').
    key = tuple(
        p
        for i, p in enumerate(loc)
        if not (i > 0 and loc[i - 1] in ("sampler", "other") and p in _SAMPLER_KINDS)
        and not (i > 0 and loc[i - 1] == "model" and p in MODEL_FORMS)
        and p != "[key]"
    )
    kind = err["type"]
    hint = None
    if kind == "scrub":
        problem, hint = err["ctx"]["problem"], err["ctx"]["hint"]
    elif kind == "extra_forbidden":
        parent = _model_at((*prefix, *key[:-1]))
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(key[-1]), allowed, n=1)
        problem = f"unknown key {key[-1]!r}"
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
        )
        if parent is DatasetSpec and not close:
            hint += " (a generator's parameters go under 'params:')"
    elif kind == "missing":
        problem = f"missing required key {key[-1]!r}"
        hint = _MISSING_HINTS.get(str(key[-1]), f"add '{key[-1]}:'")
    elif kind == "union_tag_invalid":
        problem = (
            f"unknown sampler kind {err['input'].get('kind')!r}"
            if isinstance(err.get("input"), dict)
            else err["msg"]
        )
        hint = f"sampler kinds: {', '.join(_SAMPLER_KINDS)}"
    elif kind == "union_tag_not_found":
        problem = "a sampler needs a 'kind'"
        hint = f"e.g. 'sampler: {{kind: cond, features: [f]}}'; kinds: {', '.join(_SAMPLER_KINDS)}"
    elif kind == "literal_error":
        problem = f"invalid value {err['input']!r}: {err['msg'].lower()}"
        hint = "use one of the values listed"
    elif loc and loc[-1] == "[key]" and isinstance(err.get("input"), bool | int | float):
        problem = f"key {err['input']!r} is not a name"
        hint = (
            "quote it: YAML reads unquoted yes/no/on/off/true/false as booleans and digits as "
            "numbers"
        )
    else:
        problem = err["msg"].removeprefix("Value error, ")
        hint = _TYPE_HINTS.get(kind, "see the file format in the README ('A hypothesis file')")
        if kind in _TYPE_HINTS and "input" in err:
            problem += f", not {err['input']!r}"[:200]
    return HypothesisError(problem, file=file, key=key, hint=hint)


_MISSING_HINTS = {
    "model": "add 'model:', a shipped model (induction, parens, ioi_toy), a local directory, "
    "a hub name, or {path: DIR, layernorm: identity}",
    "path": "add 'path:', a shipped model, a local directory (relative to this file) or a hub name",
    "dataset": "add 'dataset:', {generator: NAME, params: {...}} or the path of a dataset spec",
    "metric": "add 'metric:', e.g. {kind: loss, positions: REP, labels: next}",
    "nodes": "add 'nodes:', with one root node mapping [logits]",
    "components": "add 'components:', e.g. [a1.h0, m0] or [logits] for the root",
    "node": "add 'node:', the name of the input node",
    "generator": "add 'generator:', a registered generator or 'package.module:function'",
    "kind": "add 'kind:'",
    "group": "add 'group:', the name shared by the nodes drawn together",
    "rows": "add 'rows:', a list of pool rows",
}

_TYPE_HINTS = {
    "int_type": "write a whole number without quotes, e.g. 'n: 200' (not true, 2.0 or '200')",
    "int_from_float": "write a whole number, e.g. 200",
    "greater_than": "use a positive number",
    "greater_than_equal": "use a number >= 0",
    "string_type": "write text (quote it if YAML reads it as something else)",
    "dict_type": "write a mapping, 'key: value' lines or {key: value}",
    "tuple_type": "write a list, '- item' lines or [a, b]",
    "list_type": "write a list, '- item' lines or [a, b]",
    "too_short": "give at least one item",
    "string_too_short": "write a non-empty name",
    "model_type": "write a mapping, 'key: value' lines or {key: value}",
    "bool_type": "write true or false",
}


_SAMPLER_KINDS = ("exact", "uncond", "uncond_together", "cond", "fixed", "generate")


def _model_at(key: tuple) -> type[pydantic.BaseModel] | None:
    """The schema model that lives at YAML key path ``key`` (for listing allowed keys)."""
    top: dict[str, type[pydantic.BaseModel]] = {
        "ablation": AblationSpec,
        "dataset": DatasetSpec,
        "metric": MetricSpec,
        "defaults": DefaultsSpec,
        "model": ModelRefSpec,
    }
    if not key:
        return HypothesisSpec
    if len(key) == 1:
        return top.get(key[0])
    if key[0] == "nodes":
        if len(key) == 2:
            return NodeSpec
        if len(key) == 4 and key[2] == "inputs":
            return EdgeSpec
    return None
