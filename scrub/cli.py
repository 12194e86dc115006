"""The ``scrub`` command: ``scrub run FILE``, ``scrub check FILE`` and ``scrub graph FILE``.

Also ``scrub import-circuit CIRCUIT.json`` (an EAP-IG / MIB circuit → a hypothesis file) and
``scrub export-circuit FILE`` (a hypothesis → such a circuit); see :mod:`scrub.interop.circuits`.

Exit codes: 0 success, 1 invalid hypothesis (the message names the file, key and fix), 2 bad
command-line usage.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from scrub._errors import HypothesisError, ScrubWarning

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scrub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="scrub a hypothesis and print how much it recovers")
    run.add_argument("file", type=Path, help="hypothesis YAML file")
    run.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    run.add_argument("--n", type=int, help="number of reference examples")
    run.add_argument("--seed", type=int, help="seed of every random draw")
    run.add_argument(
        "--engine",
        default="fast",
        choices=["fast", "reference"],
        help="fast: batched row groups (default); reference: one pass per node, for checking",
    )
    run.add_argument(
        "--max-batch-rows",
        type=int,
        default=4096,
        help="most rows in one forward pass (caps memory; results do not change)",
    )
    run.add_argument("--out", type=Path, help="write the result as JSON here")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    check = sub.add_parser("check", help="validate a hypothesis against its model and dataset")
    check.add_argument("file", type=Path, help="hypothesis YAML file")
    check.add_argument("--model", help="model: shipped name, local HF directory or hub name")
    graph = sub.add_parser("graph", help="draw the interpretation graph (Graphviz)")
    graph.add_argument("file", type=Path, help="hypothesis YAML file")
    graph.add_argument("--out", type=Path, help="a .dot, .svg or .png file (default: print DOT)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scrub`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "graph":
            return _graph(args)
        if args.command == "import-circuit":
            return _import_circuit(args)
        if args.command == "export-circuit":
            return _export_circuit(args)
        return _run(args)
    except HypothesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace) -> int:
    from scrub._bind import bind, make_dataset_for
    from scrub._hypothesis import load_hypothesis
    from scrub._model import load_model
    from scrub._tree import treeify

    hyp = load_hypothesis(args.file)
    model = load_model(args.model or hyp.spec.model)
    dataset = make_dataset_for(hyp, seed=hyp.spec.defaults.seed)
    bind(hyp, model, dataset)
    tree = treeify(hyp)
    print(
        f"ok: {args.file}: hypothesis {hyp.name!r}, {hyp.graph.number_of_nodes()} nodes "
        f"({sum(1 for _ in tree.walk())} after treeifying), model {model.source!r}, "
        f"dataset {dataset.name!r} ({dataset.n_base} examples)"
    )
    return 0


def _graph(args: argparse.Namespace) -> int:
    from scrub._hypothesis import load_hypothesis
    from scrub._render import render, to_dot

    hyp = load_hypothesis(args.file)
    if args.out is None:
        print(to_dot(hyp).source)
        return 0
    try:
        print(f"wrote {render(hyp, args.out)}")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


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

    from scrub._bind import bind, make_dataset_for
    from scrub._hypothesis import load_hypothesis
    from scrub._model import load_model
    from scrub.interop.circuits import hypothesis_to_circuit

    hyp = load_hypothesis(args.file)
    model = load_model(args.model or hyp.spec.model)
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


def _run(args: argparse.Namespace) -> int:
    from scrub._report import format_result
    from scrub._run import run

    with warnings.catch_warnings():  # the table lists them; don't print them twice
        warnings.simplefilter("ignore", ScrubWarning)
        result = run(
            args.file,
            model=args.model,
            n=args.n,
            seed=args.seed,
            engine=args.engine,
            max_batch_rows=args.max_batch_rows,
            progress=not args.quiet,
        )
    print(format_result(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(result.to_json() + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
