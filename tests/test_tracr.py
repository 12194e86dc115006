"""Ground truth from Tracr: the shipped ``tracr_*`` models compute their RASP programs, and
scrub recovers their true circuits (1.0) and not the deliberately wrong ones, under resample
and zero ablation.

The default tier needs no jax: it loads the shipped checkpoints. The slow test recompiles the
programs with Tracr (``pip install -e '.[tracr]'``) and checks the shipped files match.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import scrub
from scrub._yaml import read_yaml
from scrub.data.tracr import PROGRAMS, program_info, reference_output

REPO = Path(__file__).resolve().parents[1]
HYPOTHESES = REPO / "hypotheses" / "tracr"


@pytest.fixture(scope="module")
def models():
    return {p: scrub.load_model(f"tracr_{p}") for p in PROGRAMS}


@pytest.mark.parametrize("program", PROGRAMS)
def test_reference_outputs_are_the_rasp_programs(program):
    """scrub's numpy outputs equal RASP's own evaluation (stored by the converter)."""
    for example in program_info(program)["examples"]:
        names = np.asarray([example["tokens"]], dtype=object)
        ours = reference_output(program, names)[0]
        for got, want in zip(ours, example["output"], strict=True):
            if want is None:  # no output there (prev_token's first position)
                assert got is None
            elif isinstance(want, str):
                assert got == want
            else:  # numbers (RASP gives frac_x's first value as a bool, stored as 0 / 1)
                assert abs(float(got) - want) < 1e-9


@pytest.mark.parametrize("program", PROGRAMS)
def test_model_reproduces_the_program(program, models):
    model = models[program]
    info = program_info(program)
    ds = scrub.make_dataset("tracr", {"program": program, "size": 300}, np.random.default_rng(1))
    logits, _, _ = model.run(ds.tokens)
    out = torch.as_tensor(ds.positions["OUT"])
    at_out = logits[torch.arange(len(ds))[:, None], out]
    if info["output_kind"] == "numerical":
        value = torch.as_tensor(ds.fields["value"], dtype=at_out.dtype)
        # logit 1 - logit 0: scrub's logits are centred per position (compatibility mode)
        diff = (at_out[..., 1] - at_out[..., 0]) / info["scale"]
        torch.testing.assert_close(diff, value, atol=1e-4, rtol=0)
        assert value.std() > 0.1  # the outputs vary: the check is not vacuous
    else:
        label = torch.as_tensor(ds.fields["label"])
        assert torch.equal(at_out.argmax(-1), label)
        assert len(label.unique()) >= 4
    # Loaded with exact identity norms, the model agrees: the LayerNorm trick (eps 2^40,
    # weight 2^20, a mean-zero residual) is an identity. Not to 1e-5: hist's decoding MLP
    # (weights 100) amplifies float32 rounding of the folded weights at counts 9-10 (8e-4 from
    # the float64 Hugging Face model either way; see the model card).
    identity = scrub.load_model(str(Path(model.path)), layernorm="identity")
    exact, _, _ = identity.run(ds.tokens)
    torch.testing.assert_close(exact.log_softmax(-1), logits.log_softmax(-1), atol=3e-3, rtol=0)


def _run(file: str, ablation: str, n: int = 100) -> scrub.ScrubResult:
    path = HYPOTHESES / file
    spec = read_yaml(path, what="hypothesis file")
    spec["ablation"] = ablation
    spec["dataset"] = str((HYPOTHESES / spec["dataset"]).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)  # wrong ones may equal the baseline
        return scrub.run(scrub.hypothesis_from_dict(spec), n=n)


TRUE = ["prev_token_true.yaml", "frac_x_true.yaml", "hist_true.yaml"]
WRONG = [
    "prev_token_wrong_current.yaml",
    "prev_token_wrong_swapped.yaml",
    "frac_x_wrong_direct.yaml",
    "frac_x_wrong_mlp.yaml",
    "hist_wrong_key_positions.yaml",
    "hist_wrong_no_mlp.yaml",
]


def test_every_tracr_hypothesis_file_is_classified():
    assert {p.name for p in HYPOTHESES.glob("*.yaml")} == {
        *TRUE,
        *WRONG,
        "prev_token_wrong_no_positions.yaml",
    }


@pytest.mark.parametrize("ablation", ["resample", "zero"])
@pytest.mark.parametrize("file", TRUE)
def test_true_circuit_recovers_one(file, ablation):
    result = _run(file, ablation)
    assert result.methodology["ablation"] == ablation
    assert abs(result.recovered - 1.0) < 1e-3
    assert result.baseline - result.clean > 0.5  # the program's output is worth recovering


@pytest.mark.parametrize("ablation", ["resample", "zero"])
@pytest.mark.parametrize("file", WRONG)
def test_wrong_hypotheses_recover_clearly_less(file, ablation):
    assert _run(file, ablation).recovered < 0.2


def test_resampling_cannot_falsify_a_claim_about_fixed_positions():
    """Every input has the same positions, so resampling pos_embed changes nothing; zeroing it
    shows the head needs positions."""
    file = "prev_token_wrong_no_positions.yaml"
    assert abs(_run(file, "resample").recovered - 1.0) < 1e-3
    assert _run(file, "zero").recovered < 0.2


def test_generators_keep_what_the_program_reads():
    for program, feature in (("frac_x", "x_pattern"), ("hist", "equality")):
        ds = scrub.make_dataset("tracr", {"program": program, "size": 50}, np.random.default_rng(2))
        rows = np.arange(50)
        new = ds.generator(feature)(ds, rows, np.random.default_rng(3))
        np.testing.assert_array_equal(new.fields[feature], ds.fields[feature])
        key = "value" if program == "frac_x" else "label"
        np.testing.assert_array_equal(new.fields[key], ds.fields[key])
        assert (new.tokens != ds.tokens).float().mean() > 0.3  # but the tokens change


def test_unknown_program_is_a_clear_error():
    with pytest.raises(scrub.HypothesisError, match="no Tracr program 'sort'") as info:
        scrub.make_dataset("tracr", {"program": "sort"}, np.random.default_rng(0))
    assert info.value.key == ("params", "program")
    assert "prev_token" in info.value.hint


def _converter():
    spec = importlib.util.spec_from_file_location(
        "convert_tracr", REPO / "scripts" / "convert_tracr.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("program", PROGRAMS)
def test_recompiled_programs_match_the_shipped_checkpoints(program, tmp_path):
    pytest.importorskip("tracr", reason="needs the tracr extra: pip install -e '.[tracr]'")
    convert = _converter()
    info = convert.build(program, convert._programs()[program], tmp_path)
    shipped_dir = REPO / "scrub" / "models" / f"tracr_{program}"
    shipped = json.loads((shipped_dir / "tracr.json").read_text())
    for key in ("input_ids", "output_ids", "residual_labels", "layers", "examples", "rasp"):
        assert info[key] == shipped[key], key
    ours = safetensors.torch.load_file(tmp_path / "model.safetensors")
    theirs = safetensors.torch.load_file(shipped_dir / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
