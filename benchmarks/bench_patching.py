"""Patching grids: scrub (batched row groups) vs TransformerLens 4.3 (one pass per cell).

Two grids per case, on the same model, the same rows and the same metric, in one run:

1. the full activation-patching grid: every head's output at every position
   (``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` vs ``kind: activation``);
2. the full single-source direct-path grid: head a0.h0 into every later head's q, k and v
   (``get_act_patch_direct_path``, once per channel, vs ``kind: path``).

TransformerLens runs activation patching with the bridge's joint q/k/v projection (split q/k/v
inputs off, as its users run it) and direct path patching with split inputs (its function turns
them on).

Cases: ``ioi_toy`` (the shipped IOI-toy model, IO-flipped base) and ``gpt2`` (a randomly
initialised model of GPT-2 small's shape, 12 layers × 12 heads, d_model 768, vocabulary 50257,
on short induction sequences in its vocabulary). Wall time (``time.perf_counter``) and CPU time
(``time.process_time``, all threads of the process) are measured for each side; the ratio is
TransformerLens / scrub. scrub's time includes its per-cell statistics (bootstrap intervals and
sign-flip p-values) and the clean, base and source runs; TransformerLens's includes its clean
cache. Peak memory is the rise of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` before each measurement) above what was resident before it: in the
timing process (``*_peak_mib``: the side measured second reuses memory the first freed) and
in a fresh process per side and grid, with only the model and the grid's inputs loaded
(``*_peak_mib_alone``, the fair comparison).
Numbers are checked to agree (max |difference| of per-cell means) before they are reported.

Run with one thread per process, e.g.::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_patching.py \
        --case ioi_toy --threads 1 --n 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformer_lens import patching as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scrub
from scrub._metrics import per_example_metric
from scrub._positions import resolve_positions
from scrub.engine.cache import split_qkv_inputs
from scrub.experiments import experiment_from_dict, patch
from scrub.experiments.patching import setup


def case_setup(case: str, n: int, workdir: Path):
    if case == "ioi_toy":
        model = scrub.load_model("ioi_toy")
        common = {
            "model": "ioi_toy",
            "dataset": {"generator": "ioi_toy", "params": {"size": 500}},
            "metric": {"kind": "logit_diff", "positions": "END", "correct": "io", "wrong": "s"},
            "base": {"kind": "flip", "flip": ["IO"]},
        }
    else:
        from scrub.testing import save_random_gpt2

        path = workdir / "gpt2"
        if not (path / "config.json").exists():  # the memory probes reuse the parent's
            save_random_gpt2(path, n_layers=12, n_heads=12, d_model=768, d_vocab=50257, n_ctx=1024)
        model = scrub.load_model(str(path))
        common = {
            "model": str(path),
            "dataset": {"generator": "induction", "params": {
                "size": 200, "vocab": 50257, "segment_len": 3, "prefix_len": 1,
                "gap_len": 1, "suffix_len": 1}},
            "metric": {"kind": "loss", "positions": "REP", "labels": "next"},
            "base": "uncond",
        }  # fmt: skip
    common["defaults"] = {"n": n, "seed": 0}
    return model, common


def measure(fn):
    """(result, wall s, CPU s, peak MiB above the resident set before)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, wall, cpu, (_status("VmHWM") - before) / 2**20


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def tl_inputs(su):
    spec = su.experiment.spec
    ds = su.dataset
    pos = torch.as_tensor(resolve_positions(spec.metric.positions, ds, su.base))
    batch = torch.arange(su.n)[:, None]

    def metric(logits):
        values = per_example_metric(
            spec.metric, logits.detach()[batch, pos], reference=su.reference, dataset=ds
        )
        return torch.as_tensor(values.mean(), dtype=torch.float32)

    corrupted = ds.tokens[torch.as_tensor(su.base)]
    source = ds.tokens[torch.as_tensor(su.source)]
    return su.model.bridge, corrupted, source, metric


def grids(case: str, n: int, workdir: Path):
    """The model, and per grid: (name, scrub's run, TransformerLens's run, the experiment)."""
    model, common = case_setup(case, n, workdir)
    act = experiment_from_dict({**common, "kind": "activation", "components": "heads"})
    path = experiment_from_dict(
        {**common, "kind": "path", "senders": ["a0.h0"], "receivers": "heads"}
    )
    out = []
    for name, exp in (("activation", act), ("direct_path", path)):
        su = setup(exp, model=model)
        bridge, corrupted, source, metric = tl_inputs(su)
        dataset = su.dataset

        def ours(exp=exp, dataset=dataset):
            return patch(exp, model=model, dataset=dataset)

        def theirs(name=name, bridge=bridge, corrupted=corrupted, source=source, metric=metric):
            with torch.inference_mode():
                if name == "activation":  # as a TransformerLens user runs it: joint q/k/v
                    with split_qkv_inputs(bridge, False):
                        _, clean_cache = bridge.run_with_cache(source)
                        return tl.get_act_patch_attn_head_out_by_pos(
                            bridge, corrupted, clean_cache, metric
                        )
                _, clean_cache = bridge.run_with_cache(source)
                _, corrupted_cache = bridge.run_with_cache(corrupted)
                return torch.stack(
                    [
                        tl.get_act_patch_direct_path(
                            bridge, corrupted, clean_cache, corrupted_cache, metric,
                            0, 0, ch, verbose=False,
                        )
                        for ch in ("q", "k", "v")
                    ]
                )  # fmt: skip

        out.append((name, ours, theirs, exp))
    return model, out


def peak_in_subprocess(case: str, n: int, workdir: Path, grid: str, side: str) -> float:
    """Peak memory (MiB) of one side's grid, measured alone in a fresh process."""
    args = [sys.executable, __file__, "--memory-probe", grid, side, "--case", case, "--n", str(n),
            "--workdir", str(workdir)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ})
    return float(done.stdout.strip().splitlines()[-1])


def memory_probe(case: str, n: int, workdir: Path, grid: str, side: str) -> None:
    _, runs = grids(case, n, workdir)
    ours, theirs = next((o, t) for name, o, t, _ in runs if name == grid)
    print(measure(ours if side == "scrub" else theirs)[3])


def run_case(case: str, n: int, workdir: Path) -> dict:
    model, runs = grids(case, n, workdir)
    shape = model.shape
    out: dict = {"case": case, "n": n, "layers": shape.n_layers, "heads": shape.n_heads}
    for name, ours, theirs, _ in runs:
        result, s_wall, s_cpu, s_mem = measure(ours)
        tl_result, t_wall, t_cpu, t_mem = measure(theirs)
        mean = result.arrays["mean"]
        if name == "activation":  # ours: (layer*head, pos); theirs: (layer, pos, head)
            ours_means = mean.reshape(shape.n_layers, shape.n_heads, -1).transpose(0, 2, 1)
            diff = np.abs(ours_means - tl_result.numpy()).max()
        else:  # ours: (1, layer*head, channel, 1); theirs: (channel, layer, head)
            ours_means = mean[0, :, :, 0].reshape(shape.n_layers, shape.n_heads, 3)
            later = slice(1, None)
            theirs_means = tl_result.numpy().transpose(1, 2, 0)
            diff = np.abs(ours_means[later] - theirs_means[later]).max()
        out[name] = {
            "cells": int(result.valid.sum()),
            "scrub_wall_s": s_wall,
            "scrub_cpu_s": s_cpu,
            "scrub_peak_mib": s_mem,
            "tl_wall_s": t_wall,
            "tl_cpu_s": t_cpu,
            "tl_peak_mib": t_mem,
            "scrub_peak_mib_alone": peak_in_subprocess(case, n, workdir, name, "scrub"),
            "tl_peak_mib_alone": peak_in_subprocess(case, n, workdir, name, "tl"),
            "wall_ratio": t_wall / s_wall,
            "cpu_ratio": t_cpu / s_cpu,
            "max_abs_diff": float(diff),
        }
        print(json.dumps({case: {name: out[name]}}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["ioi_toy", "gpt2", "all"], default="all")
    parser.add_argument("--n", type=int, default=8, help="reference examples (rows per cell)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--memory-probe", nargs=2, metavar=("GRID", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.case, args.n, args.workdir, *args.memory_probe)
        return
    cases = ["ioi_toy", "gpt2"] if args.case == "all" else [args.case]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            results.append(run_case(case, args.n, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
