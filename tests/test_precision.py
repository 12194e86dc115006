"""Device and dtype: low precision is opt-in and recorded, CUDA is real or refused clearly.

The bfloat16 tolerances below are stated against what was measured on this file's tiny model
(benchmarks/README.md has the shipped models): the fraction recovered moved by 1e-4 (allowed:
0.01), fast against reference log-probabilities by 0.064 (allowed: 0.1; float32: 1e-4), the
mean-ablated per-example KL by 0.0045 (allowed: 0.05).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scrub
from scrub._model_config import load_model_config
from scrub._precision import PrecisionError, parse_device, parse_dtype
from scrub.cli import main
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._kernels import kernel_status
from scrub.testing import FAMILIES, save_random_model
from tests.conftest import base_spec

REPO = Path(__file__).resolve().parents[1]
RECOVERED_TOL = 0.01
"""|recovered(bfloat16) − recovered(float32)| allowed on the tiny model (measured: 1e-4)."""

PATCH_TOL = 0.02
"""|Δ effect| of a cell allowed between bfloat16 and float32 (induction grid, n = 8; measured
0.0035 on effects up to 0.56)."""

KNOCKOUT_TOL = 0.02
"""|Δ F(C)/F(M)| allowed between bfloat16 and float32 (ioi_names movers, n = 16; measured 0.0014)."""

NODES = {
    "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
    "h": {
        "components": ["a1.h0", "a1.h1", "m0"],
        "inputs": [{"node": "e", "channels": "q"}],
        "other": "exact",
    },
    "e": {"components": ["a0.h1"], "sampler": "exact"},
}


@pytest.fixture(scope="module")
def hyp(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("prec") / "h.yaml"
    spec = base_spec(tiny_model_dir, nodes=NODES, defaults={"n": 48, "seed": 0})
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def bf16_model(tiny_model_dir):
    return scrub.load_model(str(tiny_model_dir), dtype="bfloat16")


def _run(hyp, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return scrub.run(hyp, **kw)


def test_bfloat16_run_is_close_to_float32_and_recorded(hyp, tiny_model, bf16_model):
    full = _run(hyp, model=tiny_model)
    low = _run(hyp, model=bf16_model)
    assert full.recovered is not None and low.recovered is not None
    assert abs(low.recovered - full.recovered) <= RECOVERED_TOL
    assert low.recovered != full.recovered  # it really ran in another dtype
    assert (low.device, low.dtype) == ("cpu", "bfloat16")
    assert (full.device, full.dtype) == ("cpu", "float32")
    data = json.loads(low.to_json())
    assert data["dtype"] == "bfloat16" and data["device"] == "cpu"
    assert scrub.ScrubResult.from_dict(data).dtype == "bfloat16"
    # the metrics are float64 in every dtype
    assert all(isinstance(v, float) for v in low.per_example)


def test_run_loads_the_model_in_the_dtype_asked_for(hyp):
    result = _run(hyp, dtype="bfloat16", n=8)
    assert result.dtype == "bfloat16"


def test_a_loaded_model_is_not_cast_behind_its_back(hyp, bf16_model):
    with pytest.raises(PrecisionError, match="dtype 'float32' asked for, but model") as info:
        _run(hyp, model=bf16_model, dtype="float32")
    assert "scrub.load_model(source, device=..., dtype=...)" in info.value.hint


def test_bfloat16_model_and_kernels(bf16_model, tiny_model):
    assert bf16_model.dtype == torch.bfloat16 and bf16_model.W_O.dtype == torch.bfloat16
    assert repr(bf16_model).endswith("dtype='bfloat16')")
    assert kernel_status(bf16_model) == "kernels"  # checked in float32, to 1e-4
    kernels = bf16_model.memo["kernels"]
    assert all(w is None or w.dtype == torch.bfloat16 for w in kernels.w.values())
    # the float32 check leaves the model bit-for-bit as it was
    before = {k: v.clone() for k, v in bf16_model.bridge.original_model.state_dict().items()}
    with bf16_model.computing_in(torch.float32):
        assert bf16_model.W_O.dtype == torch.float32
    after = bf16_model.bridge.original_model.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before
    )
    assert bf16_model.memo["kernels"] is kernels


def test_fast_matches_reference_in_bfloat16(hyp, bf16_model):
    h = scrub.load_hypothesis(hyp)
    ds = scrub.make_dataset_for(h, seed=0)
    tree = scrub.sample_tree(scrub.bind(h, bf16_model, ds), n=16, seed=0)
    fast = FastEngine()(bf16_model, tree)
    ref = evaluate_reference(bf16_model, tree)
    assert fast.dtype == ref.dtype == torch.bfloat16
    lp = fast.float().log_softmax(-1), ref.float().log_softmax(-1)
    # different (equally valid) orders of bfloat16 rounding; float32 agrees to 1e-4
    assert (lp[0] - lp[1]).abs().max() < 0.1


def test_cache_is_keyed_by_dtype(hyp, tiny_model_dir):
    model = scrub.load_model(str(tiny_model_dir))
    h = scrub.load_hypothesis(hyp)
    ds = scrub.make_dataset_for(h, seed=0)
    cache = ActivationCache()
    from scrub._components import Component

    comp, rows = Component("head", 0, 1), np.arange(4)
    (first,) = cache.outputs(model, ds, [(comp, rows)])
    assert first.dtype == torch.float32 and cache.rows_computed == 4
    model.cast(torch.bfloat16)
    (second,) = cache.outputs(model, ds, [(comp, rows)])
    assert second.dtype == torch.bfloat16 and cache.rows_computed == 8  # computed afresh


def test_mean_ablation_in_bfloat16(tiny_model_dir, tmp_path, bf16_model):
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
             "h": {"components": ["a1.h0"]}}  # fmt: skip
    spec = base_spec(tiny_model_dir, nodes=nodes, ablation={"kind": "mean", "classes": ["END"]})
    path = tmp_path / "mean.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    full = _run(path, n=16)
    low = _run(path, model=bf16_model, n=16)
    assert low.dtype == "bfloat16"
    assert np.allclose(low.per_example, full.per_example, atol=0.05)


def test_float16_refused_where_it_overflows():
    with pytest.raises(PrecisionError, match="does not run in float16") as info:
        scrub.load_model("tracr_hist", dtype="float16")
    assert "bfloat16" in info.value.hint


def test_precision_error_is_public():
    assert scrub.PrecisionError is PrecisionError and PrecisionError.__module__ == "scrub"
    assert issubclass(PrecisionError, ValueError)


def test_patching_in_bfloat16():
    from scrub.experiments import patch

    path = REPO / "experiments" / "induction" / "activation_heads.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        full = patch(path, n=8)
        low = patch(path, n=8, dtype="bfloat16")
    assert (low.device, low.dtype) == ("cpu", "bfloat16")
    assert json.loads(low.to_json())["dtype"] == "bfloat16"
    assert np.array_equal(low.valid, full.valid)
    effect = low.arrays["effect"][low.valid], full.arrays["effect"][full.valid]
    assert np.all(np.isfinite(effect[0]))
    assert np.abs(effect[0] - effect[1]).max() < PATCH_TOL


def test_knockout_in_bfloat16():
    from scrub.experiments import patch

    path = REPO / "experiments" / "ioi_names" / "knockout_movers.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        full = patch(path, n=16)
        low = patch(path, n=16, dtype="bfloat16")
    assert (low.device, low.dtype) == ("cpu", "bfloat16")
    assert json.loads(low.to_json())["dtype"] == "bfloat16"
    assert abs(low.faithfulness - full.faithfulness) < KNOCKOUT_TOL


def test_unknown_dtype_and_device():
    with pytest.raises(PrecisionError, match="unknown dtype 'float8'") as info:
        parse_dtype("float8")
    assert "float32, bfloat16, float16" in info.value.hint
    with pytest.raises(PrecisionError, match="unknown device 'tpu'"):
        parse_device("tpu")
    assert parse_dtype(torch.bfloat16) is torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_error(hyp, capsys):
    with pytest.raises(PrecisionError, match="CUDA is not available") as info:
        scrub.load_model("induction", device="cuda")
    assert "--device cpu" in info.value.hint
    assert main(["run", str(hyp), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda' asked for, but CUDA is not available")
    assert "hint: install a CUDA build of torch" in err and "Traceback" not in err


def test_cli_dtype_is_recorded(hyp, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", str(hyp), "--dtype", "bfloat16", "--n", "8", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["device"], data["dtype"]) == ("cpu", "bfloat16")
    capsys.readouterr()
    for command in (["compare", str(hyp)], ["diagnose", str(hyp)], ["patch", "x.yaml"]):
        with pytest.raises(SystemExit):
            main([*command, "--dtype", "float8"])
        assert "invalid choice: 'float8'" in capsys.readouterr().err


def test_compare_and_diagnose_record_precision(hyp, bf16_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        cmp = scrub.compare([hyp], model=bf16_model, n=8)
        diag = scrub.diagnose(hyp, model=bf16_model, n=8)
    assert (cmp.experiment["device"], cmp.experiment["dtype"]) == ("cpu", "bfloat16")
    assert (diag.experiment["device"], diag.experiment["dtype"]) == ("cpu", "bfloat16")


# -- scrub check: the config, not the weights ------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_config_shape_is_the_loaded_shape(family, tmp_path):
    path = save_random_model(tmp_path / family, family, n_kv_heads=2)
    loaded = scrub.load_model(str(path))
    config = load_model_config(str(path))
    assert config.shape == loaded.shape
    assert config.architecture == loaded.architecture


def test_check_loads_no_weights(hyp, monkeypatch, capsys):
    import scrub._architectures

    def no_boot(*args, **kwargs):
        raise AssertionError("scrub check loaded the model's weights")

    monkeypatch.setattr(scrub._architectures, "boot", no_boot)
    monkeypatch.setattr(scrub._model, "boot", no_boot)
    assert main(["check", str(hyp)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {hyp}")
    assert main(["check", str(REPO / "hypotheses" / "induction" / "kcomp.yaml")]) == 0


_IMPORTS = """
import sys
import scrub.cli
code = scrub.cli.main(sys.argv[1:])
heavy = [m for m in ("torch", "scipy", "transformers", "transformer_lens") if m in sys.modules]
print(code, ",".join(heavy) or "none")
"""


@pytest.mark.parametrize(
    ("command", "heavy"),
    [(["graph", "hypotheses/induction/kcomp.yaml"], "none"),
     (["check", "hypotheses/induction/kcomp.yaml"], "torch")],
)  # fmt: skip
def test_light_commands_import_little(command, heavy):
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.stdout.splitlines()[-1].split() == ["0", heavy], proc.stderr


# -- CUDA ----------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here (torch.cuda.is_available() is False)"
)


@cuda
def test_cuda_full_equals_clean_and_fast_equals_reference(tiny_model_dir, tmp_path):
    model = scrub.load_model(str(tiny_model_dir), device="cuda")
    assert model.device.type == "cuda" and model.W_O.is_cuda
    full = base_spec(tiny_model_dir, nodes={"out": {"components": ["logits"]}})
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(full, sort_keys=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        result = scrub.run(path, model=model, n=16)
    assert result.device.startswith("cuda")
    assert np.array_equal(result.per_example, result.per_example_clean)
    h = scrub.hypothesis_from_dict(base_spec(tiny_model_dir, nodes=NODES))
    ds = scrub.make_dataset_for(h, seed=0)
    tree = scrub.sample_tree(scrub.bind(h, model, ds), n=16, seed=0)
    fast = FastEngine()(model, tree)
    ref = evaluate_reference(model, tree)
    assert fast.is_cuda and ref.is_cuda
    assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-4)


@cuda
def test_cuda_bfloat16_run(hyp):
    result = _run(hyp, device="cuda", dtype="bfloat16", n=16)
    assert result.dtype == "bfloat16" and result.device.startswith("cuda")
