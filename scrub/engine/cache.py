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
from scrub._hooks import unmasked_rows_softmax
from scrub._model import ScrubModel, select, split_qkv_inputs
from scrub.data import Dataset

__all__ = [
    "PASS_MEMORY",
    "ActivationCache",
    "Residual",
    "balanced",
    "pass_rows",
    "split_qkv_inputs",
]


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


PASS_MEMORY = 32 * 2**20
"""Default activation budget of one pass, in bytes.

Context: a pass's cost per row grows with the pass once its activations outgrow the CPU's
caches. Measured on this project's CPU machine (one thread, the induction model, 29 tokens):
the attention softmax costs 3.3 µs a row at 1000 rows, 3.9 at 2000 and 8.5 at 4000, and the
schedule's own limit (the plain model on the plan's rows × layers, kcomp at n = 1000) takes
0.29 s in 2000-row passes, 0.24 s in 1000-row ones and 0.21 s in 250–500-row ones. The fast
engine on kcomp at n = 1000 took 0.42 s with 128 MiB (2370-row passes), 0.32–0.34 s with 24–32
MiB (590-row passes), no less with 16; at n = 200 (400-row passes) and on the GPT-2-shaped
model (B = 8 and 32: 41 instead of 164 rows a pass) it was the same within noise.

Pitfall: smaller is not always better: every pass pays its hooks' fixed cost, which dominates
small models at a few rows. Results do not depend on the budget beyond float rounding."""


def balanced(n: int, most: int) -> int:
    """Rows per piece to split ``n`` rows into as few pieces of at most ``most`` as possible,
    all of about one size (1000 rows at most 296 a piece: 4 × 250, not 3 × 296 + 112)."""
    pieces = -(-n // max(1, most))
    return -(-n // max(1, pieces)) if n else max(1, most)


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
        # each key's cached values, in pieces (one per filling pass) whose slots follow on
        self._values: dict[Key, list[Tensor]] = {}
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
        # each key's rows not yet cached, in the order first asked for (so that one leaf's
        # rows get consecutive slots and are served as a view, not gathered)
        lacking: dict[Key, dict[int, None]] = {}
        for comp, rows in needs:
            slots = self._grow(comp, model, dataset)
            lacking.setdefault(comp, {}).update(dict.fromkeys(rows[slots[rows] < 0].tolist()))
        by_stop: dict[int, dict[int, None]] = {}  # stop layer -> rows a key that deep lacks
        for key, wanted in lacking.items():
            by_stop.setdefault(_depth(model, key), {}).update(wanted)
        done: set[int] = set()
        for stop in sorted(by_stop, reverse=True):
            todo = np.array([r for r in by_stop[stop] if r not in done], dtype=np.int64)
            if not len(todo):
                continue
            # every key this deep or shallower records the rows it lacks that this pass runs
            record = {
                key: np.isin(todo, np.fromiter(wanted, dtype=np.int64, count=len(wanted)))
                for key, wanted in lacking.items()
                if wanted and _depth(model, key) <= stop
            }
            self._fill(model, dataset, {k: m for k, m in record.items() if m.any()}, todo)
            done.update(todo.tolist())
            if on_pass:
                on_pass()
        return [self._serve(comp, self._slots[comp][rows]) for comp, rows in needs]

    def _serve(self, key: Key, slots: np.ndarray) -> Tensor:
        """The cached values at ``slots``: a view of one piece where they are consecutive slots
        within it (one leaf's rows of one filling pass), else gathered (the pieces joined into
        one first, once)."""
        pieces = self._values[key]
        if len(slots) and slots[-1] - slots[0] == len(slots) - 1 and np.all(np.diff(slots) == 1):
            offset = 0
            for piece in pieces:
                if offset <= slots[0] and slots[-1] < offset + len(piece):
                    return piece[int(slots[0]) - offset : int(slots[-1]) + 1 - offset]
                offset += len(piece)
        if len(pieces) > 1:
            pieces[:] = [torch.cat(pieces)]
        return _take(pieces[0], slots)

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
                self._values[comp] = [
                    torch.empty(0, dataset.seq_len, width, device=model.device, dtype=model.dtype)
                ]
        return self._slots[comp]

    def _fill(
        self, model: ScrubModel, dataset: Dataset, record: dict[Key, np.ndarray], rows: np.ndarray
    ) -> None:
        """Plain passes over ``rows`` (in pieces within the pass budget) that record each key
        of ``record`` on the rows its mask marks.

        Context: what a filling pass reads is the hooked tensor itself for an embedding, an
        MLP or a residual stream, and nothing in the pass writes to it after the hook (the
        bridge's blocks add into new tensors, and a filling pass has no other hooks), so it is
        kept as it is; only a head's slice of ``z`` is copied (a strided view of every head's
        ``z``). Each pass's values are kept as a piece of their own (:meth:`_serve` joins the
        pieces only to gather across them). A pass that stops before the first block
        (embeddings only) is not split by the blocks' budget.

        Pitfall: appending each piece to one cached tensor as it comes would copy everything
        cached so far once per piece (quadratic in the number of pieces).
        """
        n_layers = model.shape.n_layers
        keys = list(record)
        stop = max(_depth(model, k) for k in keys)
        most = min(self.max_batch_rows, self._pass_rows(model, dataset.seq_len, stop))
        step = balanced(len(rows), most)
        outs: dict[Key, Tensor] = {}

        def reader(read: list[Key]) -> Callable:
            def hook(t: Tensor, hook=None) -> Tensor:
                for key in read:
                    if isinstance(key, Component) and key.kind == "head":
                        outs[key] = select(t, key).clone()
                    else:
                        outs[key] = t  # the hooked tensor itself: see the docstring
                if any(isinstance(k, Residual) and k.layer >= n_layers for k in read):
                    raise _Done
                return t

            return hook

        by_hook: dict[str, list[Key]] = {}
        for key in keys:
            name = key.hook(n_layers) if isinstance(key, Residual) else model.output_hook(key)
            by_hook.setdefault(name, []).append(key)
        hooks = [(name, reader(read)) for name, read in by_hook.items()]
        pieces: dict[Key, list[Tensor]] = {key: [] for key in keys}
        # slots taken, this pass's pieces included
        count = {key: sum(len(p) for p in self._values[key]) for key in keys}
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            tokens = dataset.tokens[torch.as_tensor(chunk)]
            outs.clear()
            # At the final residual stream every output is read: the hook stops the pass.
            # unpadded causal rows: the softmax needs no fully-masked-row guards
            with (
                model.bridge.hooks(fwd_hooks=hooks),
                unmasked_rows_softmax(model.bridge),
                contextlib.suppress(_Done),
            ):
                model.run(tokens, stop_at_layer=stop)
            self.rows_computed += len(chunk)
            for key in keys:
                mask = record[key][start : start + step]
                fresh = int(mask.sum())
                if not fresh:
                    continue
                self._slots[key][chunk[mask]] = count[key] + np.arange(fresh)
                count[key] += fresh
                if fresh == len(chunk):
                    pieces[key].append(outs[key])
                else:
                    pieces[key].append(outs[key][torch.as_tensor(mask, device=model.device)])
        for key in keys:
            self._values[key].extend(pieces[key])

    def _pass_rows(self, model: ScrubModel, seq_len: int, stop: int) -> int:
        """The rows of one filling pass that stops at ``stop``: :func:`pass_rows`, or for the
        embeddings only (``stop == 0``) the rows whose three ``d_model``-wide embeddings fit."""
        if stop > 0:
            return pass_rows(model, seq_len, max_memory=self.max_memory)
        per_row = 3 * seq_len * model.bridge.cfg.d_model * model.dtype.itemsize
        return max(1, (PASS_MEMORY if self.max_memory is None else self.max_memory) // per_row)


def _depth(model: ScrubModel, key: Key) -> int:
    """The ``stop_at_layer`` a plain pass needs to read ``key``: a block's input is read at
    its ``hook_in``, which fires before a stop there."""
    return key.layer if isinstance(key, Residual) else model.stop_layer(key)


def _take(values: Tensor, slots: np.ndarray) -> Tensor:
    """``values[slots]``; a view, not a copy, when the slots are consecutive."""
    if len(slots) and slots[-1] - slots[0] == len(slots) - 1 and bool(np.all(np.diff(slots) == 1)):
        return values[int(slots[0]) : int(slots[-1]) + 1]
    return values[torch.as_tensor(slots, device=values.device)]
