"""Bad hypothesis files give a located ``HypothesisError``, never a traceback of something else.

Every case starts from one valid hypothesis (built here as a dict, dumped as YAML), breaks one
thing, writes the file to ``tmp_path`` and checks that the error names the file, the YAML key
path of the offending entry, what is wrong (a pinned message fragment) and, where there is one,
the hint. Errors the file alone determines are raised by :func:`scrub.load_hypothesis`; errors
that need the model (component ranges) or the dataset (named positions, features, overlapping
splices, labels) by :func:`scrub.bind`.

The model is one small random GPT-2 (2 layers, 4 heads), saved once per module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import scrub
import scrub.cli

N_LAYERS = 2
N_HEADS = 4


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    """The session's random model: N_LAYERS layers of N_HEADS heads."""
    return tiny_model_dir


@pytest.fixture
def model(tiny_model: scrub.ScrubModel) -> scrub.ScrubModel:
    return tiny_model


@pytest.fixture
def base(model_dir: Path) -> dict[str, Any]:
    """A valid hypothesis: out (logits) <- ind (a1.h2, a1.h3) <-k- prev (a0.h1, cond on segment)."""
    return {
        "name": "base",
        "model": str(model_dir),
        "dataset": {"generator": "induction", "params": {"size": 100}},
        "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
        "defaults": {"n": 20, "seed": 0},
        "nodes": {
            "out": {
                "components": ["logits"],
                "inputs": [{"node": "ind", "channels": "in", "positions": "REP"}],
            },
            "ind": {
                "components": ["a1.h2", "a1.h3"],
                "sampler": "exact",
                "inputs": [{"node": "prev", "channels": "k"}],
            },
            "prev": {
                "components": ["a0.h1"],
                "feature": "segment",
                "sampler": {"kind": "cond"},
            },
        },
    }


def make_dataset() -> scrub.Dataset:
    """A fresh dataset per bind (binding registers features on the dataset it is given)."""
    return scrub.make_dataset("induction", {"size": 100}, np.random.default_rng(0))


def write(tmp_path: Path, data: Any, name: str = "hyp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def load_error(path: Path) -> scrub.HypothesisError:
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.load_hypothesis(path)
    return info.value


def bind_error(path: Path, model: scrub.ScrubModel) -> scrub.HypothesisError:
    hyp = scrub.load_hypothesis(path)  # the file itself is fine: the error comes from binding
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.bind(hyp, model, make_dataset())
    return info.value


def key_text(key: tuple[str | int, ...]) -> str:
    """How a key path reads in a message: ``nodes.ind.components[1]``."""
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def assert_located(
    err: scrub.HypothesisError,
    path: Path,
    key: tuple[str | int, ...],
    fragment: str,
    hint: str | None = None,
) -> None:
    assert type(err) is scrub.HypothesisError
    assert err.file is not None and str(err.file).endswith(path.name), err.file
    assert Path(err.file) == path
    assert err.key == key, err.key
    assert fragment in err.problem, err.problem
    message = str(err)
    assert message.startswith(str(path)), message
    if key:
        assert f"at {key_text(key)}" in message, message
    if hint is not None:
        assert err.hint is not None and hint in err.hint, err.hint
        assert f"hint: {err.hint}" in message


def cli_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The ``error: ...`` part of what ``scrub check`` wrote to stderr.

    Loading the model may write progress bars to stderr before the error, so what comes before
    ``error:`` is dropped; the error itself runs to the end of stderr.
    """
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: " in err, err
    return err[err.index("error: ") :]


def nodes(data: dict[str, Any]) -> dict[str, Any]:
    return data["nodes"]


# --------------------------------------------------------------------------------------------
# The valid base


def test_base_loads_and_binds(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    path = write(tmp_path, base)
    hyp = scrub.load_hypothesis(path)
    assert hyp.root == "out"
    assert set(hyp.graph) == {"out", "ind", "prev"}
    assert hyp.file == str(path)
    bound = scrub.bind(hyp, model, make_dataset())
    assert bound.hypothesis is hyp


# --------------------------------------------------------------------------------------------
# 1–3: unknown and missing keys


def test_unknown_top_level_key(tmp_path: Path, base: dict) -> None:
    base["modle"] = base["model"]
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(err, path, ("modle",), "unknown key 'modle'", hint="did you mean 'model'")
    assert "allowed keys here:" in err.hint


def test_unknown_key_in_node(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["componets"] = ["a1.h0"]
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(
        err,
        path,
        ("nodes", "ind", "componets"),
        "unknown key 'componets'",
        hint="did you mean 'components'",
    )


def test_unknown_key_in_input_edge(tmp_path: Path, base: dict) -> None:
    edge = nodes(base)["ind"]["inputs"][0]
    edge["chanels"] = edge.pop("channels")
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(
        err,
        path,
        ("nodes", "ind", "inputs", 0, "chanels"),
        "unknown key 'chanels'",
        hint="did you mean 'channels'",
    )
    assert "allowed keys here: channels, node, paths, positions" in err.hint


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("where", "typo", "right"),
    [
        ((), "modle", "model"),
        (("nodes", "ind"), "componets", "components"),
        (("nodes", "ind", "inputs", 0), "nod", "node"),
    ],
    ids=["top-level", "node", "input-edge"],
)
def test_typo_of_required_key_suggests_the_key(
    tmp_path: Path, base: dict, where: tuple, typo: str, right: str
) -> None:
    mapping: Any = base
    for part in where:
        mapping = mapping[part]
    _rename(mapping, right, typo)
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(
        err, path, (*where, typo), f"unknown key {typo!r}", hint=f"did you mean {right!r}"
    )


def test_missing_required_key(tmp_path: Path, base: dict) -> None:
    del base["metric"]
    path = write(tmp_path, base)
    assert_located(load_error(path), path, ("metric",), "missing required key 'metric'")


def test_missing_required_key_in_input_edge(tmp_path: Path, base: dict) -> None:
    del nodes(base)["ind"]["inputs"][0]["node"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path), path, ("nodes", "ind", "inputs", 0, "node"), "missing required key"
    )


# --------------------------------------------------------------------------------------------
# 4–5: not YAML, not a mapping


def test_invalid_yaml_names_the_line(tmp_path: Path, base: dict) -> None:
    lines = yaml.safe_dump(base, sort_keys=False).splitlines()
    lines.insert(2, "extra: a: b")  # line 3: a mapping value where none is allowed
    path = write(tmp_path, "\n".join(lines) + "\n")
    err = load_error(path)
    assert_located(err, path, (), "not valid YAML (line 3, column 9)")
    assert "mapping values are not allowed here" in err.problem
    assert isinstance(err.__cause__, yaml.YAMLError)


def test_unclosed_list_names_where_yaml_gave_up(tmp_path: Path, base: dict) -> None:
    text = yaml.safe_dump(base, sort_keys=False) + "extra: [unclosed, list\n"
    end_line = len(text.splitlines()) + 1  # the parser notices at the end of the stream
    path = write(tmp_path, text)
    assert_located(load_error(path), path, (), f"not valid YAML (line {end_line}, column 1)")


def test_tab_indentation_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n\tmodel: y\n")
    err = load_error(path)
    assert_located(err, path, (), "not valid YAML (line 2, column 1)")


def test_file_that_is_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "- model: x\n- nodes: {}\n")
    assert_located(
        load_error(path),
        path,
        (),
        "a hypothesis file must be a mapping of keys, not list",
        hint="start with 'model:'",
    )


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "---\n"], ids=["empty", "comment", "doc"]
)
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert_located(load_error(path), path, ("model",), "missing required key 'model'")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert_located(load_error(path), path, (), "cannot read hypothesis file")


# --------------------------------------------------------------------------------------------
# 6–7: component names and ranges


def test_unknown_component_name(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["components"] = ["a1.h2", "a1.x3"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "components", 1),
        "unknown component name 'a1.x3'",
        hint="'a{L}.h{H}'",
    )


@pytest.mark.parametrize(
    ("components", "index", "fragment"),
    [
        (["a1.h2", "a5.h0"], 1, "layers 0–1"),
        (["a1.h9"], 0, "heads 0–3"),
    ],
    ids=["layer", "head"],
)
def test_head_out_of_range_for_model(
    tmp_path: Path,
    base: dict,
    model: scrub.ScrubModel,
    components: list[str],
    index: int,
    fragment: str,
) -> None:
    nodes(base)["ind"]["components"] = components
    path = write(tmp_path, base)
    err = bind_error(path, model)
    assert_located(
        err,
        path,
        ("nodes", "ind", "components", index),
        f"unknown component {components[index]!r}",
        hint="pick a head inside that range",
    )
    assert fragment in err.problem
    assert "a0.h0 .. a1.h3" in err.problem


def test_mlp_out_of_range_for_model(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    nodes(base)["mlp"] = {"components": ["m7"]}
    nodes(base)["out"]["inputs"].append({"node": "mlp"})
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "mlp", "components", 0),
        "unknown component 'm7'",
        hint="pick an MLP inside that range",
    )


# --------------------------------------------------------------------------------------------
# 8–10: graph structure


def test_child_in_same_layer_is_not_upstream(tmp_path: Path, base: dict) -> None:
    nodes(base)["same"] = {"components": ["a1.h0"]}
    nodes(base)["ind"]["inputs"].append({"node": "same", "channels": "q"})
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "inputs", 1, "node"),
        "a1.h0 (node 'same') is not upstream of a1.h2 (node 'ind')",
        hint="a head of layer L reads layers < L",
    )


def test_mlp_child_of_earlier_head_is_not_upstream(tmp_path: Path, base: dict) -> None:
    nodes(base)["late"] = {"components": ["m1"]}
    nodes(base)["prev"]["inputs"] = [{"node": "late"}]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "prev", "inputs", 0, "node"),
        "m1 (node 'late') is not upstream of a0.h1 (node 'prev')",
    )


def test_input_names_unknown_node(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["inputs"][0]["node"] = "prv"
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(
        err,
        path,
        ("nodes", "ind", "inputs", 0, "node"),
        "input names unknown node 'prv'",
        hint="did you mean 'prev'",
    )
    assert "nodes in this file: out, ind, prev" in err.hint


def test_cycle(tmp_path: Path, base: dict) -> None:
    nodes(base)["prev"]["inputs"] = [{"node": "ind"}]
    path = write(tmp_path, base)
    err = load_error(path)
    assert_located(
        err,
        path,
        ("nodes",),
        "the interpretation graph has a cycle",
        hint="remove one of these inputs",
    )
    assert "ind -> prev -> ind" in err.problem or "prev -> ind -> prev" in err.problem


def test_self_input(tmp_path: Path, base: dict) -> None:
    nodes(base)["prev"]["inputs"] = [{"node": "prev"}]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "prev", "inputs", 0, "node"),
        "node 'prev' lists itself as an input",
    )


def test_input_into_node_that_reads_nothing(tmp_path: Path, base: dict) -> None:
    # a1.h0 feeding the embedding: meaningless, and not upstream either.
    nodes(base)["emb"] = {"components": ["embed"], "inputs": [{"node": "late"}]}
    nodes(base)["late"] = {"components": ["a1.h0"]}
    nodes(base)["prev"]["inputs"] = [{"node": "emb"}]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "emb", "inputs", 0, "node"),
        "node 'emb' maps only embeddings, which read no input",
        hint="remove this input",
    )


# --------------------------------------------------------------------------------------------
# 11: the root


def test_no_root(tmp_path: Path, base: dict) -> None:
    nodes(base)["out"]["components"] = ["m1"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes",),
        "no node maps the model output",
        hint="exactly one node, the root, has 'components: [logits]'",
    )


def test_two_roots(tmp_path: Path, base: dict) -> None:
    nodes(base)["out2"] = {"components": ["logits"]}
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes",),
        "several nodes map 'logits': out, out2",
        hint="exactly one node",
    )


def test_root_with_sampler(tmp_path: Path, base: dict) -> None:
    nodes(base)["out"]["sampler"] = "exact"
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "out", "sampler"),
        "the root node 'out' cannot have a sampler",
        hint="remove 'sampler' from the root",
    )


def test_logits_with_positions(tmp_path: Path, base: dict) -> None:
    nodes(base)["out"]["components"] = ["logits@END"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "out", "components", 0),
        "'logits' takes no positions",
    )


def test_logits_with_other_components(tmp_path: Path, base: dict) -> None:
    nodes(base)["out"]["components"] = ["logits", "m1"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "out", "components"),
        "maps 'logits' together with other components",
    )


def test_root_as_input(tmp_path: Path, base: dict) -> None:
    nodes(base)["prev"]["inputs"] = [{"node": "out"}]
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "prev", "inputs", 0, "node"),
        "the root 'out' cannot be an input",
    )


# --------------------------------------------------------------------------------------------
# 12–13: channels and samplers


def test_channel_the_parent_does_not_have(tmp_path: Path, base: dict) -> None:
    nodes(base)["mlp"] = {"components": ["m1"], "inputs": [{"node": "head", "channels": "q"}]}
    nodes(base)["head"] = {"components": ["a0.h3"]}
    nodes(base)["out"]["inputs"].append({"node": "mlp"})
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "mlp", "inputs", 0, "channels"),
        "channel 'q': node 'mlp' maps no component that reads through it (m1)",
        hint="MLPs and logits through 'in'",
    )


def test_channel_that_does_not_exist(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["inputs"][0]["channels"] = "z"
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "inputs", 0, "channels", 0),
        "invalid value 'z'",
    )


@pytest.mark.parametrize("sampler", [{"kind": "bogus"}, "bogus"], ids=["mapping", "shorthand"])
def test_unknown_sampler_kind(tmp_path: Path, base: dict, sampler: Any) -> None:
    nodes(base)["ind"]["sampler"] = sampler
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "sampler"),
        "unknown sampler kind 'bogus'",
        hint="sampler kinds: exact, uncond, uncond_together, cond, fixed, generate",
    )


def test_cond_without_feature(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["sampler"] = "cond"  # 'ind' has no feature
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "sampler"),
        "a 'cond' sampler needs a feature",
        hint="give the node a 'feature:'",
    )


def test_generate_without_feature_in_other(tmp_path: Path, base: dict) -> None:
    nodes(base)["ind"]["other"] = "generate"
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "ind", "other"),
        "a 'generate' sampler needs a feature",
    )


# --------------------------------------------------------------------------------------------
# 14: named positions (bind time)


def test_unknown_component_position(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    nodes(base)["prev"]["components"] = ["a0.h1@NOPE"]
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "components", 0),
        "dataset 'induction' has no position named 'NOPE'",
        hint="its named positions are: A1, A1_NEXT, A2, BOS, END, FRESH, REP",
    )


def test_unknown_input_position(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    nodes(base)["ind"]["inputs"][0]["positions"] = ["A1", "NOPE"]
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "ind", "inputs", 0, "positions"),
        "no position named 'NOPE'",
    )


def test_unknown_metric_position(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    base["metric"]["positions"] = "NOPE"
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("metric", "positions"),
        "no position named 'NOPE'",
        hint="its named positions are:",
    )


def test_integer_position_outside_sequence(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    nodes(base)["prev"]["components"] = ["a0.h1@40"]
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "components", 0),
        "position 40 is outside the sequence (length 29)",
    )


def test_empty_positions(tmp_path: Path, base: dict) -> None:
    base["metric"]["positions"] = []
    path = write(tmp_path, base)
    assert_located(load_error(path), path, ("metric", "positions"), "an empty list of positions")


# --------------------------------------------------------------------------------------------
# 15–16: orphans and paths matched twice


def test_orphan_node(tmp_path: Path, base: dict) -> None:
    nodes(base)["lonely"] = {"components": ["a0.h2"]}
    path = write(tmp_path, base)
    assert_located(
        load_error(path),
        path,
        ("nodes", "lonely"),
        "node 'lonely' is not an input of any node",
        hint="list it under some node's 'inputs'",
    )


def _second_a0_h1_child(base: dict, first: Any, second: Any, *, on: str = "input") -> None:
    """Make 'prev2' (also a0.h1) a second input of 'ind' into the same channel 'k'."""
    nodes(base)["prev2"] = {"components": ["a0.h1"]}
    nodes(base)["ind"]["inputs"].append({"node": "prev2", "channels": "k"})
    if on == "input":
        for edge, positions in zip(nodes(base)["ind"]["inputs"], (first, second), strict=True):
            if positions is not None:
                edge["positions"] = positions
    else:
        nodes(base)["prev"]["components"] = [f"a0.h1@{first}"]
        nodes(base)["prev2"]["components"] = [f"a0.h1@{second}"]


@pytest.mark.parametrize(
    ("first", "second"),
    [(None, None), ("A1", "A1"), ("A1", "A1_NEXT"), ("A1", ["BOS", "A2", "FRESH"])],
    ids=["all-all", "same", "overlapping", "overlapping-list"],
)
def test_path_matched_twice(
    tmp_path: Path, base: dict, model: scrub.ScrubModel, first: Any, second: Any
) -> None:
    _second_a0_h1_child(base, first, second)
    path = write(tmp_path, base)
    err = bind_error(path, model)
    assert_located(
        err,
        path,
        ("nodes", "ind", "inputs", 1),
        "the path from a0.h1 into node 'ind' is matched twice, by inputs 'prev'",
        hint="split the positions or channels",
    )
    assert "'prev2'" in err.problem


def test_path_matched_twice_via_component_positions(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    _second_a0_h1_child(base, "A2", "REP", on="component")  # REP is inside A2
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "ind", "inputs", 1),
        "matched twice",
    )


@pytest.mark.parametrize("on", ["input", "component"])
def test_same_component_at_disjoint_positions_binds(
    tmp_path: Path, base: dict, model: scrub.ScrubModel, on: str
) -> None:
    _second_a0_h1_child(base, "A1", "A2", on=on)
    path = write(tmp_path, base)
    hyp = scrub.load_hypothesis(path)
    scrub.bind(hyp, model, make_dataset())


def test_same_component_into_different_channels_binds(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    _second_a0_h1_child(base, None, None)
    nodes(base)["ind"]["inputs"][1]["channels"] = ["q", "v"]
    path = write(tmp_path, base)
    scrub.bind(scrub.load_hypothesis(path), model, make_dataset())


# --------------------------------------------------------------------------------------------
# 17: features (bind time)


@pytest.mark.parametrize(
    ("node_patch", "fragment"),
    [
        ({"sampler": {"kind": "cond", "features": ["nope"]}}, "no feature named 'nope'"),
        ({"feature": "nope"}, "no feature named 'nope'"),
    ],
    ids=["sampler-features", "node-feature"],
)
def test_unknown_feature(
    tmp_path: Path, base: dict, model: scrub.ScrubModel, node_patch: dict, fragment: str
) -> None:
    nodes(base)["prev"].update(node_patch)
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "sampler"),
        f"dataset 'induction' has {fragment}",
        hint="its features are: first_token, s1, s2, segment",
    )


def test_feature_module_that_does_not_import(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    nodes(base)["prev"]["sampler"] = {"kind": "cond", "features": ["no_such_module_xyz:f"]}
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "sampler"),
        "cannot import module 'no_such_module_xyz' for feature 'no_such_module_xyz:f'",
        hint="make sure the module is importable",
    )


def test_feature_function_that_does_not_exist(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    nodes(base)["prev"]["sampler"] = {"kind": "cond", "features": ["numpy:no_such_fn_xyz"]}
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "sampler"),
        "module 'numpy' has no attribute 'no_such_fn_xyz'",
    )


def test_unknown_feature_in_other(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    nodes(base)["ind"]["other"] = {"kind": "cond", "features": "nope"}
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model), path, ("nodes", "ind", "other"), "no feature named 'nope'"
    )


def test_generate_for_feature_without_generator(
    tmp_path: Path, base: dict, model: scrub.ScrubModel
) -> None:
    nodes(base)["prev"]["sampler"] = {"kind": "generate", "feature": "s1"}  # only 'segment'
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("nodes", "prev", "sampler"),
        "cannot generate examples matching feature 's1'",
    )


# --------------------------------------------------------------------------------------------
# 18–19: metric and dataset


def test_loss_without_labels(tmp_path: Path, base: dict) -> None:
    del base["metric"]["labels"]
    path = write(tmp_path, base)
    assert_located(
        load_error(path), path, ("metric",), "metric 'loss' needs 'labels' (e.g. 'labels: next')"
    )


def test_logit_diff_without_labels(tmp_path: Path, base: dict) -> None:
    base["metric"] = {"kind": "logit_diff", "positions": "REP", "correct": "next"}
    path = write(tmp_path, base)
    assert_located(load_error(path), path, ("metric",), "needs 'correct' and 'wrong'")


def test_unknown_metric_kind(tmp_path: Path, base: dict) -> None:
    base["metric"]["kind"] = "bogus"
    path = write(tmp_path, base)
    assert_located(load_error(path), path, ("metric", "kind"), "invalid value 'bogus'")


def test_unknown_label_field(tmp_path: Path, base: dict, model: scrub.ScrubModel) -> None:
    base["metric"]["labels"] = "nope"
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("metric", "labels"),
        "dataset 'induction' has no label field 'nope'",
        hint="use 'next' or one of: first_token, s1, s2, segment",
    )


@pytest.mark.parametrize("positions", [["REP", "END"], "END", -1], ids=["REP,END", "END", "-1"])
def test_next_labels_past_the_end(
    tmp_path: Path, base: dict, model: scrub.ScrubModel, positions: Any
) -> None:
    base["metric"]["positions"] = positions
    path = write(tmp_path, base)
    assert_located(
        bind_error(path, model),
        path,
        ("metric", "positions"),
        "some metric position is the last token",
        hint="read the metric at positions before the last one",
    )


def _dataset_from_spec(path: Path) -> None:
    spec = scrub.load_hypothesis(path).spec
    scrub.make_dataset(spec.dataset.generator, spec.dataset.params, np.random.default_rng(0))


DATASET_CASES = [
    pytest.param(
        {"generator": "bogus", "params": {"size": 100}},
        ("dataset", "generator"),
        "unknown dataset generator 'bogus'",
        "registered generators: induction",
        id="generator",
    ),
    pytest.param(
        {"generator": "induction", "params": {"size": 100, "sise": 3}},
        ("dataset", "params"),
        "dataset generator 'induction' has no parameter 'sise'",
        "its parameters are: gap_len, prefix_len, random_offsets, segment_len, size",
        id="param",
    ),
    pytest.param(
        {"generator": "no_such_module_xyz:gen"},
        ("dataset", "generator"),
        "cannot import module 'no_such_module_xyz'",
        "make sure the module is importable",
        id="import",
    ),
    pytest.param(
        {"generator": "induction", "params": {"segment_len": 1}},
        ("dataset", "params"),
        "rejected its params: segment_len must be at least 2",
        None,
        id="bad-value",
    ),
]


@pytest.mark.parametrize(("dataset", "key", "fragment", "hint"), DATASET_CASES)
def test_bad_dataset_is_a_hypothesis_error(
    tmp_path: Path, base: dict, dataset: dict, key: tuple, fragment: str, hint: str | None
) -> None:
    base["dataset"] = dataset
    path = write(tmp_path, base)
    with pytest.raises(scrub.HypothesisError) as info:
        _dataset_from_spec(path)
    assert type(info.value) is scrub.HypothesisError
    assert fragment in info.value.problem
    if hint is not None:
        assert hint in info.value.hint


@pytest.mark.parametrize(("dataset", "key", "fragment", "hint"), DATASET_CASES)
def test_bad_dataset_error_names_file_and_key(
    tmp_path: Path,
    base: dict,
    capsys: pytest.CaptureFixture[str],
    dataset: dict,
    key: tuple,
    fragment: str,
    hint: str | None,
) -> None:
    base["dataset"] = dataset
    path = write(tmp_path, base)
    assert scrub.cli.main(["check", str(path)]) == 1
    err = cli_error(capsys)
    assert fragment in err
    assert str(path) in err and f"at {key_text(key)}" in err, err


# --------------------------------------------------------------------------------------------
# The command line


def test_cli_check_bad_file(tmp_path: Path, base: dict, capsys: pytest.CaptureFixture) -> None:
    nodes(base)["ind"]["inputs"][0]["node"] = "prv"
    path = write(tmp_path, base, name="bad-input.yaml")
    assert scrub.cli.main(["check", str(path)]) == 1
    out = capsys.readouterr()
    assert out.err.startswith("error: "), out.err  # a load error: before the model is loaded
    assert "bad-input.yaml" in out.err
    assert f"error: {path} at nodes.ind.inputs[0].node: input names unknown node 'prv'" in out.err
    assert "hint: did you mean 'prev'" in out.err
    assert "Traceback" not in out.err
    assert "ok:" not in out.out


def test_cli_check_bind_error(tmp_path: Path, base: dict, capsys: pytest.CaptureFixture) -> None:
    nodes(base)["ind"]["components"] = ["a1.h9"]
    path = write(tmp_path, base, name="bad-head.yaml")
    assert scrub.cli.main(["check", str(path)]) == 1
    err = cli_error(capsys)
    assert err.startswith(f"error: {path} at nodes.ind.components[0]: unknown component")
    assert "bad-head.yaml at nodes.ind.components[0]" in err
    assert "heads 0–3" in err


def test_cli_check_valid_base(tmp_path: Path, base: dict, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, base, name="good.yaml")
    assert scrub.cli.main(["check", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"ok: {path}")
    assert "hypothesis 'base', 3 nodes" in captured.out
    assert "error" not in captured.err


def test_errors_do_not_depend_on_key_order(tmp_path: Path, base: dict) -> None:
    # The same bad file with its keys reordered gives the same error.
    nodes(base)["ind"]["components"] = ["a1.h2", "a1.x3"]
    reordered = dict(reversed(list(base.items())))
    first = load_error(write(tmp_path, base, name="a.yaml"))
    second = load_error(write(tmp_path, reordered, name="b.yaml"))
    assert (first.key, first.problem, first.hint) == (second.key, second.problem, second.hint)


# --------------------------------------------------------------------------------------------
# dataset spec files (dataset: PATH)


def test_dataset_spec_file_is_read_relative_to_the_hypothesis(tmp_path: Path, base: dict) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.yaml").write_text("generator: induction\nparams: {size: 50}\n")
    (tmp_path / "hyp").mkdir()
    base["dataset"] = "../data/d.yaml"
    hyp = scrub.load_hypothesis(write(tmp_path / "hyp", base))
    assert hyp.spec.dataset.params == {"size": 50}
    assert hyp.dataset_file == "../data/d.yaml"  # as written: the same in every checkout
    assert hyp.dataset_path == str((tmp_path / "data" / "d.yaml").resolve())  # outside: plainly


def test_missing_dataset_spec_file(tmp_path: Path, base: dict) -> None:
    base["dataset"] = "nope.yaml"
    path = write(tmp_path, base)
    assert_located(
        load_error(path), path, ("dataset",), "cannot read dataset spec 'nope.yaml'",
        hint="relative to this hypothesis file",
    )  # fmt: skip


def test_bad_key_in_dataset_spec_file_is_located_there(tmp_path: Path, base: dict) -> None:
    data = tmp_path / "d.yaml"
    data.write_text("generatr: induction\n")
    base["dataset"] = "d.yaml"
    err = load_error(write(tmp_path, base))
    assert err.file == str(data.resolve()) and err.key == ("generatr",)
    assert "unknown key 'generatr'" in err.problem and "did you mean 'generator'" in err.hint
