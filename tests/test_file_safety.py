"""Files from anyone: every malformed file is one clear error, fast, with bounded memory.

``tests/bad_files/`` is a corpus of malformed hypothesis files (and, under ``datasets/``, the
dataset specs some of them name). Each file's first line says what its error must contain::

    # expect: duplicate key 'ind' | lines 6 and 12 | hint: each key may appear once

and, optionally, its second line the exit code (``# exit: 2``; default 1). Every file is run
through ``scrub check`` in-process; the resource bombs also in a subprocess whose address space
is capped, so a bomb that was not refused would fail with MemoryError instead of swapping.
Add files to the corpus freely: the test is generic.

The rest of this module pins the behaviour behind the corpus: the YAML loader's API, the
default sampler of a node with a feature, the decorators that let files call code, model paths
and architectures, and errors that list every problem.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import scrub
import scrub.cli
from scrub._yaml import MAX_BYTES, parse_yaml, read_yaml

BAD_FILES = Path(__file__).parent / "bad_files"
CORPUS = sorted(BAD_FILES.glob("*.yaml"))
BOMBS = [
    "alias_bomb_components",
    "deep_nesting",
    "dataset_spec_alias_bomb",
    "dataset_params_alias_bomb",
    "dataset_spec_dev_zero",
    "dataset_size_huge",  # refused before the model loads
]
REPO = Path(__file__).parent.parent


def expectation(path: Path) -> tuple[list[str], int]:
    """The fragments the error must contain, and the exit code, from the file's first lines."""
    head = path.read_bytes().split(b"\n", 2)
    first = head[0].decode("ascii")
    assert first.startswith("# expect:"), f"{path.name}: first line must be '# expect: ...'"
    fragments = [f.strip() for f in first.removeprefix("# expect:").split("|") if f.strip()]
    code = 1
    if len(head) > 1 and head[1].startswith(b"# exit:"):
        code = int(head[1].decode("ascii").removeprefix("# exit:"))
    return fragments, code


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 40
    assert all(expectation(p)[0] for p in CORPUS)
    assert {f"{b}.yaml" for b in BOMBS} <= {p.name for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_file_is_one_clear_error(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fragments, code = expectation(path)
    assert scrub.cli.main(["check", str(path)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert "error: " in err, err
    message = err[err.index("error: ") :]
    assert str(path) in message or str(BAD_FILES / "datasets") in message, message
    assert "\n  hint: " in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


_CAPPED = """
import resource, sys, time
import scrub.cli  # import everything first: the cap is on what checking the files adds
page = resource.getpagesize()
with open("/proc/self/statm") as fh:
    used = int(fh.read().split()[0]) * page
cap = used + (1 << 30)  # 1 GiB more than the imports took
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
for path in sys.argv[1:]:
    start = time.perf_counter()
    code = scrub.cli.main(["check", path])
    print(f"{path} {code} {time.perf_counter() - start:.2f}")
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_bombs_fail_fast_with_bounded_memory() -> None:
    paths = [str(BAD_FILES / f"{b}.yaml") for b in BOMBS]
    proc = subprocess.run(
        [sys.executable, "-c", _CAPPED, *paths],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "MemoryError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[p, "1"] for p in paths]
    assert proc.stderr.count("error: ") == len(paths)


@pytest.mark.slow  # a fresh interpreter imports torch: ~5-25 s
def test_cli_subprocess_exit_code_and_stderr() -> None:
    path = BAD_FILES / "duplicate_node.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "scrub.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {path} at nodes.ind: duplicate key 'ind'")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------------
# The YAML loader


@pytest.mark.parametrize(
    ("target", "fragment"),
    [("/dev/zero", "not a regular file"), (".", "it is a directory")],
    ids=["dev-zero", "directory"],
)
def test_check_on_what_is_not_a_file(target: str, fragment: str, capsys) -> None:
    assert scrub.cli.main(["check", target]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {target}: cannot read hypothesis file: {fragment}")
    assert "hint: " in err and "Traceback" not in err


def test_read_yaml_reads_plain_yaml(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "base: &b {size: 10, vocab: 50}\n"
        "spec:\n  <<: *b\n  size: 20\n"  # a merge key, overridden: not a duplicate
        "when: 2024-01-01\n"  # dates stay text
        "eq: =\n"
    )
    data = read_yaml(path, what="dataset spec")
    assert data == {
        "base": {"size": 10, "vocab": 50},
        "spec": {"size": 20, "vocab": 50},
        "when": "2024-01-01",
        "eq": "=",
    }
    assert read_yaml(_write(tmp_path, "e.yaml", "# nothing\n"), what="x") == {}


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _yaml_error(path: Path) -> scrub.HypothesisError:
    with pytest.raises(scrub.HypothesisError) as info:
        read_yaml(path, what="dataset spec")
    assert type(info.value) is scrub.HypothesisError
    return info.value


def test_duplicate_key_names_key_path_and_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "d.yaml", "generator: induction\nparams:\n  size: 1\n  size: 2\n")
    err = _yaml_error(path)
    assert err.file == str(path)
    assert err.key == ("params", "size")
    assert err.line == 4
    assert "duplicate key 'size' in params (lines 3 and 4)" in err.problem
    assert "each key may appear once" in err.hint
    assert "\n  line 4: size: 2\n" in str(err)


def test_duplicate_key_in_a_list_item(tmp_path: Path) -> None:
    err = _yaml_error(_write(tmp_path, "d.yaml", "a:\n  - {x: 1, x: 2}\n"))
    assert err.key == ("a", 0, "x")
    assert "duplicate key 'x' in a.0" in err.problem


def test_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as fh:
        fh.write(b"a: " + b"x" * (MAX_BYTES + 10) + b"\n")
    err = _yaml_error(path)
    assert f"dataset spec is larger than {MAX_BYTES:,} bytes" in err.problem
    assert err.hint is not None and "right file" in err.hint


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: !!binary aGVsbG8=\n", "YAML tag '!!binary' is not allowed"),
        ("a: !!python/name:os.system\n", "YAML tag '!!python/name:os.system' is not allowed"),
        ("a: !custom 3\n", "YAML tag '!custom' is not allowed"),
        ("a: !!omap [{x: 1}]\n", "YAML tag '!!omap' is not allowed"),
        ("? [a, b]\n: 1\n", "a mapping key must be a plain name"),
        ("a: *nothing\n", "found undefined alias"),
        ("a: [" * 100 + "]" * 100 + "\n", "nested more than 64 deep"),
    ],
    ids=["binary", "python", "custom", "omap", "list-key", "undefined-alias", "deep"],
)
def test_non_plain_yaml_is_refused(tmp_path: Path, text: str, fragment: str) -> None:
    err = _yaml_error(_write(tmp_path, "t.yaml", text))
    assert fragment in err.problem
    assert err.hint


def test_alias_bomb_is_refused_before_it_is_built() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(scrub.HypothesisError, match="once its aliases"):
        parse_yaml("\n".join(lines), file="bomb.yaml", what="hypothesis file")


def test_str_and_bytes_parse_alike() -> None:
    doc = parse_yaml(b"a: [1, 2]\nb: {c: d}\n", file="f.yaml", what="x")
    assert doc.data == {"a": [1, 2], "b": {"c": "d"}}
    assert doc.lines == {("a",): 1, ("a", 0): 1, ("a", 1): 1, ("b",): 2, ("b", "c"): 2}
    assert doc.line_of(("b", "c", "deeper")) == 2
    assert parse_yaml("a: [1, 2]\nb: {c: d}\n", file="f.yaml", what="x").data == doc.data


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    assert read_yaml(_write(tmp_path, "bom.yaml", b"\xef\xbb\xbfa: 1\n"), what="x") == {"a": 1}


# --------------------------------------------------------------------------------------------
# Errors: lines, and every problem at once


@pytest.fixture
def base(tiny_model_dir: Path) -> dict[str, Any]:
    return {
        "model": str(tiny_model_dir),
        "dataset": {"generator": "induction", "params": {"size": 100}},
        "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
        "defaults": {"n": 20, "seed": 0},
        "nodes": {
            "out": {
                "components": ["logits"],
                "inputs": [{"node": "ind", "channels": "in", "positions": "REP"}],
            },
            "ind": {"components": ["a1.h2"], "sampler": "exact"},
        },
    }


def _hyp(tmp_path: Path, data: dict, name: str = "hyp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _load_error(path: Path) -> scrub.HypothesisError:
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.load_hypothesis(path)
    return info.value


def test_schema_errors_are_all_reported_with_lines(tmp_path: Path, base: dict) -> None:
    base["metric"]["kind"] = "lose"
    base["defaults"]["n"] = True
    base["nodes"]["ind"]["componets"] = base["nodes"]["ind"].pop("components")
    path = _hyp(tmp_path, base)
    err = _load_error(path)
    keys = [e.key for e in err.errors]
    assert keys[0] == ("nodes", "ind", "componets")  # unknown keys first; the typo once
    assert set(keys) == {("nodes", "ind", "componets"), ("metric", "kind"), ("defaults", "n")}
    assert err.key == keys[0] and err.problem == err.errors[0].problem  # the first, as before
    message = str(err)
    assert "and 2 more problems:" in message
    for e in err.errors:
        assert e.file == str(path) and e.hint and e.line is not None
        assert f"  line {e.line}: " in message and f"hint: {e.hint}" in message
    lines = path.read_text().splitlines()
    assert "componets" in lines[err.line - 1]


def test_bind_errors_carry_the_line(tmp_path: Path, base: dict, tiny_model) -> None:
    base["nodes"]["ind"]["components"] = ["a1.h9"]
    path = _hyp(tmp_path, base)
    hyp = scrub.load_hypothesis(path)
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.bind(hyp, tiny_model, scrub.make_dataset("induction", {"size": 100}, _rng()))
    err = info.value
    assert err.key == ("nodes", "ind", "components", 0)
    assert "a1.h9" in path.read_text().splitlines()[err.line - 1]


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_collect_and_with_context_keep_every_problem() -> None:
    a = scrub.HypothesisError("first", key=("a",), hint="fix a")
    b = scrub.HypothesisError("second", key=("b",), hint="fix b")
    both = scrub.HypothesisError.collect([a, b])
    assert (both.problem, both.key, both.hint) == ("first", ("a",), "fix a")
    assert [e.problem for e in both.errors] == ["first", "second"]
    moved = both.with_context(file="f.yaml", key_prefix=("dataset",))
    assert [(e.file, e.key) for e in moved.errors] == [
        ("f.yaml", ("dataset", "a")),
        ("f.yaml", ("dataset", "b")),
    ]
    assert str(moved) == (
        "f.yaml at dataset.a: first\n  hint: fix a\nand 1 more problem:\n"
        "f.yaml at dataset.b: second\n  hint: fix b"
    )
    assert scrub.HypothesisError("alone").errors[0].problem == "alone"


# --------------------------------------------------------------------------------------------
# A node with a feature is resampled keeping it


def test_feature_without_sampler_is_cond_on_the_feature(tmp_path: Path, base: dict) -> None:
    base["nodes"]["ind"] = {"components": ["a1.h2"], "feature": "segment"}
    hyp = scrub.load_hypothesis(_hyp(tmp_path, base))
    assert hyp.node("ind").sampler == scrub.CondSampler(("segment",))
    base["nodes"]["ind"]["sampler"] = "exact"  # written explicitly: kept
    hyp = scrub.load_hypothesis(_hyp(tmp_path, base))
    assert hyp.node("ind").sampler == scrub.ExactSampler()
    del base["nodes"]["ind"]["feature"], base["nodes"]["ind"]["sampler"]
    assert scrub.load_hypothesis(_hyp(tmp_path, base)).node("ind").sampler == scrub.ExactSampler()


def test_shipped_hypotheses_name_their_samplers() -> None:
    """No shipped node relies on a default sampler while naming a feature."""
    for path in sorted((REPO / "hypotheses").glob("**/*.yaml")):
        for name, node in read_yaml(path, what="hypothesis file")["nodes"].items():
            if "feature" in node and "logits" not in node["components"]:
                assert "sampler" in node, f"{path.name}: node {name!r}"


# --------------------------------------------------------------------------------------------
# Code from files: only decorated functions


FEATURES_MODULE = """
import numpy as np
import scrub


@scrub.feature
def first_is_even(dataset, rows):
    return dataset.tokens[rows, 1].numpy() % 2


def undecorated(dataset, rows):
    return dataset.tokens[rows, 1].numpy() % 2


@scrub.feature
def broken(dataset, rows):
    raise KeyError("no such column")


@scrub.feature
def one_value(dataset, rows):
    return 3


@scrub.dataset_generator
def same_labels(*, rng, size: int = 50):
    ds = scrub.make_dataset("induction", {"size": size}, rng)
    ds.fields["a"] = ds.fields["first_token"].copy()
    ds.fields["b"] = ds.fields["first_token"].copy()
    return ds


@scrub.dataset_generator
def not_a_dataset(*, rng, size: int = 50):
    return {"size": size}


def plain_generator(*, rng, size: int = 50):
    return scrub.make_dataset("induction", {"size": size}, rng)
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"user_features_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FEATURES_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _bind(path: Path, model) -> scrub.BoundHypothesis:
    hyp = scrub.load_hypothesis(path)
    return scrub.bind(hyp, model, scrub.make_dataset_for(hyp, seed=0))


def _bind_error(path: Path, model) -> scrub.HypothesisError:
    with pytest.raises(scrub.HypothesisError) as info:
        _bind(path, model)
    assert type(info.value) is scrub.HypothesisError
    return info.value


def test_decorated_feature_is_called(tmp_path, base, tiny_model, user_module) -> None:
    base["nodes"]["ind"] = {"components": ["a1.h2"], "feature": f"{user_module}:first_is_even"}
    bound = _bind(_hyp(tmp_path, base), tiny_model)
    assert f"{user_module}:first_is_even" in bound.dataset.features
    tree = scrub.sample_tree(bound, n=16, seed=0)  # the cond sampler calls the feature
    rows = tree.rows(next(n for n in tree.root.walk() if n.name == "ind"))
    values = bound.dataset.tokens[rows, 1].numpy() % 2
    assert (values == bound.dataset.tokens[tree.reference, 1].numpy() % 2).all()


@pytest.mark.parametrize(
    ("function", "fragment", "hint"),
    [
        ("undecorated", "is a function not marked as a scrub feature", "@scrub.feature"),
        ("broken", "failed on pool rows [0, 1]: KeyError", "fix the function"),
        ("one_value", "returned a scalar for 2 rows", "one value"),
        ("nope", "has no attribute 'nope'", "@scrub.feature"),
    ],
)
def test_feature_functions_are_checked(
    tmp_path, base, tiny_model, user_module, function, fragment, hint
) -> None:
    base["nodes"]["ind"] = {"components": ["a1.h2"], "feature": f"{user_module}:{function}"}
    path = _hyp(tmp_path, base)
    err = _bind_error(path, tiny_model)
    assert err.file == str(path) and err.key == ("nodes", "ind", "sampler")
    assert fragment in err.problem and hint in err.hint


def test_generators_must_be_decorated_and_make_datasets(tmp_path, base, user_module) -> None:
    base["dataset"] = {"generator": f"{user_module}:plain_generator"}
    err = _load_then_dataset_error(_hyp(tmp_path, base))
    assert "is a function not marked as a scrub dataset generator" in err.problem
    assert err.key == ("dataset", "generator") and "@scrub.dataset_generator" in err.hint
    base["dataset"] = {"generator": f"{user_module}:not_a_dataset"}
    err = _load_then_dataset_error(_hyp(tmp_path, base))
    assert "returned a dict, not a scrub.Dataset" in err.problem


def _load_then_dataset_error(path: Path) -> scrub.HypothesisError:
    hyp = scrub.load_hypothesis(path)
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.make_dataset_for(hyp, seed=0)
    return info.value


def test_logit_diff_of_labels_equal_everywhere(tmp_path, base, tiny_model, user_module) -> None:
    base["dataset"] = {"generator": f"{user_module}:same_labels"}
    base["metric"] = {"kind": "logit_diff", "positions": "END", "correct": "a", "wrong": "b"}
    err = _bind_error(_hyp(tmp_path, base), tiny_model)
    assert err.key == ("metric",)
    assert "are the same token in every example" in err.problem


def test_decorator_refuses_non_callables() -> None:
    with pytest.raises(TypeError, match="decorates a function"):
        scrub.feature(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Paths: model and dataset relative to the hypothesis file


def test_model_path_is_relative_to_the_file(
    tmp_path: Path, base: dict, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "hyp").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m").symlink_to(tiny_model_dir, target_is_directory=True)
    base["model"] = "../models/m"
    path = _hyp(tmp_path / "hyp", base)
    # The cwd is somewhere '../models/m' does not resolve, so only the file-relative rule works.
    cwd = tmp_path / "elsewhere" / "deep"
    cwd.mkdir(parents=True)
    (cwd / "here").symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.chdir(cwd)
    assert not (cwd / "../models/m").exists()
    assert scrub.cli.main(["check", str(path)]) == 0
    assert "model '../models/m'" in capsys.readouterr().out
    # --model is relative to the current directory
    assert scrub.cli.main(["check", str(path), "--model", "here"]) == 0
    capsys.readouterr()
    base["model"] = "../models/nope"
    assert scrub.cli.main(["check", str(_hyp(tmp_path / "hyp", base))]) == 1
    err = capsys.readouterr().err
    assert "no such directory" in err and "models/nope" in err
    assert "relative to the hypothesis file" in err
    assert "Repo id" not in err and "couldn't connect" not in err


@pytest.mark.parametrize("source", ["./nope", "../a/b", "a/b/c", "/no/such/dir"])
def test_missing_local_model_says_no_such_directory(source: str) -> None:
    with pytest.raises(scrub.HypothesisError, match="no such directory") as info:
        scrub.load_model(source)
    assert "Repo id" not in str(info.value)


def test_hub_name_offline_is_a_clear_error() -> None:
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.load_model("someone/some-model")
    assert "not a model in the Hugging Face cache" in info.value.problem
    assert "no such directory" in info.value.problem
    assert "shipped models: induction" in info.value.hint


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPTNeoConfig(
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        vocab_size=64,
        max_position_embeddings=32,
        attention_types=[[["global", "local"], 1]],
    )
    transformers.GPTNeoForCausalLM(config).save_pretrained(tmp_path / "neo")
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.load_model(str(tmp_path / "neo"))
    assert "GPTNeoForCausalLM" in info.value.problem
    assert "GPT-2" in str(info.value)


def test_dataset_spec_errors_name_the_spec(tmp_path: Path, base: dict) -> None:
    (tmp_path / "h" / "data").mkdir(parents=True)
    (tmp_path / "h" / "data" / "d.yaml").write_text("generator: induction\nparams: {size: 0}\n")
    base["dataset"] = "data/d.yaml"
    hyp = scrub.load_hypothesis(_hyp(tmp_path / "h", base))
    assert hyp.dataset_file == "data/d.yaml"
    assert hyp.dataset_path == str(tmp_path / "h" / "data" / "d.yaml")
    with pytest.raises(scrub.HypothesisError) as info:
        scrub.make_dataset_for(hyp, seed=0)
    err = info.value
    assert err.file == hyp.dataset_path and err.key == ("params", "size") and err.line == 2
    assert "dataset size 0 is outside" in err.problem
