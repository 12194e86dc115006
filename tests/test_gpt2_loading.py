"""GPT-2 loading: LayerNorm-free checkpoints (``layernorm: identity``), model spec files, and
``scrub check`` on GPT-2 files without the weights (from GPT-2 small's config).

The LayerNorm-free model is a random GPT-2-shaped model with random LayerNorm gains and biases,
"disabled" the way ``gpt2_noLN`` is stored: epsilon 1e12 and weight 1e6 * gain. Nothing is
downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import scrub
from scrub import cli
from scrub._bind import load_model_for, make_dataset_for
from scrub._yaml import read_yaml
from scrub.engine import FastEngine, evaluate_reference
from scrub.engine._kernels import kernel_status
from scrub.testing import save_random_model
from tests.conftest import all_components, base_spec
from tests.random_hypotheses import random_nodes

REPO = Path(__file__).resolve().parents[1]


def disable_layernorms(src: Path, dst: Path, *, seed: int = 1) -> Path:
    """``src`` with random LayerNorm affines, disabled as gpt2_noLN is (eps 1e12, weight 1e6 g)."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(src)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                gain = 1 + 0.3 * torch.randn(module.weight.shape, generator=generator)
                module.weight.copy_(gain * 1e6)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    model.config.layer_norm_epsilon = 1e12
    model.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("noln")
    plain = save_random_model(root / "plain", "gpt2", seed=3)
    noln = disable_layernorms(plain, root / "noln")
    (root / "noln.yaml").write_text("path: noln\nlayernorm: identity\n")
    return {"root": root, "plain": plain, "noln": noln}


@pytest.fixture(scope="module")
def noln(dirs):
    return scrub.load_model(str(dirs["root"] / "noln.yaml"))


def tokens(n=3, length=12):
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(0))


def test_lnfree_checkpoint_matches_hugging_face(dirs, noln):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(dirs["noln"], attn_implementation="eager").eval()
    assert hf.transformer.h[0].ln_1.eps == 1e12
    with torch.no_grad():
        expected = hf(tokens()).logits.log_softmax(-1)
    logits, _, _ = noln.run(tokens())
    torch.testing.assert_close(logits.log_softmax(-1), expected, atol=1e-5, rtol=0)
    assert noln.layernorm == "identity"
    assert repr(noln).endswith("vocab=128, layernorm='identity')")


def test_lnfree_residual_stream_is_exactly_linear(dirs, noln):
    """Every norm is the identity, so the logits are affine in the final residual stream, even
    where a LayerNorm with epsilon 1e12 is not (a residual with variance ~1e12)."""
    bridge = noln.bridge
    x = torch.randn(2, 5, bridge.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 1e6
    for norm in (bridge.blocks[0].ln1, bridge.blocks[1].ln2, bridge.ln_final):
        assert torch.equal(norm(x), x)

    def affine_gap(model):
        a, b = x, x.flip(0)
        with torch.no_grad():
            lhs = model.unembed(a + b) - model.unembed(b)
            rhs = model.unembed(a) - model.unembed(torch.zeros_like(a))
        return float((lhs - rhs).abs().max() / rhs.abs().max())

    assert affine_gap(noln) < 1e-5
    kept = scrub.load_model(str(dirs["noln"]))  # the checkpoint's own (huge-epsilon) LayerNorms
    assert affine_gap(kept) > 1e-2


def test_lnfree_invariants_and_engines(noln):
    """full == clean on both engines; fast (its kernels, which know the identity) == reference."""
    assert kernel_status(noln) == "kernels"
    full = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": "all"}]},
        "all": {"components": all_components(2, 4), "sampler": "exact"},
    }
    hyp = scrub.hypothesis_from_dict(base_spec(noln.path, nodes=full))
    for engine in ("fast", "reference"):
        with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
            result = scrub.run(hyp, model=noln, engine=engine, n=8)
        assert result.per_example == result.per_example_clean and result.recovered == 1.0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        nodes = random_nodes(rng, noln.shape, max_depth=3)
        h = scrub.hypothesis_from_dict(base_spec(noln.path, nodes=nodes))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            tree = scrub.sample_tree(scrub.bind(h, noln, make_dataset_for(h, seed=0)), n=8, seed=0)
        ref = evaluate_reference(noln, tree).double().log_softmax(-1)
        fast = FastEngine()(noln, tree).double().log_softmax(-1)
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=0)


def test_identity_refuses_working_layernorms(dirs):
    with pytest.raises(scrub.HypothesisError, match="has working LayerNorms") as info:
        scrub.load_model(str(dirs["plain"]), layernorm="identity")
    assert "epsilon 1e-05" in info.value.problem
    assert "layernorm: keep" in info.value.hint


def test_identity_refuses_other_families(tmp_path):
    path = save_random_model(tmp_path, "llama")
    with pytest.raises(scrub.HypothesisError, match="for LayerNorm-free GPT-2 checkpoints"):
        scrub.load_model(str(path), layernorm="identity")


@pytest.mark.parametrize(
    ("text", "key", "match"),
    [
        ("path: noln\nlayernorm: off_please\n", ("layernorm",), "invalid value 'off_please'"),
        ("path: noln\nln: identity\n", ("ln",), "unknown key 'ln'"),
        ("layernorm: identity\n", ("path",), "missing required key 'path'"),
        ("path: ./nowhere\n", ("path",), "no such directory"),
        ("path: plain\nlayernorm: identity\n", ("layernorm",), "has working LayerNorms"),
    ],
)
def test_model_spec_file_errors_name_the_file_and_key(dirs, text, key, match):
    spec = dirs["root"] / "bad.yaml"
    spec.write_text(text)
    with pytest.raises(scrub.HypothesisError, match=match) as info:
        scrub.load_model(str(spec))
    assert info.value.file == str(spec) and info.value.key == key


def test_hypothesis_file_names_a_model_spec_file(dirs, tmp_path, capsys):
    import yaml

    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "e"}]}, "e": {"components": ["embed"]}}  # fmt: skip
    spec = base_spec("../" + dirs["root"].name + "/noln.yaml", nodes=nodes)
    home = dirs["root"].parent / "hyps"
    home.mkdir(exist_ok=True)
    (home / "h.yaml").write_text(yaml.safe_dump(spec))
    assert cli.main(["check", str(home / "h.yaml")]) == 0
    assert f"model '../{dirs['root'].name}/noln.yaml'" in capsys.readouterr().out
    missing = dict(spec, model="../nowhere.yaml")
    (home / "h2.yaml").write_text(yaml.safe_dump(missing))
    with pytest.raises(scrub.HypothesisError, match="no such model spec file") as info:
        load_model_for(scrub.load_hypothesis(home / "h2.yaml"))
    assert info.value.key == ("model",) and info.value.file == str(home / "h2.yaml")


def _inline(dirs, model) -> Path:
    import yaml

    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "e"}]}, "e": {"components": ["embed"]}}  # fmt: skip
    spec = base_spec("x", nodes=nodes)
    spec["model"] = model
    path = dirs["root"] / "inline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_hypothesis_file_loads_an_inline_model_mapping(dirs, noln, capsys):
    """``model: {path: noln, layernorm: identity}``: the spec file's keys, inline, relative to
    the hypothesis file; the same model as the spec file loads."""
    path = _inline(dirs, {"path": "noln", "layernorm": "identity"})
    hyp = scrub.load_hypothesis(path)
    model = load_model_for(hyp)
    assert model.layernorm == "identity" and model.source == "noln"
    logits, _, _ = model.run(tokens())
    torch.testing.assert_close(logits, noln.run(tokens())[0], atol=0, rtol=0)
    assert cli.main(["check", str(path)]) == 0
    assert "model 'noln'" in capsys.readouterr().out
    kept = load_model_for(scrub.load_hypothesis(_inline(dirs, {"path": "noln"})))
    assert kept.layernorm == "keep"


@pytest.mark.parametrize(
    ("model", "key", "match"),
    [
        ({"path": "noln", "ln": "identity"}, ("model", "ln"), "unknown key 'ln'"),
        ({"path": "noln", "layernorm": "off"}, ("model", "layernorm"), "invalid value 'off'"),
        ({"layernorm": "identity"}, ("model", "path"), "missing required key 'path'"),
        ({"path": "noln.yaml"}, ("model", "path"), "is a model spec file"),
        ({"path": "plain", "layernorm": "identity"}, ("model", "layernorm"), "working LayerNorms"),
        ({"path": "./nowhere"}, ("model", "path"), "no such directory"),
    ],
)
def test_inline_model_mapping_errors_name_the_key(dirs, model, key, match):
    path = _inline(dirs, model)
    with pytest.raises(scrub.HypothesisError, match=match) as info:
        load_model_for(scrub.load_hypothesis(path))
    assert info.value.file == str(path) and info.value.key == key


def test_experiment_files_take_the_inline_mapping_too(dirs):
    from scrub.experiments import experiment_from_dict
    from scrub.experiments.patching import setup

    spec = base_spec("x", nodes={})
    spec.pop("nodes")
    spec.update(kind="activation", components=["a0.h0"], positions=None)
    spec["model"] = {"path": str(dirs["noln"]), "layernorm": "identity"}
    assert setup(experiment_from_dict(spec)).model.layernorm == "identity"
    spec["model"] = {"path": str(dirs["noln"]), "norm": "identity"}
    with pytest.raises(scrub.HypothesisError, match="unknown key 'norm'") as info:
        experiment_from_dict(spec)
    assert info.value.key == ("model", "norm")


# -- GPT-2 files without the weights ---------------------------------------------------------------
GPT2_FILES = sorted(
    p
    for p in (REPO / "hypotheses" / "ioi").glob("*.yaml")
    if read_yaml(p, what="hypothesis file").get("model") == "gpt2"
)


def test_check_gpt2_files_offline_from_the_config(capsys):
    assert GPT2_FILES
    for path in GPT2_FILES:
        assert cli.main(["check", str(path)]) == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"ok: {path}")
        assert "checked against GPT-2 small's config" in out
        assert "M.from_pretrained('gpt2')" in out


def test_config_only_model_checks_names_and_never_runs(dataset):
    model = scrub.load_model("gpt2", allow_config_only=True)
    assert repr(model) == "ConfigOnlyModel('gpt2', layers=12, heads=12, n_ctx=1024, vocab=50257)"
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "h"}]}, "h": {"components": ["a12.h0"]}}  # fmt: skip
    with pytest.raises(scrub.HypothesisError, match=r"a0.h0 .. a11.h11"):
        scrub.bind(scrub.hypothesis_from_dict(base_spec("gpt2", nodes=nodes)), model, dataset)
    with pytest.raises(scrub.HypothesisError, match="cannot be run") as info:
        model.run(tokens())
    assert "M.from_pretrained('gpt2')" in info.value.hint
    with pytest.raises(scrub.HypothesisError, match="cannot be run"):
        _ = model.bridge


def test_run_without_weights_is_a_clear_error():
    with pytest.raises(scrub.HypothesisError, match="cannot load model 'gpt2'") as info:
        scrub.run(GPT2_FILES[0])
    assert "M.from_pretrained('gpt2')" in info.value.hint
    assert info.value.key == ("model",)
