"""Low precision against float32 on the shipped models: the error it makes, and what it saves.

Every shipped hypothesis file whose ``model:`` is a shipped model is scored with ``scrub.run`` in
float32, bfloat16 and float16 (where the model runs in it) on the same draws (same n and seed:
the draws do not depend on the model's dtype), each on a model loaded in that dtype and a fresh
activation cache. Per model and dtype:

- ``max |Δ log-prob|``: the clean model's log-probabilities on the first reference batch (every
  position, every token), against float32's;
- ``max |Δ metric|``: the largest change of a per-example scrubbed metric over the model's
  hypotheses; ``max |Δ recovered|``: of the fraction recovered (``undefined`` never counts as
  a number: a hypothesis whose fraction is defined in one dtype and not the other is listed);
- CPU and wall time of all the model's ``scrub.run`` calls, median of ``--repeat`` rounds run
  round-robin over the dtypes in one process, and their ratio to float32's.

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_dtype.py --n 100 --repeat 3
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_dtype.py --device cuda
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import scrub
from scrub._model_source import shipped_names
from scrub._precision import DTYPES, PrecisionError

ROOT = Path(__file__).resolve().parents[1]


def files_by_model() -> dict[str, list[Path]]:
    """Shipped hypothesis files, by the shipped model they name."""
    shipped = set(shipped_names())
    out: dict[str, list[Path]] = defaultdict(list)
    for path in sorted((ROOT / "hypotheses").glob("*/*.yaml")):
        model = scrub.load_hypothesis(path).spec.model
        if model in shipped:
            out[model].append(path)
    return dict(out)


def clean_log_probs(model, path: Path, n: int) -> torch.Tensor:
    """The clean model's float32 log-probabilities on the file's first ``n`` reference rows."""
    hyp = scrub.load_hypothesis(path)
    ds = scrub.make_dataset_for(hyp, seed=hyp.spec.defaults.seed)
    tokens = ds.tokens[: min(n, ds.n_base)]
    return model.run(tokens)[0].float().log_softmax(-1).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="reference examples per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds per dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", help="comma-separated shipped models (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(torch.get_num_threads())
    groups = files_by_model()
    if args.models:
        groups = {m: groups[m] for m in args.models.split(",")}
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"n = {args.n}, {args.repeat} rounds")  # fmt: skip
    print()
    print("| model | files | dtype | max abs Δ log-prob | max abs Δ metric | max abs Δ recovered "
          "| CPU s | wall s | CPU ratio | wall ratio |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, files in groups.items():
        models, refused = {}, {}
        for dtype in DTYPES:
            try:
                models[dtype] = scrub.load_model(name, device=args.device, dtype=dtype)
            except PrecisionError as exc:
                refused[dtype] = exc.problem
        results: dict[str, list] = {}
        times: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for _ in range(args.repeat):
            for dtype, model in models.items():  # round-robin over the dtypes
                cpu, wall = time.process_time(), time.perf_counter()
                results[dtype] = [scrub.run(f, model=model, n=args.n) for f in files]
                times[dtype].append((time.process_time() - cpu, time.perf_counter() - wall))
        base_lp = clean_log_probs(models["float32"], files[0], args.n)
        base_cpu = statistics.median(t[0] for t in times["float32"])
        base_wall = statistics.median(t[1] for t in times["float32"])
        for dtype in DTYPES:
            if dtype in refused:
                print(
                    f"| {name} | {len(files)} | {dtype} | refused: {refused[dtype]} | | | | | | |"
                )
                continue
            lp = clean_log_probs(models[dtype], files[0], args.n)
            d_lp = float((lp - base_lp).abs().max())
            d_metric, d_rec, flips = 0.0, 0.0, []
            for ours, theirs, f in zip(results[dtype], results["float32"], files, strict=True):
                a, b = np.asarray(ours.per_example), np.asarray(theirs.per_example)
                d_metric = max(d_metric, float(np.nanmax(np.abs(a - b))))
                if (ours.recovered is None) != (theirs.recovered is None):
                    flips.append(f.stem)
                elif ours.recovered is not None and theirs.recovered is not None:
                    d_rec = max(d_rec, abs(ours.recovered - theirs.recovered))
            cpu = statistics.median(t[0] for t in times[dtype])
            wall = statistics.median(t[1] for t in times[dtype])
            rec = f"{d_rec:.2g}" + (
                f" (undefined in one dtype only: {', '.join(flips)})" if flips else ""
            )
            print(
                f"| {name} | {len(files)} | {dtype} | {d_lp:.2g} | {d_metric:.2g} | {rec} | "
                f"{cpu:.2f} | {wall:.2f} | {cpu / base_cpu:.2f} | "
                f"{wall / base_wall if not math.isclose(base_wall, 0) else math.nan:.2f} |"
            )


if __name__ == "__main__":
    main()
