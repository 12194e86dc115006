"""Score the shipped hypotheses and experiments and write their HTML reports (``make reports``).

Usage: python scripts/make_reports.py [--n 200] [--seed 0] [--patch-n N] [--out results]
                                      [--only induction] [--screenshot docs/report.png]

Writes, under ``OUT`` (each page next to the JSON it reads, as the commands write them):

- ``FAMILY.html`` and ``FAMILY/NAME.json``: every shipped hypothesis of the family scored on the
  same model, dataset and reference batch (one activation cache), one page (the runs compared,
  then each run) — what ``scrub run --out`` and ``scrub report`` give;
- ``FAMILY-comparison.json`` / ``.html``: ``scrub compare`` of the family's rival hypotheses
  (:data:`COMPARISONS`), with pairwise differences, Holm-adjusted p-values and completeness;
- ``parens-diagnosis.json`` / ``.html``: ``scrub diagnose`` of ``count_horizon.yaml``, its
  diagram coloured by loss, broken down by the failure ``kind``;
- ``patching/NAME.json`` / ``.html``: ``scrub patch`` of the induction model's iterative path
  patching into the logits (a grid) and the counterfactual attention of a1.h0 (attention maps).

``--n`` and ``--seed`` apply to the hypotheses; the patching experiments use their files'
defaults unless ``--patch-n`` is given. ``--only`` picks families (``induction`` also picks the
patching pages, which are on the induction model). ``--screenshot`` saves the top of the first
page as seen by headless Chromium (``make browser``), the README's picture.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import scrub
from scrub.experiments import compare, diagnose, patch
from scrub.report import document_from_result, write_report

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {
    "induction": ["full", "kcomp_all_heads", "kcomp", "naive", "empty"],
    "parens": ["full", "early_layers", "count_ends_horizon", "count_horizon", "empty"],
}
COMPARISONS = {
    "induction": ["kcomp", "naive", "kcomp_all_heads"],
    "parens": ["count_horizon", "count_ends_horizon", "early_layers"],
}
"""The rivals each family's comparison page compares (as in the README's tables)."""
DIAGNOSES = {"parens": "count_horizon"}
PATCHING = {"induction": ["iterative_path_logits", "attention_prev_token"]}


def _file(family: str, name: str) -> Path:
    return ROOT / "hypotheses" / family / f"{name}.yaml"


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():  # the pages list the warnings
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return fn(*args, **kwargs)


def _write(result, json_path: Path, page: Path, *, title: str, argv: list[str]) -> Path:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(result.to_json() + "\n")
    doc = document_from_result(result, command_line=argv)
    out = write_report([doc], page, title=title, command_line=argv)
    print(f"wrote {json_path} and {out}")
    return out


def family_report(family: str, *, n: int, seed: int, out: Path, argv: list[str]) -> Path:
    files = [_file(family, name) for name in FAMILIES[family]]
    first = scrub.load_hypothesis(files[0])
    model = scrub.load_model(first.spec.model)
    dataset = scrub.make_dataset_for(first, seed=seed)
    cache = scrub.ActivationCache()
    docs = []
    for path in files:
        hyp = scrub.load_hypothesis(path)
        result = _quiet(scrub.run, hyp, model=model, dataset=dataset, cache=cache, n=n, seed=seed)
        json_path = out / family / f"{path.stem}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(result.to_json() + "\n")
        print(f"{family}/{path.stem}: recovered {result.recovered:.3f} -> {json_path}")
        docs.append(document_from_result(result, hypothesis=hyp, dataset=dataset))
    page = write_report(
        docs,
        out / f"{family}.html",
        title=f"Shipped {family} hypotheses (n={n}, seed={seed})",
        command_line=argv,
    )
    print(f"wrote {page}")
    return page


def experiment_reports(
    family: str, *, n: int, seed: int, patch_n: int | None, out: Path, argv: list[str]
) -> list[Path]:
    """The family's comparison, diagnosis and patching pages."""
    pages = []
    rivals = [_file(family, name) for name in COMPARISONS.get(family, [])]
    if rivals:
        cmp = _quiet(compare, rivals, n=n, seed=seed)
        names = ", ".join(h.name for h in cmp.hypotheses)
        pages.append(
            _write(
                cmp,
                out / f"{family}-comparison.json",
                out / f"{family}-comparison.html",
                title=f"Comparison of {names} (n={n}, seed={seed})",
                argv=argv,
            )
        )
    if family in DIAGNOSES:
        diag = _quiet(diagnose, _file(family, DIAGNOSES[family]), n=n, seed=seed)
        pages.append(
            _write(
                diag,
                out / f"{family}-diagnosis.json",
                out / f"{family}-diagnosis.html",
                title=f"Diagnosis of {diag.hypothesis} (n={n}, seed={seed})",
                argv=argv,
            )
        )
    for name in PATCHING.get(family, []):
        path = ROOT / "experiments" / family / f"{name}.yaml"
        result = _quiet(patch, path, n=patch_n)
        pages.append(
            _write(
                result,
                out / "patching" / f"{result.name}.json",
                out / "patching" / f"{result.name}.html",
                title=f"{result.kind} patching: {result.name} (n={result.n})",
                argv=argv,
            )
        )
    return pages


def screenshot(page: Path, target: Path, *, height: int = 1500) -> None:
    """Save the top ``height`` pixels of ``page`` as a small PNG (64 colours)."""
    from PIL import Image

    from scrub.report.browser import available, inspect_page

    if not available():
        sys.exit("--screenshot needs Chromium (make browser, or apt-get install chromium)")
    full = target.with_suffix(".full.png")
    seen = inspect_page(page, selectors=["main"], screenshot=full)
    if seen.console:
        sys.exit(f"the page logged errors: {seen.console}")
    with Image.open(full) as image:
        top = image.crop((0, 0, image.width, min(height, image.height))).convert("RGB")
        top.quantize(colors=64).save(target, optimize=True)
    full.unlink()
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="reference examples of hypotheses")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch-n", type=int, help="reference examples of patching experiments")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--only", choices=sorted(FAMILIES), action="append")
    parser.add_argument("--screenshot", type=Path, help="save the first page's top as a PNG")
    args = parser.parse_args()
    argv = ["python", "scripts/make_reports.py", *sys.argv[1:]]
    pages = []
    for family in args.only or list(FAMILIES):
        pages.append(family_report(family, n=args.n, seed=args.seed, out=args.out, argv=argv))
        pages += experiment_reports(
            family, n=args.n, seed=args.seed, patch_n=args.patch_n, out=args.out, argv=argv
        )
    if args.screenshot:
        screenshot(pages[0], args.screenshot)


if __name__ == "__main__":
    main()
