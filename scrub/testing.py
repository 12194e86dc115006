"""Helpers for tests and benchmarks: randomly initialised GPT-2-shaped models, made offline.

TransformerLens's ``boot_native`` (random native weights) refuses split q/k/v inputs, so random
models are built as Hugging Face ``GPT2LMHeadModel`` s, saved to a directory and loaded through
the same loader as every other model.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_random_gpt2"]


def save_random_gpt2(
    directory: str | Path,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    d_model: int = 32,
    d_vocab: int = 128,
    n_ctx: int = 64,
    d_mlp: int | None = None,
    seed: int = 0,
    init_std: float = 0.02,
) -> Path:
    """Save a randomly initialised GPT-2-architecture model to ``directory`` and return it.

    The initialisation uses its own seeded generator (the global torch RNG is left untouched).
    ``init_std`` larger than GPT-2's 0.02 makes attention patterns less uniform, which makes
    tests of attention-dependent behaviour sharper.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=d_vocab,
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        n_inner=d_mlp,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "ln" in name:  # LayerNorms keep their identity init
                    continue
                param.copy_(torch.randn(param.shape, generator=generator) * init_std)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory
