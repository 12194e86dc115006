"""Mean and zero ablation of the inputs a hypothesis leaves unmapped, for both engines.

Context: causal scrubbing *resamples* what a hypothesis leaves unmapped: a non-leaf node's
components read everything unmapped from a pass on its other inputs ``O_n``. The IOI paper's
faithfulness metric instead replaces unmapped components by their **mean** over a reference
distribution (per position class), or by **zero**. Here that is the same tree, evaluated the same
way, except that in every pass on ``O_n`` (a node's reading passes) each component's output is
replaced by its ablation value instead of being computed on ``O_n``, unless it is on a mapped
route:

- outputs patched by an all-paths input are ablated first and then patched (so outside the
  patched positions they hold the ablation value);
- components strictly between the earliest all-paths-patched component and the pass's targets
  are computed (they carry the patched values onward, as ``paths: all`` claims);
- components at or after the targets are never read in that pass, and are left alone.

A node's own embeddings, computed in its final pass, are ablated too (their input, the tokens of
``O_n``, is unmapped); its heads and MLPs are computed from their assembled inputs as always.
Leaves are computed on their own data ``D_n``, as in causal scrubbing.

With mean or zero ablation the tokens of ``O_n`` matter only through where each example's named
positions are (the position classes of the means). The root alone (the empty hypothesis) is the
whole model ablated: the ``mean`` / ``zero`` baseline.

Pitfall: a head's output is its ``z`` (``d_head`` wide), so zero ablation zeroes ``z``; the
attention output bias ``b_O`` (per layer, not per head) stays, like the MLPs' inputs' biases.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scrub._components import Component, ModelShape
from scrub._means import ComponentMeans
from scrub._model import ScrubModel
from scrub.data import Dataset

__all__ = ["Ablation", "ablated_in_reading"]


@dataclass(frozen=True)
class Ablation:
    """Mean or zero ablation of unmapped component outputs.

    Attributes:
        kind: ``mean`` or ``zero``.
        means: the per-class means (``mean`` only), over every component of the model.
    """

    kind: str
    means: ComponentMeans | None = None

    def __post_init__(self) -> None:
        assert self.kind in ("mean", "zero"), self.kind
        assert (self.kind == "mean") == (self.means is not None)

    def __repr__(self) -> str:
        if self.means is None:
            return "Ablation('zero')"
        return f"Ablation('mean', over {self.means.dataset!r}, classes={list(self.means.classes)})"

    @functools.cached_property
    def key(self) -> str:
        """Identity for cache keys: the kind and, for means, their reference and a hash."""
        if self.means is None:
            return self.kind
        digest = hashlib.blake2b(digest_size=12)
        for comp, value in sorted(self.means.means.items()):
            digest.update(comp.name.encode())
            digest.update(value.cpu().numpy().tobytes())
        about = [
            self.means.dataset,
            dict(self.means.params),
            list(self.means.classes),
            list(self.means.by),
        ]
        return f"mean:{json.dumps(about, sort_keys=True, default=str)}:{digest.hexdigest()}"

    def classes(self, dataset: Dataset, rows: np.ndarray) -> Tensor | None:
        """The position class of every position of ``rows`` (``None`` for zero ablation)."""
        if self.means is None:
            return None
        return self.means.index(dataset, rows)

    def values(
        self, model: ScrubModel, comp: Component, classes: Tensor | None, shape: tuple[int, int]
    ) -> Tensor:
        """``comp``'s ablation value at every position: ``(rows, pos, d)``."""
        if self.means is None:
            width = model.output_width(comp)
            return torch.zeros(*shape, width, device=model.device, dtype=model.dtype)
        assert classes is not None
        means = self.means.means[comp].to(model.device, model.dtype)
        return means[classes.to(model.device)]


def ablated_in_reading(
    shape: ModelShape, patched: Iterable[Component], targets: Iterable[Component]
) -> list[Component]:
    """The components a reading pass ablates (see the module docstring), in residual order."""
    n = shape.n_layers
    top = max(t.order(n) for t in targets)
    lows = [c.order(n) for c in patched]
    low = min(lows) if lows else None
    return [
        c
        for c in shape.all_components()
        if c.order(n) < top and not (low is not None and low < c.order(n))
    ]


def ablation_for(hyp, model: ScrubModel, dataset: Dataset, cache) -> Ablation | None:
    """The ablation a hypothesis's ``ablation:`` asks for (``None``: resample).

    See :func:`ablation_from_spec`.
    """
    return ablation_from_spec(hyp.spec.ablation, model, dataset, cache, file=hyp.file)


def ablation_from_spec(
    spec, model: ScrubModel, dataset: Dataset, cache, *, file: str | None
) -> Ablation | None:
    """The ablation an ``ablation:`` mapping (:class:`~scrub._schema.AblationSpec`) asks for.

    Means are computed once per cache over every component of the model, on the reference
    distribution's whole pool, drawn from a fixed stream (not the run's seed): the reference
    distribution is part of the experiment, not of a draw.

    Raises:
        HypothesisError: a position class that the reference or the scrubbed dataset lacks.
    """
    from scrub._errors import HypothesisError
    from scrub._means import component_means, position_classes
    from scrub._tree import stream
    from scrub.data import make_dataset

    if spec.kind == "resample":
        return None
    if spec.kind == "zero":
        return Ablation("zero")

    def compute() -> Ablation:
        try:
            reference = (
                dataset
                if spec.dataset is None
                else make_dataset(
                    spec.dataset.generator, spec.dataset.params, stream(0, "ablation")
                )
            )
            if not isinstance(spec.classes, str):
                position_classes(spec.classes, dataset, np.arange(min(len(dataset), 4)))
            means = component_means(
                model,
                reference,
                model.shape.all_components(),
                classes=spec.classes,
                by=spec.by,
            )
            means.index(dataset, np.arange(dataset.n_base))  # every group and position covered
        except HypothesisError as exc:
            raise exc.with_context(file=file, key_prefix=("ablation",)) from None
        return Ablation("mean", means)

    return cache.memo(model, dataset, ("ablation", spec.model_dump_json()), compute)
