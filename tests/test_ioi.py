"""The IOI datasets: GPT-2 tokens, per-example positions, flips and generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import scrub
from scrub.data import ioi_templates
from scrub.data.ioi import BOS, FLIPS, flip, ioi, ioi_abc

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def tok():
    return scrub.gpt2_tokenizer()


@pytest.fixture(scope="module")
def ds():
    return ioi(rng=np.random.default_rng(0), size=600)


@pytest.fixture(scope="module")
def abc():
    return ioi_abc(rng=np.random.default_rng(1), size=600)


def col(d, name):
    return d.positions[name][:, 0]


def at(d, name):
    """The token at named position ``name`` of every example."""
    return d.tokens.numpy()[np.arange(len(d)), col(d, name)]


def check_layout(d, tok):
    """Every structural promise of the module docstring, for every example."""
    tokens = d.tokens.numpy()
    n, t = tokens.shape
    assert t == 21
    assert (tokens[:, 0] == BOS).all() and (col(d, "BOS") == 0).all()
    assert (at(d, "IO") == d.fields["io"]).all()
    assert (at(d, "S1") == d.fields["s"]).all()
    assert (at(d, "S2") == d.fields["s2"]).all()
    assert (col(d, "S1+1") == col(d, "S1") + 1).all()
    assert (col(d, "END") == d.fields["length"] - 1).all()
    assert (at(d, "END") == tok.encode(" to")[0]).all()  # every template ends "... to"
    pad = np.arange(t)[None, :] > col(d, "END")[:, None]
    assert (tokens[pad] == BOS).all() and (tokens[:, 1:][~pad[:, 1:]] != BOS).all()
    first = np.minimum(col(d, "IO"), col(d, "S1"))
    assert ((col(d, "IO") < col(d, "S1")) == (d.fields["order"] == 0)).all()
    assert (np.maximum(col(d, "IO"), col(d, "S1")) < col(d, "S2")).all()
    assert (col(d, "S2") < col(d, "END")).all() and (first >= 1).all()
    assert (d.fields["io"] != d.fields["s"]).all() and (d.fields["io"] != d.fields["s2"]).all()
    for name, value in d.positions.items():
        assert value.shape == (n, 1) and value.dtype == np.int64, name


def test_positions_point_at_the_right_tokens(ds, abc, tok):
    check_layout(ds, tok)
    check_layout(abc, tok)
    assert (ds.fields["s"] == ds.fields["s2"]).all()
    assert (abc.fields["s"] != abc.fields["s2"]).all()
    first = np.minimum(col(abc, "IO"), col(abc, "S1"))
    assert (col(abc, "IO1") == first).all() and (col(abc, "IO1+1") == first + 1).all()
    assert (col(abc, "IO2") == np.maximum(col(abc, "IO"), col(abc, "S1"))).all()
    assert (col(abc, "S") == col(abc, "S2")).all()
    assert set(abc.positions) - set(ds.positions) == {"IO1", "IO2", "S", "IO1+1"}


def test_prompts_are_the_templates_filled_in(ds, abc, tok):
    # Rebuild the text from the template and the fields, and compare with GPT-2's own
    # tokenization of the whole prompt (piecewise tokenization must agree with it).
    word = {i: tok.decode([i]).strip() for i in np.unique(np.concatenate(list(ds.fields.values())))}
    word |= {i: tok.decode([i]).strip() for f in ("io", "s", "s2") for i in abc.fields[f]}
    seen = set()
    for d, family in ((ds, ("ABBA", "BABA")), (abc, ("ABC", "BAC"))):
        f = d.fields
        for r in range(len(d)):
            template = ioi_templates.TEMPLATE_FAMILIES[family[f["order"][r]]][f["template"][r]]
            text = (
                template.replace("[A]", word[f["io"][r]])
                .replace("[B]", word[f["s"][r]])
                .replace("[C]", word[f["s2"][r]])
                .replace("[PLACE]", word[f["place"][r]])
                .replace("[OBJECT]", word[f["object"][r]])
            )
            ids = d.tokens[r, 1 : f["length"][r]].tolist()
            assert ids == tok.encode(text), (r, text)
            seen.add((d.name, int(f["template"][r]), int(f["order"][r])))
    # 600 mixed prompts cover every template in both orders, in both families.
    assert len(seen) == 2 * 15 * 2


def test_words_are_single_gpt2_tokens(tok):
    for words in (ioi_templates.NAMES, ioi_templates.PLACES, ioi_templates.OBJECTS):
        assert len(set(words)) == len(words)
        for w in words:
            assert len(tok.encode(" " + w)) == 1, w
    assert tok.encode(" Mary") == [5335]


def test_templates_abba_baba_abc():
    t = ioi_templates
    assert len(t.BABA_TEMPLATES) == len(t.ABBA_TEMPLATES) == len(t.ABC_TEMPLATES) == 15
    assert t.ABBA_TEMPLATES[0] == "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"
    assert t.BABA_TEMPLATES[0] == "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to"
    assert t.ABC_TEMPLATES[0] == "Then, [A] and [B] went to the [PLACE]. [C] gave a [OBJECT] to"
    for abba, baba, abc_, bac in zip(
        t.ABBA_TEMPLATES, t.BABA_TEMPLATES, t.ABC_TEMPLATES, t.BAC_TEMPLATES, strict=True
    ):
        assert abba.index("[A]") < abba.index("[B]") and baba.index("[B]") < baba.index("[A]")
        assert abba.count("[B]") == baba.count("[B]") == 2 and abba.count("[A]") == 1
        assert abc_.count("[B]") == bac.count("[B]") == abc_.count("[C]") == 1
        swapped = abba.replace("[A]", "[X]", 1).replace("[B]", "[A]", 1).replace("[X]", "[B]", 1)
        assert swapped == baba
        assert abba.rsplit("[B]", 1)[0] == abc_.rsplit("[C]", 1)[0]


@pytest.mark.parametrize("prompt_type, order", [("ABBA", 0), ("BABA", 1)])
def test_prompt_type(prompt_type, order, tok):
    d = ioi(rng=np.random.default_rng(2), size=50, prompt_type=prompt_type, nb_templates=3)
    check_layout(d, tok)
    assert (d.fields["order"] == order).all() and set(d.fields["template"]) <= {0, 1, 2}
    text = tok.decode(d.tokens[0, 1 : d.fields["length"][0]])
    first_name = tok.decode([d.fields["io"][0] if order == 0 else d.fields["s"][0]])
    assert text.index(first_name) < text.index(tok.decode([d.fields["io" if order else "s"][0]]))


def test_one_length_for_every_family_and_option():
    rng = np.random.default_rng(0)
    lengths = {
        ioi(rng=rng, size=5, prompt_type="ABBA", nb_templates=1).seq_len,
        ioi(rng=rng, size=5, prompt_type="BABA").seq_len,
        ioi_abc(rng=rng, size=5, prompt_type="BAC", nb_templates=2).seq_len,
    }
    assert lengths == {21}


def test_seeded():
    a = ioi(rng=np.random.default_rng(5), size=40)
    b = ioi(rng=np.random.default_rng(5), size=40)
    c = ioi(rng=np.random.default_rng(6), size=40)
    assert a.tokens.equal(b.tokens) and not a.tokens.equal(c.tokens)


def test_features(ds, abc):
    rows = np.arange(10)
    assert ds.feature("s_duplicated")(ds, rows).all()
    assert not abc.feature("s_duplicated")(abc, rows).any()
    assert (ds.feature("io_name")(ds, rows) == ds.fields["io"][rows]).all()
    assert (ds.feature("s_name")(ds, rows) == ds.fields["s"][rows]).all()
    pos = ds.feature("positions")(ds, rows)
    assert pos.shape == (10, 3) and (pos[:, 0] == col(ds, "IO")[rows]).all()
    assert (pos[:, 2] == col(ds, "S2")[rows]).all()


def test_bad_params_are_hypothesis_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(scrub.HypothesisError, match="prompt_type"):
        scrub.make_dataset("ioi", {"prompt_type": "ABC"}, rng)
    with pytest.raises(scrub.HypothesisError, match="nb_templates"):
        scrub.make_dataset("ioi_abc", {"nb_templates": 16}, rng)
    assert scrub.make_dataset("ioi_abc", {"size": 3, "prompt_type": "BAC"}, rng).name == "ioi_abc"


# -- flips ---------------------------------------------------------------------------------------
NAME_FIELDS = {"IO": {"io"}, "S": {"s", "s2"}, "S1": {"s"}, "S2": {"s2"}}
NAME_POSITIONS = {"IO": {"IO"}, "S": {"S1", "S2"}, "S1": {"S1"}, "S2": {"S2"}}


@pytest.mark.parametrize("what", ["IO", "S", "S1", "S2"])
@pytest.mark.parametrize("family", ["ds", "abc"])
def test_name_flips_change_exactly_that_name(what, family, request, tok):
    d = request.getfixturevalue(family)
    f = flip(d, what, rng=np.random.default_rng(3))
    changed = {k for k in d.fields if not np.array_equal(d.fields[k], f.fields[k])}
    expect = NAME_FIELDS[what] - ({"s2"} if family == "abc" and what == "S" else set())
    assert changed == expect
    for k in expect:
        assert (f.fields[k] != d.fields[k]).all()  # every row changed
    for k in d.positions:
        assert np.array_equal(d.positions[k], f.positions[k])
    # The tokens differ exactly at the flipped name's positions.
    moved = np.zeros(d.tokens.shape, dtype=bool)
    for p in NAME_POSITIONS[what]:
        if family == "abc" and what == "S" and p == "S2":
            continue
        moved[np.arange(len(d)), col(d, p)] = True
    assert np.array_equal((d.tokens != f.tokens).numpy(), moved)
    names = np.stack([f.fields["io"], f.fields["s"], f.fields["s2"]], axis=1)
    assert (names[:, 0] != names[:, 1]).all() and (names[:, 0] != names[:, 2]).all()
    check_layout(f, tok)
    assert f.params["flips"] == [what] and f.name == d.name


@pytest.mark.parametrize("family", ["ds", "abc"])
def test_order_flip_swaps_abba_and_baba(family, request, tok):
    d = request.getfixturevalue(family)
    f = flip(d, "order")
    assert (f.fields["order"] == 1 - d.fields["order"]).all()
    for k in ("template", "io", "s", "s2", "place", "object", "length"):
        assert np.array_equal(f.fields[k], d.fields[k]), k
    # IO and S1 swap places; everything else stays where it was.
    assert np.array_equal(col(f, "IO"), col(d, "S1"))
    assert np.array_equal(col(f, "S1"), col(d, "IO"))
    for k in ("S2", "END"):
        assert np.array_equal(col(f, k), col(d, k))
    moved = np.zeros(d.tokens.shape, dtype=bool)
    moved[np.arange(len(d)), col(d, "IO")] = moved[np.arange(len(d)), col(d, "S1")] = True
    assert np.array_equal((d.tokens != f.tokens).numpy(), moved)
    check_layout(f, tok)
    assert flip(f, "order").tokens.equal(d.tokens)


def test_flips_compose(ds):
    one = flip(flip(ds, "IO", rng=np.random.default_rng(7)), "order")
    two = flip(ds, ["IO", "order"], rng=np.random.default_rng(7))
    assert one.tokens.equal(two.tokens) and one.params["flips"] == two.params["flips"]
    both = flip(flip(ds, "IO", rng=np.random.default_rng(1)), "S", rng=np.random.default_rng(2))
    assert (both.fields["io"] != ds.fields["io"]).all()
    assert (both.fields["s"] != ds.fields["s"]).all()
    assert (both.fields["s"] == both.fields["s2"]).all()
    assert np.array_equal(both.fields["template"], ds.fields["template"])
    assert both.params["flips"] == ["IO", "S"]


def test_flip_errors(ds):
    with pytest.raises(ValueError, match="unknown flip"):
        flip(ds, "PLACE", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        flip(ds, "IO")
    assert set(FLIPS) == {"IO", "S", "S1", "S2", "order"}


# -- generators ----------------------------------------------------------------------------------
KEPT = {
    "io": ("io",),
    "template": ("template", "order"),
    "positions": ("positions",),
    "names": ("io", "s", "s2"),
}


@pytest.mark.parametrize("family", ["ds", "abc"])
@pytest.mark.parametrize("feature", sorted(KEPT))
def test_generators_keep_their_feature_and_are_seeded(feature, family, request, tok):
    d = request.getfixturevalue(family)
    rows = np.arange(0, 600, 3)
    gen = d.generator(feature)
    new = gen(d, rows, np.random.default_rng(11))
    again = gen(d, rows, np.random.default_rng(11))
    other = gen(d, rows, np.random.default_rng(12))
    assert new.tokens.equal(again.tokens) and not new.tokens.equal(other.tokens)
    assert new.seq_len == d.seq_len and len(new) == len(rows)
    assert set(new.positions) == set(d.positions) and set(new.fields) == set(d.fields)
    check_layout(new, tok)
    every = np.arange(len(rows))
    for k in KEPT[feature]:
        assert np.array_equal(new.feature(k)(new, every), d.feature(k)(d, rows)), k
    # The rest is fresh: names and objects change in most rows.
    for k in {"io", "s", "object"} - set(KEPT[feature]):
        assert (new.fields[k] != d.fields[k][rows]).mean() > 0.8, k
    assert (new.feature("s_duplicated")(new, every) == (family == "ds")).all()


def test_generators_make_variety(ds):
    rows = np.arange(300)
    names = ds.generator("names")(ds, rows, np.random.default_rng(0))
    assert (names.fields["template"] != ds.fields["template"][rows]).all()
    pos = ds.generator("positions")(ds, rows, np.random.default_rng(0))
    # Several templates share positions, so some rows move to another template.
    assert (pos.fields["template"] != ds.fields["template"][rows]).any()
    io = ds.generator("io")(ds, rows, np.random.default_rng(123))  # not the pool's seed
    assert (io.fields["template"] != ds.fields["template"][rows]).mean() > 0.8


def test_generate_sampler_extends_the_pool():
    d = ioi(rng=np.random.default_rng(0), size=50)
    ctx = scrub._samplers.SampleContext(
        dataset=d,
        rng=np.random.default_rng(1),
        node="n",
        together={},
        together_rng=lambda g: np.random.default_rng(0),
    )
    rows = scrub.GenerateSampler("io").sample(np.arange(10), ctx)
    assert list(rows) == list(range(50, 60)) and d.n_base == 50 and len(d) == 60
    assert np.array_equal(d.fields["io"][rows], d.fields["io"][:10])
    # Generated rows can seed generators again.
    rows2 = scrub.GenerateSampler("template").sample(rows, ctx)
    assert np.array_equal(d.fields["template"][rows2], d.fields["template"][rows])


# -- hypothesis files ----------------------------------------------------------------------------
def test_dataset_specs():
    for name, family in (("ioi", "ioi"), ("ioi_abc", "ioi_abc")):
        spec = yaml.safe_load((REPO / "datasets" / f"{name}.yaml").read_text())
        assert spec["generator"] == family
        d = scrub.make_dataset(spec["generator"], spec["params"], np.random.default_rng(0))
        assert d.params["prompt_type"] == "mixed" and 500 <= len(d) <= 1000


@pytest.fixture(scope="module")
def gpt2_vocab_model(tmp_path_factory):
    """A 2-layer random GPT-2 with GPT-2's vocabulary (50257) and a small width."""
    from scrub.testing import save_random_gpt2

    d = save_random_gpt2(
        tmp_path_factory.mktemp("gpt2vocab"),
        n_layers=2,
        n_heads=2,
        d_model=16,
        d_vocab=50257,
        n_ctx=32,
        init_std=0.2,
        seed=0,
    )
    return d, scrub.load_model(str(d))


def ioi_spec(model_dir) -> dict:
    return {
        "model": str(model_dir),
        "dataset": str(REPO / "datasets" / "ioi.yaml"),
        "metric": {"kind": "logit_diff", "correct": "io", "wrong": "s", "positions": "END"},
        "defaults": {"n": 16, "seed": 0},
        "nodes": {
            "out": {
                "components": ["logits"],
                "inputs": [{"node": "name_mover", "channels": "in", "positions": "END"}],
            },
            "name_mover": {
                "components": ["a1.h0@END"],
                "sampler": "exact",
                "inputs": [
                    {"node": "s2", "channels": ["k", "v"], "positions": "S2"},
                    {"node": "s1_next", "channels": "k", "positions": "S1+1"},
                ],
            },
            "s2": {"components": ["embed"], "sampler": {"kind": "generate", "feature": "io"}},
            "s1_next": {
                "components": ["a0.h1@S1+1"],
                "sampler": {"kind": "cond", "features": "positions"},
            },
        },
    }


def test_hypothesis_on_ioi_binds(gpt2_vocab_model, tmp_path):
    model_dir, model = gpt2_vocab_model
    path = tmp_path / "ioi.yaml"
    path.write_text(yaml.safe_dump(ioi_spec(model_dir)))
    hyp = scrub.load_hypothesis(path)
    ds = scrub._bind.make_dataset_for(hyp, seed=0)
    assert ds.name == "ioi" and ds.seq_len == 21
    bound = scrub.bind(hyp, model, ds)
    assert bound.dataset is ds


def test_hypothesis_errors_name_ioi_positions(gpt2_vocab_model):
    model_dir, model = gpt2_vocab_model
    spec = ioi_spec(model_dir)
    spec["dataset"] = {"generator": "ioi", "params": {"size": 50}}
    spec["nodes"]["name_mover"]["inputs"][0]["positions"] = "IO2"  # only in ioi_abc
    hyp = scrub.hypothesis_from_dict(spec)
    ds = scrub._bind.make_dataset_for(hyp, seed=0)
    with pytest.raises(scrub.HypothesisError, match="IO2"):
        scrub.bind(hyp, model, ds)


# -- means for mean ablation ---------------------------------------------------------------------
def test_component_means_per_position_class(gpt2_vocab_model):
    from scrub._components import Component
    from scrub._means import component_means

    _, model = gpt2_vocab_model
    ref = ioi_abc(rng=np.random.default_rng(4), size=24)
    comps = [Component("head", 1, 0), Component("mlp", 0), Component("tok_embed")]
    classes = ("END", "S2", "IO")
    means = component_means(
        model, ref, ["a1.h0", "m0", "tok_embed"], classes=classes, batch_size=16
    )
    assert means.classes == (*classes, "other") and list(means.means) == comps
    _, _, outs = model.run(ref.tokens, read_outputs=comps)
    for comp in comps:
        out = outs[comp].double().numpy()
        buckets: dict[str, list] = {k: [] for k in means.classes}
        for r in range(len(ref)):
            for t in range(ref.fields["length"][r]):  # padding is left out
                k = next((k for k in classes if ref.positions[k][r, 0] == t), "other")
                buckets[k].append(out[r, t])
        for i, k in enumerate(means.classes):
            assert means.counts[i] == len(buckets[k])
            want = np.mean(buckets[k], axis=0)
            np.testing.assert_allclose(means.means[comp][i].numpy(), want, rtol=1e-5, atol=1e-6)
    assert list(means.counts[:3]) == [24, 24, 24]
    assert means.means[comps[0]].shape == (4, 8)  # d_head = 16 / 2 heads


def test_mean_patches_write_each_examples_class_mean(gpt2_vocab_model, ds):
    from scrub._components import Component
    from scrub._means import component_means

    _, model = gpt2_vocab_model
    ref = ioi_abc(rng=np.random.default_rng(4), size=20)
    means = component_means(model, ref, ["a0.h1", "m1"], classes=["END", "S2"])
    rows = np.arange(6)
    patches = means.patches(ds, rows, device=model.device)
    head = Component("head", 0, 1)
    _, _, outs = model.run(ds.tokens[rows], patches=patches, read_outputs=[head])
    got = outs[head]
    table = means.means[head]
    for r in rows:
        end, s2 = col(ds, "END")[r], col(ds, "S2")[r]
        assert torch.equal(got[r, end], table[0]) and torch.equal(got[r, s2], table[1])
        for t in set(range(ds.seq_len)) - {end, s2}:  # the rest, padding included
            assert torch.equal(got[r, t], table[2])


def test_component_means_errors(gpt2_vocab_model, ds):
    from scrub._means import component_means

    _, model = gpt2_vocab_model
    small = ds.subset(np.arange(8))
    with pytest.raises(scrub.HypothesisError, match="IO2"):
        component_means(model, small, ["m0"], classes=["IO2"])
    with pytest.raises(scrub.HypothesisError, match="distinct"):
        component_means(model, small, ["m0"], classes=["END", "other"])
    abc_small = ioi_abc(rng=np.random.default_rng(0), size=4)
    with pytest.raises(scrub.HypothesisError, match="'S' has no position"):  # S is S2
        component_means(model, abc_small, ["m0"], classes=["S2", "S"])
    with pytest.raises(scrub.HypothesisError, match="logits"):
        component_means(model, small, ["logits"])


@pytest.mark.slow
# A random model: clean and baseline may be indistinguishable, so the fraction is undefined; this
# test is about the two engines agreeing per example, which it checks either way.
@pytest.mark.filterwarnings("ignore:the fraction recovered is undefined")
def test_ioi_hypothesis_runs_with_generated_prompts(gpt2_vocab_model, tmp_path):
    """Generated prompts (other templates, other positions) go through both engines alike."""
    model_dir, model = gpt2_vocab_model
    spec = ioi_spec(model_dir)
    spec["dataset"] = {"generator": "ioi", "params": {"size": 200}}
    hyp = scrub.hypothesis_from_dict(spec)
    fast = scrub.run(hyp, model=model, n=12)
    ref = scrub.run(hyp, model=model, n=12, engine="reference")
    np.testing.assert_allclose(fast.per_example, ref.per_example, atol=1e-4)
    assert fast.metric["kind"] == "logit_diff" and len(fast.per_example) == 12
