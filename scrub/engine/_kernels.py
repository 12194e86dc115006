"""Single heads and MLPs recomputed from their inputs, with the model's own (folded) weights.

Context: a node whose components sit at different depths must keep its treeified outputs out of
its reading group (see :mod:`scrub.engine._plan`). Instead of a whole extra row group on the
node's other inputs, the fast engine computes those few components directly from their
assembled inputs: a head from its ``q``/``k``/``v`` inputs, an MLP from its input.

The kernels cover the families of :mod:`scrub._architectures` but Gemma-2: pre-norm blocks
(LayerNorm or RMSNorm, weights folded into the next matrices), causal softmax attention scaled
by ``1/sqrt(d_head)``, rotary embeddings on all or part of each head's dimensions (the model's
own rotary module gives the angles), grouped-query attention (head H reads key/value head
``H // group``), and pointwise or gated MLPs.

Pitfall: this restates the model's arithmetic. :func:`kernels_for` therefore checks the kernels
against the model itself once, on random inputs, and returns ``None`` for any model where they
disagree or that has what they do not restate (attention soft-capping, sliding windows,
Gemma-2's query scale); the engine then falls back to output groups, which use only the model's
own forward pass. :func:`kernel_status` says which, and the result records it. The check runs
in float32 even for a bfloat16 or float16 model (on a float32 copy of its weights: exact), so
its 1e-4 tolerance means the same in every dtype; the kernels then compute in the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._model import ScrubModel

__all__ = ["Kernels", "kernel_status", "kernels_for"]

_ACTIVATIONS = {
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
}
_WEIGHTS = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_in", "b_in", "W_out", "b_out", "W_gate")


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Kernels:
    """The weights a head or an MLP needs, and the two computations."""

    def __init__(self, model: ScrubModel) -> None:
        bridge = model.bridge
        cfg = bridge.cfg
        self.eps = float(cfg.eps)
        self.rms = cfg.normalization_type in ("RMS", "RMSPre")
        self.norm = cfg.normalization_type is not None  # None: identity (LayerNorm-free GPT-2)
        self.scale = 1 / math.sqrt(cfg.d_head)
        self.act = _ACTIVATIONS[cfg.act_fn]
        self.group = model.shape.kv_group
        self.gated = bool(getattr(cfg, "gated_mlp", False))
        self.w: dict[str, Tensor | None] = {}
        for name in _WEIGHTS:
            try:
                self.w[name] = getattr(bridge, name).detach()
            except AttributeError:  # bias-free projections, ungated MLPs
                self.w[name] = None
        self.rotary = None
        if cfg.positional_embedding_type == "rotary":
            self.rotary = next(
                module
                for name, module in bridge.original_model.named_modules()
                if name.endswith("rotary_emb")
            )
        self._angles: dict[int, tuple[Tensor, Tensor]] = {}

    def _ln(self, x: Tensor) -> Tensor:
        """The block's norm without its (folded) weights: torch's fused LayerNorm / RMSNorm."""
        if not self.norm:
            return x
        if not self.rms:
            return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps)
        return torch.nn.functional.rms_norm(x, x.shape[-1:], eps=self.eps)

    def _proj(self, normed: Tensor, w: str, b: str, layer: int, head: int) -> Tensor:
        weight, bias = self.w[w], self.w[b]
        assert weight is not None
        out = normed @ weight[layer, head]
        return out if bias is None else out + bias[layer, head]

    def _rotate(self, x: Tensor, at: Tensor | None = None, n_pos: int = 0) -> Tensor:
        """Rotary embedding of ``batch pos d_head`` at positions 0..pos-1 (HF's rotate-half),
        or at positions ``at`` (one per row of ``pos``) of a sequence of ``n_pos``."""
        n = x.shape[-2] if at is None else n_pos
        if n not in self._angles:
            assert self.rotary is not None
            probe = torch.zeros(1, n, 1, device=x.device, dtype=x.dtype)
            cos, sin = self.rotary(probe, torch.arange(n, device=x.device)[None])
            self._angles[n] = (cos[0].to(x.dtype), sin[0].to(x.dtype))
        cos, sin = self._angles[n]
        if at is not None:
            cos, sin = cos[at], sin[at]
        dim = cos.shape[-1]
        rot, rest = x[..., :dim], x[..., dim:]
        return torch.cat([rot * cos + _rotate_half(rot) * sin, rest], dim=-1)

    def head(self, comp: Component, q_in: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
        """A head's ``z`` (``batch pos d_head``) from its three residual inputs."""
        layer, h, kv = comp.layer, comp.head, comp.head // self.group
        normed: dict[int, Tensor] = {}  # channels given the same tensor are normalised once

        def norm(x: Tensor) -> Tensor:
            if id(x) not in normed:
                normed[id(x)] = self._ln(x)
            return normed[id(x)]

        q = self._proj(norm(q_in), "W_Q", "b_Q", layer, h)
        k = self._proj(norm(k_in), "W_K", "b_K", layer, kv)
        v = self._proj(norm(v_in), "W_V", "b_V", layer, kv)
        if self.rotary is not None:
            q, k = self._rotate(q), self._rotate(k)
        return self._attend(q, k, v)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal softmax attention, ``softmax(q k^T / sqrt(d_head)) v`` (torch's fused kernel)."""
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale
        )

    def heads(
        self,
        inputs: dict[Component, dict[Channel, Tensor]],
        at: Mapping[Component, Tensor | None] | None = None,
        *,
        q_at: bool = False,
    ) -> dict[Component, Tensor]:
        """Several heads' ``z`` from their ``q``/``k``/``v`` inputs, as :meth:`head` computes
        them one by one: the heads of one layer given the same three tensors (a node's heads
        spliced from the same children) are computed together, each input normalised once.

        ``at``: per head, the only positions its ``z`` is read at (a 1-D tensor), or ``None``
        (every position). Heads computed together whose reads are all known get queries and
        attention rows only at the union of those positions (:meth:`_heads`); the ``z`` they
        return is NaN at every other position. ``q_at``: the q inputs are already given at
        that union only (``batch len(union) d_model``), every head's reads being known.

        Context: kcomp's induction heads are read only at REP (10 of 29 positions) by the
        root; their queries elsewhere were a third of the kernels' time at n = 1000.
        Pitfall: keys and values still need every position up to the last query (causal
        attention: they are computed everywhere, masked), and the NaN is the check: a read outside ``at`` poisons the logits, so a
        wrong set of positions fails the fast == reference tests instead of passing silently.
        """
        at = at or {}
        batches: dict[tuple[int, int, int, int], list[Component]] = {}
        for comp, ins in inputs.items():
            key = (comp.layer, id(ins["q"]), id(ins["k"]), id(ins["v"]))
            batches.setdefault(key, []).append(comp)
        out: dict[Component, Tensor] = {}
        for comps in batches.values():
            ins = inputs[comps[0]]
            reads = [at.get(comp) for comp in comps]
            cols = None
            if all(r is not None for r in reads):
                cols = torch.unique(torch.cat(reads))  # type: ignore[arg-type]  # sorted
            if q_at and cols is None:
                raise ValueError("q inputs given at the read positions, but some are unknown")
            if len(comps) == 1 and cols is None:
                out[comps[0]] = self.head(comps[0], ins["q"], ins["k"], ins["v"])
                continue
            z = self._heads(comps, ins["q"], ins["k"], ins["v"], cols, q_at=q_at)
            out.update((comp, z[:, i]) for i, comp in enumerate(comps))
        return out

    def _heads(
        self,
        comps: list[Component],
        q_in: Tensor,
        k_in: Tensor,
        v_in: Tensor,
        at: Tensor | None = None,
        *,
        q_at: bool = False,
    ) -> Tensor:
        """``z`` of several heads of one layer on shared inputs: ``batch head pos d_head``.

        ``at`` (sorted positions): queries only there, ``z`` NaN elsewhere (see
        :meth:`heads`). Keys and values at every position, masked causally: slicing them to
        the last query saved little and a LayerNorm of the strided slice cost 2.5x that of the
        whole contiguous input (measured)."""
        layer = comps[0].layer
        q_heads = [c.head for c in comps]
        kv_heads = [c.head // self.group for c in comps]
        normed: dict[int, Tensor] = {}
        n_pos = k_in.shape[1]
        if at is not None and not q_at:  # keys and values stay whole (see above)
            q_in = q_in.index_select(1, at)

        def proj(x: Tensor, w: str, b: str, heads: list[int]) -> Tensor:
            if id(x) not in normed:
                normed[id(x)] = self._ln(x)
            weight, bias = self.w[w], self.w[b]
            assert weight is not None
            joint = weight[layer, heads].transpose(0, 1).flatten(1)  # d_model, (head d_head)
            out = normed[id(x)] @ joint
            if bias is not None:
                out = out + bias[layer, heads].flatten()
            return out.unflatten(-1, (len(heads), -1)).transpose(1, 2)  # batch head pos d_head

        q = proj(q_in, "W_Q", "b_Q", q_heads)
        k = proj(k_in, "W_K", "b_K", kv_heads)
        v = proj(v_in, "W_V", "b_V", kv_heads)
        if self.rotary is not None:
            q, k = self._rotate(q, at, n_pos), self._rotate(k)
        if at is None:
            return self._attend(q, k, v)
        causal = at[:, None] >= torch.arange(k.shape[-2], device=at.device)[None]
        z = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=causal, scale=self.scale
        )
        full = z.new_full((z.shape[0], z.shape[1], n_pos, z.shape[3]), float("nan"))
        full[:, :, at] = z
        return full

    def mlp(self, comp: Component, x: Tensor) -> Tensor:
        """An MLP's output (``batch pos d_model``) from its input."""
        w, layer = self.w, comp.layer
        x = self._ln(x)

        def linear(name: str, bias: str | None) -> Tensor:
            weight = w[name]
            assert weight is not None
            out = x @ weight[layer]
            b = w[bias] if bias else None
            return out if b is None else out + b[layer]

        if self.gated:
            hidden = self.act(linear("W_gate", None)) * linear("W_in", "b_in")
        else:
            hidden = self.act(linear("W_in", "b_in"))
        w_out, b_out = w["W_out"], w["b_out"]
        assert w_out is not None
        out = hidden @ w_out[layer]
        return out if b_out is None else out + b_out[layer]


def kernels_for(model: ScrubModel) -> Kernels | None:
    """Kernels for ``model`` if they reproduce it (checked once per model), else ``None``."""
    if "kernels" not in model.memo:
        model.memo["kernels"], model.memo["kernel_status"] = _verified(model)
    return model.memo["kernels"]


def kernel_status(model: ScrubModel) -> str:
    """``"kernels"``, or why the fast engine computes multi-layer nodes in output groups."""
    kernels_for(model)
    return model.memo["kernel_status"]


@torch.inference_mode()
def _verified(model: ScrubModel) -> tuple[Kernels | None, str]:
    cfg = model.bridge.cfg
    unsupported = {
        f"activation {cfg.act_fn!r}": cfg.act_fn not in _ACTIVATIONS,
        f"{cfg.positional_embedding_type} position embeddings": cfg.positional_embedding_type
        not in ("standard", "rotary"),
        "bidirectional attention": cfg.attention_dir != "causal",
        "attention soft-capping": (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0,
        "sliding-window attention": getattr(cfg, "window_size", None) is not None
        or model.architecture.name == "Gemma-2",
        "a non-default attention scale": getattr(cfg, "attn_scale", -1.0) not in (-1.0, None)
        and not math.isclose(cfg.attn_scale, math.sqrt(cfg.d_head)),
    }
    missing = [what for what, bad in unsupported.items() if bad]
    if missing:
        return None, f"output groups: the kernels do not restate {', '.join(missing)}"
    with model.computing_in(torch.float32):  # exact for a bfloat16 / float16 model
        try:
            kernels = Kernels(model)
        except (AttributeError, KeyError, StopIteration) as exc:
            return None, f"output groups: the kernels cannot read this model's weights ({exc})"
        mismatch = _mismatch(model, kernels)
    if mismatch is not None:
        return None, f"output groups: the kernels do not reproduce {mismatch.name} of this model"
    if model.dtype != torch.float32:
        kernels = Kernels(model)  # the restatement checked in float32, on the model's weights
    return kernels, "kernels"


def _mismatch(model: ScrubModel, kernels: Kernels) -> Component | None:
    """The first of a last-layer head or MLP the kernels do not reproduce (``None``: all)."""
    cfg = model.bridge.cfg
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.d_vocab, (2, min(8, cfg.n_ctx)), generator=generator)
    layer = model.shape.n_layers - 1
    heads = [Component("head", layer, h) for h in sorted({0, model.shape.n_heads - 1})]
    mlp = Component("mlp", layer)
    reads: list[tuple[Component, Channel]] = [(h, ch) for h in heads for ch in ("q", "k", "v")]
    _, inputs, outputs = model.run(
        tokens, read_inputs=[*reads, (mlp, "in")], read_outputs=[*heads, mlp]
    )
    got = {h: kernels.head(h, *(inputs[h, ch] for ch in ("q", "k", "v"))) for h in heads}
    got[mlp] = kernels.mlp(mlp, inputs[mlp, "in"])
    for comp, value in got.items():
        if not torch.allclose(value, outputs[comp], atol=1e-4, rtol=1e-4):
            return comp
    return None
