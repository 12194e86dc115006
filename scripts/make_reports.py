"""Score the shipped induction and paren hypotheses and write their HTML reports.

Usage: python scripts/make_reports.py [--n 200] [--seed 0] [--out results] [--only induction]
                                      [--screenshot docs/report.png]

For each family, every hypothesis runs on the same model, dataset and reference batch (same n
and seed, one activation cache), so the comparison is paired. Writes ``OUT/FAMILY/NAME.json``
(one per hypothesis, as ``scrub run --out`` writes them) and ``OUT/FAMILY.html`` (one page: the
comparison, then each hypothesis). ``--screenshot`` saves the top of the first page as seen by
headless Chromium (``make browser``), the README's picture.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import scrub
from scrub.report import document_from_result, write_report

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {
    "induction": ["full", "kcomp_all_heads", "kcomp", "naive", "empty"],
    "parens": ["full", "early_layers", "count_ends_horizon", "count_horizon", "empty"],
}


def family_report(family: str, *, n: int, seed: int, out: Path, argv: list[str]) -> Path:
    files = [ROOT / "hypotheses" / family / f"{name}.yaml" for name in FAMILIES[family]]
    first = scrub.load_hypothesis(files[0])
    model = scrub.load_model(first.spec.model)
    dataset = scrub.make_dataset_for(first, seed=seed)
    cache = scrub.ActivationCache()
    docs = []
    for path in files:
        hyp = scrub.load_hypothesis(path)
        with warnings.catch_warnings():  # the report lists them
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            result = scrub.run(hyp, model=model, dataset=dataset, cache=cache, n=n, seed=seed)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--only", choices=sorted(FAMILIES), action="append")
    parser.add_argument("--screenshot", type=Path, help="save the first page's top as a PNG")
    args = parser.parse_args()
    argv = ["python", "scripts/make_reports.py", *sys.argv[1:]]
    pages = [
        family_report(family, n=args.n, seed=args.seed, out=args.out, argv=argv)
        for family in (args.only or list(FAMILIES))
    ]
    if args.screenshot:
        screenshot(pages[0], args.screenshot)


if __name__ == "__main__":
    main()
