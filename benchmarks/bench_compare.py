"""Benchmark ``scrub.compare`` and ``scrub.diagnose`` against separate ``scrub.run`` calls.

Both sides do the same scrubs, measured in one run (these machines are noisy; read the ratios):

1. **compare of 10 hypotheses** (the five shipped induction files and five variants of
   ``kcomp.yaml``) vs the same 10 scrubs as separate :func:`scrub.run` calls, each with a fresh
   :class:`~scrub.ActivationCache` (what a user without ``compare`` does). ``compare`` also
   computes its statistics (45 pairs: bootstraps, sign-flip tests, TOST).
2. **diagnose of kcomp.yaml** vs every variant (and the hypothesis) as separate runs.

Each is timed in wall-clock and CPU seconds (``time.process_time``: all threads), after one
warm-up of the model load. The two sides are **interleaved** (shared side, separate side, shared
side, ...; the order alternates each repeat) and repeated ``--repeat`` times, and the medians
are reported with the range, so that a burst of load from other jobs on the machine hits both
sides alike. Threads: ``--threads`` (``torch.set_num_threads``); the environment's
``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY`` are printed with the results.

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_compare.py --threads 1 \
        --n 200 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def interleaved(shared, alone, repeat: int):
    """Time ``shared`` and ``alone`` ``repeat`` times each, alternating which goes first."""
    times: dict[str, list[tuple[float, float]]] = {"shared": [], "alone": []}
    outs = {}
    for i in range(repeat):
        order = [("shared", shared), ("alone", alone)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            outs[name], wall, cpu = timed(fn)
            times[name].append((wall, cpu))
    return outs["shared"], outs["alone"], times


def summary(times: dict[str, list[tuple[float, float]]]) -> str:
    def med(name: str, i: int) -> float:
        return statistics.median(t[i] for t in times[name])

    def spread(name: str, i: int) -> str:
        values = [t[i] for t in times[name]]
        return f"{med(name, i):.2f} s ({min(values):.2f}-{max(values):.2f})"

    ratios = [s[1] / a[1] for s, a in zip(times["shared"], times["alone"], strict=True)]
    return (
        f"wall {spread('shared', 0)}, cpu {spread('shared', 1)}; separate runs: wall "
        f"{spread('alone', 0)}, cpu {spread('alone', 1)}; ratio of medians wall "
        f"{med('shared', 0) / med('alone', 0):.2f}, cpu {med('shared', 1) / med('alone', 1):.2f}"
        f" (cpu ratio per repeat: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timings of each side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", scrub.ScrubWarning)
    model = scrub.load_model("induction")
    env = {k: os.environ.get(k, "(unset)") for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    print(f"torch threads {torch.get_num_threads()}, {env}, n = {args.n}, repeat {args.repeat}")
    scrub.run(INDUCTION / "kcomp.yaml", model=model, n=8)  # warm-up

    hyps = ten_hypotheses()
    cmp, alone, times = interleaved(
        lambda: scrub.compare(hyps, model=model, n=args.n, seed=args.seed),
        lambda: separate(model, hyps, args.n, args.seed),
        args.repeat,
    )
    worst = max(abs(h.recovered - r) for h, r in zip(cmp.hypotheses, alone, strict=True))
    print(
        f"compare of {len(hyps)} hypotheses ({len(cmp.pairs)} pairs): {summary(times)}; "
        f"largest |Δ recovered| {worst:.1e}",
        flush=True,
    )

    kcomp = scrub.load_hypothesis(INDUCTION / "kcomp.yaml")
    labels = [("—", "keep")] + [(node, change) for node, change, _ in variants(kcomp)]
    edits = [kcomp] + [
        scrub.hypothesis_from_dict(data, file=kcomp.file) for _, _, data in variants(kcomp)
    ]
    diag, alone, times = interleaved(
        lambda: scrub.diagnose(kcomp, model=model, n=args.n, seed=args.seed),
        lambda: separate(model, edits, args.n, args.seed),
        args.repeat,
    )
    rows = {(r.node, r.change): r.recovered for r in diag.rows}
    worst = max(abs(rows[label] - a) for label, a in zip(labels, alone, strict=True))
    print(
        f"diagnose of kcomp ({len(diag.rows)} rows; {len(edits)} separate runs): "
        f"{summary(times)}; largest |Δ recovered| {worst:.1e}",
        flush=True,
    )


if __name__ == "__main__":
    main()
