"""Hook functions: the tensor edits a hooked forward pass makes, built as plain closures.

An :class:`OutputPatch` overwrites a component's output at given positions; the ``_*_hook``
builders return functions ``tensor -> tensor`` that patch, set or read one component's part of
a hooked tensor (a head's slice of ``batch pos head d``, or the whole tensor for an MLP or the
embeddings), and :func:`_chain` runs several on one hook point. :func:`split_qkv_inputs` turns
per-head q/k/v inputs on for just the passes that need them; :func:`unmasked_rows_softmax`
drops the compatibility mode's handling of fully masked attention rows, which scrub's
unpadded passes never have.

Pitfalls: hooks that edit clone the tensor first (TransformerLens may reuse it), and readers
clone what they store; none of these registers anything: :meth:`scrub._model.ScrubModel.run`
attaches them inside the pass's context manager, so no hook outlives a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub._components import Channel, Component

__all__ = [
    "OutputPatch",
    "keeping",
    "select",
    "split_qkv_inputs",
    "unmasked_rows_softmax",
    "write",
    "write_at",
]


@dataclass(frozen=True)
class OutputPatch:
    """Overwrite a component's output at given positions (an activation patch).

    Attributes:
        component: the component whose output is replaced.
        positions: ``(batch, K)`` positions in the patched rows.
        values: ``(batch, K, d)`` new outputs (``d_head`` wide ``z`` for heads, else ``d_model``).
    """

    component: Component
    positions: Int[Tensor, "batch k"]
    values: Float[Tensor, "batch k d"]


@contextmanager
def split_qkv_inputs(bridge, on: bool) -> Iterator[None]:
    """Per-head q/k/v inputs only for passes that read or set them, restored on exit.

    The split inputs run LayerNorm and the q/k/v projections per head (``n_heads`` times the
    activations); a pass that only patches outputs or splices into MLPs and the logits reads
    the same values through the model's ordinary joint projection, several times faster.
    """
    was = bool(bridge.cfg.use_split_qkv_input)
    if was == on:
        yield
        return
    bridge.set_use_split_qkv_input(on)
    try:
        yield
    finally:
        bridge.set_use_split_qkv_input(was)


@contextmanager
def unmasked_rows_softmax(bridge) -> Iterator[None]:
    """The attention softmax without the compatibility mode's fully-masked-row guards.

    In compatibility mode TransformerBridge's attention masks with ``-inf``, then scans every
    score row for being fully masked (zeroing it instead of a NaN) and every pattern for NaNs:
    several elementwise passes over the ``batch × heads × pos × pos`` scores, a tenth of a small
    model's pass. Causal attention over unpadded rows (every scrub pass) has no fully masked
    row: each query sees itself, so the masked scores' weights are exactly 0 either way and
    the pattern is the same. Only the attention modules' flag is turned off, and restored on
    exit.
    """
    attns = [
        block.attn
        for block in getattr(bridge, "blocks", ())
        if getattr(getattr(block, "attn", None), "compatibility_mode", False)
    ]
    for attn in attns:
        attn.compatibility_mode = False
    try:
        yield
    finally:
        for attn in attns:
            attn.compatibility_mode = True


def keeping(store: dict[str, Tensor]) -> Callable[[str], Callable]:
    """``keep(name)``: a forward hook that stores a copy of what passes through under ``name``
    in ``store`` and leaves the pass unchanged (the once-per-model checks read passes so)."""

    def keep(name: str) -> Callable:
        def hook(t: Tensor, hook=None) -> Tensor:
            store[name] = t.clone()
            return t

        return hook

    return keep


def _chain(fns: list[Callable]) -> Callable:
    def hook(tensor: Tensor, hook) -> Tensor:
        for fn in fns:
            tensor = fn(tensor)
        return tensor

    return hook


def select(t: Tensor, comp: Component, rows: slice = slice(None)) -> Tensor:
    """``comp``'s part of a hooked tensor (a head's slice of ``batch pos head d``), for ``rows``."""
    return t[rows, :, comp.head] if comp.kind == "head" else t[rows]


def write(t: Tensor, comp: Component, value: Tensor, rows: slice = slice(None)) -> None:
    """Overwrite ``comp``'s part of a hooked tensor, for ``rows``, in place."""
    if comp.kind == "head":
        t[rows, :, comp.head] = value.to(t.dtype)
    else:
        t[rows] = value.to(t.dtype)


def write_at(
    t: Tensor,
    comp: Component,
    positions: Tensor,
    value: Tensor,
    rows: slice = slice(None),
) -> None:
    """Overwrite ``comp``'s part of a hooked tensor at per-row ``positions`` (``rows x K``)."""
    view = t[rows]
    batch = torch.arange(view.shape[0], device=t.device)[:, None]
    if comp.kind == "head":
        view[batch, positions, comp.head] = value.to(t.dtype)
    else:
        view[batch, positions] = value.to(t.dtype)


def _patch_hook(patch: OutputPatch) -> Callable:
    def fn(t: Tensor) -> Tensor:
        t = t.clone()
        write_at(t, patch.component, patch.positions, patch.values)
        return t

    return fn


def _read_output_hook(comp: Component, store: dict) -> Callable:
    def fn(t: Tensor) -> Tensor:
        store[comp] = select(t, comp).clone()
        return t

    return fn


def _set_input_hook(comp: Component, value: Tensor) -> Callable:
    def fn(t: Tensor) -> Tensor:
        t = t.clone()
        write(t, comp, value)
        return t

    return fn


def _read_input_hook(comp: Component, ch: Channel, store: dict, slot: Component) -> Callable:

    def fn(t: Tensor) -> Tensor:
        store[comp, ch] = select(t, slot).clone()
        return t

    return fn
