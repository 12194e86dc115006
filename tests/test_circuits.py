"""EAP-IG / MIB circuits: import as a hypothesis, export from one, and what the scores mean."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import scrub
from scrub import cli
from scrub.interop import circuit_to_spec, hypothesis_to_circuit, read_circuit
from scrub.testing import save_random_model

METRIC = {"kind": "loss", "positions": "REP", "labels": "next"}
DATASET = {"generator": "induction", "params": {"size": 200}}


def all_edges(n_layers: int, n_heads: int, *, parallel: bool) -> list[str]:
    """Every edge of a model's edge graph, in EAP-IG's naming."""
    edges, written = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        edges += [f"{s}->{h}<{ch}>" for s in written for h in heads for ch in "qkv"]
        mlp_reads = written if parallel else written + heads
        edges += [f"{s}->m{layer}" for s in mlp_reads]
        written = written + heads + [f"m{layer}"]
    return edges + [f"{s}->logits" for s in written]


def circuit_file(tmp_path, kept, *, n_layers=2, n_heads=4, parallel=False, name="c.json"):
    edges = {e: {"score": 0.5, "in_graph": e in kept} for e in all_edges(n_layers, n_heads, parallel=parallel)}  # fmt: skip
    data = {
        "cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": parallel, "d_model": 32},
        "nodes": {"input": {"in_graph": True}, "logits": {"in_graph": True}},
        "edges": edges,
    }  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def imported(path, model_dir):
    spec, dropped = circuit_to_spec(read_circuit(path), model=str(model_dir), dataset=DATASET, metric=METRIC)  # fmt: skip
    spec["defaults"] = {"n": 8, "seed": 0}
    return scrub.hypothesis_from_dict(spec), spec, dropped


HAND = [  # a previous-token head feeding an induction head's key, and a dangling edge
    "input->a0.h1<q>", "input->a0.h1<k>", "input->a0.h1<v>",
    "a0.h1->a1.h0<k>", "input->a1.h0<q>", "input->a1.h0<v>",
    "a1.h0->logits", "input->logits",
    "a0.h2->m1",  # a0.h2 has no kept input: on no path from input, so dropped
]  # fmt: skip


def test_a_hand_built_circuit_imports_as_the_expected_hypothesis(
    tmp_path, tiny_model, tiny_model_dir
):
    hyp, spec, dropped = imported(circuit_file(tmp_path, HAND), tiny_model_dir)
    assert dropped == 1
    assert spec["nodes"] == {
        "out": {"components": ["logits"], "inputs": [
            {"node": "a1_h0", "channels": ["in"]}, {"node": "input", "channels": ["in"]}]},
        "a1_h0": {"components": ["a1.h0"], "inputs": [
            {"node": "a0_h1", "channels": ["k"]}, {"node": "input", "channels": ["q", "v"]}]},
        "a0_h1": {"components": ["a0.h1"], "inputs": [{"node": "input", "channels": ["q", "k", "v"]}]},
        "input": {"components": ["embed"]},
    }  # fmt: skip
    assert repr(read_circuit(circuit_file(tmp_path, HAND))) == "Circuit(2 layers x 4 heads, 9 of 110 edges kept)"  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        fast = scrub.run(hyp, model=tiny_model, n=8)
        ref = scrub.run(hyp, model=tiny_model, n=8, engine="reference")
    np.testing.assert_allclose(fast.per_example, ref.per_example, atol=1e-4)
    assert fast.scrubbed != fast.clean and fast.scrubbed != fast.baseline


@pytest.mark.parametrize("family", ["gpt2", "pythia"])
def test_the_full_circuit_is_the_clean_model_and_the_empty_one_the_baseline(tmp_path, family):
    model_dir = save_random_model(tmp_path / family, family, seed=4)
    parallel = family == "pythia"
    full = circuit_file(tmp_path, set(all_edges(2, 4, parallel=parallel)), parallel=parallel)
    hyp, _, dropped = imported(full, model_dir)
    assert dropped == 0
    model = scrub.load_model(str(model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        result = scrub.run(hyp, model=model, n=8)
    np.testing.assert_allclose(result.per_example, result.per_example_clean, atol=1e-4)
    empty, spec, _ = imported(circuit_file(tmp_path, set(), parallel=parallel, name="e.json"), model_dir)  # fmt: skip
    assert spec["nodes"] == {"out": {"components": ["logits"]}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scrub.ScrubWarning)
        result = scrub.run(empty, model=model, n=8)  # on a random model, maybe also undefined
    assert any("equals the baseline exactly" in str(w.message) for w in caught)
    assert result.per_example == result.per_example_baseline


def test_round_trip_keeps_the_edges(tmp_path, tiny_model, tiny_model_dir):
    path = circuit_file(tmp_path, HAND)
    hyp, spec, _ = imported(path, tiny_model_dir)
    exported = hypothesis_to_circuit(hyp, tiny_model.shape, d_model=32)
    assert set(exported["edges"]) == set(HAND) - {"a0.h2->m1"}
    assert all(e == {"score": 1.0, "in_graph": True} for e in exported["edges"].values())
    assert exported["cfg"] == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 32}  # fmt: skip
    again = tmp_path / "again.json"
    again.write_text(json.dumps(exported))
    assert imported(again, tiny_model_dir)[1]["nodes"] == spec["nodes"]


def test_a_hypothesis_exports_one_edge_per_component_pair_and_channel(tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "ind"}]},
        "ind": {"components": ["a1.h0", "a1.h1"], "inputs": [{"node": "prev", "channels": "k"}]},
        "prev": {"components": ["a0.h1", "m0"], "sampler": "uncond"},
    }
    hyp = scrub.hypothesis_from_dict({"model": tiny_model.path, "dataset": DATASET, "metric": METRIC, "nodes": nodes})  # fmt: skip
    circuit = hypothesis_to_circuit(hyp, tiny_model.shape, d_model=32)
    assert sorted(circuit["edges"]) == [
        "a0.h1->a1.h0<k>", "a0.h1->a1.h1<k>", "a1.h0->logits", "a1.h1->logits",
        "m0->a1.h0<k>", "m0->a1.h1<k>",
    ]  # fmt: skip
    assert circuit["scrub"]["dropped"] == ["node 'prev': sampler UncondSampler()"]


def test_what_an_edge_circuit_cannot_express_is_refused(tiny_model):
    base = {"model": tiny_model.path, "dataset": DATASET, "metric": METRIC}
    for edge, key in (({"node": "h", "paths": "all"}, "paths"), ({"node": "h", "positions": "END"}, "positions")):  # fmt: skip
        nodes = {
            "out": {"components": ["logits"], "inputs": [edge]},
            "h": {"components": ["a0.h0"]},
        }
        with pytest.raises(scrub.HypothesisError) as info:
            hypothesis_to_circuit(scrub.hypothesis_from_dict({**base, "nodes": nodes}), tiny_model.shape, d_model=32)  # fmt: skip
        assert info.value.key == ("nodes", "out", "inputs", 0, key)


@pytest.mark.parametrize(
    ("edge", "problem"),
    [
        ("input->a0.h0", "names its channel"),
        ("a0.h0->m0<q>", "names its channel"),
        ("a1.h0->m1", "parallel blocks"),
        ("a2.h0->logits", "outside the circuit's model"),
        ("m1->a0.h0<q>", "does not read it"),
        ("embed->logits", "is not SRC->DST"),
    ],
)
def test_malformed_circuits_are_clear_errors(tmp_path, edge, problem):
    data = {"cfg": {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": True}, "nodes": {},
            "edges": {edge: {"score": 1.0, "in_graph": True}}}  # fmt: skip
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(scrub.HypothesisError, match=problem) as info:
        read_circuit(path)
    assert info.value.key == ("edges", edge) and info.value.file == str(path)


def test_cli_import_then_check_then_export(tmp_path, tiny_model_dir, capsys):
    circuit = circuit_file(tmp_path, HAND)
    out = tmp_path / "hyp" / "circuit.yaml"
    argv = ["import-circuit", str(circuit), "--out", str(out), "--model", str(tiny_model_dir),
            "--dataset", "induction", "--metric", "{kind: loss, positions: REP, labels: next}"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "9 kept edges, 1 dropped" in capsys.readouterr().out
    assert cli.main(["check", str(out)]) == 0
    exported = tmp_path / "exported.json"
    assert cli.main(["export-circuit", str(out), "--out", str(exported)]) == 0
    assert set(json.loads(exported.read_text())["edges"]) == set(HAND) - {"a0.h2->m1"}
