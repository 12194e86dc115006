"""Patching grids against TransformerLens 4.3's own patching functions, and against scrub run.

The oracle is ``transformer_lens.patching`` run on the same ``TransformerBridge`` scrub
configures (``ScrubModel.bridge``: compatibility mode, split q/k/v inputs), on the same rows:
TransformerLens's corrupted run is scrub's base run, its clean cache the source examples, and
its metric scrub's per-example metric read at the base rows' metric positions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import patching as tl_patching

import scrub
from scrub._metrics import per_example_metric
from scrub._positions import resolve_positions
from scrub.experiments import experiment_from_dict, patch
from scrub.experiments.patching import setup

ATOL = 1e-4

INDUCTION_DATA = {
    "generator": "induction",
    "params": {"size": 300, "segment_len": 5, "prefix_len": 1, "gap_len": 1, "suffix_len": 1},
}
LOSS = {"kind": "loss", "positions": "REP", "labels": "next"}
IOI_TOY_DATA = {"generator": "ioi_toy", "params": {"size": 300}}
LOGIT_DIFF = {"kind": "logit_diff", "positions": "END", "correct": "io", "wrong": "s"}


@pytest.fixture(scope="module")
def induction():
    return scrub.load_model("induction")


@pytest.fixture(scope="module")
def ioi_toy():
    return scrub.load_model("ioi_toy")


def experiment(kind, model, data, metric, n=6, **keys):
    return experiment_from_dict(
        {"kind": kind, "model": model, "dataset": data, "metric": metric,
         "defaults": {"n": n, "seed": 0}, **keys}
    )  # fmt: skip


def tl_oracle(su):
    """TransformerLens's inputs for scrub's setup: corrupted tokens, clean cache, metric."""
    spec = su.experiment.spec
    ds = su.dataset
    pos = torch.as_tensor(resolve_positions(spec.metric.positions, ds, su.base))
    batch = torch.arange(su.n)[:, None]

    def metric(logits):
        values = per_example_metric(
            spec.metric, logits.detach()[batch, pos], reference=su.reference, dataset=ds
        )
        return torch.as_tensor(values, dtype=torch.float32)

    bridge = su.model.bridge
    corrupted = ds.tokens[torch.as_tensor(su.base)]
    _, clean_cache = bridge.run_with_cache(ds.tokens[torch.as_tensor(su.source)])
    _, corrupted_cache = bridge.run_with_cache(corrupted)
    return bridge, corrupted, clean_cache, corrupted_cache, metric


def check_activation_grid(model, exp):
    result = patch(exp, model=model)
    bridge, corrupted, clean_cache, _, metric = tl_oracle(setup(exp, model=model))
    tl = tl_patching.get_act_patch_attn_head_out_by_pos(
        bridge, corrupted, clean_cache, metric, reduce="none"
    )  # [layer, pos, head, batch]
    shape = model.shape
    ours = result.per_example.reshape(shape.n_layers, shape.n_heads, -1, exp.spec.defaults.n)
    np.testing.assert_allclose(ours.transpose(0, 2, 1, 3), tl.values.numpy(), atol=ATOL, rtol=0)
    return result


def check_direct_path_grid(model, exp, src):
    result = patch(exp, model=model)
    bridge, corrupted, clean_cache, corrupted_cache, metric = tl_oracle(setup(exp, model=model))
    layer, head = src
    n_layers, n_heads = model.shape.n_layers, model.shape.n_heads
    for c, channel in enumerate(result.axes["channel"]):
        for i in range(exp.spec.defaults.n):
            tl = tl_patching.get_act_patch_direct_path(
                bridge, corrupted, clean_cache, corrupted_cache,
                lambda logits, i=i: metric(logits)[i],
                layer, head, channel, verbose=False,
            )  # fmt: skip
            ours = result.per_example[0, :, c, 0, i].reshape(n_layers, n_heads)
            later = slice(layer + 1, None)
            np.testing.assert_allclose(ours[later], tl[later].numpy(), atol=ATOL, rtol=0)
            assert np.isnan(ours[: layer + 1]).all()  # not paths of the model
    return result


def test_activation_patching_every_head_and_position_equals_transformer_lens(induction):
    exp = experiment(
        "activation", "induction", INDUCTION_DATA, LOSS, base="uncond", components="heads"
    )
    result = check_activation_grid(induction, exp)
    assert result.axes["component"][:2] == ["a0.h0", "a0.h1"]
    assert len(result.axes["position"]) == len(result.tokens)


def test_direct_path_patching_into_every_later_head_equals_transformer_lens(induction):
    exp = experiment(
        "path", "induction", INDUCTION_DATA, LOSS, n=4,
        base={"kind": "uncond_together", "group": "base"},
        senders=["a0.h1"], receivers="heads", channels=["q", "k", "v"],
    )  # fmt: skip
    check_direct_path_grid(induction, exp, (0, 1))


def test_ioi_toy_direct_path_with_a_flipped_base_equals_transformer_lens(ioi_toy):
    exp = experiment(
        "path", "ioi_toy", IOI_TOY_DATA, LOGIT_DIFF, n=3,
        base={"kind": "flip", "flip": ["IO"]}, senders=["a2.h0"], receivers="heads",
    )  # fmt: skip
    result = check_direct_path_grid(ioi_toy, exp, (2, 0))
    assert result.base == "flip(flip=['IO'])"


@pytest.mark.slow
def test_ioi_toy_activation_patching_equals_transformer_lens(ioi_toy):
    exp = experiment(
        "activation", "ioi_toy", IOI_TOY_DATA, LOGIT_DIFF, n=4,
        base={"kind": "flip", "flip": ["S"]}, components="heads",
    )  # fmt: skip
    check_activation_grid(ioi_toy, exp)


def test_a_path_patch_equals_its_two_node_hypothesis_scored_by_scrub_run(induction):
    base = {"kind": "uncond_together", "group": "base"}
    exp = experiment(
        "path", "induction", INDUCTION_DATA, LOSS, n=12, base=base,
        senders=["a0.h1"], receivers=["a1.h3"], channels=["k"], positions=["A1"],
    )  # fmt: skip
    result = patch(exp, model=induction)
    hyp = scrub.hypothesis_from_dict(
        {"model": "induction", "dataset": INDUCTION_DATA, "metric": LOSS,
         "nodes": {
             "out": {"components": ["logits"], "other": base,
                     "inputs": [{"node": "receiver", "channels": "in", "paths": "all"}]},
             "receiver": {"components": ["a1.h3"], "other": base,
                          "inputs": [{"node": "sender", "channels": "k", "positions": "A1"}]},
             "sender": {"components": ["a0.h1"]},
         }}
    )  # fmt: skip
    run = scrub.run(hyp, model=induction, n=12, seed=0)
    np.testing.assert_allclose(result.per_example.reshape(-1), run.per_example, atol=ATOL)
    assert result.reference.tolist() == run.reference


def test_iterative_path_patching_into_the_logits_singles_out_the_induction_heads(induction):
    exp = experiment(
        "iterative_path", "induction", {"generator": "induction", "params": {"size": 500}},
        LOSS, n=40, base="uncond",
    )  # fmt: skip
    result = patch(exp, model=induction)
    frame = result.to_frame().set_index("sender")
    top = set(frame["normalized"].nlargest(3).index)
    assert top == {"a1.h0", "a1.h1", "a1.h3"}  # the model card's induction heads
    assert (frame.loc[sorted(top), "p_adjusted"] < 0.01).all()
    assert frame.loc["a0.h1", "normalized"] < 0.1  # the previous-token head acts through keys


def test_grid_cells_are_batched_not_one_pass_per_cell(induction):
    exp = experiment("activation", "induction", INDUCTION_DATA, LOSS, components="heads")
    passes = []
    hook = induction.bridge.register_forward_pre_hook(
        lambda module, args, kwargs: passes.append(args[0].shape[0]), with_kwargs=True
    )
    try:
        result = patch(exp, model=induction, max_batch_rows=200)
    finally:
        hook.remove()
    cells = int(result.valid.sum())
    assert max(passes) <= 200
    assert len(passes) < cells / 10  # 112 cells of 6 rows: a few passes of up to 200 rows


# -- files, flips, statistics, outputs ---------------------------------------------------------
def test_experiment_file_errors_name_the_file_the_key_and_a_fix(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "kind: activation\nmodel: induction\ndataset: {generator: induction}\n"
        "metric: {kind: loss, positions: REP, labels: next}\ncomponent: heads\n"
    )
    with pytest.raises(scrub.HypothesisError) as err:
        scrub.experiments.load_experiment(path)
    assert err.value.file == str(path) and err.value.key == ("component",)
    assert "did you mean 'components'" in err.value.hint
    with pytest.raises(scrub.HypothesisError, match="unknown flip 'IOO'"):
        experiment("path", "ioi_toy", IOI_TOY_DATA, LOGIT_DIFF, base={"kind": "flip", "flip": "IOO"},
                   senders=["a0.h0"])  # fmt: skip
    with pytest.raises(scrub.HypothesisError, match="kinds: activation, path"):
        experiment_from_dict({"kind": "patching"})


def test_unknown_components_and_missing_flips_are_refused_when_run(induction):
    exp = experiment("activation", "induction", INDUCTION_DATA, LOSS, components=["a1.h4"])
    with pytest.raises(scrub.HypothesisError, match=r"unknown component 'a1\.h4'") as err:
        patch(exp, model=induction)
    assert err.value.key == ("components", 0)
    flip = experiment(
        "activation", "induction", INDUCTION_DATA, LOSS, base={"kind": "flip", "flip": "IO"}
    )
    with pytest.raises(scrub.HypothesisError, match="has no flips") as err:
        patch(flip, model=induction)
    assert err.value.key == ("base",)


def test_a_flip_in_a_file_is_the_python_flip_of_the_reference_rows():
    from scrub.data.ioi import flip

    data = {"generator": "ioi", "params": {"size": 50, "nb_templates": 3}}
    exp = experiment(
        "activation", "gpt2", data, LOGIT_DIFF, n=10, base={"kind": "flip", "flip": ["IO"]}
    )
    ds = scrub.make_dataset("ioi", data["params"], np.random.default_rng(0))
    su = setup(exp, model=_FakeModel(), dataset=ds)
    rng = scrub._tree.stream(0, "other", "out")
    expected = flip(
        scrub.make_dataset("ioi", data["params"], np.random.default_rng(0)), "IO", rng=rng
    )
    np.testing.assert_array_equal(ds.tokens[su.base], expected.tokens[su.reference])
    assert (ds.fields["io"][su.base] != ds.fields["io"][su.reference]).all()
    assert (ds.fields["s"][su.base] == ds.fields["s"][su.reference]).all()


class _FakeModel(scrub.ScrubModel):
    """Enough of a model for drawing rows (``setup`` never runs it)."""

    def __init__(self) -> None:
        pass


def test_p_value_corrections_match_scipy_and_holm():
    from scipy import stats

    from scrub.experiments._patch_stats import adjust

    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    np.testing.assert_allclose(
        adjust(p, "fdr_bh")[[0, 1, 2, 4]], stats.false_discovery_control(p[[0, 1, 2, 4]])
    )
    np.testing.assert_allclose(adjust(p, "holm")[[0, 1, 2, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adjust(p, "holm")[3])


def test_normalised_effects_are_undefined_when_source_and_base_agree(induction):
    exp = experiment("activation", "induction", INDUCTION_DATA, LOSS, base="exact", source="exact",
                     components=["a1.h0"], positions=["REP"])  # fmt: skip
    result = patch(exp, model=induction)
    assert result.normalized_undefined and "not distinguishable" in result.normalized_undefined
    assert np.isnan(result.arrays["normalized"]).all()
    np.testing.assert_allclose(result.arrays["effect"], 0, atol=1e-6)
    assert result.to_dict()["normalized"] == [[None]]


def test_cli_writes_json_npz_and_figures(tmp_path, capsys):
    from scrub.cli import main

    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "kind: iterative_path\nmodel: induction\n"
        "dataset: {generator: induction, params: {size: 100, segment_len: 5, prefix_len: 1, "
        "gap_len: 1, suffix_len: 1}}\nmetric: {kind: loss, positions: REP, labels: next}\n"
        "defaults: {n: 6, seed: 0}\nsenders: heads\n"
    )
    assert main(["patch", str(exp), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "top 8 cells by |normalized|" in printed
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["exp.grid.png", "exp.grid.svg", "exp.json", "exp.npz"]
    data = np.load(tmp_path / "out" / "exp.npz")
    assert data["axis_sender"].tolist()[:2] == ["a0.h0", "a0.h1"]
    assert main(["patch", str(tmp_path / "missing.yaml")]) == 1


def test_to_frame_has_one_row_per_cell_and_json_is_strict(induction):
    exp = experiment(
        "path", "induction", INDUCTION_DATA, LOSS, senders=["a0.h1"], receivers="heads"
    )
    result = patch(exp, model=induction)
    frame = result.to_frame()
    assert len(frame) == int(result.valid.sum()) == 12  # 4 layer-1 heads × q, k, v
    assert set(frame["receiver"]) == {"a1.h0", "a1.h1", "a1.h2", "a1.h3"}
    assert '"NaN"' not in result.to_json() and "NaN" not in result.to_json()


def test_counterfactual_attention_under_a_patch_and_under_a_hypothesis(induction, tmp_path):
    data = {"generator": "induction", "params": {"size": 200}}
    exp = experiment("attention", "induction", data, LOSS, n=8, base="exact", source="uncond",
                     heads=["a1.h0"], under={"components": ["a0.h1"]}, examples=2)  # fmt: skip
    result = patch(exp, model=induction)
    assert result.clean["a1.h0"].shape == (2, 29, 29) and not result.warnings
    assert result.mean_abs_change["a1.h0"] > 0.01  # the induction stripe needs a0.h1's output
    np.testing.assert_allclose(result.clean["a1.h0"].sum(-1), 1, atol=1e-5)
    same = experiment("attention", "induction", data, LOSS, n=8, base="exact", source="exact",
                      heads=["a1.h0"], under={"components": ["a0.h1"]})  # fmt: skip
    assert patch(same, model=induction).mean_abs_change["a1.h0"] < 1e-6  # nothing changed
    hyp = experiment_from_dict(
        {"kind": "attention", "model": "induction", "dataset": "../../datasets/induction.yaml",
         "metric": LOSS, "defaults": {"n": 8, "seed": 0}, "heads": ["a1.h0", "a0.h1"],
         "under": "../../hypotheses/induction/kcomp.yaml"},
        file="experiments/induction/x.yaml",
    )  # fmt: skip
    under = patch(hyp, model=induction)
    assert set(under.mean_abs_change) == {"a1.h0", "a0.h1"}
    assert len(under.to_frame()) > 0
