"""The fast engine against the physical limit of its schedule (issue 14), measured in one run.

Rows, each timed round-robin in one process (``time.process_time`` and wall time, median of
``--repeat``):

- ``plain``: one plain forward pass over every row group (k tree nodes x B rows), logits at
  every position, no hooks (the bridge's joint q/k/v projection);
- ``limit``: the same model running only the rows x layers the fast engine's plan needs (each
  pass's stacked groups up to the pass's last layer, each leaf row up to the last layer read
  from it: rows read only at the embeddings run no block),
  no hooks, unembedding only at the metric's positions: what any evaluator of this schedule
  must compute;
- ``ideal run``: ``limit`` plus the clean and the baseline passes of ``scrub.run``;
- ``fast cold``: ``FastEngine`` with a fresh cache;
- ``scrub.run``: end to end (sampling, clean, baseline, scrub, bootstrap), fresh cache.

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py \\
        --case induction --n 200,1000 --repeat 5
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py \\
        --case gpt2 --n 8 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine as be

import scrub
from scrub._hooks import unmasked_rows_softmax
from scrub._model import split_qkv_inputs
from scrub.engine import FastEngine
from scrub.engine._plan import make_plan


def limit_passes(model, tree, pos: np.ndarray):
    """The schedule's forward passes on the plain model: (tokens, stop, final) triples."""
    plan = make_plan(model, [tree], kernels=True)
    tokens = tree.dataset.tokens
    out = []
    # each leaf row up to the deepest layer a component is read from it at (0: embeddings only)
    depth: dict[int, int] = {}
    for src, comp in plan.leaves:
        for row in src.rows.tolist():
            depth[row] = max(depth.get(row, 0), model.stop_layer(comp))
    for stop in sorted(set(depth.values()), reverse=True):
        rows = np.array(sorted(r for r, d in depth.items() if d == stop))
        out.append((tokens[torch.as_tensor(rows)], stop, False))
    for stop, gids in plan.passes:
        stacked = [plan.groups[g] for g in gids if not plan.groups[g].virtual]
        rows = np.concatenate([g.rows for g in stacked])
        out.append((tokens[torch.as_tensor(rows)], stop, stop >= model.shape.n_layers))
    return out


class _Final(Exception):
    pass


def final_resid(model, toks: torch.Tensor) -> torch.Tensor:
    """The final residual stream (one hook at ``ln_final.hook_in``, which stops the pass)."""
    got: list[torch.Tensor] = []

    def hook(t, hook=None):
        got.append(t)
        raise _Final

    try:
        with model.bridge.hooks(fwd_hooks=[("ln_final.hook_in", hook)]):
            model.bridge(toks)
    except _Final:
        pass
    return got[0]


def unembed_at(model, resid: torch.Tensor, pos: np.ndarray) -> torch.Tensor:
    n = len(pos)
    batch = torch.arange(resid.shape[0])[:, None]
    return model.unembed(resid[batch, torch.as_tensor(pos).repeat(resid.shape[0] // n, 1)])


@torch.inference_mode()
def run_limit(model, passes, pos: np.ndarray) -> None:
    # The engine's passes skip the compatibility mode's fully-masked-row softmax guards
    # (unpadded causal rows have none), so the limit does too.
    with split_qkv_inputs(model.bridge, False), unmasked_rows_softmax(model.bridge):
        for toks, stop, final in passes:
            if final:  # the root groups' rows only are unembedded (here: the final pass)
                unembed_at(model, final_resid(model, toks), pos)
            else:
                model.bridge(toks, stop_at_layer=stop)


def measure(case: str, n: int, repeat: int) -> None:
    """Print the table for one case and batch size."""
    hyp, model, dataset, tree = be.setup(case, "cpu", n)
    pos = be.metric_positions(hyp, dataset, tree)
    tokens = be.plain_tokens(tree)
    passes = limit_passes(model, tree, pos)
    x = tree.rows(tree.root)

    @torch.inference_mode()
    def clean_and_baseline() -> None:
        # scrub.run's clean pass (the reference rows) and baseline (uncond other rows)
        with split_qkv_inputs(model.bridge, False):
            for rows in (x, tree.rows(tree.root)):
                toks = dataset.tokens[torch.as_tensor(rows)]
                unembed_at(model, final_resid(model, toks), pos)

    fns = {
        "plain": lambda: model.run(tokens),
        "limit": lambda: run_limit(model, passes, pos),
        "ideal run": lambda: (run_limit(model, passes, pos), clean_and_baseline()),
        "fast cold": lambda: FastEngine()(model, tree, positions=pos),
        "scrub.run": lambda: scrub.run(hyp, model=model, dataset=dataset, n=n),
    }
    for fn in fns.values():
        fn()  # warm up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
           for k, v in times.items()}  # fmt: skip
    k = len(be.design_groups(tree))
    print(f"\n== {case}, {hyp.name}, B = {n}, {k} tree nodes, seq {dataset.seq_len}, "
          f"{torch.get_num_threads()} thread(s), engine {FastEngine().describe(model)} ==")  # fmt: skip
    print(f"{'what':12s} {'CPU s':>8s} {'wall s':>8s} {'CPU / plain':>12s} {'CPU / limit':>12s}")
    for name, (cpu, wall) in med.items():
        print(f"{name:12s} {cpu:8.3f} {wall:8.3f} {cpu / med['plain'][0]:12.2f} "
              f"{cpu / med['limit'][0]:12.2f}")  # fmt: skip
    print(
        f"fast cold / limit = {med['fast cold'][0] / med['limit'][0]:.2f} (CPU); "
        f"scrub.run / ideal = {med['scrub.run'][0] / med['ideal run'][0]:.2f} (CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="induction", choices=sorted(be.CASES))
    parser.add_argument("--n", default="200", help="comma-separated reference batch sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", scrub.ScrubWarning)
    for n in [int(x) for x in args.n.split(",")]:
        measure(args.case, n, args.repeat)


if __name__ == "__main__":
    main()
