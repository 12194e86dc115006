"""The fast engine against the physical limit of its schedule (issue 14), measured in one run.

Rows, each timed round-robin in one process (``time.process_time`` and wall time, median of
``--repeat``):

- with ``--raw-hf``: ``raw HF``, the Hugging Face model itself (loaded from the same
  checkpoint, its default attention implementation), one forward pass over every row group
  (k tree nodes x B rows), logits at every position; ``bridge bare``, the same on the
  ``TransformerBridge`` without split q/k/v and without ``hook_mlp_in``; ``bridge split``, with
  split q/k/v and ``hook_mlp_in`` (the model as scrub loads it when every head's inputs are
  split: ``bench_engine.py``'s old T_plain). Ratios are then also printed to ``raw HF``;
- ``plain``: one plain forward pass over every row group, logits at every position, no hooks
  (the bridge's joint q/k/v projection, ``hook_mlp_in`` on: ``ScrubModel.run``);
- ``limit``: the same model running only the rows x layers the fast engine's plan needs (each
  pass's stacked groups up to the pass's last layer, each leaf row up to the last layer read
  from it: rows read only at the embeddings run no block),
  no hooks, unembedding only at the metric's positions, each pass split into pieces as the
  engine splits its own (a pass's cost per row grows with its size): what any evaluator of
  this schedule must compute;
- ``limit+heads``: ``limit`` plus the heads the plan computes from a block's input in a
  group whose pass ends there (kcomp: the three induction heads on block 1's input), each
  computed once on the plain residual stream of its group's rows (no splices), by the verified
  kernels, with queries only at the positions anything reads them at: necessary work any
  evaluator of this schedule does, which ``limit`` (whole blocks only) leaves out;
- ``ideal run``: ``limit`` plus the clean and the baseline passes of ``scrub.run`` (split
  as ``scrub.run`` splits its clean pass);
- ``fast cold``: ``FastEngine`` with a fresh cache;
- ``scrub.run``: end to end (sampling, clean, baseline, scrub, bootstrap), fresh cache.

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py \\
        --case induction --n 200,1000 --repeat 5
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py \\
        --case gpt2 --n 8 --repeat 3
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_limit.py \\
        --case gpt2 --n 32 --repeat 1 --warmup 0 --raw-hf   # issue 14's table
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
from scrub.engine.cache import balanced


def limit_passes(model, tree, pos: np.ndarray, rows_per_pass: int | None = None):
    """The schedule's forward passes on the plain model: (tokens, stop, positions) triples,
    ``positions`` the metric's positions of the rows to unembed (final passes) or ``None``.

    Each pass is split as the engine splits its own (at most ``rows_per_pass`` rows, by
    default the engine's, in pieces of about one size: a pass's cost per row grows with its
    size, so an unsplit limit would be slower than the engine it bounds)."""
    most = rows_per_pass or FastEngine().rows_per_pass(model, tree.dataset.seq_len)
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
        step = balanced(len(rows), most)
        for start in range(0, len(rows), step):
            out.append((tokens[torch.as_tensor(rows[start : start + step])], stop, None))
    n = len(pos)
    for stop, gids in plan.passes:
        stacked = [plan.groups[g] for g in gids if not plan.groups[g].virtual]
        step = balanced(n, max(1, most // len(stacked)))  # as the engine chunks the reference
        final = stop >= model.shape.n_layers
        for start in range(0, n, step):
            part = slice(start, start + step)
            rows = np.concatenate([g.rows[part] for g in stacked])
            out.append((tokens[torch.as_tensor(rows)], stop, pos[part] if final else None))
    return out


def kernel_heads(model, tree) -> list[tuple[torch.Tensor, list, torch.Tensor | None]]:
    """``limit+heads``' extra work: per group whose pass ends at a block input where the
    kernels compute its heads, and per piece of its rows, (that block input on the plain
    model, the heads, the positions anything reads them at; ``None``: every position)."""
    from scrub._positions import resolve_positions
    from scrub.engine._reads import query_columns

    plan = make_plan(model, [tree], kernels=True)
    dataset = tree.dataset
    most = FastEngine().rows_per_pass(model, dataset.seq_len)
    memo: dict = {}

    def resolve(spec, rows):  # as ChunkRun.resolve, on the whole reference batch
        key = (spec, id(rows))
        if key not in memo:
            memo[key] = torch.as_tensor(resolve_positions(spec, dataset, rows))
            if len(memo[key]) and bool((memo[key] == memo[key][:1]).all()):
                columns[id(memo[key])] = memo[key][0]
        return memo[key]

    columns: dict = {}
    out = []
    for group in plan.groups:
        targets = {(c, ch) for c, ch in group.targets if c.kind == "head" and c.layer == group.stop}
        if group.virtual or not targets or group.stop >= model.shape.n_layers:
            continue
        at = query_columns(plan, group, targets, resolve, columns)
        heads = sorted({c for c, _ in targets}, key=lambda c: c.head)
        # the block input ``limit``'s pass over these rows ends at (computed here, untimed),
        # in pieces as the engine chunks the reference batch
        step = balanced(len(group.rows), most)
        for start in range(0, len(group.rows), step):
            rows = torch.as_tensor(group.rows[start : start + step])
            with split_qkv_inputs(model.bridge, False), torch.inference_mode():
                resid = model.bridge(dataset.tokens[rows], stop_at_layer=group.stop)
            out.append((resid, heads, at))
    return out


@torch.inference_mode()
def run_heads(model, extra) -> None:
    """The kernel heads of :func:`kernel_heads` on their groups' plain block inputs."""
    from scrub.engine._kernels import kernels_for

    kernels = kernels_for(model)
    for resid, heads, at in extra:
        ins = {c: {"q": resid, "k": resid, "v": resid} for c in heads}
        kernels.heads(ins, None if at is None else dict.fromkeys(heads, at))


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
        for toks, stop, at in passes:
            if at is not None:  # the root groups' rows only are unembedded (the final pass)
                unembed_at(model, final_resid(model, toks), at)
            else:
                model.bridge(toks, stop_at_layer=stop)


@torch.inference_mode()
def run_bridge(model, tokens: torch.Tensor, *, split: bool, mlp_in: bool) -> None:
    """One plain bridge pass over ``tokens`` with split q/k/v and ``hook_mlp_in`` as given."""
    bridge = model.bridge
    was = bool(bridge.cfg.use_hook_mlp_in)
    bridge.set_use_hook_mlp_in(mlp_in)
    try:
        with split_qkv_inputs(bridge, split):
            bridge(tokens)
    finally:
        bridge.set_use_hook_mlp_in(was)


def raw_hf(model):
    """The Hugging Face model of the same checkpoint, loaded on its own (no bridge)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model.path).eval()


def measure(case: str, n: int, repeat: int, raw: bool = False, warmup: int = 1) -> None:
    """Print the table for one case and batch size."""
    hyp, model, dataset, tree = be.setup(case, "cpu", n)
    pos = be.metric_positions(hyp, dataset, tree)
    tokens = be.plain_tokens(tree)
    passes = limit_passes(model, tree, pos)
    extra = kernel_heads(model, tree)
    x = tree.rows(tree.root)
    step = balanced(len(x), FastEngine().rows_per_pass(model, dataset.seq_len))

    @torch.inference_mode()
    def clean_and_baseline() -> None:
        # scrub.run's clean pass (the reference rows) and baseline (uncond other rows); both
        # skip the softmax guards in scrub.run (the baseline runs in the engine)
        # (split as scrub.run splits its clean pass, at most the engine's rows a pass)
        with split_qkv_inputs(model.bridge, False), unmasked_rows_softmax(model.bridge):
            for rows in (x, tree.rows(tree.root)):
                for start in range(0, len(rows), step):
                    part = slice(start, start + step)
                    toks = dataset.tokens[torch.as_tensor(rows[part])]
                    unembed_at(model, final_resid(model, toks), pos[part])

    fns = {}
    if raw:
        hf = raw_hf(model)
        fns["raw HF"] = torch.inference_mode()(lambda: hf(tokens))
        fns["bridge bare"] = lambda: run_bridge(model, tokens, split=False, mlp_in=False)
        fns["bridge split"] = lambda: run_bridge(model, tokens, split=True, mlp_in=True)
    fns |= {
        "plain": lambda: model.run(tokens),
        "limit": lambda: run_limit(model, passes, pos),
        "limit+heads": lambda: (run_limit(model, passes, pos), run_heads(model, extra)),
        "ideal run": lambda: (run_limit(model, passes, pos), clean_and_baseline()),
        "fast cold": lambda: FastEngine()(model, tree, positions=pos),
        "scrub.run": lambda: scrub.run(hyp, model=model, dataset=dataset, n=n),
    }
    for _ in range(warmup):
        for fn in fns.values():
            fn()
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
    scale = "raw HF" if raw else "plain"
    print(f"{'what':12s} {'CPU s':>8s} {'wall s':>8s} {'CPU / ' + scale:>14s} "
          f"{'wall / ' + scale:>14s} {'CPU / limit':>12s}")  # fmt: skip
    for name, (cpu, wall) in med.items():
        print(f"{name:12s} {cpu:8.3f} {wall:8.3f} {cpu / med[scale][0]:14.2f} "
              f"{wall / med[scale][1]:14.2f} {cpu / med['limit'][0]:12.2f}")  # fmt: skip
    print(
        f"fast cold / limit = {med['fast cold'][0] / med['limit'][0]:.2f} (CPU); "
        f"fast cold / limit+heads = {med['fast cold'][0] / med['limit+heads'][0]:.2f} (CPU); "
        f"scrub.run / ideal = {med['scrub.run'][0] / med['ideal run'][0]:.2f} (CPU); "
        f"wall: {med['fast cold'][1] / med['limit'][1]:.2f}, "
        f"{med['scrub.run'][1] / med['ideal run'][1]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="induction", choices=sorted(be.CASES))
    parser.add_argument("--n", default="200", help="comma-separated reference batch sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--raw-hf", action="store_true", help="also time the raw HF model and the bridge variants"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed rounds first (0: the first round is cold)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", scrub.ScrubWarning)
    for n in [int(x) for x in args.n.split(",")]:
        measure(args.case, n, args.repeat, raw=args.raw_hf, warmup=args.warmup)


if __name__ == "__main__":
    main()
