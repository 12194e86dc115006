"""Late start: a forward pass that really begins at block L, from a given residual stream.

Context: a row group whose residual stream is that of a plain pass up to its first modified
layer L starts there (:mod:`scrub.engine._plan`, "late start"). TransformerBridge's own
``start_at_layer`` (transformer-lens 4.3) does not save that compute: it feeds the residual in
as ``inputs_embeds``, runs blocks ``0 .. L-1`` anyway and swaps the residual back in at block
L. :func:`skipping_blocks` makes blocks ``0 .. L-1`` pass their input through untouched for
the duration of one call (so none of their hooks fire and none of their arithmetic runs), and
the bridge's ``start_at_layer`` then injects the residual at block L. Everything else (the
attention mask, the rotary angles, the position ids) is still the bridge's own, so the blocks
from L on run exactly as in a full pass and every hook point of theirs fires.

Pitfall: this relies on how the bridge calls its blocks. :func:`late_start_works` therefore
checks it once per model (a late pass must reproduce a full pass's final residual stream); the
engine falls back to passes from the tokens where it does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from scrub._hooks import keeping
from scrub._model import ScrubModel

__all__ = ["late_pass", "late_start_works"]


@contextlib.contextmanager
def skipping_blocks(bridge, layer: int) -> Iterator[None]:
    """Blocks ``0 .. layer-1`` of ``bridge`` return their input unchanged, until exit."""

    def through(*args, **kwargs):
        return args[0] if args else kwargs["hidden_states"]

    # object.__setattr__: the bridge's components forward attribute writes to the wrapped
    # Hugging Face module; the instance attribute shadows the class's forward for this block.
    skipped = list(bridge.blocks)[:layer]
    for block in skipped:
        object.__setattr__(block, "forward", through)
    try:
        yield
    finally:
        for block in skipped:
            object.__delattr__(block, "forward")


def late_pass(model: ScrubModel, resid: Tensor, start: int, stop: int | None) -> Tensor:
    """Blocks ``start .. stop-1`` on ``resid`` (the input of block ``start``); ``stop``
    ``None``: to the logits. Call inside the pass's hooks context."""
    bridge = model.bridge
    with skipping_blocks(bridge, start):
        if stop is None:
            return bridge(resid, start_at_layer=start)
        return bridge(resid, start_at_layer=start, stop_at_layer=stop)


def late_start_works(model: ScrubModel) -> bool:
    """Whether :func:`late_pass` reproduces a full pass on ``model`` (checked once)."""
    return model.checked_once("late_start", _check)


@torch.inference_mode()
def _check(model: ScrubModel) -> bool:
    n_layers = model.shape.n_layers
    if n_layers < 2:  # the only late start is after the whole stack: no pass at all
        return True
    cfg = model.bridge.cfg
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.d_vocab, (2, min(8, cfg.n_ctx)), generator=generator)
    tokens = tokens.to(model.device)
    seen: dict[str, Tensor] = {}
    fired: list[Tensor] = []

    keep = keeping(seen)

    start = n_layers - 1
    names = [f"blocks.{start}.hook_resid_pre", "ln_final.hook_in"]
    try:
        with model.bridge.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
            model.bridge(tokens)
        full = seen.pop("ln_final.hook_in")
        skipped = ("blocks.0.hook_resid_pre", lambda t, hook=None: fired.append(t))  # must not fire
        with model.bridge.hooks(fwd_hooks=[skipped, ("ln_final.hook_in", keep("late"))]):
            late_pass(model, seen[names[0]], start, None)
    except Exception:  # any failure means: run these passes from the tokens
        return False
    return not fired and "late" in seen and torch.allclose(seen["late"], full, atol=1e-5)
