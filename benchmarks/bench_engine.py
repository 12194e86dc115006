"""Benchmark the fast engine: ratios measured in one run (these machines are noisy).

Cases:

- ``induction``: the shipped 2-layer induction model, ``hypotheses/induction/kcomp.yaml``;
- ``gpt2``: a randomly initialised GPT-2-small-shaped model (12 layers, 12 heads, 768 wide,
  vocabulary 50257) with the IOI circuit hypothesis ``hypotheses/ioi/gpt2_circuit.yaml``
  (26 heads in 7 interpretation nodes) on the IOI dataset (prompts of 21 tokens);
- ``llama``: the same hypothesis and dataset on a random Llama-architecture model of the same
  size (12 layers, 12 query heads sharing 4 key/value heads, d_model 768, gated MLP 2048 wide,
  RMSNorm, RoPE, vocabulary 50257);
- ``pythia``: the same on a random GPT-NeoX (Pythia-160M-shaped: 12 layers, 12 heads, d_model
  768, MLP 3072, parallel attention and MLP, rotary on a quarter of each head, vocabulary 50304).

For each: (1) T_fast / T_plain, T_plain being one plain forward pass over the same k × B rows
(k: DESIGN.md's row groups, one per non-leaf tree node and one per leaf), cold (fresh cache) and
warm (leaves cached); (2) T_reference / T_fast at B = 8; (3) peak memory of fast / plain, each
measured in a fresh subprocess; (4) the cost of scoring 10 hypotheses that share the dataset vs
1; (5) how time grows with the number of interp nodes k and with B.

Usage::

    python benchmarks/bench_engine.py                 # both cases
    python benchmarks/bench_engine.py --case induction --threads 2 --device cpu
    python benchmarks/bench_engine.py --case gpt2,llama,pythia --batch 16   # one run, 3 cases
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import scrub
from scrub._bind import make_dataset_for
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.testing import save_random_gpt2, save_random_model

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    "induction": ("induction", ROOT / "hypotheses" / "induction" / "kcomp.yaml"),
    "gpt2": ("gpt2-shaped", ROOT / "hypotheses" / "ioi" / "gpt2_circuit.yaml"),
    "llama": ("llama-shaped", ROOT / "hypotheses" / "ioi" / "gpt2_circuit.yaml"),
    "pythia": ("pythia-shaped", ROOT / "hypotheses" / "ioi" / "gpt2_circuit.yaml"),
}
GPT2_DIR = Path(tempfile.gettempdir()) / "scrub-bench-gpt2-shaped"
SHAPED = {  # family, d_vocab, d_mlp, n_kv_heads: GPT-2 small's size otherwise
    "llama-shaped": ("llama", 50257, 2048, 4),
    "pythia-shaped": ("pythia", 50304, 3072, None),
}


def gpt2_shaped() -> str:
    """A random GPT-2-small-shaped model, saved once per machine."""
    if not (GPT2_DIR / "config.json").exists():
        save_random_gpt2(
            GPT2_DIR, n_layers=12, n_heads=12, d_model=768, d_vocab=50257, n_ctx=1024, seed=0
        )
    return str(GPT2_DIR)


def family_shaped(source: str) -> str:
    """A random GPT-2-small-sized model of another family, saved once per machine."""
    family, d_vocab, d_mlp, n_kv = SHAPED[source]
    directory = Path(tempfile.gettempdir()) / f"scrub-bench-{source}"
    if not (directory / "config.json").exists():
        save_random_model(
            directory, family, n_layers=12, n_heads=12, n_kv_heads=n_kv, d_model=768,
            d_mlp=d_mlp, d_vocab=d_vocab, n_ctx=1024, seed=0, init_std=0.02,
        )  # fmt: skip
    return str(directory)


def model_source(source: str) -> str:
    if source == "gpt2-shaped":
        return gpt2_shaped()
    return family_shaped(source) if source in SHAPED else source


def setup(case: str, device: str, n: int, seed: int = 0):
    source, path = CASES[case]
    hyp = scrub.load_hypothesis(path)
    model = scrub.load_model(model_source(source), device=device)
    dataset = make_dataset_for(hyp, seed=seed)
    tree = scrub.sample_tree(scrub.bind(hyp, model, dataset), n=n, seed=seed)
    return hyp, model, dataset, tree


def design_groups(tree) -> list[np.ndarray]:
    """DESIGN.md's row groups: one per non-leaf node (O_n) and one per leaf (D_n)."""
    return [tree.rows(node) for node in tree.root.walk()]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def metric_positions(hyp, dataset, tree) -> np.ndarray:
    from scrub._positions import resolve_positions

    return resolve_positions(hyp.spec.metric.positions, dataset, tree.rows(tree.root))


def plain_tokens(tree) -> torch.Tensor:
    rows = np.concatenate(design_groups(tree))
    return tree.dataset.tokens[torch.as_tensor(rows)]


# -- one measurement per subprocess, for peak memory ------------------------------------------
def peak_memory(case: str, device: str, n: int, mode: str) -> float:
    """Peak memory (MiB) above the loaded model, of one fast or plain evaluation."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", mode, "--case", case, "--device", device,
         "--n", str(n)],
        capture_output=True, text=True, check=True, env={**os.environ},
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def memory_probe(case: str, device: str, n: int, mode: str) -> None:
    hyp, model, dataset, tree = setup(case, device, n)
    tokens = plain_tokens(tree)
    pos = metric_positions(hyp, dataset, tree)
    model.run(tokens[:2])  # allocator warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM).
        Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status("VmRSS")
    if mode == "plain":
        model.run(tokens)
    else:
        FastEngine()(model, tree, positions=pos)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _proc_status("VmHWM") - base
    print(peak / 2**20)


def _proc_status(key: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


# -- the benchmark ----------------------------------------------------------------------------
def variants(hyp, count: int) -> list[scrub.Hypothesis]:
    """``count`` competing hypotheses: the file, then one component dropped from a node."""
    spec = hyp.spec.model_dump(mode="json", exclude_none=True)
    spec["dataset"] = hyp.spec.dataset.model_dump(mode="json", exclude_none=True)
    out = [hyp]
    droppable = [
        (name, i)
        for name, node in spec["nodes"].items()
        for i in range(len(node["components"]))
        if len(node["components"]) > 1
    ]
    for name, i in droppable:
        changed = json.loads(json.dumps(spec))
        del changed["nodes"][name]["components"][i]
        out.append(scrub.hypothesis_from_dict(changed, default_name=f"{hyp.name}-{name}-{i}"))
    for name, node in spec["nodes"].items():  # then: one node resampled unconditionally
        if "sampler" in node or name != hyp.root:
            changed = json.loads(json.dumps(spec))
            changed["nodes"][name]["sampler"] = "uncond"
            out.append(scrub.hypothesis_from_dict(changed, default_name=f"{hyp.name}-{name}-u"))
    for name in spec["nodes"]:  # then: one node's other inputs from its own data
        changed = json.loads(json.dumps(spec))
        changed["nodes"][name]["other"] = "exact"
        out.append(scrub.hypothesis_from_dict(changed, default_name=f"{hyp.name}-{name}-o"))
    return out[:count]


def star(model, dataset_spec: dict, metric: dict, k: int, seed: int) -> scrub.Hypothesis:
    """A root with ``k - 1`` children, each one random head, sampled unconditionally."""
    rng = np.random.default_rng(seed)
    shape = model.shape
    nodes: dict = {"out": {"components": ["logits"], "inputs": []}}
    heads = rng.choice(shape.n_layers * shape.n_heads, size=k - 1, replace=False)
    for i, index in enumerate(heads):
        layer, head = divmod(int(index), shape.n_heads)
        nodes[f"n{i}"] = {"components": [f"a{layer}.h{head}"], "sampler": "uncond"}
        nodes["out"]["inputs"].append({"node": f"n{i}", "channels": "in"})
    if not nodes["out"]["inputs"]:
        del nodes["out"]["inputs"]
    spec = {"model": model.path, "dataset": dataset_spec, "metric": metric, "nodes": nodes}
    return scrub.hypothesis_from_dict(spec, default_name=f"star{k}")


def bench(
    case: str,
    *,
    device: str,
    batch: int,
    repeat: int,
    memory: bool,
    batches: list[int],
    steps: frozenset[int] = frozenset({1, 2, 3, 4, 5}),
) -> dict:
    print(f"\n== {case} ({device}, {torch.get_num_threads()} threads) ==", flush=True)
    hyp, model, dataset, tree = setup(case, device, batch)
    k = len(design_groups(tree))
    pos = metric_positions(hyp, dataset, tree)
    tokens = plain_tokens(tree)
    print(f"hypothesis {hyp.name}: {k} row groups (tree nodes) x B = {batch}, "
          f"seq {dataset.seq_len}; {model.architecture}, engine: "
          f"{FastEngine().describe(model)}", flush=True)  # fmt: skip
    results: dict = {"case": case, "k": k, "B": batch, "seq": dataset.seq_len,
                     "engine": FastEngine().describe(model)}  # fmt: skip

    t_plain = timed(lambda: model.run(tokens), device, repeat)
    t_cold = timed(lambda: FastEngine()(model, tree, positions=pos), device, repeat)
    leaves = FastEngine(cache=ActivationCache(subtrees=False))
    t_warm = timed(lambda: leaves(model, tree, positions=pos), device, repeat)
    same = FastEngine(cache=ActivationCache())
    t_same = timed(lambda: same(model, tree, positions=pos), device, repeat)
    results.update(T_plain=t_plain, T_fast_cold=t_cold, T_fast_warm=t_warm, T_fast_same=t_same)
    print(f"1. T_plain ({k}x{batch} rows) {t_plain:.3f}s | T_fast cold {t_cold:.3f}s "
          f"-> ratio {t_cold / t_plain:.2f} | leaves cached {t_warm:.3f}s "
          f"-> ratio {t_warm / t_plain:.2f} | same draws again (subtrees cached) {t_same:.3f}s "
          f"-> ratio {t_same / t_plain:.2f}", flush=True)  # fmt: skip

    if 2 not in steps:
        return results
    _, _, _, small = setup(case, device, 8)
    small_pos = metric_positions(hyp, dataset, small)
    t_ref = timed(lambda: evaluate_reference(model, small), device, repeat)
    t_fast8 = timed(lambda: FastEngine()(model, small, positions=small_pos), device, repeat)
    results.update(T_reference_B8=t_ref, T_fast_B8=t_fast8)
    print(f"2. B=8: T_reference {t_ref:.3f}s / T_fast {t_fast8:.3f}s = {t_ref / t_fast8:.2f}",
          flush=True)  # fmt: skip

    if memory and 3 in steps:
        m_plain = peak_memory(case, device, batch, "plain")
        m_fast = peak_memory(case, device, batch, "fast")
        results.update(mem_plain_MiB=m_plain, mem_fast_MiB=m_fast)
        print(f"3. peak memory above the model: plain {m_plain:.0f} MiB, fast {m_fast:.0f} MiB "
              f"-> ratio {m_fast / max(m_plain, 1e-9):.2f}", flush=True)  # fmt: skip

    if 4 not in steps:
        return results
    hyps = variants(hyp, 10)

    def score(hs, shared: bool) -> None:
        cache = ActivationCache() if shared else None
        ds = dataset if shared else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scrub.ScrubWarning)
            for h in hs:
                scrub.run(h, model=model, dataset=ds, cache=cache, n=batch)

    t_one = timed(lambda: score(hyps[:1], shared=False), device, 1)
    t_ten = timed(lambda: score(hyps, shared=True), device, 1)
    results.update(T_one_hypothesis=t_one, T_ten_hypotheses=t_ten, n_hypotheses=len(hyps))
    print(f"4. scoring {len(hyps)} hypotheses on one dataset (shared cache) {t_ten:.2f}s vs 1 "
          f"alone {t_one:.2f}s -> {t_ten / t_one:.2f}x", flush=True)  # fmt: skip

    if 5 not in steps:
        return results
    print("5. growth (T_fast cold, seconds; ratio to a plain pass over the same rows)")
    print("   with k, B = 8: a root and k - 1 one-head children, sampled unconditionally")
    series = []
    ks = [k for k in (1, 2, 5, 10, 20, 50) if k - 1 <= model.shape.n_layers * model.shape.n_heads]
    bs = batches
    dspec = hyp.spec.dataset.model_dump(mode="json", exclude_none=True)
    mspec = hyp.spec.metric.model_dump(mode="json", exclude_none=True)
    for kk in ks:
        h = star(model, dspec, mspec, kk, seed=kk)
        t = scrub.sample_tree(scrub.bind(h, model, dataset), n=8, seed=0)
        p = metric_positions(h, dataset, t)
        tf = timed(lambda t=t, p=p: FastEngine()(model, t, positions=p), device, repeat)
        tp = timed(lambda t=t: model.run(plain_tokens(t)), device, repeat)
        series.append({"k": kk, "B": 8, "T_fast": tf, "ratio": tf / tp})
        print(f"   k={kk:3d} B=8   T_fast {tf:.3f}s  ratio {tf / tp:.2f}", flush=True)
    print(f"   with B, for {hyp.name}:")
    for bb in bs:
        _, _, _, t = setup(case, device, bb)
        p = metric_positions(hyp, dataset, t)
        tf = timed(lambda t=t, p=p: FastEngine()(model, t, positions=p), device, repeat)
        tp = timed(lambda t=t: model.run(plain_tokens(t)), device, repeat)
        series.append({"k": len(design_groups(t)), "B": bb, "T_fast": tf, "ratio": tf / tp})
        print(f"   k={len(design_groups(t)):3d} B={bb:<3d} T_fast {tf:.3f}s  ratio {tf / tp:.2f}",
              flush=True)  # fmt: skip
    results["series"] = series
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", default="all", help=f"comma-separated cases ({', '.join(CASES)}) or 'all'"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument(
        "--batches", default="8,16,32,64,128", help="batch sizes of the growth series"
    )
    parser.add_argument("--steps", default="1,2,3,4,5", help="which measures (1-5) to take")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--memory-probe", choices=["plain", "fast"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_probe:
        memory_probe(args.case, args.device, args.n, args.memory_probe)
        return
    cases = list(CASES) if args.case == "all" else args.case.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}")
    out = [
        bench(c, device=args.device, batch=args.batch, repeat=args.repeat,
              memory=not args.no_memory, batches=[int(b) for b in args.batches.split(",")],
              steps=frozenset(int(x) for x in args.steps.split(",")))
        for c in cases
    ]  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
