"""Architectures beyond GPT-2: loading, what channels mean there, and both engines on each family.

Every family of :data:`scrub._architectures.ARCHITECTURES` is built as a tiny random Hugging Face
model without a tokenizer (:func:`scrub.testing.save_random_model`), loaded, checked against the
Hugging Face model itself, and scrubbed: the fast engine equals the reference on random
hypotheses, and the invariants (full == clean, empty == baseline) hold.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub.engine import FastEngine, evaluate_reference
from scrub.testing import FAMILIES, save_random_model
from tests.conftest import all_components, base_spec
from tests.random_hypotheses import random_nodes

OTHERS = [f for f in FAMILIES if f != "gpt2"]


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    return {f: save_random_model(tmp_path_factory.mktemp(f), f, seed=i) for i, f in enumerate(FAMILIES)}  # fmt: skip


@pytest.fixture(scope="session")
def family_models(family_dirs):
    return {f: scrub.load_model(str(d)) for f, d in family_dirs.items()}


def hyp(model, nodes, **overrides):
    return scrub.hypothesis_from_dict(base_spec(model.path, nodes=nodes, **overrides))


# -- loading -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", OTHERS)
def test_loads_without_a_tokenizer_and_matches_hugging_face(family, family_dirs, family_models):
    from transformers import AutoModelForCausalLM

    directory = family_dirs[family]
    assert not (directory / "tokenizer.json").exists()
    model = family_models[family]
    hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
    tokens = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    logits, _, _ = model.run(tokens)
    torch.testing.assert_close(logits.log_softmax(-1), expected, atol=1e-4, rtol=0)


def test_each_family_has_its_facts(family_models):
    shapes = {f: m.shape for f, m in family_models.items()}
    assert [f for f, s in shapes.items() if s.parallel] == ["pythia"]
    assert [f for f, s in shapes.items() if s.pos_embed] == ["gpt2"]
    assert [f for f, s in shapes.items() if not s.head_outputs] == ["gemma2"]
    assert {f: s.kv_group for f, s in shapes.items()} == {
        "gpt2": 1, "pythia": 1, "llama": 2, "qwen2": 2, "gemma2": 2
    }  # fmt: skip
    assert (
        repr(family_models["pythia"].architecture) == "Architecture('GPT-NeoX', parallel, rotary)"
    )


def test_an_encoder_is_one_clear_error(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=24)  # fmt: skip
    BertForMaskedLM(config).save_pretrained(tmp_path)
    with pytest.raises(scrub.HypothesisError, match="BertForMaskedLM, which scrub cannot treeify"):
        scrub.load_model(str(tmp_path))


def test_an_unsupported_architecture_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.load_model(str(tmp_path))
    assert "MambaForCausalLM" in info.value.problem
    assert "Llama (LlamaForCausalLM)" in info.value.hint


# -- channels where the architecture makes them subtle -------------------------------------------
def test_parallel_block_head_is_not_upstream_of_its_mlp(family_models, dataset):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "mlp"}]},
        "mlp": {"components": ["m1"], "inputs": [{"node": "head"}]},
        "head": {"components": ["a1.h0"]},
    }
    for family in ("gpt2", "llama"):  # sequential blocks: m1 reads a1.h0
        scrub.bind(hyp(family_models[family], nodes), family_models[family], dataset)
    pythia = family_models["pythia"]
    with pytest.raises(scrub.HypothesisError, match="blocks are parallel") as info:
        scrub.bind(hyp(pythia, nodes), pythia, dataset)
    assert "a1.h0 (node 'head') is not upstream of m1" in info.value.problem
    assert info.value.key == ("nodes", "mlp", "inputs", 0, "node")
    assert pythia.shape.upstream(scrub.Component("head", 0, 1), scrub.Component("mlp", 1))


def test_parallel_layers_as_separate_nodes_recover_the_clean_model(family_models):
    """Heads and MLP of each layer as sibling nodes that both read the earlier layers == clean.

    H0 and M0 as all-paths inputs of one node claim disjoint paths only because a0's heads do
    not feed m0 in a parallel block (the overlapping-claims check knows the architecture).
    """
    model = family_models["pythia"]
    heads = lambda layer: [f"a{layer}.h{h}" for h in range(4)]  # noqa: E731
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": n, "paths": "direct"}
                                                     for n in ("H1", "M1", "H0", "M0", "E")]},
        "H1": {"components": heads(1), "sampler": "exact",
               "inputs": [{"node": "H0", "paths": "all"}, {"node": "M0", "paths": "all"}, {"node": "E"}]},
        "M1": {"components": ["m1"], "sampler": "exact",
               "inputs": [{"node": "H0", "paths": "all"}, {"node": "M0", "paths": "all"}, {"node": "E"}]},
        "H0": {"components": heads(0), "sampler": "exact", "inputs": [{"node": "E"}]},
        "M0": {"components": ["m0"], "sampler": "exact", "inputs": [{"node": "E"}]},
        "E": {"components": ["embed"], "sampler": "exact"},
    }  # fmt: skip
    for engine in ("fast", "reference"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)  # equal to clean, maybe bitwise
            result = scrub.run(hyp(model, nodes), model=model, engine=engine, n=8)
        np.testing.assert_allclose(result.per_example, result.per_example_clean, atol=1e-5)


def _ungrouped(src, dst):
    """The same Llama with its K/V projections repeated per query head (no GQA)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(src)
    cfg = model.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    d_head = cfg.hidden_size // cfg.num_attention_heads
    cfg.num_key_value_heads = cfg.num_attention_heads
    repeated = LlamaForCausalLM(cfg)
    state = model.state_dict()
    for name, value in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            per_head = value.view(-1, d_head, value.shape[-1])
            state[name] = per_head.repeat_interleave(group, 0).reshape(-1, value.shape[-1])
    repeated.load_state_dict(state)
    repeated.save_pretrained(dst)
    return dst


def test_gqa_splices_are_per_query_head(family_dirs, family_models, tmp_path):
    """Heads of one key/value group fed differently == the ungrouped model fed the same way."""
    grouped = family_models["llama"]
    ungrouped = scrub.load_model(str(_ungrouped(family_dirs["llama"], tmp_path)))
    assert (grouped.shape.kv_group, ungrouped.shape.kv_group) == (2, 1)
    nodes = {  # a1.h0 and a1.h1 share a key/value head; their k and v come from different nodes
        "out": {"components": ["logits"],
                "inputs": [{"node": "h0", "positions": "REP"}, {"node": "h1", "positions": "REP"}]},
        "h0": {"components": ["a1.h0"], "inputs": [{"node": "prev", "channels": ["k", "v"]}]},
        "h1": {"components": ["a1.h1"], "sampler": "exact",
               "inputs": [{"node": "tok", "channels": ["k"], "paths": "all"}]},
        "prev": {"components": ["a0.h2", "m0"], "sampler": "exact"},
        "tok": {"components": ["embed"], "feature": "segment",
                "sampler": {"kind": "generate", "feature": "segment"}},
    }  # fmt: skip
    scores = {}
    for name, model in (("grouped", grouped), ("ungrouped", ungrouped)):
        for engine in ("fast", "reference"):
            scores[name, engine] = scrub.run(hyp(model, nodes), model=model, engine=engine, n=16)
    base = scores["ungrouped", "reference"]
    for result in scores.values():
        np.testing.assert_allclose(result.per_example, base.per_example, atol=1e-4)
    assert abs(base.scrubbed - base.clean) > 1e-3  # the hypothesis scrubs something


def test_rope_models_have_no_pos_embed(family_models, dataset):
    model = family_models["llama"]
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "e"}]}, "e": {"components": ["embed"]}}  # fmt: skip
    bound = scrub.bind(hyp(model, nodes), model, dataset)
    assert [str(mc) for mc in bound.hypothesis.node("e").components] == ["tok_embed"]
    nodes["e"]["components"] = ["pos_embed"]
    with pytest.raises(scrub.HypothesisError, match="rotary position embeddings") as info:
        scrub.bind(hyp(model, nodes), model, dataset)
    assert info.value.key == ("nodes", "e", "components")


def test_component_means_on_rope_models(family_models, dataset):
    """``embed`` is ``tok_embed`` alone there (as in hypotheses); ``pos_embed`` is refused."""
    model = family_models["llama"]
    means = scrub.component_means(model, dataset, ["embed", "a0.h1"], classes=["END"])
    assert [c.name for c in means.means] == ["tok_embed", "a0.h1"]
    with pytest.raises(scrub.HypothesisError, match="has no pos_embed: Llama models") as info:
        scrub.component_means(model, dataset, ["pos_embed"], classes=["END"])
    assert "tok_embed" in info.value.hint
    gpt2 = scrub.component_means(family_models["gpt2"], dataset, ["embed"], classes=["END"])
    assert [c.name for c in gpt2.means] == ["tok_embed", "pos_embed"]


def test_gemma2_heads_have_no_direct_paths(family_models, dataset):
    model = family_models["gemma2"]
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "h"}]}, "h": {"components": ["a1.h0", "m0"]}}  # fmt: skip
    with pytest.raises(scrub.HypothesisError, match="no residual-stream contribution") as info:
        scrub.bind(hyp(model, nodes), model, dataset)
    assert info.value.hint == "use 'paths: all' (an activation patch of the head's z)"
    nodes["out"]["inputs"][0]["paths"] = "all"
    scrub.bind(hyp(model, nodes), model, dataset)
    nodes["h"]["components"] = ["m0"]  # MLP outputs are normalised alone: direct paths are fine
    nodes["out"]["inputs"][0]["paths"] = "direct"
    scrub.bind(hyp(model, nodes), model, dataset)


# -- both engines, on every family ----------------------------------------------------------------
def _random_tree(model, seed):
    """A random valid hypothesis: on Gemma-2 every input is all-paths (heads have no direct
    paths there), which can make two inputs claim one path; such draws are skipped."""
    for attempt in range(50):
        rng = np.random.default_rng([seed, attempt])
        nodes = random_nodes(rng, model.shape, max_depth=int(rng.integers(1, 4)))
        for node in nodes.values():  # random_nodes picks children by the model's own order
            for edge in node.get("inputs", []):
                if not model.shape.head_outputs:
                    edge["paths"] = "all"
        h = hyp(model, nodes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            try:
                bound = scrub.bind(h, model, make_dataset_for(h, seed=seed))
            except scrub.HypothesisError as exc:
                if "claim the same model path" not in exc.problem:
                    raise
                continue
            return scrub.sample_tree(bound, n=8, seed=seed)
    raise AssertionError("no valid random hypothesis in 50 draws")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("family", OTHERS)
def test_fast_equals_reference_on_random_hypotheses(family, family_models, seed):
    model = family_models[family]
    tree = _random_tree(model, seed)
    ref = evaluate_reference(model, tree).double().log_softmax(-1)
    fast = FastEngine(kernels=bool(seed % 2), max_batch_rows=[5, 4096][seed % 2])(model, tree)
    torch.testing.assert_close(fast.double().log_softmax(-1), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("family", OTHERS)
def test_invariants_full_is_clean_and_empty_is_baseline(family, family_models, engine):
    model = family_models[family]
    full = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": "all"}]},
        "all": {"components": all_components(2, 4), "sampler": "exact"},
    }
    with pytest.warns(scrub.ScrubWarning, match="equals the clean model's exactly"):
        result = scrub.run(hyp(model, full), model=model, engine=engine, n=8)
    assert result.per_example == result.per_example_clean and result.recovered == 1.0
    empty = hyp(model, {"out": {"components": ["logits"]}})
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        empty = scrub.run(empty, model=model, engine=engine, n=8)
    assert empty.per_example == empty.per_example_baseline and empty.recovered == 0.0


def test_the_engine_path_is_recorded(family_models):
    """Kernels where they reproduce the model; Gemma-2 falls back to output groups, and says so."""
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "m"}]}, "m": {"components": ["m0", "m1"]}}  # fmt: skip
    engines = {}
    for family, model in family_models.items():
        result = scrub.run(hyp(model, nodes), model=model, n=4)
        engines[family] = result.engine
    assert engines == {
        "gpt2": "fast", "pythia": "fast", "llama": "fast", "qwen2": "fast",
        "gemma2": "fast (output groups: the kernels do not restate attention soft-capping, "
        "sliding-window attention)",
    }  # fmt: skip
