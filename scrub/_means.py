"""Mean activations of components per position class, for mean-ablation baselines.

The IOI paper measures a circuit's faithfulness by replacing every component outside the
circuit with its **mean** over a reference distribution (the ABC dataset: same templates, no
right answer). Prompts of different templates do not align, so the mean is taken per **position
class**, not per absolute position: one mean at ``END``, one at ``S2``, one at ``IO``... and one
over every ``other`` (non-padding) position. Applying the means to another dataset (the IOI
pool) writes, at each position of each example, the mean of that position's class *in that
example*.

:func:`component_means` computes them with :meth:`ScrubModel.run` (raw outputs: ``z`` for heads,
``d_head`` wide; the MLP output for MLPs; the embeddings). :meth:`ComponentMeans.patches` turns
them into :class:`~scrub._model.OutputPatch` es over every position, ready for ``model.run``.

Pitfalls:

- a position takes the **first** listed class that contains it (``["IO", "IO1"]``: IO wins);
  a class left with no position at all is an error;
- padding is excluded from the means when the dataset has a ``length`` field (IOI datasets do:
  real tokens before ``length``); when applied, padding gets the ``other`` mean, which a causal
  model never reads from the real positions;
- means are accumulated in float64 over the whole reference pool (``rows`` to restrict it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scrub._components import Component, ModelShape, parse_component
from scrub._errors import HypothesisError
from scrub._model import OutputPatch, ScrubModel
from scrub.data import Dataset

__all__ = ["OTHER", "ComponentMeans", "component_means", "position_classes"]

OTHER = "other"
"""The class of every position in no named class (padding excluded)."""


def position_classes(
    classes: Sequence[str], dataset: Dataset, rows: np.ndarray, *, padding: int = -1
) -> np.ndarray:
    """The class index of every position of ``rows``: ``(len(rows), T)`` int64.

    Index ``i < len(classes)`` is ``classes[i]``, ``len(classes)`` is :data:`OTHER`, and
    positions at or after the example's ``length`` field (padding) get ``padding``.

    Raises:
        HypothesisError: a class the dataset has no named position for.
    """
    n, seq_len = len(rows), dataset.seq_len
    out = np.full((n, seq_len), len(classes), dtype=np.int64)
    taken = np.zeros((n, seq_len), dtype=bool)
    row_idx = np.arange(n)[:, None]
    for i, name in enumerate(classes):
        mine = np.zeros((n, seq_len), dtype=bool)
        mine[row_idx, dataset.named_positions(name, rows)] = True
        mine &= ~taken
        out[mine] = i
        taken |= mine
    if "length" in dataset.fields:
        length = np.asarray(dataset.fields["length"][rows])
        out[np.arange(seq_len)[None, :] >= length[:, None]] = padding
    return out


@dataclass(frozen=True)
class ComponentMeans:
    """Per-class mean outputs of components over a reference dataset.

    Attributes:
        classes: the named position classes, then :data:`OTHER`.
        means: component → ``(len(classes), d)`` float32 means (``d_head`` for heads).
        counts: ``(len(classes),)`` positions averaged per class.
        dataset: the reference dataset's name, ``params`` its parameters (provenance).
    """

    classes: tuple[str, ...]
    means: Mapping[Component, Tensor]
    counts: np.ndarray
    dataset: str
    params: Mapping[str, object]

    def __repr__(self) -> str:
        comps = ", ".join(c.name for c in self.means)
        return f"ComponentMeans({self.dataset!r}, classes={list(self.classes)}, [{comps}])"

    def values(
        self, comp: Component, dataset: Dataset, rows: np.ndarray
    ) -> Float[Tensor, "batch pos d"]:
        """``comp``'s mean at every position of ``rows`` of ``dataset`` (by each one's class)."""
        named = self.classes[:-1]
        cls = position_classes(named, dataset, rows, padding=len(named))
        return self.means[comp][torch.as_tensor(cls)]

    def patches(
        self,
        dataset: Dataset,
        rows: np.ndarray,
        components: Iterable[Component] | None = None,
        *,
        device: str | torch.device | None = None,
    ) -> list[OutputPatch]:
        """Patches that mean-ablate ``components`` (default: all) at every position of ``rows``.

        ``device``: where the patches' tensors go (the model's device, e.g. ``model.device``).
        """
        comps = list(self.means) if components is None else list(components)
        positions = torch.arange(dataset.seq_len, device=device).expand(len(rows), -1)
        return [OutputPatch(c, positions, self.values(c, dataset, rows).to(device)) for c in comps]


def _components(components: Iterable[Component | str], shape: ModelShape) -> list[Component]:
    """The components named; on a model without a positional embedding (RoPE), ``embed`` is
    ``tok_embed`` alone (as in a hypothesis) and ``pos_embed`` itself is refused."""
    out: list[Component] = []
    for c in components:
        for comp in parse_component(c) if isinstance(c, str) else (c,):
            if comp.kind == "logits":
                raise HypothesisError(
                    "the logits are not a component output that can be mean-ablated",
                    hint="name heads ('a1.h0'), MLPs ('m0') or embeddings",
                )
            if comp.kind == "pos_embed" and not shape.pos_embed:
                if c == "embed":
                    continue
                raise HypothesisError(
                    f"{shape.name} has no pos_embed: {shape.architecture} models have rotary "
                    "position embeddings (inside q and k), not a positional embedding in the "
                    "residual stream",
                    hint="name tok_embed (or embed, which on this model is tok_embed alone)",
                )
            if comp not in out:
                out.append(comp)
    return out


def component_means(
    model: ScrubModel,
    dataset: Dataset,
    components: Iterable[Component | str],
    *,
    classes: Sequence[str] = ("END",),
    rows: np.ndarray | None = None,
    batch_size: int = 64,
) -> ComponentMeans:
    """Mean outputs of ``components`` on ``dataset``, per position class.

    Args:
        model: the model to run.
        dataset: the reference dataset (for IOI, typically ``ioi_abc``).
        components: components or names (``"a9.h9"``, ``"m3"``, ``"embed"``).
        classes: named positions of the dataset, each its own class; every other real
            position is :data:`OTHER`.
        rows: the reference rows (default: the whole pool).
        batch_size: examples per forward pass.

    Raises:
        HypothesisError: an unknown component, class or position name, or a class that no
            position falls in.
    """
    comps = _components(components, model.shape)
    for comp in comps:
        model.shape.check(comp)
    classes = tuple(classes)
    if OTHER in classes or len(set(classes)) != len(classes):
        raise HypothesisError(
            f"position classes must be distinct names other than {OTHER!r}, not {list(classes)}",
            hint=f"'{OTHER}' is every position in no listed class",
        )
    rows = np.arange(dataset.n_base) if rows is None else np.asarray(rows)
    n_cls = len(classes) + 1
    sums: dict[Component, Tensor] = {}
    counts = torch.zeros(n_cls, dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        cls = torch.as_tensor(position_classes(classes, dataset, batch))
        keep = cls >= 0
        idx = cls[keep]
        counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        _, _, outputs = model.run(dataset.tokens[torch.as_tensor(batch)], read_outputs=comps)
        for comp in comps:
            out = outputs[comp].detach().cpu().double()  # (batch, pos, d)
            if comp not in sums:
                sums[comp] = torch.zeros(n_cls, out.shape[-1], dtype=torch.float64)
            sums[comp].index_add_(0, idx, out[keep])
    empty = [name for name, k in zip((*classes, OTHER), counts.tolist(), strict=True) if k == 0]
    if empty:
        raise HypothesisError(
            f"position class {empty[0]!r} has no position in the reference rows",
            hint="a position goes to the first listed class that contains it; "
            "reorder or drop overlapping classes",
        )
    return ComponentMeans(
        classes=(*classes, OTHER),
        means={c: (s / counts[:, None]).float() for c, s in sums.items()},
        counts=counts.numpy().astype(np.int64),
        dataset=dataset.name,
        params=dict(dataset.params),
    )
