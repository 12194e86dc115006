"""Loader options: model spec files, LayerNorm-free checkpoints, and models known by config alone.

A **model spec file** (``*.yaml``, wherever a model source is accepted: ``model:`` in a
hypothesis file, ``--model``, :func:`scrub.load_model`) names a checkpoint and how to load it::

    path: ../checkpoints/gpt2_noLN     # a local HF directory or a hub name; relative to this file
    layernorm: identity                # keep (default) or identity

The same two keys may be written inline as a file's ``model:`` mapping (``model: {path: ...,
layernorm: identity}``, :class:`scrub._schema.ModelRefSpec`, loaded by
:func:`scrub._bind.load_model_field`), with ``path`` relative to that file.

**LayerNorm-free checkpoints** (``layernorm: identity``). A GPT-2 whose LayerNorms were
fine-tuned away (``gpt2_noLN``, Heimersheim 2024; the LN-free GPT-2s of Baroni et al. 2025) is
stored as a plain ``GPT2LMHeadModel`` whose LayerNorms are *disabled* by scaling: epsilon
``E`` huge (1e12, or 2^40) and weight ``sqrt(E) * g``, so ``LN(x) = (x - mean x) * g + b`` up to
a relative error of ``var(x) / 2E``. scrub loads such a checkpoint with every LayerNorm an exact
identity: the weights are divided by ``sqrt(E)`` (so ``g`` and ``b`` are folded into the next
matrices by TransformerLens's compatibility mode, which also centres every writing weight, so
the residual stream always has mean zero and the centring is exact too), then each
normalisation is replaced by ``nn.Identity`` and the config's ``normalization_type`` set to
``None``. The residual stream is then exactly linear from the embeddings to the logits.

**Config-only models** (``scrub check`` only): a hub name whose weights are not in the Hugging
Face cache is checked against its config (shape and component names), from the cache when the
config is there, else from transformers' defaults for the names in :data:`KNOWN_CONFIGS`
(``GPT2Config()`` is GPT-2 small). Such a model has no weights: anything that would run it
raises an error that says how to get them.

**Load-time swaps** (every model, verified on a probe when loaded): HF's Python ``gelu_new``
becomes torch's tanh GELU (:func:`torch_gelu`), and each norm skips the work of its unhooked
``hook_scale`` / ``hook_normalized`` (:func:`fused_norms`; the bridge's own path runs whenever
something hooks them).

Pitfalls: a checkpoint whose LayerNorms are *not* disabled (epsilon 1e-5) is refused under
``layernorm: identity`` (dropping a working LayerNorm changes every output); and the loader
measures that the identity model reproduces the checkpoint's own outputs before returning it.
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any, Literal

import torch

from scrub._errors import HypothesisError

__all__ = [
    "KNOWN_CONFIGS",
    "LAYERNORM_OPTIONS",
    "ModelSpecFile",
    "fused_norms",
    "hf_config_for",
    "load_lnfree_hf_model",
    "make_norms_identity",
    "read_model_spec",
    "torch_gelu",
]

LayerNormOption = Literal["keep", "identity"]
LAYERNORM_OPTIONS: tuple[LayerNormOption, ...] = ("keep", "identity")

MIN_DISABLED_EPS = 1e8
"""The smallest LayerNorm epsilon taken as "disabled" (gpt2_noLN uses 1e12; a live one 1e-5)."""

KNOWN_CONFIGS: dict[str, str] = {"gpt2": "GPT-2 small", "openai-community/gpt2": "GPT-2 small"}
"""Hub names whose config scrub knows without the hub (transformers' ``GPT2Config()``)."""

WEIGHTS_HINT = (
    'to get the weights, run python -c "from transformers import AutoModelForCausalLM as M; '
    "M.from_pretrained('{name}')\" once on a machine with network access (it fills the "
    "Hugging Face cache), or save them there with save_pretrained(DIR) and pass --model DIR"
)


class ModelSpecFile:
    """A parsed model spec file: where the checkpoint is and how to load it.

    Attributes:
        file: the spec file.
        path: the checkpoint (local directory, relative to the spec file, or hub name).
        layernorm: ``keep`` or ``identity``.
    """

    KEYS = ("path", "layernorm")

    def __init__(self, file: Path, path: str, layernorm: LayerNormOption) -> None:
        self.file, self.path, self.layernorm = file, path, layernorm

    def __repr__(self) -> str:
        return (
            f"ModelSpecFile({str(self.file)!r}, path={self.path!r}, layernorm={self.layernorm!r})"
        )


def read_model_spec(file: Path) -> ModelSpecFile:
    """Read and check a model spec file (see the module docstring).

    Raises:
        HypothesisError: naming the file and the key.
    """
    from scrub._yaml import read_yaml

    data = read_yaml(file, what="model spec file")
    where = str(file)
    if not isinstance(data, dict):
        raise HypothesisError(
            "a model spec file is a mapping",
            file=where,
            hint="write 'path: DIR' and optionally 'layernorm: identity'",
        )
    for key in data:
        if key not in ModelSpecFile.KEYS:
            raise HypothesisError(
                f"unknown key {key!r}",
                file=where,
                key=(key,),
                hint=f"allowed keys here: {', '.join(ModelSpecFile.KEYS)}",
            )
    path = data.get("path")
    if not isinstance(path, str) or not path:
        raise HypothesisError(
            "missing required key 'path'" if path is None else f"'path' is {path!r}, not a path",
            file=where,
            key=("path",),
            hint="write 'path: DIR', a local Hugging Face directory (relative to this file) or a "
            "hub name",
        )
    layernorm = data.get("layernorm", "keep")
    if layernorm not in LAYERNORM_OPTIONS:
        raise HypothesisError(
            f"invalid value {layernorm!r}",
            file=where,
            key=("layernorm",),
            hint=f"use one of: {', '.join(LAYERNORM_OPTIONS)} (identity: for checkpoints whose "
            "LayerNorms were disabled, like gpt2_noLN)",
        )
    return ModelSpecFile(file, path, layernorm)


def _layernorms(model: torch.nn.Module) -> list[tuple[str, torch.nn.LayerNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]


def load_lnfree_hf_model(path: str, *, source: str) -> tuple[Any, Any]:
    """Load a GPT-2 checkpoint with disabled LayerNorms, rescaled for identity normalisation.

    Returns:
        The Hugging Face model with each LayerNorm's weight divided by ``sqrt(eps)`` (its affine
        part ``g``, ``b``, for TransformerLens to fold), and a function that returns the
        checkpoint's own log-probabilities on given tokens, computed before rescaling.

    Raises:
        HypothesisError: not a GPT-2 checkpoint, or a LayerNorm that is not disabled.
        OSError, ValueError: what ``from_pretrained`` raises for a path it cannot load.
    """
    from transformers import AutoConfig, GPT2LMHeadModel

    config = AutoConfig.from_pretrained(path)
    if config.model_type != "gpt2":
        raise HypothesisError(
            f"layernorm: identity is for LayerNorm-free GPT-2 checkpoints, but model {source!r} "
            f"is a {config.model_type!r} model",
            key=("layernorm",),
            hint="remove 'layernorm: identity', or point 'path' at a GPT-2 checkpoint whose "
            "LayerNorms were disabled (like gpt2_noLN)",
        )
    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    norms = _layernorms(model)
    live = [(n, m.eps) for n, m in norms if m.eps < MIN_DISABLED_EPS]
    if live:
        name, eps = live[0]
        raise HypothesisError(
            f"model {source!r} has working LayerNorms ({name} has epsilon {eps:g}; "
            f"{len(live)} of {len(norms)} below {MIN_DISABLED_EPS:g}), so replacing them by "
            "identities would change its outputs",
            key=("layernorm",),
            hint="use 'layernorm: keep' for this checkpoint; 'identity' is for checkpoints whose "
            "LayerNorms were disabled by a huge epsilon and scaled weights (like gpt2_noLN)",
        )
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(
        0, config.vocab_size, (2, min(16, config.n_positions)), generator=generator
    )
    with torch.inference_mode():
        expected = model(probe).logits.log_softmax(-1)
        for _, norm in norms:
            norm.weight.div_(math.sqrt(norm.eps))
    return model, (probe, expected)


def make_norms_identity(bridge: Any, *, source: str, check: tuple[Any, Any]) -> None:
    """Replace every normalisation of a compatibility-mode bridge by an exact identity.

    Args:
        bridge: a TransformerBridge after ``enable_compatibility_mode`` (LayerNorm weights
            folded, writing weights centred).
        source: the model's name, for messages.
        check: probe tokens and the checkpoint's own log-probabilities on them.

    Raises:
        HypothesisError: the identity model does not reproduce the checkpoint (its LayerNorms
            still normalised something), naming the largest difference.
    """
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge,
    )

    norms = [m for m in bridge.modules() if isinstance(m, NormalizationBridge)]
    assert norms, "a GPT-2 bridge has normalisation components"
    for norm in norms:
        norm.set_original_component(torch.nn.Identity())
        norm.use_native_layernorm_autograd = True  # TransformerBridge's identity-slot path
    bridge.cfg.normalization_type = None
    probe, expected = check
    with torch.inference_mode():
        got = bridge(probe.to(bridge.W_O.device)).log_softmax(-1).cpu()
    worst = float((got - expected).abs().max())
    if not worst <= 1e-4:
        raise HypothesisError(
            f"model {source!r} with its LayerNorms replaced by identities differs from the "
            f"checkpoint by up to {worst:.3g} in log-probability, so its LayerNorms were not "
            "disabled",
            key=("layernorm",),
            hint="use 'layernorm: keep' for this checkpoint",
        )


def hf_config_for(source: str) -> tuple[Any, str] | None:
    """The config of hub model ``source`` without its weights, and where it came from.

    From the Hugging Face cache if the config is there, else transformers' defaults for the
    names in :data:`KNOWN_CONFIGS`; ``None`` when neither knows it.
    """
    from transformers import AutoConfig, GPT2Config

    try:
        return AutoConfig.from_pretrained(source, local_files_only=True), "its cached config"
    except (OSError, ValueError):
        pass
    if source in KNOWN_CONFIGS:
        return GPT2Config(), f"{KNOWN_CONFIGS[source]}'s config (transformers' GPT2Config())"
    return None


def torch_gelu(bridge: Any) -> None:
    """Swap Hugging Face's Python ``gelu_new`` for torch's fused tanh GELU (same formula).

    HF's ``NewGELUActivation`` spells the tanh approximation out in Python tensor ops; torch's
    ``gelu(approximate="tanh")`` computes it in one kernel, about 3x faster. The swap is made
    only if the two agree within 1e-6 on a probe spanning the activation's range.
    """
    from transformers.activations import NewGELUActivation

    probe = torch.linspace(-12, 12, 4097)
    fused = torch.nn.GELU(approximate="tanh")
    with torch.no_grad():
        if (fused(probe) - NewGELUActivation()(probe)).abs().max() > 1e-6:
            return
    for module in list(bridge.original_model.modules()):
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, torch.nn.GELU(approximate="tanh").train(child.training))


FUSED_NORM_TOLERANCE = 1e-5
"""Most a fused norm may differ from the bridge's Python one on the load-time probe, relative to
the largest output (float32 rounding of the same formula is ~1e-7)."""


def fused_norms(bridge: Any) -> int:
    """Skip the work of ``hook_scale`` / ``hook_normalized`` while nothing hooks them.

    TransformerBridge's ``NormalizationBridge`` computes every LayerNorm / RMSNorm so that its
    ``hook_scale`` and ``hook_normalized`` can fire: on its Python path (GPT-2) it spells the
    norm out in about six tensor ops; on its native path (GPT-NeoX, Llama, Gemma) it computes
    the hooks' values and then runs the wrapped Hugging Face module anyway. Each norm gets, on
    the path it takes, a forward that does only the needed work while **no hook of any kind**
    is on its ``hook_scale`` / ``hook_normalized`` (TransformerLens hooks,
    ``register_forward_hook``, global module hooks) and its wrapped module is the one checked:

    - Python path: ``F.layer_norm`` / ``F.rms_norm``, the same formula in one kernel (3-10x
      faster; same upcast, epsilon, ``1 + weight`` offset, bias and cast back), kept only if it
      agrees within :data:`FUSED_NORM_TOLERANCE` on a probe with that norm's own weights;
    - native path: the wrapped module alone, which is what the native path returns unhooked
      (kept only if bit-identical on the probe).

    Otherwise (a hook is on, or the module was replaced) the bridge's own method runs, so a
    user hooking them gets them, edits included.

    Returns:
        How many norms were swapped.
    """
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge as Norm,
    )

    swapped = 0
    for norm in bridge.modules():
        inner = norm._modules.get("_original_component") if isinstance(norm, Norm) else None
        if inner is None or isinstance(inner, torch.nn.Identity):
            continue
        norm._scrub_checked = inner
        done = False
        if _plain(norm, "_python_norm_forward", "_apply_weight_and_bias") and _agrees(
            norm, Norm._python_norm_forward, _fused_norm, exact=False
        ):
            norm._python_norm_forward = types.MethodType(_python_or_fused, norm)
            done = True
        if _plain(norm, "_hf_autograd_forward_with_hooks") and _agrees(
            norm, Norm._hf_autograd_forward_with_hooks, _inner_norm, exact=True
        ):
            norm._hf_autograd_forward_with_hooks = types.MethodType(_native_or_inner, norm)
            done = True
        swapped += done
    return swapped


def _plain(norm: Any, *methods: str) -> bool:
    """``norm``'s class computes these as ``NormalizationBridge`` does (no subclass override)."""
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge as Norm,
    )

    return all(getattr(type(norm), m) is getattr(Norm, m) for m in methods)


def _unhooked(norm: Any) -> bool:
    """No hook would see ``hook_scale`` / ``hook_normalized``, and the module is the checked one."""
    from torch.nn.modules import module as torch_module

    if norm._modules.get("_original_component") is not norm._scrub_checked:
        return False
    for point in (norm.hook_scale, norm.hook_normalized):
        if point.fwd_hooks or point.bwd_hooks or point._forward_hooks or point._forward_pre_hooks:
            return False
        if point._backward_hooks or point._backward_pre_hooks:
            return False
    return not any(
        getattr(torch_module, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                     "_global_backward_hooks", "_global_backward_pre_hooks")
    )  # fmt: skip


def _python_or_fused(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge as Norm,
    )

    if _unhooked(self):
        return _fused_norm(self, hidden_states)
    return Norm._python_norm_forward(self, hidden_states)


def _native_or_inner(self: Any, x: torch.Tensor) -> torch.Tensor:
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge as Norm,
    )

    if _unhooked(self):
        return _inner_norm(self, x)
    return Norm._hf_autograd_forward_with_hooks(self, x)


def _inner_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """What the native path returns when no hook edits: the wrapped module, in x's dtype."""
    result = norm.original_component(x)
    return result if result.dtype == x.dtype else result.to(x.dtype)


def _fused_norm(norm: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """The Python path's formula in one kernel."""
    input_dtype = hidden_states.dtype
    if input_dtype not in (torch.float32, torch.float64):
        hidden_states = hidden_states.float()
    compute = hidden_states.dtype
    eps = getattr(norm.config, "eps", 1e-05)
    inner = norm.original_component
    weight = inner.weight.to(compute)
    if norm.uses_weight_offset:
        weight = 1.0 + weight
    shape = (hidden_states.shape[-1],)
    if norm.uses_rms_norm:
        out = torch.nn.functional.rms_norm(hidden_states, shape, weight, eps)
    else:
        bias = getattr(inner, "bias", None)
        bias = None if bias is None else bias.to(compute)
        out = torch.nn.functional.layer_norm(hidden_states, shape, weight, bias, eps)
    return out.to(input_dtype)


def _agrees(norm: Any, original: Any, replacement: Any, *, exact: bool) -> bool:
    """``replacement`` matches ``original`` on a probe with this norm's weights (scales 1e-3
    to 1e3, offsets up to 4 standard deviations)."""
    weight = getattr(norm.original_component, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return False
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(4, 9, weight.shape[0], generator=generator)
    probe = (probe + torch.linspace(-4, 4, 9)[:, None]) * torch.logspace(-3, 3, 4)[:, None, None]
    probe = probe.to(device=weight.device, dtype=weight.dtype)
    try:
        with torch.inference_mode():
            expected = original(norm, probe)
            got = replacement(norm, probe)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        return False
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return False
    if exact:
        return torch.equal(got, expected)
    scale = max(1.0, float(expected.abs().max()))
    return bool((got - expected).abs().max() <= FUSED_NORM_TOLERANCE * scale)
