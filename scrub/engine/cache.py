"""The activation cache: component outputs of plain forward passes on dataset rows.

A leaf of the tree is computed entirely on its own data ``D_n``: its components' outputs are
those of a plain forward pass on dataset rows, whatever the rest of the hypothesis says. So they
can be computed once per (model, dataset, row, component) and served to every tree that needs
them: the leaves of one tree that share rows, the trees of competing hypotheses scored on one
dataset, and the same hypothesis under several seeds.

It also holds plain residual streams (:class:`Residual`: the input of a block, or the final
one) by row, which the fast engine starts late groups from (:mod:`scrub.engine._plan`).

The cache also keeps the treeified outputs of whole subtrees, by signature (their structure and
every row drawn in them): hypotheses that share a node share its draws, so a comparison computes
a shared subtree once. And it memoises whole results by key (the clean logits and the baseline
of a reference batch), which competing hypotheses share too.

Pitfall: the cache belongs to one model and one dataset object, on one device and in one dtype.
Handing it another (or the same model cast to another dtype) resets it, so a stale activation, or
a float32 one where the model now runs in bfloat16, is never served. Datasets only grow
(generated examples are appended), so a row's tokens never change under the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scrub._components import Component
from scrub._model import ScrubModel, select, split_qkv_inputs
from scrub.data import Dataset

__all__ = ["PASS_MEMORY", "ActivationCache", "Residual", "pass_rows", "split_qkv_inputs"]


@dataclass(frozen=True)
class Residual:
    """The residual stream entering block ``layer`` of a plain pass (``hook_resid_pre``);
    ``layer == n_layers``: the final residual stream, before the final norm."""

    layer: int

    def hook(self, n_layers: int) -> str:
        return (
            "ln_final.hook_in" if self.layer >= n_layers else f"blocks.{self.layer}.hook_resid_pre"
        )


Key = Component | Residual


class _Done(Exception):
    """Raised at the final residual stream of a filling pass (no logits needed)."""


PASS_MEMORY = 128 * 2**20
"""Default activation budget of one pass, in bytes. Past a few hundred MiB of activations a
pass's cost per row grows (measured: 1.5x per row on the induction model from 2048 to 4096 rows
of 29 tokens), so by default passes are capped well below that; results do not depend on it."""


def pass_rows(model: ScrubModel, seq_len: int, *, max_memory: int | None = None) -> int:
    """The most rows of ``seq_len`` tokens one forward pass takes within ``max_memory`` bytes.

    The estimate counts, per row, the activations alive inside a block (residual stream and
    its copies, the MLP's hidden layer, attention scores and pattern) in the model's dtype; it
    is an estimate of the working set, not a bound on the process's memory.
    """
    cfg = model.bridge.cfg
    d_mlp = cfg.d_mlp or 0
    size = model.dtype.itemsize
    per_row = seq_len * (4 * cfg.d_model + 2 * d_mlp + 2 * cfg.n_heads * seq_len) * size
    budget = PASS_MEMORY if max_memory is None else max_memory
    return max(1, budget // per_row)


class ActivationCache:
    """Outputs (``z`` for heads) of components, and residual streams, on dataset rows,
    computed on demand.

    Args:
        max_batch_rows: most rows in one forward pass when filling the cache.
        subtrees: also keep the treeified outputs of evaluated subtrees (by signature).
        max_memory: activation budget of one filling pass in bytes
            (:func:`pass_rows`; ``None``: its default).
    """

    def __init__(
        self, *, max_batch_rows: int = 4096, subtrees: bool = True, max_memory: int | None = None
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, not {max_batch_rows}")
        self.max_batch_rows = max_batch_rows
        self.max_memory = max_memory
        self.subtrees = subtrees
        # held, so ids cannot be reused; with the model's device and dtype when bound
        self._owner: tuple[ScrubModel, Dataset, torch.device, torch.dtype] | None = None
        self._values: dict[Key, Tensor] = {}
        self._slots: dict[Key, np.ndarray] = {}  # row -> slot in _values (-1: none)
        self._memo: dict[Any, Any] = {}
        self._subtrees: dict[str, dict[Component, Tensor]] = {}  # signature -> outputs
        self.rows_computed = 0
        """How many (row, forward pass) computations filled the cache so far (for benchmarks)."""

    def __repr__(self) -> str:
        rows = {getattr(c, "name", repr(c)): int((h >= 0).sum()) for c, h in self._slots.items()}
        return f"ActivationCache(components={rows}, memo={len(self._memo)})"

    def _bind(self, model: ScrubModel, dataset: Dataset) -> None:
        owner = self._owner
        if (
            owner is None
            or owner[0] is not model
            or owner[1] is not dataset
            or owner[2:] != (model.device, model.dtype)
        ):
            self._owner = (model, dataset, model.device, model.dtype)
            self._values.clear()
            self._slots.clear()
            self._memo.clear()
            self._subtrees.clear()

    def memo(self, model: ScrubModel, dataset: Dataset, key: Any, compute: Callable[[], Any]):
        """``compute()``, remembered under ``key`` for this model and dataset."""
        self._bind(model, dataset)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def holds(self, model: ScrubModel, dataset: Dataset, key: Key, rows: np.ndarray) -> bool:
        """Whether ``key`` (a component's output or a residual stream) is cached on ``rows``."""
        self._bind(model, dataset)
        slots = self._slots.get(key)
        return slots is not None and len(slots) >= len(dataset) and bool((slots[rows] >= 0).all())

    def knows(self, model: ScrubModel, dataset: Dataset, signature: str) -> bool:
        """Whether the outputs of the subtree with this signature are cached."""
        self._bind(model, dataset)
        return self.subtrees and signature in self._subtrees

    def subtree(self, signature: str, comp: Component) -> Tensor:
        """A cached subtree's treeified output of ``comp``: ``(batch, pos, d)``."""
        return self._subtrees[signature][comp]

    def keep_subtree(self, signature: str, outputs: dict[Component, Tensor]) -> None:
        """Remember a subtree's treeified outputs (every component of its top node)."""
        if self.subtrees:
            self._subtrees[signature] = dict(outputs)

    def outputs(
        self,
        model: ScrubModel,
        dataset: Dataset,
        needs: Iterable[tuple[Key, np.ndarray]],
        *,
        on_pass: Callable[[], None] | None = None,
    ) -> list[Tensor]:
        """The outputs of each ``(component, rows)``: ``(len(rows), pos, d)`` tensors; the
        residual stream of each ``(Residual(layer), rows)``: ``(len(rows), pos, d_model)``.

        Rows not yet cached are computed in plain forward passes that stop after the last layer
        anything requested on them is in: rows only embeddings are read from (a leaf that maps
        the embeddings) stop before the first block, the others after the deepest layer
        requested, each pass also giving the shallower components and residual streams of its
        rows.
        """
        self._bind(model, dataset)
        needs = list(needs)
        missing: dict[int, set[int]] = {}  # stop layer -> rows a component that deep lacks
        for comp, rows in needs:
            slots = self._grow(comp, model, dataset)
            lacking = np.unique(rows[slots[rows] < 0]).tolist()
            missing.setdefault(_depth(model, comp), set()).update(lacking)
        comps = sorted({c for c, _ in needs}, key=repr)
        done: set[int] = set()
        for stop in sorted(missing, reverse=True):
            todo = missing[stop] - done
            if not todo:
                continue
            shallower = [c for c in comps if _depth(model, c) <= stop]
            self._fill(model, dataset, shallower, np.array(sorted(todo)))
            done |= todo
            if on_pass:
                on_pass()
        return [_take(self._values[comp], self._slots[comp][rows]) for comp, rows in needs]

    def _grow(self, comp: Key, model: ScrubModel, dataset: Dataset) -> np.ndarray:
        """The row -> slot index of ``comp`` (``-1``: not cached), covering every row."""
        n = len(dataset)
        slots = self._slots.get(comp)
        if slots is None or len(slots) < n:
            grown = np.full(n, -1, dtype=np.int64)
            if slots is not None:
                grown[: len(slots)] = slots
            self._slots[comp] = grown
            if comp not in self._values:
                width = (
                    model.bridge.cfg.d_model
                    if isinstance(comp, Residual)
                    else model.output_width(comp)
                )
                self._values[comp] = torch.empty(
                    0, dataset.seq_len, width, device=model.device, dtype=model.dtype
                )
        return self._slots[comp]

    def _fill(self, model: ScrubModel, dataset: Dataset, keys: list[Key], rows: np.ndarray) -> None:
        n_layers = model.shape.n_layers
        stop = max(_depth(model, k) for k in keys)
        step = min(
            self.max_batch_rows, pass_rows(model, dataset.seq_len, max_memory=self.max_memory)
        )
        outs: dict[Key, Tensor] = {}

        def reader(read: list[Key]) -> Callable:
            def hook(t: Tensor, hook=None) -> Tensor:
                for key in read:
                    outs[key] = t.clone() if isinstance(key, Residual) else select(t, key).clone()
                if any(isinstance(k, Residual) and k.layer >= n_layers for k in read):
                    raise _Done
                return t

            return hook

        by_hook: dict[str, list[Key]] = {}
        for key in keys:
            name = key.hook(n_layers) if isinstance(key, Residual) else model.output_hook(key)
            by_hook.setdefault(name, []).append(key)
        hooks = [(name, reader(read)) for name, read in by_hook.items()]
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            tokens = dataset.tokens[torch.as_tensor(chunk)]
            outs.clear()
            # At the final residual stream every output is read: the hook stops the pass.
            with model.bridge.hooks(fwd_hooks=hooks), contextlib.suppress(_Done):
                model.run(tokens, stop_at_layer=stop)
            self.rows_computed += len(chunk)
            for comp in keys:
                slots = self._slots[comp]
                new = slots[chunk] < 0
                start_slot = len(self._values[comp])
                slots[chunk[new]] = start_slot + np.arange(int(new.sum()))
                if new.all():
                    fresh = outs[comp]
                else:
                    fresh = outs[comp][torch.as_tensor(new, device=model.device)]
                if start_slot:
                    fresh = torch.cat([self._values[comp], fresh])
                self._values[comp] = fresh


def _depth(model: ScrubModel, key: Key) -> int:
    """The ``stop_at_layer`` a plain pass needs to read ``key``: a block's input is read at
    its ``hook_in``, which fires before a stop there."""
    return key.layer if isinstance(key, Residual) else model.stop_layer(key)


def _take(values: Tensor, slots: np.ndarray) -> Tensor:
    """``values[slots]``; a view, not a copy, when the slots are consecutive."""
    if len(slots) and slots[-1] - slots[0] == len(slots) - 1 and bool(np.all(np.diff(slots) == 1)):
        return values[int(slots[0]) : int(slots[-1]) + 1]
    return values[torch.as_tensor(slots, device=values.device)]
