"""``kind: knockout``: the IOI paper's node-level faithfulness, against plain hooks.

On a tiny random model over IOI-names prompts: keeping every node is the clean model, bit for
bit; knocking everything out with per-template, per-position ABC means (and with zero, keeping
some nodes at some positions) equals the same knockout written here with TransformerLens hooks
and means computed by hand, without scrub's means, patches or position classes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import scrub
from scrub.cli import main
from scrub.experiments._knockout import knockout
from scrub.experiments.patching import experiment_from_dict, load_experiment, setup
from scrub.experiments.reproduce import reproduce
from scrub.testing import save_random_gpt2

ROOT = Path(__file__).parent.parent
PARAMS = {"size": 60, "names": "heldout", "templates": "all"}
ABC = {"generator": "ioi_names_abc", "params": PARAMS}
MEAN = {"kind": "mean", "dataset": ABC, "by": ["template"], "classes": "each"}


@pytest.fixture(scope="module")
def ioi_model(tmp_path_factory):
    """A random 2-layer GPT-2 with the IOI-names vocabulary (so its prompts fit)."""
    d = save_random_gpt2(
        tmp_path_factory.mktemp("ko"), n_layers=2, n_heads=4, d_model=32, d_vocab=1000, seed=5,
        init_std=0.2,
    )  # fmt: skip
    return scrub.load_model(str(d))


def _spec(model, **overrides) -> dict:
    spec = {
        "kind": "knockout",
        "model": model.source,
        "dataset": {"generator": "ioi_names", "params": PARAMS},
        "metric": {"kind": "logit_diff", "positions": "END", "correct": "io", "wrong": "s"},
        "defaults": {"n": 16, "seed": 0},
        "ablation": MEAN,
    }
    spec.update(overrides)
    return spec


def _run(model, chunk=64, **overrides):
    su = setup(experiment_from_dict(_spec(model, **overrides)), model=model)
    return su, knockout(su, max_batch_rows=chunk)


# -- the same knockout with plain hooks ----------------------------------------------------------
def _hook(kind: str, layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z" if kind == "head" else f"blocks.{layer}.hook_mlp_out"


def _hand_means(model, abc) -> dict:
    """(kind, layer) → {template: (T, ..., d) mean over ABC examples of that template}."""
    store: dict = {}

    def grab(name):
        def fn(t, hook):
            store[name] = t.detach().double().clone()
            return t

        return fn

    names = [_hook(k, L) for L in range(model.shape.n_layers) for k in ("head", "mlp")]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(n, grab(n)) for n in names]):
        model.bridge(abc.tokens[: abc.n_base])
    template = np.asarray(abc.fields["template"])[: abc.n_base]
    length = np.asarray(abc.fields["length"])[: abc.n_base]
    means: dict = {}
    for n in names:
        means[n] = {}
        for tau in np.unique(template):
            rows = np.where(template == tau)[0]
            acts = store[n][rows]
            real = torch.as_tensor(np.arange(abc.seq_len)[None] < length[rows, None])
            shape = (*real.shape, *([1] * (acts.dim() - 2)))
            total = (acts * real.reshape(shape)).sum(0)
            count = real.sum(0).clamp(min=1).reshape(-1, *([1] * (acts.dim() - 2)))
            means[n][int(tau)] = (total / count).float()
    return means


def _hand_logit_diff(model, ds, rows, *, value, keep, skip=frozenset()) -> np.ndarray:
    """Every head and MLP output replaced by ``value(name, row)`` except at ``keep``.

    ``keep``: hook name → {head index: list of position names}; the hooks in ``skip`` (whole
    components kept everywhere) are left computed.
    """
    tokens = ds.tokens[torch.as_tensor(rows)]

    def patch(name):
        def fn(t, hook):
            new = t.clone()
            for r, row in enumerate(rows):
                old = t[r].clone()
                new[r] = value(name, row).to(t.dtype)
                for head, where in keep.get(name, {}).items():
                    for pos in where:
                        p = int(ds.positions[pos][row, 0])
                        new[r, p, head] = old[p, head]
            return new

        return fn

    names = [_hook(k, L) for L in range(model.shape.n_layers) for k in ("head", "mlp")]
    hooks = [(n, patch(n)) for n in names if n not in skip]
    with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
        logits = model.bridge(tokens).double()
    end = ds.positions["END"][rows, 0]
    at = logits[torch.arange(len(rows)), torch.as_tensor(end)]
    io, s = ds.fields["io"][rows], ds.fields["s"][rows]
    return (at[torch.arange(len(rows)), io] - at[torch.arange(len(rows)), s]).numpy()


# -- invariants ----------------------------------------------------------------------------------
def test_keeping_every_node_is_the_clean_model(ioi_model):
    _, res = _run(ioi_model, keep={"all": {"components": "heads"}})
    np.testing.assert_array_equal(res.circuit, res.clean)
    assert res.faithfulness == 1.0 and res.recovered == pytest.approx(1.0)
    assert res.kept_nodes == 8 and "F(C) is the clean model" in res.warnings[0]


def test_knocking_out_everything_with_means_matches_plain_hooks(ioi_model):
    su, res = _run(ioi_model, knock_out="all", chunk=5)
    abc = scrub.make_dataset(ABC["generator"], PARAMS, scrub._tree.stream(0, "ablation"))
    means = _hand_means(ioi_model, abc)
    template = np.asarray(su.dataset.fields["template"])
    want = _hand_logit_diff(
        ioi_model,
        su.dataset,
        su.reference,
        value=lambda name, row: means[name][int(template[row])],
        keep={},
    )
    np.testing.assert_allclose(res.baseline, want, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(res.circuit, res.baseline)  # no node kept
    assert "keeps no node" in res.warnings[0]
    assert not np.allclose(res.baseline, res.clean, atol=1e-2)  # the knockout did something


def test_mean_knockout_keeps_nodes_at_their_positions(ioi_model):
    keep = {
        "late": {"components": ["a1.h2", "a1.h0"], "positions": ["END"]},
        "early": {"components": ["a0.h3"], "positions": ["S2", "S1+1"]},
        "mlp": {"components": ["m0"]},
    }
    su, res = _run(ioi_model, knock_out="all", keep=keep)
    abc = scrub.make_dataset(ABC["generator"], PARAMS, scrub._tree.stream(0, "ablation"))
    means = _hand_means(ioi_model, abc)
    template = np.asarray(su.dataset.fields["template"])
    hooks = {
        "blocks.1.attn.hook_z": {2: ["END"], 0: ["END"]},
        "blocks.0.attn.hook_z": {3: ["S2", "S1+1"]},
    }

    def value(name, row):
        return means[name][int(template[row])]

    skip = {"blocks.0.hook_mlp_out"}  # m0 is kept everywhere: computed
    want = _hand_logit_diff(ioi_model, su.dataset, su.reference, value=value, keep=hooks, skip=skip)
    np.testing.assert_allclose(res.circuit, want, atol=1e-4, rtol=0)
    assert res.keep["mlp"] == {"components": ["m0"], "positions": None}
    assert res.kept_nodes == 4


def test_zero_knockout_matches_plain_hooks(ioi_model):
    keep = {"movers": {"components": ["a1.h1", "a1.h3"], "positions": ["END"]}}
    su, res = _run(ioi_model, ablation="zero", keep=keep)
    hooks = {"blocks.1.attn.hook_z": {1: ["END"], 3: ["END"]}}
    shape = ioi_model.shape

    def value(name, row):
        d_head = 32 // shape.n_heads  # the fixture's d_model
        return torch.zeros(su.dataset.seq_len, shape.n_heads, d_head)

    mlps = {f"blocks.{L}.hook_mlp_out" for L in range(shape.n_layers)}  # heads only
    want = _hand_logit_diff(ioi_model, su.dataset, su.reference, value=value, keep=hooks, skip=mlps)
    np.testing.assert_allclose(res.circuit, want, atol=1e-4, rtol=0)
    assert res.ablation == {"kind": "zero"}
    assert res.knock_out == [f"a{L}.h{h}" for L in range(2) for h in range(4)]


def test_the_result_reports_ratios_with_paired_intervals(ioi_model, tmp_path):
    keep = {"some": {"components": ["a1.h0", "a1.h1", "a0.h2"], "positions": ["END"]}}
    _, res = _run(ioi_model, keep=keep)
    assert res.faithfulness == pytest.approx(res.circuit.mean() / res.clean.mean())
    base = res.baseline.mean()
    assert res.recovered == pytest.approx((res.circuit.mean() - base) / (res.clean.mean() - base))
    lo, hi = res.faithfulness_ci
    assert lo <= res.faithfulness <= hi
    data = json.loads(res.to_json())
    assert data["kind"] == "knockout" and len(data["per_example"]["circuit"]) == 16
    assert data["ablation"]["by"] == ["template"] and data["ablation"]["classes"] == "each"
    assert "F(C) / F(M)" in res.table() and repr(res).startswith("KnockoutResult(")
    assert [p.name for p in res.save(tmp_path)] == [f"{res.name}.json"]


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"keep": {"x": {"components": ["m0"]}}}, "m0 is kept, but it is not knocked out"),
        ({"ablation": "resample"}, "mean or by zero"),
        ({"keep": {"x": {"components": ["a0.h0"], "positions": ["S3"]}}}, "S3"),
        ({"ablation": {**MEAN, "by": ["colour"]}}, "no field 'colour'"),
        ({"ablation": {"kind": "zero", "by": ["template"]}}, "are for 'mean' ablation"),
        ({"keeps": {}}, "did you mean 'keep'"),
        ({"keep": {"x": {"components": ["a5.h0"]}}}, "a5.h0"),
    ],
)
def test_invalid_knockouts_say_what_and_where(ioi_model, overrides, message):
    with pytest.raises(scrub.HypothesisError, match=message):
        _run(ioi_model, **overrides)


def test_means_grouped_by_template_need_every_template_in_the_reference(ioi_model):
    train = {"generator": "ioi_names_abc", "params": {**PARAMS, "templates": "train"}}
    with pytest.raises(scrub.HypothesisError, match="no example of the means' reference") as info:
        _run(ioi_model, ablation={**MEAN, "dataset": train})
    assert "template = 9" in info.value.problem and info.value.key[0] == "ablation"


def test_a_head_kept_at_every_position_of_an_example_is_refused(ioi_model):
    every = list(range(21))
    with pytest.raises(scrub.HypothesisError, match="kept at every position"):
        _run(ioi_model, keep={"x": {"components": ["a0.h0"], "positions": every}})


# -- shipped files -------------------------------------------------------------------------------
def test_the_gpt2_file_names_the_papers_26_heads_at_their_positions(gpt2_shaped_dir):
    from scrub.experiments._knockout import _kept, _merge

    exp = load_experiment(ROOT / "experiments" / "ioi" / "knockout_circuit.yaml")
    model = scrub.load_model(str(gpt2_shaped_dir))
    ds = scrub.make_dataset("ioi", {"size": 20}, np.random.default_rng(0))
    candidates, classes, record = _kept(exp.spec, model, ds, np.arange(8))
    kept = _merge([node for nodes in classes.values() for node in nodes])
    assert len(classes) == 7 and exp.spec.completeness
    assert len(candidates) == 144 and len(kept) == 26
    hyp = scrub.load_hypothesis(ROOT / "hypotheses" / "ioi" / "gpt2_circuit.yaml")
    heads = {
        mc.component.name
        for name in hyp.graph
        for mc in hyp.node(name).components
        if mc.component.kind == "head"
    }
    assert {c.name for c in kept} == heads
    assert {tuple(r["positions"]) for r in record.values()} == {("END",), ("S2",), ("S1+1",)}


def test_scrub_patch_prints_the_knockout(capsys):
    path = ROOT / "experiments" / "ioi_names" / "knockout_circuit.yaml"
    assert main(["patch", str(path), "--n", "6"]) == 0
    out = capsys.readouterr().out
    assert "F(M) clean" in out and "F(C) / F(M)" in out and "21 kept nodes" in out


def test_reproduce_runs_the_knockouts_with_their_commands(tmp_path):
    rep = reproduce(only=["faithfulness_node"], n=6, patches=False, out=tmp_path)
    runs = rep.results["knockouts"]
    assert set(runs) == {f"ioi_names-knockout-{k}" for k in ("circuit", "movers", "movers-s2")}
    cmd = runs["ioi_names-knockout-circuit"]["command"]
    assert cmd == "scrub patch experiments/ioi_names/knockout_circuit.yaml --n 6"
    md = (tmp_path / "results.md").read_text()
    assert "## IOI paper faithfulness, node level" in md and cmd in md
    alone = scrub.experiments.patch(ROOT / "experiments/ioi_names/knockout_circuit.yaml", n=6)
    assert runs["ioi_names-knockout-circuit"]["faithfulness"] == pytest.approx(
        alone.faithfulness, abs=1e-12
    )
    assert f"{alone.faithfulness:.3f}" in md and rep.results["claims"] == {}


@pytest.mark.slow
def test_the_gpt2_knockout_runs_on_a_gpt2_shaped_model(gpt2_shaped_dir):
    path = ROOT / "experiments" / "ioi" / "knockout_circuit.yaml"
    res = scrub.experiments.patch(path, model=str(gpt2_shaped_dir), n=4)
    assert res.kept_nodes == 26 and np.isfinite(res.circuit).all()


def test_the_html_report_draws_a_knockout(ioi_model):
    from scrub.report import build_report, document_from_result

    keep = {"late": {"components": ["a1.h0"], "positions": ["END"]}}
    _, res = _run(ioi_model, keep=keep, completeness=True)
    page = build_report([document_from_result(res)], strict=True)
    assert "Completeness (class-based)" in page
    assert "Faithfulness (node-level knockout)" in page and "F(C) / F(M)" in page
    assert "a1.h0" in page and "Unrecognised result" not in page


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_knocking_out_every_component_is_the_empty_hypothesis_under_the_same_means(
    ioi_model, engine
):
    """The knockout and the engines' ``ablation:`` share the per-template, per-position means.

    The root's other inputs are the reference itself (``other: exact``): under mean ablation its
    rows matter through their templates and positions, and the knockout runs on the reference.
    """
    every = ["tok_embed", "pos_embed", *(c.name for c in ioi_model.shape.all_components()
                                         if c.kind in ("head", "mlp"))]  # fmt: skip
    _, res = _run(ioi_model, knock_out=every)
    spec = _spec(ioi_model)
    hyp = scrub.hypothesis_from_dict(
        {k: spec[k] for k in ("model", "dataset", "metric", "defaults", "ablation")}
        | {"nodes": {"out": {"components": ["logits"], "other": "exact"}}}
    )
    with warnings.catch_warnings():  # it keeps nothing, on a random model: both said
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        scored = scrub.run(hyp, model=ioi_model, engine=engine)
    np.testing.assert_allclose(scored.per_example, res.baseline, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scored.per_example_clean, res.clean, atol=1e-6, rtol=0)


# -- completeness --------------------------------------------------------------------------------
def _zeroed_only(model, ds, rows, nodes) -> np.ndarray:
    """The clean model with only ``nodes`` zeroed: hook → {head: position names or None}."""

    def patch(name):
        def fn(t, hook):
            new = t.clone()
            for head, where in nodes[name].items():
                if where is None:
                    new[:, :, head] = 0
                    continue
                for pos in where:
                    p = torch.as_tensor(ds.positions[pos][rows, 0])
                    new[torch.arange(len(rows)), p, head] = 0
            return new

        return fn

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(n, patch(n)) for n in nodes]):
        logits = model.bridge(ds.tokens[torch.as_tensor(rows)]).double()
    at = logits[torch.arange(len(rows)), torch.as_tensor(ds.positions["END"][rows, 0])]
    io, s = ds.fields["io"][rows], ds.fields["s"][rows]
    return (at[torch.arange(len(rows)), io] - at[torch.arange(len(rows)), s]).numpy()


def test_completeness_removes_each_class_from_the_circuit_and_from_the_model(ioi_model):
    keep = {
        "late": {"components": ["a1.h0"], "positions": ["END"]},
        "early": {"components": ["a0.h1"]},
    }
    su, res = _run(ioi_model, ablation="zero", keep=keep, completeness=True)
    rows = {r["removed"]: r for r in res.completeness}
    assert list(rows) == ["late", "early"]
    ds, x = su.dataset, su.reference
    others = {h: None for h in range(4)}
    # M \ late: a1.h0 zeroed at END only; M \ early: a0.h1 zeroed everywhere
    want_m = {
        "late": _zeroed_only(ioi_model, ds, x, {"blocks.1.attn.hook_z": {0: ["END"]}}),
        "early": _zeroed_only(ioi_model, ds, x, {"blocks.0.attn.hook_z": {1: None}}),
    }
    # C \ late: only a0.h1 computed; C \ early: only a1.h0 at END computed
    want_c = {
        "late": _zeroed_only(
            ioi_model, ds, x,
            {"blocks.0.attn.hook_z": {0: None, 2: None, 3: None}, "blocks.1.attn.hook_z": others},
        ),
        "early": _hand_logit_diff(
            ioi_model, ds, x, keep={"blocks.1.attn.hook_z": {0: ["END"]}},
            value=lambda name, row: torch.zeros(ds.seq_len, 4, 8),
            skip={"blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"},
        ),
    }  # fmt: skip
    for cls in rows:
        assert rows[cls]["model_without"] == pytest.approx(want_m[cls].mean(), abs=1e-4)
        assert rows[cls]["circuit_without"] == pytest.approx(want_c[cls].mean(), abs=1e-4)
        gap = abs(rows[cls]["circuit_without"] - rows[cls]["model_without"])
        assert rows[cls]["incompleteness"] == pytest.approx(gap)
    assert "completeness (K a class)" in res.table()
    assert json.loads(res.to_json())["completeness"][0]["removed"] == "late"


def test_a_circuit_that_is_the_whole_model_is_complete(ioi_model):
    keep = {"a": {"components": ["a0.h0", "a1.h2"]}, "b": {"components": ["a0.h1", "a0.h2", "a0.h3", "a1.h0", "a1.h1", "a1.h3"]}}  # fmt: skip
    _, res = _run(ioi_model, keep=keep, completeness=True)
    np.testing.assert_array_equal(res.circuit, res.clean)
    assert [r["incompleteness"] for r in res.completeness] == [0.0, 0.0]
