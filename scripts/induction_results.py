"""Score every shipped induction hypothesis and print the README's results table.

Usage: python scripts/induction_results.py [--n 200] [--seed 0]

Every hypothesis runs on the same reference batch (same n and seed), so the rows are paired.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import scrub

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["full", "kcomp_all_heads", "kcomp", "naive", "empty"]


def _fraction(value: float | None) -> str:
    """A recovered fraction, or 'undefined' (clean and baseline indistinguishable)."""
    return "undefined" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = scrub.load_model("induction")
    print(f"| hypothesis | scrubbed loss | recovered | 95% CI |  (n={args.n}, seed={args.seed})")
    print("| --- | --- | --- | --- |")
    clean = baseline = None
    for name in ORDER:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            r = scrub.run(ROOT / "hypotheses" / "induction" / f"{name}.yaml", model=model,
                          n=args.n, seed=args.seed)  # fmt: skip
        clean, baseline = r.clean, r.baseline
        lo, hi = r.recovered_ci
        print(
            f"| `{name}.yaml` | {r.scrubbed:.3f} | {_fraction(r.recovered)} | [{lo:.3f}, {hi:.3f}] |"
        )
    print(f"\nclean loss {clean:.3f}, baseline (resample_all) loss {baseline:.3f}")


if __name__ == "__main__":
    main()
