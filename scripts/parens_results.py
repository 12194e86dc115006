"""Score every shipped paren hypothesis and print a results table (loss, accuracy, logit diff).

Usage: python scripts/parens_results.py [--n 200] [--seed 0]

Every hypothesis runs on the same reference batch (same n and seed), so the rows are paired.
The files score the loss; the accuracy and logit-difference columns rerun each file with that
metric (``correct: label, wrong: wrong_label``), everything else unchanged.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import yaml

import scrub

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["full", "early_layers", "count_ends_horizon", "count_horizon", "empty"]
METRICS = {
    "accuracy": {"kind": "accuracy", "positions": "END", "labels": "label"},
    "logit_diff": {"kind": "logit_diff", "positions": "END", "correct": "label", "wrong": "wrong_label"},
}  # fmt: skip


def _fraction(value: float | None) -> str:
    """A recovered fraction, or 'undefined' (clean and baseline indistinguishable)."""
    return "undefined" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = scrub.load_model("parens")
    print(f"(n={args.n}, seed={args.seed})")
    print(
        "| hypothesis | scrubbed loss | recovered (loss) | 95% CI | accuracy | recovered (logit diff) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    clean = baseline = None
    for name in ORDER:
        path = ROOT / "hypotheses" / "parens" / f"{name}.yaml"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            r = scrub.run(path, model=model, n=args.n, seed=args.seed)
            other = {}
            for key, metric in METRICS.items():
                spec = yaml.safe_load(path.read_text())
                spec["dataset"] = yaml.safe_load((path.parent / spec["dataset"]).read_text())
                spec["metric"] = metric
                hyp = scrub.hypothesis_from_dict(spec)
                other[key] = scrub.run(hyp, model=model, n=args.n, seed=args.seed)
        clean, baseline = r, other
        lo, hi = r.recovered_ci
        print(
            f"| `{name}.yaml` | {r.scrubbed:.3f} | {_fraction(r.recovered)} | [{lo:.3f}, {hi:.3f}] | "
            f"{other['accuracy'].scrubbed:.3f} | {_fraction(other['logit_diff'].recovered)} |"
        )
    assert clean is not None and baseline is not None
    print(
        f"\nclean: loss {clean.clean:.3g}, accuracy {baseline['accuracy'].clean:.3f}, logit diff "
        f"{baseline['logit_diff'].clean:.2f}; baseline (resample_all): loss {clean.baseline:.3f}, "
        f"accuracy {baseline['accuracy'].baseline:.3f}, logit diff {baseline['logit_diff'].baseline:.2f}"
    )


if __name__ == "__main__":
    main()
