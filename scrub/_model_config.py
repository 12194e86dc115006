"""Models known from their config alone: shapes and names for ``scrub check``, no weights.

:func:`load_model_config` reads what binding a hypothesis and sampling its tree need (layers,
heads, key/value heads, context, vocabulary and the architecture's family) from a model's
``config.json``, so ``scrub check`` neither loads weights nor imports transformers for a shipped
or local model. A :class:`~scrub._model.ConfigOnlyModel` is the result; anything that would run
it raises an error that says how to load the weights.

Pitfall: a checkpoint whose config is valid but whose weights do not load passes a check; the
first ``scrub run`` reports it. The shapes are the loaded model's (tested for every family).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scrub._architectures import architecture_of
from scrub._model import ConfigOnlyModel
from scrub._model_source import load_error, model_spec_file, resolve, spec_file_errors
from scrub._model_variants import hf_config_for

__all__ = ["load_model_config"]


def load_model_config(source: str, *, relative_to: str | Path | None = None) -> ConfigOnlyModel:
    """A model's shape and names from its config alone, without loading its weights.

    What ``scrub check`` binds a hypothesis to: everything binding and sampling check (component
    names, context length, vocabulary, the architecture's facts) comes from the config, as it
    does when the weights are loaded. Shipped and local models are read from their
    ``config.json`` (no transformers import); hub names from the Hugging Face cache's config, or
    transformers' defaults for the names :func:`scrub._model_variants.hf_config_for` knows.

    Raises:
        HypothesisError: as :func:`load_model` for what it cannot find or cannot treeify.
    """
    if source.endswith((".yaml", ".yml")):
        spec = model_spec_file(source, relative_to)
        with spec_file_errors(spec.file):
            model = load_model_config(spec.path, relative_to=spec.file.parent)
        model.source = source
        return model
    path, kind = resolve(source, relative_to)
    if kind != "hub":
        architecture_of(path)  # refuses an architecture scrub cannot treeify, as loading does
        try:
            config = _json_config(Path(path) / "config.json")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise load_error(source, path, kind, exc, relative_to) from None
        return ConfigOnlyModel(config, source=source, origin=f"{path}/config.json")
    known = hf_config_for(source)
    if known is None:
        raise load_error(source, path, kind, OSError("no config of it in the cache"), relative_to)
    return ConfigOnlyModel(known[0], source=source, origin=known[1], reason=_hub_weights(source))


def _json_config(file: Path) -> Any:
    """A config.json's fields under transformers' common names (GPT-2 spells its own)."""
    import json
    from types import SimpleNamespace

    raw = json.loads(file.read_text())
    gpt2 = raw.get("model_type") == "gpt2"
    heads = raw["n_head" if gpt2 else "num_attention_heads"]
    return SimpleNamespace(
        architectures=raw.get("architectures"),
        model_type=raw.get("model_type"),
        num_hidden_layers=raw["n_layer" if gpt2 else "num_hidden_layers"],
        num_attention_heads=heads,
        max_position_embeddings=raw["n_positions" if gpt2 else "max_position_embeddings"],
        vocab_size=raw["vocab_size"],
        num_key_value_heads=None if gpt2 else raw.get("num_key_value_heads", heads),
    )


def _hub_weights(source: str) -> Exception | None:
    """Why hub model ``source`` cannot be run from the cache (``None``: its weights are there)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    files = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if any(isinstance(try_to_load_from_cache(source, f), str) for f in files):
        return None
    return OSError("no weights file of it in the Hugging Face cache")
