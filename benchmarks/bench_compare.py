"""Benchmark ``scrub.compare`` and ``scrub.diagnose`` against separate ``scrub.run`` calls.

Both sides do the same scrubs, measured in one run (these machines are noisy; read the ratios):

1. **compare of 10 hypotheses** (the five shipped induction files and five variants of
   ``kcomp.yaml``) vs the same 10 scrubs as separate :func:`scrub.run` calls, each with a fresh
   :class:`~scrub.ActivationCache` (what a user without ``compare`` does). ``compare`` also
   computes its statistics (45 pairs: bootstraps, sign-flip tests, TOST).
2. **diagnose of kcomp.yaml** vs every variant (and the hypothesis) as separate runs.

Each is timed in wall-clock and CPU seconds (``time.process_time``: all threads), after one
warm-up of the model load. Threads: ``--threads`` (``torch.set_num_threads``); the environment's
``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY`` are printed with the results.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_compare.py --threads 2 --n 200
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

import scrub
from scrub.experiments.diagnose import variants

ROOT = Path(__file__).resolve().parent.parent
INDUCTION = ROOT / "hypotheses" / "induction"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def ten_hypotheses() -> list[scrub.Hypothesis]:
    files = ["kcomp", "naive", "kcomp_all_heads", "full", "empty"]
    hyps = [scrub.load_hypothesis(INDUCTION / f"{f}.yaml") for f in files]
    kcomp = hyps[0]
    for i, (node, change, data) in enumerate(variants(kcomp)[:5]):
        hyps.append(
            scrub.hypothesis_from_dict(
                data, file=kcomp.file, default_name=f"kcomp~{i} {node}: {change}"
            )
        )
    return hyps


def separate(model, hyps, n: int, seed: int) -> list[float]:
    out = []
    for hyp in hyps:
        dataset = scrub.make_dataset_for(hyp, seed=seed)
        out.append(scrub.run(hyp, model=model, dataset=dataset, n=n, seed=seed).recovered)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", scrub.ScrubWarning)
    model = scrub.load_model("induction")
    env = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    print(f"torch threads {torch.get_num_threads()}, {env}, n = {args.n}")
    scrub.run(INDUCTION / "kcomp.yaml", model=model, n=8)  # warm-up

    hyps = ten_hypotheses()
    cmp, cw, cc = timed(lambda: scrub.compare(hyps, model=model, n=args.n, seed=args.seed))
    alone, sw, sc = timed(lambda: separate(model, hyps, args.n, args.seed))
    worst = max(abs(h.recovered - r) for h, r in zip(cmp.hypotheses, alone, strict=True))
    print(
        f"compare of {len(hyps)} hypotheses ({len(cmp.pairs)} pairs): wall {cw:.2f} s, cpu "
        f"{cc:.2f} s; separate runs: wall {sw:.2f} s, cpu {sc:.2f} s; ratio wall "
        f"{cw / sw:.2f}, cpu {cc / sc:.2f}; largest |Δ recovered| {worst:.1e}"
    )

    kcomp = scrub.load_hypothesis(INDUCTION / "kcomp.yaml")
    labels = [("—", "keep")] + [(node, change) for node, change, _ in variants(kcomp)]
    edits = [kcomp] + [
        scrub.hypothesis_from_dict(data, file=kcomp.file) for _, _, data in variants(kcomp)
    ]
    diag, dw, dc = timed(lambda: scrub.diagnose(kcomp, model=model, n=args.n, seed=args.seed))
    alone, sw, sc = timed(lambda: separate(model, edits, args.n, args.seed))
    rows = {(r.node, r.change): r.recovered for r in diag.rows}
    worst = max(abs(rows[label] - a) for label, a in zip(labels, alone, strict=True))
    print(
        f"diagnose of kcomp ({len(diag.rows)} rows): wall {dw:.2f} s, cpu {dc:.2f} s; "
        f"separate runs ({len(edits)}): wall {sw:.2f} s, cpu {sc:.2f} s; ratio wall "
        f"{dw / sw:.2f}, cpu {dc / sc:.2f}; largest |Δ recovered| {worst:.1e}"
    )


if __name__ == "__main__":
    main()
