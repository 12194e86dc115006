"""A hand-written forward pass of a folded GPT-2 (compatibility mode), for checking the engines.

It reads the weights only (``W_Q``, ``W_O``, ...), uses no hooks, and exposes every step, so a
test can compute a spliced residual stream by hand and compare with what an engine produced.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ln(x: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm with its weights folded away: centre and normalise."""
    x = x - x.mean(-1, keepdim=True)
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def gelu_new(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


class Manual:
    """The model's weights, and its pieces as plain functions."""

    def __init__(self, scrub_model) -> None:
        b = scrub_model.bridge
        self.w = {
            n: getattr(b, n).detach().double()
            for n in [
                "W_E",
                "W_pos",
                "W_Q",
                "b_Q",
                "W_K",
                "b_K",
                "W_V",
                "b_V",
                "W_O",
                "b_O",
                "W_in",
                "b_in",
                "W_out",
                "b_out",
                "W_U",
                "b_U",
            ]
        }
        self.n_layers, self.n_heads = b.cfg.n_layers, b.cfg.n_heads

    def tok(self, tokens: Tensor) -> Tensor:
        return self.w["W_E"][tokens]

    def pos(self, tokens: Tensor) -> Tensor:
        return self.w["W_pos"][: tokens.shape[1]].expand(tokens.shape[0], -1, -1)

    def head_z(self, layer: int, head: int, q_in: Tensor, k_in: Tensor, v_in: Tensor) -> Tensor:
        w = self.w
        q = ln(q_in) @ w["W_Q"][layer, head] + w["b_Q"][layer, head]
        k = ln(k_in) @ w["W_K"][layer, head] + w["b_K"][layer, head]
        v = ln(v_in) @ w["W_V"][layer, head] + w["b_V"][layer, head]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        t = scores.shape[-1]
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        return pattern @ v

    def head_out(self, layer: int, head: int, z: Tensor) -> Tensor:
        return z @ self.w["W_O"][layer, head]

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        w = self.w
        return (
            gelu_new(ln(x) @ w["W_in"][layer] + w["b_in"][layer]) @ w["W_out"][layer]
            + w["b_out"][layer]
        )

    def logits(self, resid: Tensor) -> Tensor:
        return ln(resid) @ self.w["W_U"] + self.w["b_U"]

    def forward(self, tokens: Tensor, *, z_override=None) -> dict:
        """Plain forward; ``z_override[(layer, head)]`` replaces a head's z. Returns all pieces."""
        z_override = z_override or {}
        acts: dict = {"tok": self.tok(tokens), "pos": self.pos(tokens)}
        resid = acts["tok"] + acts["pos"]
        for layer in range(self.n_layers):
            acts["resid_pre", layer] = resid
            attn = self.w["b_O"][layer].expand_as(resid).clone()
            for h in range(self.n_heads):
                z = z_override.get((layer, h))
                if z is None:
                    z = self.head_z(layer, h, resid, resid, resid)
                acts["z", layer, h] = z
                attn = attn + self.head_out(layer, h, z)
            resid = resid + attn
            acts["resid_mid", layer] = resid
            acts["mlp", layer] = self.mlp(layer, resid)
            resid = resid + acts["mlp", layer]
        acts["resid_final"] = resid
        acts["logits"] = self.logits(resid)
        return acts
