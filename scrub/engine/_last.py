"""The last block at the metric's positions only.

Context: after the last block only the final residual stream at the metric's positions is read
(the engine unembeds only those, :mod:`scrub.engine.fast`). In that block the keys and values
are needed at every position, but the queries, the attention output, the MLP and the block's
output only at the read positions: a third of an activation grid's row × layer block
evaluations are last blocks, most of whose arithmetic goes. :class:`LastBlock` computes the
block's output at given positions from its input (``blocks.{L}.hook_resid_pre``): the block's
own first norm at every position, the heads' ``z`` by the engine's verified kernels'
projections (:mod:`scrub.engine._kernels`) with queries at the read positions only (causal:
query p sees keys 0..p), ``z @ W_O + b_O``, and the block's own second norm and MLP (modules
that work position by position, so the same arithmetic on fewer rows) on the block's input
(parallel blocks) or on the residual after attention. Using the model's own norm and MLP
matters on compiled (tracr) models, whose steep MLPs turn the rounding differences of a
restated LayerNorm into 1e-4 differences of the metric.

The engine uses it only in a pass where nothing but the roots' final residual streams is read
after block L's input (no hook of block L, no attention pattern read, every stacked group a
root): :mod:`scrub.engine.fast` checks that per pass and otherwise runs the whole block.

Pitfall: this restates the block. :func:`last_block_for` therefore checks it once per model
against the model's own final residual stream (at a few positions of a random pass) and
returns ``None`` where it disagrees or where the kernels do not reproduce the model; the
engine then runs the last block in full.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from scrub._hooks import keeping
from scrub._model import ScrubModel
from scrub.engine._kernels import Kernels, kernels_for

__all__ = ["LastBlock", "last_block_applies", "last_block_for", "reads_only_before"]


class LastBlock:
    """The last block's output at given positions, from its input (module docstring)."""

    def __init__(self, model: ScrubModel, kernels: Kernels) -> None:
        self.kernels = kernels
        self.layer = layer = model.shape.n_layers - 1
        self.parallel = model.architecture.parallel
        self.group = model.shape.kv_group
        self.attn_only = bool(getattr(model.bridge.cfg, "attn_only", False))
        w = kernels.w
        self.w = {name: None if w[name] is None else w[name][layer] for name in w}  # type: ignore[index]
        self.block = model.bridge.blocks[layer]  # its own norms and MLP: position-wise
        self.W_O = model.W_O[layer]  # head d_head d_model
        try:
            self.b_O: Tensor | None = model.bridge.b_O[layer].detach()
        except AttributeError:  # bias-free projections
            self.b_O = None

    def _proj(self, x: Tensor, w: str, b: str) -> Tensor:
        """``x`` (batch pos d) through every head's projection: ``batch head pos d_head``."""
        weight, bias = self.w[w], self.w[b]
        assert weight is not None
        out = torch.einsum("bpd,hde->bhpe", x, weight)
        return out if bias is None else out + bias[None, :, None]

    def _angles(self, n: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Rotary cos / sin at positions 0..n-1 (``n, dim``), from the model's rotary module."""
        rotary = self.kernels.rotary
        assert rotary is not None
        probe = torch.zeros(1, n, 1, device=x.device, dtype=x.dtype)
        cos, sin = rotary(probe, torch.arange(n, device=x.device)[None])
        return cos[0].to(x.dtype), sin[0].to(x.dtype)

    def __call__(self, x: Tensor, pos: Tensor) -> Tensor:
        """The block's output ``(batch, K, d_model)`` at ``pos`` (``batch, K``) from its input
        ``x`` (``batch, pos, d_model``)."""
        return self.output(x, pos, self.z(x, pos))

    def z(self, x: Tensor, pos: Tensor) -> Tensor:
        """Every head's ``z`` at ``pos``: ``batch head K d_head``."""
        kern = self.kernels
        batch = torch.arange(x.shape[0], device=x.device)[:, None]
        normed = self.block.ln1(x)
        q = self._proj(normed[batch, pos], "W_Q", "b_Q")  # batch head K d_head
        k = self._proj(normed, "W_K", "b_K")  # batch kv_head pos d_head
        v = self._proj(normed, "W_V", "b_V")
        if kern.rotary is not None:
            cos, sin = self._angles(x.shape[1], x)
            dim = cos.shape[-1]

            def rotate(t: Tensor, c: Tensor, s: Tensor) -> Tensor:
                rot, rest = t[..., :dim], t[..., dim:]
                half = dim // 2
                turned = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
                return torch.cat([rot * c + turned * s, rest], dim=-1)

            k = rotate(k, cos, sin)
            q = rotate(q, cos[pos][:, None], sin[pos][:, None])
        if self.group > 1:
            k = k.repeat_interleave(self.group, dim=1)
            v = v.repeat_interleave(self.group, dim=1)
        keys = torch.arange(x.shape[1], device=x.device)
        mask = (keys[None, None, :] <= pos[:, :, None])[:, None]  # batch 1 K pos
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=kern.scale
        )

    def output(self, x: Tensor, pos: Tensor, z: Tensor) -> Tensor:
        """The block's output at ``pos`` given its heads' ``z`` there (:meth:`z`)."""
        batch = torch.arange(x.shape[0], device=x.device)[:, None]
        attn = torch.einsum("bhke,hed->bkd", z, self.W_O)
        if self.b_O is not None:
            attn = attn + self.b_O
        pre = x[batch, pos]
        mid = pre + attn
        if self.attn_only:
            return mid
        return mid + self.block.mlp(self.block.ln2(pre if self.parallel else mid))


_BLOCK = re.compile(r"blocks\.(\d+)\.")


def reads_only_before(names: list[str], layer: int) -> bool:
    """Whether hooks with these names read and write nothing at or after block ``layer``
    (the embeddings and earlier blocks only; the final residual stream's hook is replaced)."""
    for name in names:
        if name in ("hook_embed", "hook_pos_embed", "ln_final.hook_in"):
            continue
        found = _BLOCK.match(name)
        if found is None or int(found.group(1)) >= layer:
            return False
    return True


def last_block_for(model: ScrubModel) -> LastBlock | None:
    """The last block at given positions for ``model`` if it reproduces the model (checked
    once per model), else ``None``."""
    return model.checked_once("last_block", _verified)


@torch.inference_mode()
def _verified(model: ScrubModel) -> LastBlock | None:
    kernels = kernels_for(model)
    if kernels is None:
        return None
    cfg = model.bridge.cfg
    layer = model.shape.n_layers - 1
    generator = torch.Generator().manual_seed(1)
    n = min(9, cfg.n_ctx)
    tokens = torch.randint(0, cfg.d_vocab, (2, n), generator=generator).to(model.device)
    seen: dict[str, Tensor] = {}

    keep = keeping(seen)

    names = [f"blocks.{layer}.hook_resid_pre", "ln_final.hook_in"]
    try:
        block = LastBlock(model, kernels)
        with model.bridge.hooks(fwd_hooks=[(name, keep(name)) for name in names]):
            model.bridge(tokens)
        pos = torch.tensor([[n - 1, 0, n // 2], [1, n - 1, n - 1]], device=model.device)
        got = block(seen[names[0]], pos)
    except Exception:  # anything the restatement does not cover: run the block in full
        return None
    want = seen[names[1]][torch.arange(2, device=model.device)[:, None], pos]
    return block if torch.allclose(got, want, atol=1e-4, rtol=1e-4) else None


def last_block_applies(run: Any, stacked: list, hooks: dict) -> bool:
    """Whether a :class:`scrub.engine._chunk.ChunkRun`'s (``run``) final pass reads nothing
    after the last block's input but the roots' final residual streams at the metric's
    positions: every
    stacked group a root, no hook of the last block but the kernels' heads (computed from
    the block's input; their ``z`` replaces the block's own), nothing patched, ablated or
    recorded there but the kernels' heads (whose ``z`` is the kernels' value)."""
    if run.last_block is None or run.positions is None:
        return False
    layer = run.model.shape.n_layers - 1
    roots = set(run.plan.roots)
    if not all(g.gid in roots for g in stacked):
        return False
    for group in stacked:
        touched = [m.component for m in group.patches] + list(group.ablate)
        own = {c for c, _ in group.targets if c.kind == "head"} if run.head_kernels else set()
        touched += list(group.record - set(group.served) - own)
        if any(c.kind in ("head", "mlp") and c.layer == layer for c in touched):
            return False
    kernel_heads = (f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z")
    names = [name for name in hooks if name not in kernel_heads]
    return reads_only_before(names, layer)
