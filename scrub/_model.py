"""Models: loading through TransformerLens 4.x, and the hooks scrub needs.

:func:`load_model` boots a ``TransformerBridge`` from a shipped model name (``induction``), a
local Hugging Face directory, or a hub name (``gpt2``, for users with the weights in their
cache), and configures it the way scrub needs it:

- compatibility mode (LayerNorm folded into the following weights, writing weights centred):
  log-probabilities are unchanged, logits shift by a per-position constant;
- split q/k/v inputs, so each head reads the residual stream through its own ``q``, ``k`` and
  ``v`` input (``blocks.L.hook_q_input``, shape ``batch pos head d_model``), and a hook on the MLP
  input (``blocks.L.hook_mlp_in``).

:class:`ScrubModel` runs forward passes with hooks that patch component outputs, set or read
component input channels, and read component outputs. Hooks exist only inside the pass.
Where a source points (shipped, local, hub) is :mod:`scrub._model_source`; the hook functions
themselves are :mod:`scrub._hooks` (both re-exported here).

Pitfall: head outputs are handled through ``hook_z`` (``batch pos head d_head``), and a head's
residual contribution is ``z @ W_O[layer, head]``. We never turn on per-head results for the whole
model (``use_attn_result``), which multiplies memory and time on GPT-2 small.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub._architectures import Architecture, boot, check_architecture
from scrub._components import Channel, Component, ModelShape
from scrub._errors import HypothesisError, ScrubWarning
from scrub._hooks import (
    OutputPatch,
    _chain,
    _patch_hook,
    _read_input_hook,
    _read_output_hook,
    _set_input_hook,
    select,
    split_qkv_inputs,
    write,
    write_at,
)
from scrub._model_source import (
    SHIPPED_MODELS,
    architecture_name,
    load_error,
    model_spec_file,
    resolve,
    shipped_names,
    spec_file_errors,
)
from scrub._model_variants import (
    WEIGHTS_HINT,
    LayerNormOption,
    fused_norms,
    hf_config_for,
    load_lnfree_hf_model,
    make_norms_identity,
    torch_gelu,
)
from scrub._precision import dtype_name, parse_device, parse_dtype, probe_precision

__all__ = [
    "SHIPPED_MODELS",
    "ConfigOnlyModel",
    "OutputPatch",
    "ScrubModel",
    "load_model",
    "select",
    "split_qkv_inputs",
    "write",
    "write_at",
]


def load_model(
    source: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    relative_to: str | Path | None = None,
    layernorm: LayerNormOption = "keep",
    allow_config_only: bool = False,
) -> ScrubModel:
    """Load a model by shipped name, local HF-format directory, hub name or model spec file.

    Args:
        source: a shipped model's name (``induction``), a local directory, a hub name, or a
            model spec file (``*.yaml``: ``path`` and ``layernorm``, see
            :mod:`scrub._model_variants`).
        device: where the weights go: ``cpu`` (default), ``cuda`` or ``cuda:N``.
        dtype: ``float32`` (default), ``bfloat16`` or ``float16`` (:mod:`scrub._precision`):
            the model is loaded, folded and checked in float32, then cast; metrics are always
            computed in float64.
        relative_to: the directory a relative local path is relative to (a hypothesis file's
            directory; default: the current directory). Shipped and hub names are unaffected.
        layernorm: ``identity`` loads a GPT-2 checkpoint whose LayerNorms were disabled
            (``gpt2_noLN``) with each LayerNorm an exact identity; ``keep`` (default) as is.
        allow_config_only: for a hub name whose weights are not in the cache, return a
            :class:`ConfigOnlyModel` (shape and names, no weights) when its config is known;
            for ``scrub check``.

    Raises:
        HypothesisError: nothing loadable under that name (with the shipped names listed), no
            such directory, or an architecture scrub cannot hook.
        PrecisionError: an unknown device or dtype, CUDA where there is none, or a model that
            does not run in ``dtype`` (float16 overflow, an op without that type).
    """
    torch_device, torch_dtype = parse_device(device), parse_dtype(dtype)
    if source.endswith((".yaml", ".yml")):
        return _load_spec_file(
            source,
            device=torch_device,
            dtype=torch_dtype,
            relative_to=relative_to,
            allow_config_only=allow_config_only,
        )
    path, kind = resolve(source, relative_to)
    check = None
    try:
        hf_model = None
        if layernorm == "identity":
            hf_model, check = load_lnfree_hf_model(path, source=source)
        bridge, arch = boot(path, device=str(torch_device), hf_model=hf_model)
    except HypothesisError:  # the architecture's own error, already clear
        raise
    except (OSError, ValueError) as exc:
        if kind == "hub" and allow_config_only and (known := hf_config_for(source)) is not None:
            return ConfigOnlyModel(known[0], source=source, origin=known[1], reason=exc)
        raise load_error(source, path, kind, exc, relative_to) from exc
    if bridge.cfg.d_mlp == bridge.cfg.d_model:
        warnings.warn(
            f"model {source!r} has an MLP as wide as its residual stream (d_mlp = d_model = "
            f"{bridge.cfg.d_model}); TransformerBridge's compatibility mode (transformer-lens "
            "4.3) has been seen to fold the MLP's LayerNorm wrongly for such models, so its "
            "log-probabilities may differ from the original model's. Check them against the "
            "Hugging Face model, or use d_mlp != d_model",
            ScrubWarning,
            stacklevel=2,
        )
    try:
        bridge.enable_compatibility_mode(disable_warnings=True)
        bridge.eval()
        if check is not None:
            make_norms_identity(bridge, source=source, check=check)
        check_architecture(bridge, arch, source=source)
    except NotImplementedError as exc:
        raise HypothesisError(
            f"cannot scrub model {source!r}: its architecture ({architecture_name(bridge, path)}) "
            f"does not give scrub the hooks it needs ({exc})",
            hint="scrub supports GPT-2, GPT-NeoX/Pythia, Llama, Qwen2 and Gemma-2 models and "
            f"the shipped models: {', '.join(shipped_names())}",
        ) from None
    torch_gelu(bridge)  # after eval(): the new modules take the old ones' mode
    fused_norms(bridge)  # after the identity swap: identity norms are not on the Python path
    model = ScrubModel(
        bridge, source=source, kind=kind, path=path, architecture=arch, layernorm=layernorm
    )
    if torch_dtype != torch.float32:
        model.cast(torch_dtype)
        probe_precision(model)
    return model


def _load_spec_file(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    relative_to: str | Path | None,
    allow_config_only: bool,
) -> ScrubModel:
    """Load the checkpoint a model spec file names, with its options; errors name the file."""
    spec = model_spec_file(source, relative_to)
    with spec_file_errors(spec.file):
        model = load_model(
            spec.path,
            device=device,
            dtype=dtype,
            relative_to=spec.file.parent,
            layernorm=spec.layernorm,
            allow_config_only=allow_config_only,
        )
    model.source = source
    return model


class ScrubModel:
    """A TransformerBridge configured for scrubbing, with the hooks scrub needs.

    Attributes:
        bridge: the underlying ``TransformerBridge``.
        shape: layers, heads, context and vocabulary sizes.
        source: what it was loaded from (name or path), ``kind``: shipped / local / hub.
        architecture: the family's facts (parallel blocks, RoPE, per-head outputs).
    """

    def __init__(
        self,
        bridge,
        *,
        source: str,
        kind: str,
        path: str,
        architecture: Architecture | None = None,
        layernorm: LayerNormOption = "keep",
    ) -> None:
        self.bridge = bridge
        self.architecture = architecture or Architecture("GPT-2")
        self.source = source
        self.kind = kind
        self.path = path
        self.layernorm = layernorm
        """``identity``: the checkpoint's (disabled) LayerNorms were replaced by identities."""
        cfg = bridge.cfg
        self.shape = _shape(
            source,
            self.architecture,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_ctx=cfg.n_ctx,
            d_vocab=cfg.d_vocab,
            n_kv_heads=getattr(cfg, "n_key_value_heads", None),
        )
        self.W_O: Float[Tensor, "layer head d_head d_model"] = bridge.W_O.detach()
        self.device: torch.device = self.W_O.device
        self.dtype: torch.dtype = self.W_O.dtype
        """The weights' and activations' floating-point type (float32 unless asked)."""
        self.memo: dict[str, Any] = {}
        """What engines work out once per model (e.g. whether their kernels reproduce it)."""

    def checked_once(self, key: str, check: Callable[[ScrubModel], Any]) -> Any:
        """``check(self)``, computed on the first call for ``key`` and remembered in
        :attr:`memo` (cleared when the model is cast to another dtype)."""
        if key not in self.memo:
            self.memo[key] = check(self)
        return self.memo[key]

    @property
    def precision(self) -> dict[str, str]:
        """Where and in which type the model runs, as results record it."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype)}

    def cast(self, dtype: torch.dtype) -> None:
        """Cast the weights to ``dtype`` in place (rotary frequencies stay in float32).

        What was computed from the weights is forgotten (the engines' kernels, whose check
        runs again), but for the weights' hash; an :class:`~scrub.engine.ActivationCache`
        notices the new dtype and starts afresh.
        """
        if dtype == self.dtype:
            return
        bridge = self.bridge
        with torch.inference_mode(False), torch.no_grad():  # parameters, not inference tensors
            frequencies = {  # HF computes rotary angles from float32 frequencies in any dtype
                name: buffer.clone()
                for name, buffer in bridge.original_model.named_buffers()
                if name.rsplit(".", 1)[-1] in ("inv_freq", "original_inv_freq")
            }
            bridge.to(dtype, print_details=False)
            for name, value in frequencies.items():
                owner, _, attr = name.rpartition(".")
                setattr(bridge.original_model.get_submodule(owner), attr, value)
            self.W_O = bridge.W_O.detach()
        self.dtype = dtype
        for key in [k for k in self.memo if not k.startswith("sha256")]:
            del self.memo[key]

    @contextlib.contextmanager
    def computing_in(self, dtype: torch.dtype) -> Iterator[None]:
        """Run in ``dtype`` inside the block, and in the model's own dtype again after it.

        For checks in float32 of a low-precision model: widening bfloat16 or float16 weights
        to float32 and back is exact, so the model afterwards is bit-for-bit what it was.
        """
        own, memo = self.dtype, dict(self.memo)
        if dtype == own:
            yield
            return
        self.cast(dtype)
        try:
            yield
        finally:
            self.cast(own)
            self.memo.update(memo)

    def __repr__(self) -> str:
        s = self.shape
        extra = ", layernorm='identity'" if self.layernorm == "identity" else ""
        if self.dtype != torch.float32:
            extra += f", dtype={dtype_name(self.dtype)!r}"
        if self.device.type != "cpu":
            extra += f", device={str(self.device)!r}"
        return (
            f"{type(self).__name__}({self.source!r}, layers={s.n_layers}, heads={s.n_heads}, "
            f"n_ctx={s.n_ctx}, vocab={s.d_vocab}{extra})"
        )

    def checkpoint_sha256(self) -> str | None:
        """Hash of the weights file for shipped and local models (provenance).

        Computed once per file version: remembered with the file's size and modification
        time, and recomputed when either changes.
        """
        weights = Path(self.path) / "model.safetensors"
        if self.kind == "hub" or not weights.exists():
            return None
        stat = weights.stat()
        key = f"sha256 {stat.st_size} {stat.st_mtime_ns}"
        if key not in self.memo:
            digest = hashlib.sha256()
            with weights.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self.memo[key] = digest.hexdigest()
        return self.memo[key]

    # -- hook points --------------------------------------------------------------------------
    @staticmethod
    def output_hook(comp: Component) -> str:
        if comp.kind == "tok_embed":
            return "hook_embed"
        if comp.kind == "pos_embed":
            return "hook_pos_embed"
        if comp.kind == "head":
            return f"blocks.{comp.layer}.attn.hook_z"
        if comp.kind == "mlp":
            return f"blocks.{comp.layer}.hook_mlp_out"
        raise ValueError(f"{comp.name} has no output inside the model")

    @staticmethod
    def input_hook(comp: Component, channel: Channel) -> str:
        if comp.kind == "head":
            return f"blocks.{comp.layer}.hook_{channel}_input"
        if comp.kind == "mlp":
            return f"blocks.{comp.layer}.hook_mlp_in"
        if comp.kind == "logits":
            return "ln_final.hook_in"
        raise ValueError(f"{comp.name} reads no input channel")

    def input_slot(self, comp: Component, channel: Channel) -> Component:
        """Where ``comp``'s ``channel`` input sits in its hooked tensor.

        Under grouped-query attention the ``k`` and ``v`` inputs are per key/value head: head H
        reads slot ``H // (n_heads / n_kv_heads)``, shared by its group (see
        :mod:`scrub._architectures` for what a splice there means).
        """
        if comp.kind == "head" and channel in ("k", "v") and self.shape.kv_group > 1:
            return Component("head", comp.layer, comp.head // self.shape.kv_group)
        return comp

    def output_width(self, comp: Component) -> int:
        """Width of a component's raw output: ``d_head`` for heads (``z``), else ``d_model``."""
        cfg = self.bridge.cfg
        return cfg.d_head if comp.kind == "head" else cfg.d_model

    def stop_layer(self, comp: Component) -> int:
        """The ``stop_at_layer`` after which ``comp``'s output and inputs are known.

        Embeddings: 0; a head or MLP of layer L: L + 1; the logits: ``n_layers``.
        """
        if comp.kind in ("tok_embed", "pos_embed"):
            return 0
        if comp.kind == "logits":
            return self.shape.n_layers
        return comp.layer + 1

    def contribution(
        self, comp: Component, output: Float[Tensor, "batch pos d"]
    ) -> Float[Tensor, "batch pos d_model"]:
        """A component's raw output (``z`` for heads) as its residual-stream contribution."""
        if comp.kind == "head":
            return output @ self.W_O[comp.layer, comp.head]
        return output

    def unembed(self, resid: Float[Tensor, "batch pos d_model"]) -> Tensor:
        """Logits from a final residual stream: final norm, unembedding and the architecture's
        output transform (Gemma-2's logit soft cap), as the model's own forward pass does."""
        bridge = self.bridge
        logits = bridge.unembed(bridge.ln_final(resid))
        return bridge.adapter.apply_output_logits_transform(logits)

    # -- forward passes -----------------------------------------------------------------------
    @torch.inference_mode()
    def run(
        self,
        tokens: Int[Tensor, "batch pos"],
        *,
        patches: Iterable[OutputPatch] = (),
        set_inputs: Mapping[tuple[Component, Channel], Tensor] | None = None,
        read_inputs: Iterable[tuple[Component, Channel]] = (),
        read_outputs: Iterable[Component] = (),
        stop_at_layer: int | None = None,
    ) -> tuple[Float[Tensor, "batch pos vocab"], dict, dict]:
        """One forward pass with patches, set inputs and reads.

        Args:
            tokens: the input tokens.
            patches: activation patches of component outputs.
            set_inputs: (component, channel) → ``(batch, pos, d_model)`` residual input that
                replaces what the component would read through that channel.
            read_inputs: (component, channel) pairs whose input to record.
            read_outputs: components whose raw outputs (after patches) to record.
            stop_at_layer: stop before this block and return the residual stream instead of
                the logits (``None`` or ``n_layers``: run the whole model).

        Returns:
            logits (or the residual stream when stopped early), the recorded inputs and the
            recorded outputs.
        """
        set_inputs = set_inputs or {}
        hooks: dict[str, list[Callable]] = {}
        inputs: dict[tuple[Component, Channel], Tensor] = {}
        outputs: dict[Component, Tensor] = {}

        def add(name: str, fn: Callable) -> None:
            hooks.setdefault(name, []).append(fn)

        for patch in patches:
            add(self.output_hook(patch.component), _patch_hook(patch))
        for comp in read_outputs:
            add(self.output_hook(comp), _read_output_hook(comp, outputs))
        for (comp, ch), value in set_inputs.items():
            add(self.input_hook(comp, ch), _set_input_hook(self.input_slot(comp, ch), value))
        for comp, ch in read_inputs:
            add(
                self.input_hook(comp, ch),
                _read_input_hook(comp, ch, inputs, self.input_slot(comp, ch)),
            )

        fwd_hooks = [(name, _chain(fns)) for name, fns in hooks.items()]
        per_head = any(c.kind == "head" for c, _ in [*set_inputs, *read_inputs])
        with split_qkv_inputs(self.bridge, per_head), self.bridge.hooks(fwd_hooks=fwd_hooks):
            if stop_at_layer is None or stop_at_layer >= self.shape.n_layers:
                logits = self.bridge(tokens.to(self.device))
            else:
                logits = self.bridge(tokens.to(self.device), stop_at_layer=stop_at_layer)
        return logits, inputs, outputs


def _shape(
    source: str,
    arch: Architecture,
    *,
    n_layers: int,
    n_heads: int,
    n_ctx: int,
    d_vocab: int,
    n_kv_heads: int | None,
) -> ModelShape:
    return ModelShape(
        name=f"model {source!r}",
        n_layers=n_layers,
        n_heads=n_heads,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        n_kv_heads=n_kv_heads or n_heads,
        parallel=arch.parallel,
        pos_embed=not arch.rotary,
        head_outputs=arch.head_outputs,
        architecture=arch.name,
    )


class ConfigOnlyModel(ScrubModel):
    """A hub model known from its config alone: shape and names for ``scrub check``, no weights.

    Binding a hypothesis to it checks everything the model's shape determines (component
    names, context length, vocabulary); anything that would run it (``bridge``, ``run``)
    raises an error that says how to get the weights, so no score is ever computed from it.

    Attributes:
        origin: where the config came from (the cache, or transformers' defaults).
    """

    def __init__(
        self, config: Any, *, source: str, origin: str, reason: Exception | None = None
    ) -> None:
        from scrub._architectures import ARCHITECTURES

        names = list(getattr(config, "architectures", None) or [])
        names.append({"gpt2": "GPT2LMHeadModel"}.get(config.model_type, ""))
        arch = next((ARCHITECTURES[n] for n in names if n in ARCHITECTURES), None)
        if arch is None:
            raise HypothesisError(
                f"model {source!r} is a {config.model_type!r} model, which scrub cannot treeify",
                hint="supported architectures: "
                + ", ".join(f"{a.name} ({k})" for k, a in ARCHITECTURES.items()),
            )
        self.architecture, self.source, self.kind, self.path = arch, source, "config", source
        self.layernorm = "keep"
        self.origin = origin
        self.weights_missing = reason is not None
        """Whether the weights are missing (else they were just not loaded, for a check)."""
        self._reason = (
            None
            if reason is None
            else str(reason).splitlines()[0]
            if str(reason)
            else type(reason).__name__
        )
        self.shape = _shape(
            source,
            arch,
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            n_ctx=config.max_position_embeddings,
            d_vocab=config.vocab_size,
            n_kv_heads=getattr(config, "num_key_value_heads", None),
        )
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.memo = {}

    def no_weights(self) -> HypothesisError:
        """The error for anything that needs the weights."""
        if self._reason is None:
            return HypothesisError(
                f"model {self.source!r} was loaded from {self.origin} only, for checking shapes "
                "and names, so it cannot be run",
                hint=f"load it with its weights: scrub.load_model({self.source!r})",
            )
        return HypothesisError(
            f"model {self.source!r} was loaded from {self.origin} only, for checking shapes and "
            f"names: its weights are not in the Hugging Face cache ({self._reason}), so it "
            "cannot be run",
            hint=WEIGHTS_HINT.format(name=self.source),
        )

    @property  # type: ignore[override]
    def bridge(self) -> Any:
        raise self.no_weights()

    @bridge.setter
    def bridge(self, value: Any) -> None:
        raise AttributeError("a ConfigOnlyModel has no bridge")

    @property  # type: ignore[override]
    def W_O(self) -> Tensor:
        raise self.no_weights()

    @W_O.setter
    def W_O(self, value: Tensor) -> None:
        raise AttributeError("a ConfigOnlyModel has no weights")

    def checkpoint_sha256(self) -> str | None:
        return None
