"""The ``scrub`` command: ``scrub run FILE``, ``scrub check FILE`` and ``scrub graph FILE``.

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scrub`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "graph":
            return _graph(args)
        return _run(args)
    except HypothesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _check(args: argparse.Namespace) -> int:
    from scrub._bind import bind, load_model_for, make_dataset_for
    from scrub._hypothesis import load_hypothesis
    from scrub._tree import treeify

    hyp = load_hypothesis(args.file)
    dataset = make_dataset_for(hyp, seed=hyp.spec.defaults.seed)  # before the (slower) model
    model = load_model_for(hyp, args.model)  # the file's model is relative to the file
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
