"""Score every hypothesis in ``hypotheses/tracr/`` under resample and zero ablation.

    python scripts/tracr_results.py            # print the tables
    python scripts/tracr_results.py --write    # also put them into each tracr model's card

Each file is run with ``scrub.run`` (n = 200, seed 0, the fast engine) as written (resample
ablation) and with ``ablation: zero``; a table row gives the metric's clean, baseline and
scrubbed means and the fraction recovered with its bootstrap CI. Needs no jax.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scrub  # noqa: E402
from scrub._yaml import read_yaml  # noqa: E402
from scrub.data.tracr import PROGRAMS  # noqa: E402

HYPOTHESES = ROOT / "hypotheses" / "tracr"


def score(path: Path, ablation: str, *, n: int) -> scrub.ScrubResult:
    spec = read_yaml(path, what="hypothesis file")
    spec["ablation"] = ablation
    spec["dataset"] = str((path.parent / spec["dataset"]).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scrub.ScrubWarning)
        return scrub.run(scrub.hypothesis_from_dict(spec), n=n, seed=0)


def hf_difference(program: str) -> float:
    """Max |log-prob| difference of scrub's loaded model from the float64 Hugging Face model."""
    from transformers import GPT2LMHeadModel

    model = scrub.load_model(f"tracr_{program}")
    ds = scrub.make_dataset("tracr", {"program": program, "size": 300}, np.random.default_rng(1))
    hf = GPT2LMHeadModel.from_pretrained(model.path, attn_implementation="eager").double().eval()
    with torch.no_grad():
        expected = hf(ds.tokens).logits.log_softmax(-1)
    logits, _, _ = model.run(ds.tokens)
    return float((logits.double().log_softmax(-1) - expected).abs().max())


def table(program: str, *, n: int) -> str:
    rows = [
        "| hypothesis | ablation | clean | baseline | scrubbed | recovered [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    metric = None
    for path in sorted(HYPOTHESES.glob(f"{program}_*.yaml")):
        for ablation in ("resample", "zero"):
            r = score(path, ablation, n=n)
            metric = r.metric["kind"]
            lo, hi = r.recovered_ci
            rows.append(
                f"| `{path.stem}` | {ablation} | {r.clean:.4f} | {r.baseline:.4f} | "
                f"{r.scrubbed:.4f} | {r.recovered:.3f} [{lo:.3f}, {hi:.3f}] |"
            )
    note = (
        f"Metric: `{metric}` at `OUT`; baseline: the whole model on resampled inputs "
        "(resample) or with every component's output zeroed (zero). n = 200, seed 0. "
        f"Measured with `python scripts/tracr_results.py --write`.\n\n"
        f"scrub's loaded model vs the float64 Hugging Face model: max |log-prob difference| "
        f"{hf_difference(program):.2g} (300 inputs)."
    )
    return "\n".join(rows) + "\n\n" + note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the tables into the cards")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    for program in PROGRAMS:
        text = table(program, n=args.n)
        print(f"## tracr_{program}\n\n{text}\n")
        if args.write:
            card = ROOT / "scrub" / "models" / f"tracr_{program}" / "MODEL_CARD.md"
            old = card.read_text()
            start, end = old.index("<!-- scores -->"), old.index("<!-- /scores -->")
            card.write_text(old[:start] + f"<!-- scores -->\n{text}\n" + old[end:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
