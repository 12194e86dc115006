"""Single heads and MLPs recomputed from their inputs, with the model's own (folded) weights.

Context: a node whose components sit at different depths must keep its treeified outputs out of
its reading group (see :mod:`scrub.engine._plan`). Instead of a whole extra row group on the
node's other inputs, the fast engine computes those few components directly from their
assembled inputs: a head from its ``q``/``k``/``v`` inputs, an MLP from its input.

Pitfall: this restates the model's arithmetic (GPT-2 style: pre-LayerNorm with its weights
folded into the next matrices, causal softmax attention scaled by ``1/sqrt(d_head)``, a pointwise
MLP). :func:`kernels_for` therefore checks the kernels against the model itself once, on random
inputs, and returns ``None`` for any model where they disagree; the engine then falls back to
output groups, which use only the model's own forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scrub._components import Channel, Component
from scrub._model import ScrubModel

__all__ = ["Kernels", "kernels_for"]

_ACTIVATIONS = {
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
}


class Kernels:
    """The weights a head or an MLP needs, and the two computations."""

    def __init__(self, model: ScrubModel) -> None:
        bridge = model.bridge
        self.eps = float(bridge.cfg.eps)
        self.scale = 1 / math.sqrt(bridge.cfg.d_head)
        self.act = _ACTIVATIONS[bridge.cfg.act_fn]
        self.w = {
            name: getattr(bridge, name).detach()
            for name in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_in", "b_in", "W_out", "b_out")
        }

    def _ln(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()

    def head(self, comp: Component, q_in: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
        """A head's ``z`` (``batch pos d_head``) from its three residual inputs."""
        w, layer, h = self.w, comp.layer, comp.head
        q = self._ln(q_in) @ w["W_Q"][layer, h] + w["b_Q"][layer, h]
        k = self._ln(k_in) @ w["W_K"][layer, h] + w["b_K"][layer, h]
        v = self._ln(v_in) @ w["W_V"][layer, h] + w["b_V"][layer, h]
        scores = (q @ k.transpose(-1, -2)) * self.scale
        n = scores.shape[-1]
        causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v

    def mlp(self, comp: Component, x: Tensor) -> Tensor:
        """An MLP's output (``batch pos d_model``) from its input."""
        w, layer = self.w, comp.layer
        hidden = self.act(self._ln(x) @ w["W_in"][layer] + w["b_in"][layer])
        return hidden @ w["W_out"][layer] + w["b_out"][layer]


def kernels_for(model: ScrubModel) -> Kernels | None:
    """Kernels for ``model`` if they reproduce it (checked once per model), else ``None``."""
    if "kernels" not in model.memo:
        model.memo["kernels"] = _verified(model)
    return model.memo["kernels"]


@torch.inference_mode()
def _verified(model: ScrubModel) -> Kernels | None:
    cfg = model.bridge.cfg
    simple = (
        cfg.act_fn in _ACTIVATIONS
        and cfg.positional_embedding_type == "standard"
        and cfg.attention_dir == "causal"
        and not getattr(cfg, "gated_mlp", False)
        and not getattr(cfg, "parallel_attn_mlp", False)
    )
    if not simple:
        return None
    try:
        kernels = Kernels(model)
    except (AttributeError, KeyError):
        return None
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.d_vocab, (2, min(8, cfg.n_ctx)), generator=generator)
    layer = model.shape.n_layers - 1
    head, mlp = Component("head", layer, 0), Component("mlp", layer)
    reads: list[tuple[Component, Channel]] = [(head, "q"), (head, "k"), (head, "v"), (mlp, "in")]
    _, inputs, outputs = model.run(tokens, read_inputs=reads, read_outputs=[head, mlp])
    z = kernels.head(head, inputs[head, "q"], inputs[head, "k"], inputs[head, "v"])
    out = kernels.mlp(mlp, inputs[mlp, "in"])
    close = torch.allclose(z, outputs[head], atol=1e-4, rtol=1e-4) and torch.allclose(
        out, outputs[mlp], atol=1e-4, rtol=1e-4
    )
    return kernels if close else None
