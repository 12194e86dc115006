"""LayerNorm / RMSNorm without the work of unhooked ``hook_scale`` / ``hook_normalized``.

- Every norm of GPT-2, Pythia, Llama and Gemma-2 shapes is swapped at load, and the model's
  logits equal the bridge's own norms' (the Python path within rounding, the native path bit
  for bit).
- A hook on ``hook_scale`` / ``hook_normalized`` (TransformerLens's or a raw torch hook) fires,
  and its edits change the output as on the bridge's own path.
- A replacement that disagrees on the load-time probe is not installed.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformer_lens.model_bridge.generalized_components.normalization import (
    NormalizationBridge,
)

import scrub
from scrub import _model_variants
from scrub.testing import save_random_model

SWAPPED = ("_python_norm_forward", "_hf_autograd_forward_with_hooks")


def norms(model) -> list:
    return [m for m in model.bridge.modules() if isinstance(m, NormalizationBridge)]


@contextlib.contextmanager
def bridge_norms(model):
    """The bridge's own norm methods while inside (the swap undone, then redone)."""
    saved = [(n, k, n.__dict__.pop(k)) for n in norms(model) for k in SWAPPED if k in n.__dict__]
    try:
        yield
    finally:
        for norm, key, method in saved:
            setattr(norm, key, method)


@pytest.fixture(scope="module", params=["gpt2", "pythia", "llama", "gemma2"])
def family_model(request, tmp_path_factory):
    path = save_random_model(tmp_path_factory.mktemp(request.param), request.param, seed=4)
    return request.param, scrub.load_model(str(path))


def tokens(model, rows: int = 3, seq: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, model.shape.d_vocab, (rows, seq), generator=generator)


def test_every_norm_is_swapped_and_logits_match_the_bridges_norms(family_model):
    family, model = family_model
    found = norms(model)
    assert found and all(any(k in n.__dict__ for k in SWAPPED) for n in found), family
    native = [n.use_native_layernorm_autograd for n in found]
    x = tokens(model)
    with torch.inference_mode():
        fast = model.bridge(x)
        with bridge_norms(model):
            slow = model.bridge(x)
    if all(native):  # the native path unhooked is the wrapped module: nothing changes
        assert torch.equal(fast, slow), family
    else:
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:A forward hook edited:UserWarning")  # TL says so
def test_transformer_lens_hooks_on_scale_and_normalized_fire_and_edit(family_model):
    _, model = family_model
    x = tokens(model)
    names = ["ln_final.hook_scale", "ln_final.hook_normalized"]

    def run(with_bridge_norms: bool):
        seen: dict[str, torch.Tensor] = {}

        def double(t, hook=None):
            seen[hook.name] = t.clone()
            return t * 2 if hook.name.endswith("hook_scale") else t

        ctx = bridge_norms(model) if with_bridge_norms else contextlib.nullcontext()
        with (
            torch.inference_mode(),
            ctx,
            model.bridge.hooks(fwd_hooks=[(n, double) for n in names]),
        ):
            out = model.bridge(x)
        return seen, out

    seen, edited = run(False)
    seen_ref, edited_ref = run(True)
    assert set(seen) == set(names)
    for name in names:  # the norms before ln_final are swapped in one run: rounding apart
        torch.testing.assert_close(seen[name], seen_ref[name], atol=1e-5, rtol=0)
    torch.testing.assert_close(edited, edited_ref, atol=1e-5, rtol=0)
    with torch.inference_mode():
        plain = model.bridge(x)
    assert (edited - plain).abs().max() > 1e-3  # the edit reached the output


def test_a_raw_torch_hook_on_hook_normalized_fires(family_model):
    _, model = family_model
    norm = norms(model)[0]
    calls = []
    handle = norm.hook_normalized.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    try:
        with torch.inference_mode():
            model.bridge(tokens(model))
    finally:
        handle.remove()
    assert calls


def test_a_replacement_that_disagrees_is_not_installed(tiny_model_dir, monkeypatch):
    model = scrub.load_model(str(tiny_model_dir))
    with bridge_norms(model):
        monkeypatch.setattr(_model_variants, "_fused_norm", lambda norm, x: x * 1.001)
        monkeypatch.setattr(_model_variants, "_inner_norm", lambda norm, x: x * 1.001)
        assert _model_variants.fused_norms(model.bridge) == 0
        assert not any(k in n.__dict__ for n in norms(model) for k in SWAPPED)
