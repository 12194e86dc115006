"""What happens when a valid-looking file is run (issue 8, part B).

Overlapping claims, the experiment's baseline, tree identities and size, undefined fractions,
strict JSON, self-draws, ``scrub check``'s dry sampling, and the command line's robustness.
Each case pins the fragments of its message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import scrub
from scrub._intervals import intervals
from scrub._samplers import self_draw_fraction
from scrub._tree import path_key, stream, tree_size
from scrub.cli import console, main
from tests.conftest import all_components, base_spec

REPO = Path(__file__).parent.parent


def hyp_of(model_dir, nodes, **overrides) -> scrub.Hypothesis:
    return scrub.hypothesis_from_dict(base_spec(model_dir, nodes=nodes, **overrides))


def bind_error(model_dir, model, nodes) -> scrub.HypothesisError:
    hyp = hyp_of(model_dir, nodes)
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.bind(hyp, model, scrub.make_dataset_for(hyp, seed=0))
    return info.value


def binds(model_dir, model, nodes) -> None:
    hyp = hyp_of(model_dir, nodes)
    scrub.bind(hyp, model, scrub.make_dataset_for(hyp, seed=0))


def write(tmp_path: Path, spec: dict, name: str = "h.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# 1. Overlapping claims


def test_all_paths_sibling_through_another_siblings_components_is_rejected(
    tiny_model_dir, tiny_model
):
    """The issue's example: today it scored 0.999."""
    rest = [c for c in all_components(2, 4) if c != "embed"] + ["pos_embed"]
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [{"node": "rest", "paths": "all"}, {"node": "tok", "paths": "all"}],
        },
        "rest": {"components": rest, "sampler": "exact"},
        "tok": {"components": ["tok_embed"], "sampler": "uncond"},
    }
    err = bind_error(tiny_model_dir, tiny_model, nodes)
    assert "inputs 'rest' and 'tok' of node 'out' claim the same model path" in err.problem
    assert "tok_embed -> a0.h0.v -> logits" in err.problem
    assert err.key == ("nodes", "out", "inputs", 1)
    assert "paths: direct" in err.hint


def test_the_shared_path_is_continued_up_to_the_output(tiny_model_dir, tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {
            "components": ["a1.h0"],
            "sampler": "exact",
            "inputs": [
                {"node": "prev", "channels": "v"},
                {"node": "tok", "channels": "v", "paths": "all"},
            ],
        },
        "prev": {"components": ["a0.h1"], "sampler": "uncond"},
        "tok": {"components": ["tok_embed"], "sampler": "uncond"},
    }
    err = bind_error(tiny_model_dir, tiny_model, nodes)
    assert "tok_embed -> a0.h1.v -> a1.h0.v -> logits" in err.problem
    assert "'prev'" in err.problem and "'tok'" in err.problem
    assert err.key == ("nodes", "h", "inputs", 1)


def test_a_direct_sibling_upstream_of_an_all_paths_one_is_rejected(tiny_model_dir, tiny_model):
    """All paths from a0.h0 include a0.h0 -> a1.h2 -> logits, which 'late' claims directly."""
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [{"node": "late"}, {"node": "early", "paths": "all"}],
        },
        "late": {"components": ["a1.h2"], "sampler": "uncond"},
        "early": {"components": ["a0.h0"], "sampler": "uncond"},
    }
    err = bind_error(tiny_model_dir, tiny_model, nodes)
    assert "a0.h0 -> a1.h2.v -> logits" in err.problem


def test_paths_through_a_head_overlap_at_any_positions(tiny_model_dir, tiny_model):
    """Attention moves information between positions: disjoint positions do not separate."""
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [
                {"node": "late", "positions": "A1"},
                {"node": "early", "paths": "all", "positions": "A2"},
            ],
        },
        "late": {"components": ["a1.h2"], "sampler": "uncond"},
        "early": {"components": ["m0"], "sampler": "uncond"},
    }
    bind_error(tiny_model_dir, tiny_model, nodes)


@pytest.mark.parametrize(("late", "early", "overlaps"), [("A1", "A2", False), ("A1", "A1", True)])
def test_position_preserving_paths_overlap_only_where_positions_meet(
    tiny_model_dir, tiny_model, late, early, overlaps
):
    """a0.h0 -> m0 crosses no head, so all paths from a0.h0 at A2 never reach m0 at A1."""
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [
                {"node": "mlp", "positions": late},
                {"node": "head", "paths": "all", "positions": early},
            ],
        },
        "mlp": {"components": ["m0"], "sampler": "uncond"},
        "head": {"components": ["a0.h0"], "sampler": "uncond"},
    }
    if overlaps:
        assert "a0.h0 -> m0.in -> logits" in bind_error(tiny_model_dir, tiny_model, nodes).problem
    else:
        binds(tiny_model_dir, tiny_model, nodes)


def test_all_paths_into_other_channels_do_not_overlap(tiny_model_dir, tiny_model):
    """As in the IOI circuit: the prompt's tokens through k, v by all paths; a head's q direct."""
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
        "h": {
            "components": ["a1.h0"],
            "sampler": "exact",
            "inputs": [
                {"node": "q_head", "channels": "q"},
                {"node": "tokens", "channels": ["k", "v"], "paths": "all"},
            ],
        },
        "q_head": {"components": ["a0.h1"], "sampler": "uncond"},
        "tokens": {"components": ["embed"], "sampler": "exact"},
    }
    binds(tiny_model_dir, tiny_model, nodes)


def test_direct_siblings_one_upstream_of_the_other_do_not_overlap(tiny_model_dir, tiny_model):
    """a0.h0 -> logits and a1.h0 -> logits are different paths; a0.h0 -> a1.h0 is a1.h0's."""
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "late"}, {"node": "early"}]},
        "late": {"components": ["a1.h0"], "sampler": "uncond"},
        "early": {"components": ["a0.h0", "embed"], "sampler": "uncond"},
    }
    binds(tiny_model_dir, tiny_model, nodes)


def test_an_all_paths_input_downstream_of_its_sibling_is_still_rejected(tiny_model_dir, tiny_model):
    """Both orders of the inputs are checked: the all-paths one may be listed first."""
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [{"node": "early", "paths": "all"}, {"node": "late", "paths": "all"}],
        },
        "late": {"components": ["a1.h3"], "sampler": "uncond"},
        "early": {"components": ["pos_embed"], "sampler": "uncond"},
    }
    assert "pos_embed -> a1.h3.v -> logits" in bind_error(tiny_model_dir, tiny_model, nodes).problem


def test_every_shipped_hypothesis_claims_each_path_once(gpt2_shaped_dir):
    for path in sorted((REPO / "hypotheses").rglob("*.yaml")):
        hyp = scrub.load_hypothesis(path)
        model = scrub.load_model(
            str(gpt2_shaped_dir) if hyp.spec.model == "gpt2" else hyp.spec.model
        )
        scrub.bind(hyp, model, scrub.make_dataset_for(hyp, seed=0))


# --------------------------------------------------------------------------------------------
# 2. The baseline belongs to the experiment


def _rival(model_dir, *, root: str = "out", other=None, child: str = "h") -> scrub.Hypothesis:
    root_node: dict = {"components": ["logits"], "inputs": [{"node": child}]}
    if other is not None:
        root_node["other"] = other
    nodes = {root: root_node, child: {"components": ["a1.h0"], "sampler": "uncond"}}
    return hyp_of(model_dir, nodes)


def test_rivals_share_the_baseline_whatever_their_roots_other(tiny_model_dir, tiny_model):
    with warnings.catch_warnings():  # first_token has small classes: warned, not our point
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        results = [
            scrub.run(_rival(tiny_model_dir, other=other), model=tiny_model)
            for other in (None, "exact", {"kind": "cond", "features": ["first_token"]})
        ]
    first = results[0]
    assert first.baseline_kind == "resample_all" and first.baseline_rows is not None
    for r in results[1:]:
        assert r.per_example_baseline == first.per_example_baseline  # bit for bit
        assert r.baseline_rows == first.baseline_rows
        assert r.baseline_ci == first.baseline_ci
    # With the default other, O_root is the baseline's rows.
    assert first.draws["out.other"] == first.baseline_rows
    assert results[1].draws["out.other"] == results[1].reference


def test_root_other_exact_is_scored_against_the_real_baseline(tiny_model_dir, tiny_model):
    """Today: baseline == clean, recovered = ±inf and --out crashed."""
    hyp = hyp_of(tiny_model_dir, {"out": {"components": ["logits"], "other": "exact"}})
    # the root runs with the last block at the metric's positions only: equal up to rounding
    with pytest.warns(
        scrub.ScrubWarning, match="equals the clean model's (exactly|to float rounding)"
    ):
        result = scrub.run(hyp, model=tiny_model)
    assert result.baseline > result.clean == 0.0  # KL
    assert result.recovered == pytest.approx(1.0, abs=1e-6)
    json.loads(result.to_json())


def test_root_name_does_not_change_draws_or_baseline(tiny_model_dir, tiny_model):
    a = scrub.run(_rival(tiny_model_dir, root="out"), model=tiny_model)
    b = scrub.run(_rival(tiny_model_dir, root="output"), model=tiny_model)
    assert a.draws["h"] == b.draws["h"] and a.draws["out.other"] == b.draws["output.other"]
    assert a.per_example == b.per_example


def test_baseline_key_in_the_file(tiny_model_dir, tiny_model):
    nodes = {"out": {"components": ["logits"]}}
    hyp = hyp_of(tiny_model_dir, nodes, baseline="resample_all")
    with pytest.warns(scrub.ScrubWarning, match="equals the baseline exactly"):
        assert scrub.run(hyp, model=tiny_model).baseline_kind == "resample_all"
    with pytest.raises(scrub.HypothesisError, match="baseline"):
        hyp_of(tiny_model_dir, nodes, baseline="nothing")
    with pytest.raises(
        ValueError,
        match="unknown baseline 'nothing'; baselines: mean, permuted_labels, resample_all, zero",
    ):
        scrub.run(hyp, model=tiny_model, baseline="nothing")


# --------------------------------------------------------------------------------------------
# 3. Tree identities and size


def _layers(depth: int, width: int) -> dict:
    """``depth`` layers of ``width`` heads, each node reading every node of the layer below."""
    nodes: dict = {
        "out": {
            "components": ["logits"],
            "inputs": [{"node": f"n{depth - 1}_{j}"} for j in range(width)],
        }
    }
    for layer in range(depth):
        for j in range(width):
            node: dict = {"components": [f"a{layer}.h{j}"], "sampler": "uncond"}
            if layer:
                node["inputs"] = [{"node": f"n{layer - 1}_{k}"} for k in range(width)]
            nodes[f"n{layer}_{j}"] = node
    return nodes


def test_an_exploding_tree_fails_fast_with_its_size(tiny_model_dir):
    hyp = hyp_of(tiny_model_dir, _layers(8, 8))
    expected = 1 + 8 * sum(8**k for k in range(8))  # 1 + 8 * (1 + 8 + ... + 8^7)
    assert tree_size(hyp) == expected
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.treeify(hyp)
    assert f"would make {expected:,} tree nodes (the limit is 10,000)" in info.value.problem
    assert "max_tree_nodes" in info.value.hint
    assert info.value.key == ("nodes",)


def test_check_refuses_an_exploding_tree(tmp_path, gpt2_shaped_dir, capsys):
    path = write(tmp_path, base_spec(gpt2_shaped_dir, nodes=_layers(8, 8)))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "would make 19,173,961 tree nodes" in err and str(path) in err
    assert "Traceback" not in err


def test_the_tree_size_limit_is_overridable(tiny_model_dir, tiny_model):
    hyp = hyp_of(tiny_model_dir, _layers(2, 2))
    assert tree_size(hyp) == sum(1 for _ in scrub.treeify(hyp).walk()) == 7
    with pytest.raises(scrub.HypothesisError, match="would make 7 tree nodes"):
        scrub.treeify(hyp, max_nodes=6)
    with pytest.raises(scrub.HypothesisError, match="the limit is 6"):
        scrub.run(hyp, model=tiny_model, max_tree_nodes=6)


def test_tree_paths_are_tuples_and_stream_keys_are_unambiguous(tiny_model_dir):
    tree = scrub.treeify(hyp_of(tiny_model_dir, _layers(2, 2)))
    assert tree.path == ()
    assert {n.path for n in tree.walk()} >= {("n1_0",), ("n1_0", "n0_1"), ("n1_1", "n0_1")}
    assert path_key(("a/b",)) != path_key(("a", "b"))
    assert path_key(("a>b",)) != path_key(("a", "b"))
    one = stream(0, "data", path_key(("a/b",))).integers(1 << 30)
    two = stream(0, "data", path_key(("a", "b"))).integers(1 << 30)
    assert one != two


# --------------------------------------------------------------------------------------------
# 4. Undefined recovered fraction, strict JSON


def test_indistinguishable_clean_and_baseline_leave_recovered_undefined(
    tiny_model_dir, tiny_model, tmp_path
):
    """A random model's loss: the paired CI of clean − baseline contains 0."""
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "all", "paths": "all"}]},
        "all": {"components": all_components(2, 4), "sampler": "exact"},
    }
    loss = {"kind": "loss", "positions": "REP", "labels": "next"}
    path = write(tmp_path, base_spec(tiny_model_dir, nodes=nodes, metric=loss))
    with pytest.warns(scrub.ScrubWarning) as rec:  # also: equals the clean model's exactly
        result = scrub.run(path, model=tiny_model)
    assert any("the fraction recovered is undefined" in str(w.message) for w in rec)
    assert result.recovered is None
    assert "not distinguishable" in result.recovered_undefined_reason
    assert "CI of clean − baseline" in result.recovered_undefined_reason
    data = json.loads(result.to_json())
    assert data["recovered"] is None and data["recovered_ci"] == [None, None]
    assert "recovered=undefined" in repr(result)
    out = tmp_path / "r.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        assert main(["run", str(path), "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["recovered_undefined_reason"]


def test_format_result_prints_undefined_with_its_reason(tiny_model_dir, tiny_model):
    from scrub._report import format_result

    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "h"}]}}
    nodes["h"] = {"components": ["a1.h0"], "sampler": "uncond"}
    result = scrub.run(hyp_of(tiny_model_dir, nodes), model=tiny_model)
    undefined = dataclasses.replace(
        result, recovered=None, recovered_undefined_reason="clean and baseline are equal"
    )
    line = next(x for x in format_result(undefined).splitlines() if "recovered" in x)
    assert "undefined" in line and "(clean and baseline are equal)" in line


@pytest.mark.parametrize(
    ("clean", "baseline", "fragment"),
    [
        (np.ones(20), np.ones(20), "are equal"),
        (np.array([1.0, math.inf]), np.zeros(2), "clean mean is not finite"),
        (np.array([1.0]), np.array([2.0]), "n = 1"),
    ],
)
def test_undefined_reasons(clean, baseline, fragment):
    reason = intervals(clean, baseline, baseline, seed=0, confidence=0.95).reason
    assert reason is not None and fragment in reason


def test_distinguishable_clean_and_baseline_are_defined():
    rng = np.random.default_rng(0)
    clean, base = rng.normal(1, 0.1, 50), rng.normal(3, 0.1, 50)
    assert intervals(clean, base, clean, seed=0, confidence=0.95).reason is None


def test_json_is_strict_for_non_finite_values(tiny_model_dir, tiny_model):
    nodes = {"out": {"components": ["logits"], "inputs": [{"node": "h"}]}}
    nodes["h"] = {"components": ["a1.h0"], "sampler": "uncond"}
    result = scrub.run(hyp_of(tiny_model_dir, nodes), model=tiny_model)
    bad = dataclasses.replace(
        result,
        clean=math.inf,
        baseline=-math.inf,
        scrubbed=math.nan,
        per_example=[math.inf] * len(result.per_example),
    )

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    data = json.loads(bad.to_json(), parse_constant=refuse)
    assert data["clean"] is None and data["baseline"] is None and data["scrubbed"] is None
    assert data["per_example"][0] is None


# --------------------------------------------------------------------------------------------
# 5. Self-draws


def test_small_conditional_classes_record_and_warn_about_self_draws(tiny_model_dir, tiny_model):
    """Classes of size 2: no singleton, but about half the rows draw the parent's own example."""
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "p"}]},
        "p": {"components": ["a1.h0"], "sampler": {"kind": "cond", "features": ["pair"]}},
    }
    hyp = hyp_of(tiny_model_dir, nodes)
    ds = scrub.make_dataset_for(hyp, seed=0)
    ds.fields["pair"] = np.arange(len(ds)) // 2
    with pytest.warns(scrub.ScrubWarning, match="drew its parent's example itself for") as rec:
        result = scrub.run(hyp, model=tiny_model, dataset=ds, n=100)
    frac = result.self_draws["p"]["sampler"]
    assert 0.3 < frac < 0.7
    assert any("'generate' sampler" in str(w.message) for w in rec)
    assert "out" not in result.self_draws  # uncond draws are not conditional
    assert json.loads(result.to_json())["self_draws"]["p"]["sampler"] == frac


def test_self_draws_are_compared_by_tokens(dataset):
    rows = np.arange(10, dtype=np.int64)
    copies = dataset.extend(dataset.subset(rows))  # generated rows identical to the parents
    assert self_draw_fraction(dataset, rows, copies) == 1.0
    assert self_draw_fraction(dataset, rows, rows[::-1].copy()) == 0.0


# --------------------------------------------------------------------------------------------
# 6. ``scrub check`` catches what ``run`` would reject


@pytest.mark.parametrize("row", [5000, -1])
def test_check_rejects_fixed_rows_outside_the_pool(tmp_path, tiny_model_dir, capsys, row):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "p"}]},
        "p": {"components": ["a1.h0"], "sampler": {"kind": "fixed", "rows": [0, row]}},
    }
    path = write(tmp_path, base_spec(tiny_model_dir, nodes=nodes))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"fixed row {row} is not a row of the dataset pool, which has rows 0..199" in err
    assert "at nodes.p.sampler.rows" in err and str(path) in err
    assert "Traceback" not in err


def test_check_rejects_n_larger_than_the_pool(tmp_path, tiny_model_dir, capsys):
    nodes = {"out": {"components": ["logits"]}}
    spec = base_spec(tiny_model_dir, nodes=nodes, defaults={"n": 500, "seed": 0})
    assert main(["check", str(write(tmp_path, spec))]) == 1
    assert "n = 500 reference examples, but the dataset pool has only 200" in (
        capsys.readouterr().err
    )


def test_check_shows_what_run_would_warn_about(tmp_path, tiny_model_dir, capsys):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "p"}]},
        "p": {"components": ["a1.h0"], "sampler": {"kind": "cond", "features": ["segment"]}},
    }
    assert main(["check", str(write(tmp_path, base_spec(tiny_model_dir, nodes=nodes)))]) == 0
    out = capsys.readouterr().out
    assert "warning: node 'p'" in out and "found only the reference example itself" in out


def test_check_does_not_print_loading_bars(tmp_path, tiny_model_dir, capsys):
    nodes = {"out": {"components": ["logits"]}}
    assert main(["check", str(write(tmp_path, base_spec(tiny_model_dir, nodes=nodes)))]) == 0
    assert "Loading weights" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 7. Command line and API robustness


@pytest.fixture
def hyp_file(tmp_path, tiny_model_dir) -> Path:
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "h"}]},
        "h": {"components": ["a1.h0"], "sampler": "uncond"},
    }
    return write(tmp_path, base_spec(tiny_model_dir, nodes=nodes))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--n", "0"], "argument --n: must be a positive integer, not 0"),
        (["--n", "-3"], "argument --n: must be a positive integer, not -3"),
        (["--n", "many"], "argument --n: must be a positive integer, not 'many'"),
        (["--seed", "-1"], "argument --seed: must be a non-negative integer, not -1"),
        (["--max-batch-rows", "0"], "argument --max-batch-rows: must be a positive integer"),
    ],
)
def test_bad_numbers_on_the_command_line_are_usage_errors(hyp_file, capsys, args, fragment):
    with pytest.raises(SystemExit) as info:
        main(["run", str(hyp_file), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"n": 0}, "n must be at least 1, not 0"),
        ({"n": -3}, "n must be at least 1, not -3"),
        ({"n": True}, "n must be an integer, not True"),
        ({"n": 2.5}, "n must be an integer, not 2.5"),
        ({"seed": -1}, "seed must be at least 0, not -1"),
        ({"max_batch_rows": 0}, "max_batch_rows must be at least 1, not 0"),
        ({"confidence": 1.5}, "confidence must be between 0 and 1"),
    ],
)
def test_bad_numbers_through_the_api_raise_value_errors(hyp_file, tiny_model, kwargs, fragment):
    with pytest.raises(ValueError, match="^" + fragment.replace("(", r"\(")):
        scrub.run(hyp_file, model=tiny_model, **kwargs)


def test_out_to_a_directory_fails_before_running(hyp_file, tmp_path, capsys, monkeypatch):
    import scrub._run

    def never(*args, **kwargs):
        raise AssertionError("ran although the output cannot be written")

    monkeypatch.setattr(scrub._run, "run", never)
    assert main(["run", str(hyp_file), "--quiet", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"error: --out {tmp_path} is a directory" in err and "Traceback" not in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["run", str(hyp_file), "--quiet", "--out", str(blocker / "r.json")]) == 1
    assert f"error: cannot write --out {blocker / 'r.json'}" in capsys.readouterr().err


def test_out_is_written_atomically(hyp_file, tmp_path, capsys):
    out = tmp_path / "res" / "r.json"
    out.parent.mkdir()
    out.write_text("old")
    assert main(["run", str(hyp_file), "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 24
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json"]  # no temp file left


def test_ctrl_c_is_one_line(hyp_file, capsys, monkeypatch):
    import scrub._run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scrub._run, "run", interrupted)
    assert main(["run", str(hyp_file), "--quiet"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_closed_pipe_is_quiet(hyp_file, tmp_path, monkeypatch, capsys):
    sink = (tmp_path / "sink").open("w")

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

        def fileno(self):
            return sink.fileno()

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["graph", str(hyp_file)]) == 141
    assert capsys.readouterr().err == ""


def test_the_console_turns_unexpected_errors_into_one_line(monkeypatch, capsys):
    import scrub.cli

    def broken(argv=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(scrub.cli, "main", broken)
    monkeypatch.delenv("SCRUB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        console()
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        "error: unexpected RuntimeError: boom\nrun with SCRUB_DEBUG=1 for the traceback\n"
    )
    monkeypatch.setenv("SCRUB_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        console()


# --------------------------------------------------------------------------------------------
# 8. Seen by every user


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"scrub {scrub.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "scrub run FILE" in text and "--version" in text


def test_no_progress_bar_unless_stderr_is_a_terminal(hyp_file, tiny_model, capsys):
    scrub.run(hyp_file, model=tiny_model, progress=None)
    assert "scrub" not in capsys.readouterr().err
    scrub.run(hyp_file, model=tiny_model, progress=True)
    err = capsys.readouterr().err
    assert "/3" in err  # stages: clean, baseline, scrubbed


def test_quiet_run_prints_no_loading_bar(hyp_file, capsys):
    assert main(["run", str(hyp_file), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_same_run_in_two_checkouts_gives_byte_identical_json(tmp_path, monkeypatch):
    outputs = []
    for name in ("one", "two"):
        root = tmp_path / name
        shutil.copytree(REPO / "hypotheses", root / "hypotheses")
        shutil.copytree(REPO / "datasets", root / "datasets")
        monkeypatch.chdir(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            code = main(
                ["run", "hypotheses/induction/kcomp.yaml", "--n", "6", "--quiet", "--out", "r.json"]
            )
        assert code == 0
        outputs.append((root / "r.json").read_bytes())
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0])
    assert data["dataset"]["spec_file"] == "../../datasets/induction.yaml"
    assert data["hypothesis_file"] == "hypotheses/induction/kcomp.yaml"


def test_generated_examples_are_stored_with_the_result(tiny_model_dir, tiny_model):
    nodes = {
        "out": {"components": ["logits"], "inputs": [{"node": "p", "channels": "in"}]},
        "p": {"components": ["a0.h1"], "sampler": {"kind": "generate", "feature": "segment"}},
    }
    hyp = hyp_of(tiny_model_dir, nodes)
    ds = scrub.make_dataset_for(hyp, seed=0)
    result = scrub.run(hyp, model=tiny_model, dataset=ds)
    data = json.loads(result.to_json())
    generated = {int(r) for r in data["generated"]}
    assert generated == {r for r in result.draws["p"] if r >= ds.n_base} and generated
    for row, example in data["generated"].items():
        assert example["tokens"] == ds.tokens[int(row)].tolist()
        assert set(example["positions"]) == set(ds.positions)
        assert example["fields"]["segment"] == ds.fields["segment"][int(row)].tolist()


def test_scrub_that_changes_nothing_is_detected_up_to_rounding():
    import torch

    from scrub._run import _same_logits

    a = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    assert _same_logits(a, a.clone()) == "exactly"
    assert (_same_logits(a + 1e-7, a) or "").startswith("to float rounding")
    assert _same_logits(a + 1e-2, a) is None
    assert _same_logits(a[:2], a) is None
