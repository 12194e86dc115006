"""Both engines against splices computed by hand (tests/manual.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scrub
from scrub.engine import FastEngine, evaluate_reference
from tests.conftest import base_spec
from tests.manual import Manual

ATOL = 1e-4


def sampled(model, nodes, *, params=None, n=16, seed=0):
    spec = base_spec(model.path, nodes=nodes)
    if params:
        spec["dataset"]["params"] = params
    hyp = scrub.hypothesis_from_dict(spec)
    ds = scrub.make_dataset("induction", spec["dataset"]["params"], np.random.default_rng(seed))
    bound = scrub.bind(hyp, model, ds)
    return scrub.sample_tree(bound, n=n, seed=seed)


def toks(tree, name, *, other=False):
    rows = tree.other[name] if other else tree.data[name]
    return tree.dataset.tokens[torch.as_tensor(rows)]


@pytest.fixture(params=["reference", "fast"])
def engine_logits(request):
    """Full logits of the treeified model from one engine."""
    engine = evaluate_reference if request.param == "reference" else FastEngine()

    def logits(model, tree):
        return engine(model, tree).double()

    return logits


def close(a, b):
    # Compare log-probabilities: compatibility mode shifts logits by a per-position constant.
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), atol=ATOL, rtol=0)


def test_manual_model_matches_the_bridge(one_layer_model, tiny_model, dataset):
    for model in (one_layer_model, tiny_model):
        tokens = dataset.tokens[:8]
        close(Manual(model).forward(tokens)["logits"], model.run(tokens)[0].double())


def test_direct_splice_into_logits(one_layer_model, engine_logits):
    model, man = one_layer_model, Manual(one_layer_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "A", "channels": "in"}]},
        "A": {"components": ["a0.h1"], "sampler": "uncond"},
    }
    tree = sampled(model, nodes)
    o = man.forward(toks(tree, "out", other=True))
    a = man.forward(toks(tree, "A"))
    resid = o["resid_final"] - man.head_out(0, 1, o["z", 0, 1]) + man.head_out(0, 1, a["z", 0, 1])
    close(engine_logits(model, tree), man.logits(resid))


def test_all_paths_is_an_activation_patch(tiny_model, engine_logits):
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "A", "paths": "all"}]},
        "A": {"components": ["a0.h2"], "sampler": "uncond"},
    }
    tree = sampled(model, nodes)
    a = man.forward(toks(tree, "A"))
    patched = man.forward(toks(tree, "out", other=True), z_override={(0, 2): a["z", 0, 2]})
    close(engine_logits(model, tree), patched["logits"])


def test_q_channel_splice_through_an_intermediate_node(tiny_model, engine_logits):
    """out <- B (a1.h0, direct) <- C (embed, through q only)."""
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "B"}]},
        "B": {
            "components": ["a1.h0"],
            "sampler": "uncond",
            "inputs": [{"node": "C", "channels": "q"}],
        },
        "C": {"components": ["embed"], "sampler": "uncond"},
    }
    tree = sampled(model, nodes)
    ob = man.forward(toks(tree, "B", other=True))
    c_tokens = toks(tree, "C")
    b_tokens = toks(tree, "B", other=True)
    x1 = ob["resid_pre", 1]
    q_in = x1 + (man.tok(c_tokens) + man.pos(c_tokens)) - (man.tok(b_tokens) + man.pos(b_tokens))
    z_b = man.head_z(1, 0, q_in, x1, x1)
    o = man.forward(toks(tree, "out", other=True))
    resid = o["resid_final"] - man.head_out(1, 0, o["z", 1, 0]) + man.head_out(1, 0, z_b)
    close(engine_logits(model, tree), man.logits(resid))


def test_named_positions_are_resolved_per_example(tiny_model, engine_logits):
    """With random offsets, the child's REP values land on the parent example's REP."""
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "A", "positions": "REP"}]},
        "A": {"components": ["a1.h3"], "sampler": "uncond"},
    }
    params = {"size": 200, "random_offsets": True}
    tree = sampled(model, nodes, params=params)
    ds = tree.dataset
    src = ds.positions["REP"][tree.data["A"]]
    dst = ds.positions["REP"][tree.other["out"]]
    assert (src != dst).any(), "the test needs examples whose REP positions differ"
    o = man.forward(toks(tree, "out", other=True))
    a = man.forward(toks(tree, "A"))
    rows = torch.arange(len(src))[:, None]
    resid = o["resid_final"].clone()
    resid[rows, torch.as_tensor(dst)] += (
        man.head_out(1, 3, a["z", 1, 3])[rows, torch.as_tensor(src)]
        - man.head_out(1, 3, o["z", 1, 3])[rows, torch.as_tensor(dst)]
    )
    close(engine_logits(model, tree), man.logits(resid))


def test_components_of_one_node_see_each_other_on_other_inputs(tiny_model, engine_logits):
    """N maps a0.h0 and a1.h1; its child feeds both through q. The path a0.h0 -> a1.h1 inside N
    is not mapped, so a1.h1 must read a0.h0's output on O_N, not its treeified output."""
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "N"}]},
        "N": {
            "components": ["a0.h0", "a1.h1"],
            "sampler": "uncond",
            "inputs": [{"node": "C", "channels": "q"}],
        },
        "C": {"components": ["embed"], "sampler": "uncond"},
    }
    tree = sampled(model, nodes)
    n_tokens, c_tokens = toks(tree, "N", other=True), toks(tree, "C")
    on = man.forward(n_tokens)
    emb_delta = (man.tok(c_tokens) + man.pos(c_tokens)) - (man.tok(n_tokens) + man.pos(n_tokens))
    x0, x1 = on["resid_pre", 0], on["resid_pre", 1]  # x1 holds a0.h0's output on O_N
    z00 = man.head_z(0, 0, x0 + emb_delta, x0, x0)
    z11 = man.head_z(1, 1, x1 + emb_delta, x1, x1)
    o = man.forward(toks(tree, "out", other=True))
    resid = (
        o["resid_final"]
        - man.head_out(0, 0, o["z", 0, 0])
        + man.head_out(0, 0, z00)
        - man.head_out(1, 1, o["z", 1, 1])
        + man.head_out(1, 1, z11)
    )
    close(engine_logits(model, tree), man.logits(resid))


def test_mlp_in_channel_and_all_paths_into_a_channel(tiny_model, engine_logits):
    """out <- M (m1) <- H (a0.h3, all paths, into 'in'): m1 reads resid_mid with a0.h3 patched."""
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "M"}]},
        "M": {
            "components": ["m1"],
            "sampler": "uncond",
            "inputs": [{"node": "H", "paths": "all", "channels": "in"}],
        },
        "H": {"components": ["a0.h3"], "sampler": "uncond"},
    }
    tree = sampled(model, nodes)
    h = man.forward(toks(tree, "H"))
    patched = man.forward(toks(tree, "M", other=True), z_override={(0, 3): h["z", 0, 3]})
    m1 = man.mlp(1, patched["resid_mid", 1])
    o = man.forward(toks(tree, "out", other=True))
    resid = o["resid_final"] - o["mlp", 1] + m1
    close(engine_logits(model, tree), man.logits(resid))


@pytest.mark.parametrize("paths", ["direct", "all"])
def test_exact_leaf_under_exact_parent_reads_reference(tiny_model, paths, engine_logits):
    """A leaf's components run on its own data: with exact samplers that is the reference."""
    model, man = tiny_model, Manual(tiny_model)
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "A", "paths": paths}]},
        "A": {"components": ["a1.h2"], "sampler": "exact"},
    }
    tree = sampled(model, nodes)
    x = man.forward(toks(tree, "out"))
    if paths == "all":
        expected = man.forward(toks(tree, "out", other=True), z_override={(1, 2): x["z", 1, 2]})
        close(engine_logits(model, tree), expected["logits"])
    else:
        o = man.forward(toks(tree, "out", other=True))
        resid = (
            o["resid_final"] - man.head_out(1, 2, o["z", 1, 2]) + man.head_out(1, 2, x["z", 1, 2])
        )
        close(engine_logits(model, tree), man.logits(resid))
