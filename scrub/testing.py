"""Helpers for tests and benchmarks: randomly initialised models of each family, made offline.

TransformerLens's ``boot_native`` (random native weights) refuses split q/k/v inputs, so random
models are built as Hugging Face models (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...), saved
to a directory without a tokenizer and loaded through the same loader as every other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["FAMILIES", "save_random_gpt2", "save_random_model"]


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


FAMILIES = ("gpt2", "pythia", "llama", "qwen2", "gemma2")
"""The families :func:`save_random_model` builds (one per entry of scrub's architecture table)."""


def save_random_model(
    directory: str | Path,
    family: str,
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 32,
    d_mlp: int = 48,
    d_vocab: int = 128,
    n_ctx: int = 64,
    seed: int = 0,
    init_std: float = 0.2,
) -> Path:
    """Save a randomly initialised model of ``family`` (see :data:`FAMILIES`) to ``directory``.

    ``n_kv_heads`` (Llama, Qwen2, Gemma-2) below ``n_heads`` gives grouped-query attention;
    default ``n_heads // 2``. Pythia is GPT-NeoX with parallel attention and MLP and rotary
    embeddings on a quarter of each head's dimensions. Norm weights keep their init; every
    other weight is drawn with ``init_std`` from its own seeded generator.
    """
    import transformers as tf

    if family == "gpt2":
        return save_random_gpt2(
            directory, n_layers=n_layers, n_heads=n_heads, d_model=d_model, d_vocab=d_vocab,
            n_ctx=n_ctx, d_mlp=d_mlp, seed=seed, init_std=init_std,
        )  # fmt: skip
    common: dict[str, Any] = {
        "vocab_size": d_vocab,
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "intermediate_size": d_mlp,
        "max_position_embeddings": n_ctx,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    neox: dict[str, Any] = {"rotary_pct": 0.25}
    kv: dict[str, Any] = {"num_key_value_heads": n_kv_heads or max(1, n_heads // 2)}
    builders = {
        "pythia": lambda: (
            tf.GPTNeoXConfig(**common, **neox),
            tf.GPTNeoXForCausalLM,
        ),
        "llama": lambda: (tf.LlamaConfig(**common, **kv), tf.LlamaForCausalLM),
        "qwen2": lambda: (tf.Qwen2Config(**common, **kv), tf.Qwen2ForCausalLM),
        "gemma2": lambda: (
            tf.Gemma2Config(**common, **kv, head_dim=d_model // n_heads, sliding_window=n_ctx),
            tf.Gemma2ForCausalLM,
        ),
    }
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    config, cls = builders[family]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:  # norms keep their init (Gemma's are offsets from 1)
                    continue
                param.copy_(torch.randn(param.shape, generator=generator) * init_std)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory
