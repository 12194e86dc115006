"""The scrub command: scrub run FILE, scrub check FILE, scrub graph FILE, scrub compare
FILES, scrub diagnose FILE, scrub patch FILE and scrub report RESULT.json ....

Exit codes: 0 success, 1 invalid hypothesis or an output that cannot be written (the message
names the file, key and fix), 2 bad command-line usage, 130 interrupted (Ctrl-C).

Pitfall: :func:`main` is what tests call, so it lets unexpected exceptions through (a bug must
fail a test, not become an exit code). The installed ``scrub`` command (:func:`console`) also
turns those into one line, unless ``SCRUB_DEBUG=1`` asks for the traceback.

Also ``scrub import-circuit CIRCUIT.json`` (an EAP-IG / MIB circuit → a hypothesis file) and
``scrub export-circuit FILE`` (a hypothesis → such a circuit); see :mod:`scrub.interop.circuits`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrub._errors import HypothesisError, ScrubWarning

__all__ = ["console", "main"]


class OutputError(Exception):
    """An output file cannot be written (reported as one line, exit 1)."""


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("scrub")
    except metadata.PackageNotFoundError:
        import scrub

        return scrub.__version__


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what}, not {value}")
        return value

    return parse


_POSITIVE = _int_at_least(1, "must be a positive integer")
_NON_NEGATIVE = _int_at_least(0, "must be a non-negative integer")


def _add_max_memory(parser: argparse.ArgumentParser) -> None:
    """``--max-memory MIB``, the fast engine's activation budget of one forward pass."""
    parser.add_argument(
        "--max-memory",
        type=_POSITIVE,
        metavar="MIB",
        help="activation budget of one forward pass in MiB: each pass takes the most rows that "
        "fit (default 32; results do not change)",
    )


def _add_precision(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``: where and in which floating-point type the model runs."""
    from scrub._precision import DTYPES

    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="where the model runs: cpu (default), cuda or cuda:N",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="the model's floating-point type (default float32; bfloat16 and float16 are "
        "faster and less exact: metrics are still computed in float64, and the result "
        "records the dtype)",
    )


def _precision(args: argparse.Namespace) -> dict[str, Any]:
    """The ``device`` and ``dtype`` keywords of the library call, checked first.

    Raises:
        PrecisionError: before anything is loaded, for CUDA where there is none.
    """
    from scrub._precision import parse_device

    parse_device(args.device)
    return {"device": args.device, "dtype": args.dtype}


def _max_memory(args: argparse.Namespace) -> int | None:
    """``--max-memory`` in bytes (``None``: the engine's default)."""
    return None if args.max_memory is None else args.max_memory * 2**20


def _parser() -> argparse.ArgumentParser:
    description = (__doc__ or "").split("\n\n")[0].replace("\n", " ")
    parser = argparse.ArgumentParser(
        prog="scrub",
        description=description,
        epilog="exit codes: 0 ok, 1 invalid hypothesis or unwritable output, 2 usage error, "
        "130 interrupted. SCRUB_DEBUG=1 shows tracebacks of unexpected errors.",
    )
    parser.add_argument("--version", action="version", version=f"scrub {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="scrub a hypothesis and print how much it recovers")
    run.add_argument("file", type=Path, help="hypothesis YAML file")
    run.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    run.add_argument("--n", type=_POSITIVE, help="number of reference examples (at least 1)")
    run.add_argument("--seed", type=_NON_NEGATIVE, help="seed of every random draw (0 or more)")
    run.add_argument(
        "--engine",
        default="fast",
        choices=["fast", "reference"],
        help="fast: batched row groups (default); reference: one pass per node, for checking",
    )
    run.add_argument(
        "--max-batch-rows",
        type=_POSITIVE,
        default=4096,
        help="most rows in one forward pass (caps memory; results do not change)",
    )
    _add_max_memory(run)
    _add_precision(run)
    run.add_argument("--out", type=Path, help="write the result as JSON here")
    bar = run.add_mutually_exclusive_group()
    bar.add_argument("--quiet", action="store_true", help="no progress bar")
    bar.add_argument(
        "--progress", action="store_true", help="a progress bar even if stderr is not a terminal"
    )
    run.add_argument("--report", type=Path, help="write an HTML report of the result here")

    check = sub.add_parser(
        "check",
        help="validate a hypothesis against its model's config and its dataset, and sample its "
        "tree once (no weights loaded, no model run)",
    )
    check.add_argument("file", type=Path, help="hypothesis YAML file")
    check.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    patch = sub.add_parser(
        "patch",
        help="run a patching experiment (activation, path, iterative path, attention, knockout)",
    )
    patch.add_argument("file", type=Path, help="experiment YAML file")
    patch.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    patch.add_argument("--n", type=_POSITIVE, help="number of reference examples (at least 1)")
    patch.add_argument("--seed", type=_NON_NEGATIVE, help="seed of every random draw (0 or more)")
    patch.add_argument(
        "--max-batch-rows",
        type=_POSITIVE,
        default=4096,
        help="most rows in one forward pass (caps memory; results do not change)",
    )
    _add_max_memory(patch)
    _add_precision(patch)
    patch.add_argument(
        "--out", type=Path, help="write NAME.json, NAME.npz and figures into this directory"
    )
    patch.add_argument("--no-figures", action="store_true", help="skip the PNG/SVG figures")
    patch.add_argument("--report", type=Path, help="write an HTML report of the result here")
    cmp = sub.add_parser("compare", help="compare rival hypotheses on one experiment")
    cmp.add_argument("files", type=Path, nargs="+", help="hypothesis YAML files")
    cmp.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    cmp.add_argument("--n", type=_POSITIVE, help="number of reference examples (at least 1)")
    cmp.add_argument(
        "--seed", type=_NON_NEGATIVE, help="seed of the reference batch and of the first draw"
    )
    cmp.add_argument(
        "--seeds", type=_POSITIVE, default=1, help="draws of the tree on the reference batch (K)"
    )
    cmp.add_argument(
        "--experiment", type=Path, help="YAML whose model/dataset/metric/... every file gets"
    )
    cmp.add_argument(
        "--random-controls",
        type=_NON_NEGATIVE,
        default=0,
        metavar="N",
        help="rank each hypothesis among N random ones of the same shape",
    )
    cmp.add_argument("--margin", type=float, default=0.05, help="TOST equivalence margin ε")
    cmp.add_argument("--engine", default="fast", choices=["fast", "reference"])
    _add_max_memory(cmp)
    _add_precision(cmp)
    cmp.add_argument("--out", type=Path, help="write the comparison as JSON here")
    cmp.add_argument("--report", type=Path, help="write an HTML report of the comparison here")

    diag = sub.add_parser("diagnose", help="which part of a hypothesis loses the metric")
    diag.add_argument("file", type=Path, help="hypothesis YAML file")
    diag.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    diag.add_argument("--n", type=_POSITIVE, help="number of reference examples (at least 1)")
    diag.add_argument("--seed", type=_NON_NEGATIVE, help="seed of every random draw (0 or more)")
    diag.add_argument("--by", help="dataset field to break examples down by ('' for none)")
    diag.add_argument("--engine", default="fast", choices=["fast", "reference"])
    _add_max_memory(diag)
    _add_precision(diag)
    diag.add_argument("--out", type=Path, help="write the diagnosis as JSON here")
    diag.add_argument("--report", type=Path, help="write an HTML report of the diagnosis here")

    rep = sub.add_parser("reproduce", help="run every claim of a paper's circuit (ioi)")
    rep.add_argument("paper", choices=["ioi"], help="what to reproduce")
    rep.add_argument(
        "--model", help="ioi_names (the shipped offline model, default) or a GPT-2 source"
    )
    rep.add_argument(
        "--out", type=Path, default=Path("results/reproduce-ioi"), help="output folder"
    )
    rep.add_argument("--n", type=_POSITIVE, help="reference examples for every step")
    rep.add_argument(
        "--only",
        action="append",
        metavar="CLAIM",
        help="run only this claim (repeatable; faithfulness_node: the knockouts)",
    )
    rep.add_argument("--no-patches", action="store_true", help="skip the patching grids")
    _add_precision(rep)

    graph = sub.add_parser("graph", help="draw the interpretation graph (Graphviz)")
    graph.add_argument("file", type=Path, help="hypothesis YAML file")
    graph.add_argument("--out", type=Path, help="a .dot, .svg or .png file (default: print DOT)")
    graph.add_argument(
        "--diagnosis",
        type=Path,
        help="colour nodes and edges by the losses in this 'scrub diagnose --out' JSON",
    )
    imp = sub.add_parser(
        "import-circuit", help="write a hypothesis file from an EAP-IG / MIB circuit JSON"
    )
    imp.add_argument("file", type=Path, help="circuit JSON (EAP-IG Graph.to_json, MIB)")
    imp.add_argument("--out", type=Path, help="hypothesis YAML to write (default: print it)")
    imp.add_argument("--model", required=True, help="the hypothesis's model")
    imp.add_argument(
        "--dataset",
        required=True,
        help="a dataset spec file (written relative to --out) or a generator name",
    )
    imp.add_argument(
        "--metric", required=True, help="the metric as YAML, e.g. '{kind: loss, labels: next}'"
    )
    imp.add_argument("--name", help="the hypothesis's name (default: the circuit file's stem)")
    exp = sub.add_parser("export-circuit", help="write a hypothesis's edges as EAP-IG / MIB JSON")
    exp.add_argument("file", type=Path, help="hypothesis YAML file")
    exp.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    exp.add_argument("--out", type=Path, help="circuit JSON to write (default: print it)")
    report = sub.add_parser("report", help="write a self-contained HTML report of result files")
    report.add_argument("results", type=Path, nargs="+", help="result JSON files")
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.add_argument("--title", help="the page's title (default: from the results)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scrub`` command (see the module docstring for exit codes)."""
    args = _parser().parse_args(argv)
    args.command_line = _command_line(argv)  # for the reports' provenance
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "graph":
            return _graph(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "diagnose":
            return _diagnose(args)
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "import-circuit":
            return _import_circuit(args)
        if args.command == "export-circuit":
            return _export_circuit(args)
        if args.command == "patch":
            return _patch(args)
        if args.command == "report":
            return _report(args)
        return _run(args)
    except HypothesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        from scrub._precision import PrecisionError

        if not isinstance(exc, PrecisionError):
            raise
        print(f"error: {exc}", file=sys.stderr)  # a --device or --dtype that cannot be used
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``scrub graph | head``): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def console() -> None:
    """The installed ``scrub`` command: :func:`main`, with unexpected errors as one line."""
    if os.environ.get("SCRUB_DEBUG"):
        sys.exit(main())
    try:
        code = main()
    except Exception as exc:
        print(
            f"error: unexpected {type(exc).__name__}: {exc}\n"
            "run with SCRUB_DEBUG=1 for the traceback",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """Silence Hugging Face's progress bars and logging (model loading, padding advice)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(args: argparse.Namespace):
    """The hypothesis and its model (on ``--device``, in ``--dtype``), loaded quietly."""
    from scrub._bind import load_model_for
    from scrub._hypothesis import load_hypothesis

    precision = _precision(args)
    hyp = load_hypothesis(args.file)
    with _quiet_hf():  # the file's model is relative to the file
        model = load_model_for(hyp, args.model, **precision)
    return hyp, model


def _check(args: argparse.Namespace) -> int:
    from scrub._bind import bind, load_model_for, make_dataset_for
    from scrub._hypothesis import load_hypothesis
    from scrub._model import ConfigOnlyModel
    from scrub._model_variants import WEIGHTS_HINT
    from scrub._tree import sample_tree

    hyp = load_hypothesis(args.file)
    n, seed = hyp.spec.defaults.n, hyp.spec.defaults.seed
    dataset = make_dataset_for(hyp, seed=seed)  # before the (slower) model
    # The file's model is relative to the file. Binding and sampling need its shape and names
    # only, so its config is read (transformers is not even imported for a local model) and its
    # weights are not loaded.
    model = load_model_for(hyp, args.model, weights=False)
    bound = bind(hyp, model, dataset)
    # A dry sampling on the defaults: what ``run`` would reject at sampling time is caught
    # here (n larger than the pool, ...), and what it would warn about is shown.
    tree = sample_tree(bound, n=n, seed=seed)
    print(
        f"ok: {args.file}: hypothesis {hyp.name!r}, {hyp.graph.number_of_nodes()} nodes "
        f"({sum(1 for _ in tree.root.walk())} after treeifying), model {model.source!r}, "
        f"dataset {dataset.name!r} ({dataset.n_base} examples), sampled n={n} seed={seed}"
    )
    if isinstance(model, ConfigOnlyModel) and model.weights_missing:
        print(
            f"note: model {model.source!r} checked against {model.origin} (shapes and names "
            "only): its weights are not in the Hugging Face cache, so 'scrub run' needs them "
            f"first; {WEIGHTS_HINT.format(name=model.source)}"
        )
    for message in tree.warnings:
        print(f"warning: {message}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from scrub._hypothesis import load_hypothesis
    from scrub._render import render, to_dot

    hyp = load_hypothesis(args.file)
    overlay = None if args.diagnosis is None else _diagnosis_overlay(hyp, args.diagnosis)
    if args.out is None:
        sys.stdout.write(to_dot(hyp, overlay=overlay).source + "\n")
        sys.stdout.flush()
        return 0
    try:
        print(f"wrote {render(hyp, args.out, overlay=overlay)}")
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _diagnosis_overlay(hyp, path: Path):
    """The losses of a diagnosis of ``hyp`` (its JSON at ``path``), to draw over it.

    Raises:
        OutputError: the file is not a diagnosis, or is of another version of the file.
    """
    from scrub.report import ReportError, load_document
    from scrub.report._diagnosis_sections import loss_overlay

    try:
        doc = load_document(path)
    except ReportError as exc:
        raise OutputError(f"--diagnosis: {exc}") from None
    if doc.kind != "diagnosis":
        raise OutputError(
            f"--diagnosis {path} is a {doc.kind!r} result, not a diagnosis (write one with "
            f"'scrub diagnose {hyp.file or 'FILE'} --out {path}')"
        )
    recorded = doc.data.get("sha256")
    if recorded != hyp.sha256:
        what = (
            f"records sha256 {recorded[:12]}…"
            if isinstance(recorded, str)
            else "records no sha256 (made by an older scrub)"
        )
        raise OutputError(
            f"--diagnosis {path} {what}, but {hyp.file or hyp.name} has {hyp.sha256[:12]}…: it "
            "may diagnose another file or version, whose rows need not name this file's nodes; "
            "run 'scrub diagnose' on this file again"
        )
    rows = [r for r in doc.data.get("rows") or [] if isinstance(r, dict)]
    return loss_overlay(hyp, rows)[0]


def _import_circuit(args: argparse.Namespace) -> int:
    import os

    import yaml

    from scrub.interop.circuits import circuit_to_spec, read_circuit

    circuit = read_circuit(args.file)
    metric = yaml.safe_load(args.metric)
    if not isinstance(metric, dict):
        raise HypothesisError(
            f"--metric {args.metric!r} is not a mapping",
            hint="e.g. --metric '{kind: loss, positions: REP, labels: next}'",
        )
    dataset: object = {"generator": args.dataset}
    if Path(args.dataset).is_file():
        base = (args.out or Path("hypothesis.yaml")).resolve().parent
        dataset = os.path.relpath(Path(args.dataset).resolve(), base)
    spec, dropped = circuit_to_spec(
        circuit, model=args.model, dataset=dataset, metric=metric, name=args.name or args.file.stem
    )
    text = yaml.safe_dump(spec, sort_keys=False)
    note = f"{len(circuit.kept)} kept edges, {dropped} dropped (on no path from input to logits)"
    if args.out is None:
        print(text, end="")
        print(f"# {note}", file=sys.stderr)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: {note}")
    return 0


def _export_circuit(args: argparse.Namespace) -> int:
    import json

    from scrub._bind import bind, load_model_for, make_dataset_for
    from scrub._hypothesis import load_hypothesis
    from scrub.interop.circuits import hypothesis_to_circuit

    hyp = load_hypothesis(args.file)
    model = load_model_for(hyp, args.model)
    bound = bind(hyp, model, make_dataset_for(hyp, seed=hyp.spec.defaults.seed))
    circuit = hypothesis_to_circuit(bound.hypothesis, model.shape, d_model=model.bridge.cfg.d_model)
    text = json.dumps(circuit, indent=1)
    if args.out is None:
        print(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(f"wrote {args.out}: {len(circuit['edges'])} edges")
    return 0


def _command_line(argv: list[str] | None) -> list[str]:
    return ["scrub", *(sys.argv[1:] if argv is None else argv)]


def _report(args: argparse.Namespace) -> int:
    from scrub.report import ReportError, write_report

    try:
        out = write_report(args.results, args.out, title=args.title, command_line=args.command_line)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from scrub._bind import make_dataset_for
    from scrub._model import ScrubModel
    from scrub._report import format_result
    from scrub._run import run

    _check_outputs(args)
    hyp, model = _load(args)
    assert isinstance(model, ScrubModel)
    # Made here (as run would make it) so that the report can break the result down by its fields.
    dataset = make_dataset_for(hyp, seed=hyp.spec.defaults.seed if args.seed is None else args.seed)
    with warnings.catch_warnings(), _quiet_hf():  # the table lists the warnings
        warnings.simplefilter("ignore", ScrubWarning)
        result = run(
            hyp,
            model=model,
            dataset=dataset,
            n=args.n,
            seed=args.seed,
            engine=args.engine,
            max_batch_rows=args.max_batch_rows,
            max_memory=_max_memory(args),
            progress=False if args.quiet else (True if args.progress else None),
        )
    print(format_result(result))
    _write_json(result, args)
    _write_html_report(result, args, hypothesis=hyp, dataset=dataset)
    return 0


def _patch(args: argparse.Namespace) -> int:
    from scrub.experiments import patch
    from scrub.experiments._report import format_patch

    _check_outputs(args, out=False)  # --out is a folder, written by result.save
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScrubWarning)
        result = patch(
            args.file,
            model=args.model,
            n=args.n,
            seed=args.seed,
            max_batch_rows=args.max_batch_rows,
            max_memory=_max_memory(args),
            **_precision(args),
        )
    print(format_patch(result))
    if args.out:
        try:
            written = result.save(args.out, figures=not args.no_figures)
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
    _write_html_report(result, args)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from scrub.experiments import compare

    if not 0 < args.margin < 1:
        print(f"error: --margin must be between 0 and 1, not {args.margin}", file=sys.stderr)
        return 2
    _check_outputs(args)
    with warnings.catch_warnings(), _quiet_hf():  # the table lists the warnings
        warnings.simplefilter("ignore", ScrubWarning)
        result = compare(
            args.files,
            model=args.model,
            n=args.n,
            seed=args.seed,
            seeds=args.seeds,
            experiment=args.experiment,
            random_controls=args.random_controls,
            margin=args.margin,
            engine=args.engine,
            max_memory=_max_memory(args),
            **_precision(args),
        )
    print(result.table())
    _write_json(result, args)
    _write_html_report(result, args)
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from scrub.experiments import diagnose

    _check_outputs(args)
    with warnings.catch_warnings(), _quiet_hf():
        warnings.simplefilter("ignore", ScrubWarning)
        result = diagnose(
            args.file,
            model=args.model,
            n=args.n,
            seed=args.seed,
            by=args.by,
            engine=args.engine,
            max_memory=_max_memory(args),
            **_precision(args),
        )
    print(result.table())
    _write_json(result, args)
    _write_html_report(result, args)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from scrub.experiments.reproduce import reproduce

    with _quiet_hf():
        result = reproduce(
            args.paper,
            model=args.model,
            out=args.out,
            n=args.n,
            only=args.only,
            patches=not args.no_patches,
            **_precision(args),
        )
    print((result.out / "results.md").read_text(), end="")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def _check_outputs(args: argparse.Namespace, *, out: bool = True) -> None:
    """Check ``--out`` (a file, unless ``out`` is False) and ``--report`` before the run.

    Raises:
        OutputError: one of them cannot be written.
    """
    if out and args.out is not None:
        _check_writable(args.out)
    if args.report is not None:
        _check_writable(args.report, flag="--report")


def _write_json(result: Any, args: argparse.Namespace) -> None:
    """Write ``--out`` (if given): the result's JSON, atomically."""
    if args.out is not None:
        _write_atomically(args.out, result.to_json() + "\n")
        print(f"wrote {args.out}")


def _write_html_report(result: object, args: argparse.Namespace, **context: Any) -> None:
    """Write ``--report`` (if given): the HTML page of one result of this command.

    ``context``: what the page can use beyond the result (``hypothesis``, ``dataset``).
    """
    if args.report is None:
        return
    from scrub.report import document_from_result, write_report

    doc = document_from_result(result, command_line=args.command_line, **context)
    try:
        out = write_report([doc], args.report, command_line=args.command_line)
    except OSError as exc:
        raise OutputError(f"cannot write --report {args.report}: {exc.strerror or exc}") from None
    print(f"wrote {out}")


def _check_writable(path: Path, *, flag: str = "--out") -> None:
    """Fail now, not after the run, if ``path`` cannot be written.

    Raises:
        OutputError: naming the flag, the path and the reason.
    """
    if path.is_dir():
        example = path / ("x.html" if flag == "--report" else "x.json")
        raise OutputError(f"{flag} {path} is a directory; give a file name, e.g. {example}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write {flag} {path}: {exc.strerror or exc} (in {parent})"
        ) from None


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failure leaves any old file intact.

    Raises:
        OutputError: naming the path and the reason.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write --out {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a file's mode
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"cannot write --out {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    console()
