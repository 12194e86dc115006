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

Finer means, as the IOI paper takes them: ``by=("template",)`` takes one set of means per value
of those dataset fields (each example of the scrubbed dataset gets its own group's), and
``classes="each"`` makes every position index its own class (one mean per position; only
meaningful when the examples of a group share a layout, as IOI prompts of one template do).
With ``"each"``, padding positions get zero, and a real position that no reference example of
its group has is an error; a field value of the scrubbed dataset that the reference lacks is an
error too.
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

__all__ = ["EACH", "OTHER", "ComponentMeans", "component_means", "position_classes"]

OTHER = "other"
"""The class of every position in no named class (padding excluded)."""

EACH = "each"
"""``classes=EACH``: every position index is its own class."""


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
        classes: the named position classes, then :data:`OTHER`; with ``per_position``, the
            position indices (``"0"``, ``"1"``, ...).
        means: component → ``(len(groups) * len(classes), d)`` float32 means (``d_head`` for
            heads), group-major: row ``g * len(classes) + c`` is class ``c`` of group ``g``.
        counts: ``(len(groups) * len(classes),)`` positions averaged per row of ``means``.
        dataset: the reference dataset's name, ``params`` its parameters (provenance).
        by: the dataset fields the means are grouped by (``()``: one group).
        groups: each group's field values, in the order of ``means``.
        per_position: one class per position index (``classes="each"``).
    """

    classes: tuple[str, ...]
    means: Mapping[Component, Tensor]
    counts: np.ndarray
    dataset: str
    params: Mapping[str, object]
    by: tuple[str, ...] = ()
    groups: tuple[tuple, ...] = ((),)
    per_position: bool = False

    def __repr__(self) -> str:
        comps = ", ".join(c.name for c in self.means)
        classes = EACH if self.per_position else list(self.classes)
        by = f", by={list(self.by)}" if self.by else ""
        return f"ComponentMeans({self.dataset!r}, classes={classes}{by}, [{comps}])"

    def index(self, dataset: Dataset, rows: np.ndarray) -> Tensor:
        """The row of :attr:`means` for every position of ``rows``: ``(len(rows), T)`` int64.

        Raises:
            HypothesisError: an example whose group (``by`` values) the reference lacks, or
                (per position) a real position no reference example of its group has.
        """
        n_cls = len(self.classes)
        lookup = {key: g for g, key in enumerate(self.groups)}
        keys = _group_keys(self.by, dataset, rows)
        missing = next((k for k in keys if k not in lookup), None)
        if missing is not None:
            raise HypothesisError(
                f"no example of the means' reference ({self.dataset}) has "
                + ", ".join(f"{f} = {v!r}" for f, v in zip(self.by, missing, strict=True)),
                hint=f"the means are grouped by {list(self.by)}; the reference must have "
                "every value the scrubbed dataset has",
            )
        group = torch.as_tensor([lookup[k] for k in keys], dtype=torch.int64)[:, None]
        if self.per_position:
            if dataset.seq_len > n_cls:
                raise HypothesisError(
                    f"the means have one class per position of {n_cls}-token sequences; "
                    f"this dataset's are {dataset.seq_len} tokens long"
                )
            cls = torch.arange(dataset.seq_len).expand(len(rows), -1)
            out = group * n_cls + cls
            real = torch.as_tensor(position_classes((), dataset, rows) >= 0)
            empty = real & torch.as_tensor(self.counts == 0)[out]
            if empty.any():
                r, t = (int(v) for v in empty.nonzero()[0])
                what = ", ".join(f"{f} = {v!r}" for f, v in zip(self.by, keys[r], strict=True))
                raise HypothesisError(
                    f"position {t} of an example with {what or 'this layout'} is at or past "
                    f"the end of every reference example of its group",
                    hint="per-position means need examples of one group to share a layout",
                )
            return out
        named = self.classes[:-1]
        cls = torch.as_tensor(position_classes(named, dataset, rows, padding=len(named)))
        return group * n_cls + cls

    def values(
        self, comp: Component, dataset: Dataset, rows: np.ndarray
    ) -> Float[Tensor, "batch pos d"]:
        """``comp``'s mean at every position of ``rows`` of ``dataset`` (by each one's class)."""
        return self.means[comp][self.index(dataset, rows)]

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


def _group_keys(by: Sequence[str], dataset: Dataset, rows: np.ndarray) -> list[tuple]:
    """Each row's values of the ``by`` fields (``()`` for every row when ``by`` is empty)."""
    for name in by:
        if name not in dataset.fields:
            raise HypothesisError(
                f"dataset {dataset.name!r} has no field {name!r} to group means by",
                hint=f"fields: {', '.join(sorted(dataset.fields))}",
            )
    columns = [np.asarray(dataset.fields[name])[rows].tolist() for name in by]
    return list(zip(*columns, strict=True)) if by else [()] * len(rows)


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
    classes: Sequence[str] | str = ("END",),
    by: Sequence[str] = (),
    rows: np.ndarray | None = None,
    batch_size: int = 64,
) -> ComponentMeans:
    """Mean outputs of ``components`` on ``dataset``, per position class.

    Args:
        model: the model to run.
        dataset: the reference dataset (for IOI, typically ``ioi_abc``).
        components: components or names (``"a9.h9"``, ``"m3"``, ``"embed"``).
        classes: named positions of the dataset, each its own class; every other real
            position is :data:`OTHER`. Or :data:`EACH`: one class per position index.
        by: dataset fields (e.g. ``["template"]``) whose every value gets its own means.
        rows: the reference rows (default: the whole pool).
        batch_size: examples per forward pass.

    Raises:
        HypothesisError: an unknown component, class, position name or field, or a class
            that no position of some group falls in.
    """
    comps = _components(components, model.shape)
    for comp in comps:
        model.shape.check(comp)
    per_position = isinstance(classes, str)
    if per_position and classes != EACH:
        raise HypothesisError(
            f"classes must be a list of named positions or {EACH!r}, not {classes!r}"
        )
    named = () if per_position else tuple(classes)
    if OTHER in named or EACH in named or len(set(named)) != len(named):
        raise HypothesisError(
            f"position classes must be distinct names other than {OTHER!r}, not {list(named)}",
            hint=f"'{OTHER}' is every position in no listed class; '{EACH}' (instead of a "
            "list) gives every position its own class",
        )
    labels = tuple(map(str, range(dataset.seq_len))) if per_position else (*named, OTHER)
    by = tuple(by)
    rows = np.arange(dataset.n_base) if rows is None else np.asarray(rows)
    keys = _group_keys(by, dataset, rows)
    groups = tuple(sorted(set(keys), key=repr))
    lookup = {key: g for g, key in enumerate(groups)}
    group_of = np.asarray([lookup[k] for k in keys], dtype=np.int64)
    n_cls = len(labels)
    sums: dict[Component, Tensor] = {}
    counts = torch.zeros(len(groups) * n_cls, dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        cls = torch.as_tensor(position_classes(named, dataset, batch))
        if per_position:  # every real position its own class; padding stays -1
            cls = torch.where(cls >= 0, torch.arange(dataset.seq_len), cls)
        keep = cls >= 0
        idx = (torch.as_tensor(group_of[start : start + batch_size])[:, None] * n_cls + cls)[keep]
        counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
        _, _, outputs = model.run(dataset.tokens[torch.as_tensor(batch)], read_outputs=comps)
        for comp in comps:
            out = outputs[comp].detach().cpu().double()  # (batch, pos, d)
            if comp not in sums:
                sums[comp] = torch.zeros(len(counts), out.shape[-1], dtype=torch.float64)
            sums[comp].index_add_(0, idx, out[keep])
    if not per_position:  # per position, padding classes are empty by design
        for g, key in enumerate(groups):
            block = counts[g * n_cls : (g + 1) * n_cls].tolist()
            empty = [name for name, k in zip(labels, block, strict=True) if k == 0]
            if empty:
                where = ", ".join(f"{f} = {v!r}" for f, v in zip(by, key, strict=True))
                raise HypothesisError(
                    f"position class {empty[0]!r} has no position in the reference rows"
                    + (f" with {where}" if where else ""),
                    hint="a position goes to the first listed class that contains it; "
                    "reorder or drop overlapping classes",
                )
    return ComponentMeans(
        classes=labels,
        means={c: (s / counts.clamp(min=1)[:, None]).float() for c, s in sums.items()},
        counts=counts.numpy().astype(np.int64),
        dataset=dataset.name,
        params=dict(dataset.params),
        by=by,
        groups=groups,
        per_position=per_position,
    )
