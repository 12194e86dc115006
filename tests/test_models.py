"""Model loading: shipped names, local directories, hub names offline, GPT-2-shaped models."""

from __future__ import annotations

import pytest

import scrub
from scrub.testing import save_random_gpt2
from tests.conftest import base_spec


@pytest.fixture(scope="module")
def gpt2_shaped(tmp_path_factory):
    """GPT-2 small's shape (12 layers x 12 heads, 50257 tokens, 1024 positions), narrow."""
    path = save_random_gpt2(
        tmp_path_factory.mktemp("gpt2"), n_layers=12, n_heads=12, d_model=96, d_vocab=50257,
        n_ctx=1024, seed=0,
    )  # fmt: skip
    return scrub.load_model(str(path))


def test_hub_name_offline_is_a_clear_error():
    with pytest.raises(scrub.HypothesisError, match="cannot load model 'gpt2'") as info:
        scrub.load_model("gpt2")
    assert "need the weights in your Hugging Face cache" in info.value.hint
    assert "shipped models: induction" in info.value.hint


def test_directory_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(scrub.HypothesisError, match=r"has no config\.json"):
        scrub.load_model(str(tmp_path))


def test_shipped_model_loads_by_name():
    model = scrub.load_model("induction")
    assert model.kind == "shipped" and model.shape.n_layers == 2
    assert model.checkpoint_sha256() is not None


def test_gpt2_shaped_model_names_the_valid_heads(gpt2_shaped, dataset):
    assert (gpt2_shaped.shape.n_layers, gpt2_shaped.shape.n_heads) == (12, 12)
    spec = base_spec(
        gpt2_shaped.path,
        nodes={
            "out": {"components": ["logits"], "inputs": [{"node": "nm"}]},
            "nm": {"components": ["a9.h9@END", "a9.h12@END"]},
        },
    )
    hyp = scrub.hypothesis_from_dict(spec)
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.bind(hyp, gpt2_shaped, dataset)
    assert "unknown component 'a9.h12'" in info.value.problem
    assert "heads 0–11" in info.value.problem
    assert info.value.key == ("nodes", "nm", "components", 1)


def test_gpt2_shaped_model_scrubs(gpt2_shaped):
    spec = base_spec(
        gpt2_shaped.path,
        nodes={
            "out": {"components": ["logits"], "inputs": [{"node": "nm", "positions": "REP"}]},
            "nm": {
                "components": ["a9.h9", "a10.h0"],
                "inputs": [{"node": "s", "channels": "q", "positions": "REP"}],
            },
            "s": {"components": ["a7.h3", "a8.h6"], "sampler": "uncond"},
        },
    )
    result = scrub.run(scrub.hypothesis_from_dict(spec), model=gpt2_shaped, n=4)
    assert len(result.per_example) == 4


def test_a_square_mlp_model_is_warned_about(tmp_path):
    from scrub.testing import save_random_gpt2

    path = save_random_gpt2(tmp_path, d_model=32, d_mlp=32)
    with pytest.warns(scrub.ScrubWarning, match="d_mlp = d_model = 32"):
        scrub.load_model(str(path))
