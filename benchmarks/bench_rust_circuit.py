"""scrub against Redwood's rust_circuit on the same hypotheses, model and draws (issue 14).

Runs in scrub's venv. It exports the shipped induction model's weights and, for each
``hypotheses/induction/*.yaml`` and each ``--n``, the treeified sampled tree (every tree node's
rows, i.e. the draws, and the patches and splices that reach every input channel, positions
resolved per row group) to a temporary folder, then starts ``_rust_circuit_worker.py`` under
the rust_circuit venv's python (``make rust-circuit`` makes it; a dev-only tool, not in CI) and
times, round-robin in one process tree (CPU time of each process, ``time.process_time``, and
wall time; median of ``--repeat``):

- ``scrub fast``: ``FastEngine`` (fresh cache) + the per-example loss;
- ``scrub.run``: end to end (bind, sampling, clean, baseline, scrub, bootstrap CIs);
- ``rc scrub``: rust_circuit building and evaluating the treeified circuit's per-example loss;
- ``rc run``: the same plus the clean and baseline circuits (no bootstrap: rust_circuit has none).

It checks that rust_circuit's per-example losses (scrubbed, clean, baseline) agree with scrub's
and prints max |difference|; it prints rc / scrub ratios per case and their geometric mean over
the hypotheses for each n.

Usage::

    make rust-circuit        # once: /work/venvs/rc (or RC_VENV=...)
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_rust_circuit.py \\
        --n 200,1000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import math
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
from safetensors.torch import load_file

import scrub
from scrub._bind import make_dataset_for
from scrub._metrics import per_example_metric
from scrub._positions import resolve_positions
from scrub._tree import baseline_rows
from scrub.engine import FastEngine

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_rust_circuit_worker.py"
DEFAULT_VENV = "/work/venvs/rc"
TOLERANCE = 1e-4  # what the check fails at; the printed max |difference| is the number to read


def rc_python(venv: str) -> str:
    """The rust_circuit venv's python, or a clear exit."""
    python = Path(venv) / "bin" / "python"
    ok = python.exists() and subprocess.run(
        [str(python), "-c", "import rust_circuit, einops"], capture_output=True
    ).returncode == 0  # fmt: skip
    if not ok:
        sys.exit(
            f"bench_rust_circuit: no rust_circuit venv at {venv} (or it cannot import "
            "rust_circuit and einops). Make it with `make rust-circuit` (dev-only), or point "
            "RC_VENV / --venv at one."
        )
    return str(python)


# -- export -----------------------------------------------------------------------------------
def export_weights(model, seq_len: int) -> dict:
    """The HF GPT-2 checkpoint's weights in per-head layout (what the worker's circuit uses)."""
    cfg = json.loads((Path(model.path) / "config.json").read_text())
    if cfg.get("model_type") != "gpt2" or cfg.get("scale_attn_by_inverse_layer_idx") or not cfg.get(
        "scale_attn_weights", True
    ):  # fmt: skip
        raise SystemExit(f"bench_rust_circuit: the worker builds plain GPT-2 only, not {cfg}")
    if cfg.get("activation_function") != "gelu_new":
        raise SystemExit("bench_rust_circuit: the worker's MLP is gelu_new")
    w = load_file(str(Path(model.path) / "model.safetensors"))
    d, H = cfg["n_embd"], cfg["n_head"]
    dh = d // H
    out = {"W_E": w["transformer.wte.weight"], "W_pos": w["transformer.wpe.weight"]}
    out["lnf_w"], out["lnf_b"] = w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]
    for layer in range(cfg["n_layer"]):
        p, L = f"transformer.h.{layer}.", f"L{layer}_"
        qkv_w, qkv_b = w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]
        for i, name in enumerate("QKV"):
            out[L + "W_" + name] = qkv_w[:, i * d : (i + 1) * d].reshape(d, H, dh).permute(1, 0, 2)
            out[L + "b_" + name] = qkv_b[i * d : (i + 1) * d].reshape(H, 1, dh)
        out[L + "W_O"] = w[p + "attn.c_proj.weight"].reshape(H, dh, d)
        out[L + "b_O"] = w[p + "attn.c_proj.bias"]
        for ln in ("1", "2"):
            out[f"{L}ln{ln}_w"], out[f"{L}ln{ln}_b"] = (
                w[p + f"ln_{ln}.weight"],
                w[p + f"ln_{ln}.bias"],
            )
        out[L + "W_in"], out[L + "b_in"] = w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]
        out[L + "W_out"], out[L + "b_out"] = w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"]
    config = dict(
        n_layers=cfg["n_layer"], n_heads=H, d_model=d, d_head=dh, d_vocab=cfg["vocab_size"],
        eps=cfg["layer_norm_epsilon"], seq_len=seq_len,
    )  # fmt: skip
    return {"weights": {k: v.contiguous() for k, v in out.items()}, "config": config}


def _comp(c) -> list:
    if c.kind == "head":
        return ["head", c.layer, c.head]
    if c.kind == "mlp":
        return ["mlp", c.layer]
    return [c.kind]


def export_tree(hyp, tree, dataset) -> dict:
    """The sampled tree: rows per node, and what reaches each input channel (as the reference
    evaluator assembles it: all-paths patches, then direct splices)."""
    if hyp.spec.ablation.kind != "resample":
        raise SystemExit(f"bench_rust_circuit: {hyp.name} uses {hyp.spec.ablation.kind} ablation")

    def pos(spec, node):
        return resolve_positions(spec, dataset, tree.rows(node))

    def moves(node, child, mc) -> dict:
        spec = child.corr.splice_positions(mc)
        return {"child": child.name, "component": _comp(mc.component),
                "src": pos(spec, child), "dst": pos(spec, node)}  # fmt: skip

    nodes = {}
    for node in tree.root.walk():
        comps = [mc.component for mc in node.interp.components]
        entry = {"rows": tree.rows(node).tolist(), "components": [_comp(c) for c in comps],
                 "children": [c.name for c in node.children],
                 "leaf": node.is_leaf and node.edge is not None}  # fmt: skip
        if not entry["leaf"]:
            by_name = {c.name: c for c in node.children}
            targets = []
            for c in comps:
                for ch in c.channels:
                    patches = []
                    for child_name, comp in node.patch_key(ch):
                        child = by_name[child_name]
                        mc = next(m for m in child.interp.components if m.component == comp)
                        patches.append(moves(node, child, mc))
                    direct = [moves(node, child, mc) for child in node.inputs(ch, "direct")
                              for mc in child.interp.components]  # fmt: skip
                    targets.append({"component": _comp(c), "channel": ch, "patches": patches,
                                    "direct": direct})  # fmt: skip
            entry["targets"] = targets
        nodes[node.name] = entry
    metric = hyp.spec.metric
    ref = tree.reference
    base = baseline_rows(dataset, ref, tree_seed(hyp))
    ref_pos = resolve_positions(metric.positions, dataset, ref)
    labels = dataset.tokens[torch.as_tensor(ref)].gather(1, torch.as_tensor(ref_pos + 1))
    return {
        "tokens": dataset.tokens.clone(),
        "nodes": nodes,
        "root": tree.root.name,
        "labels": labels,
        "root_pos": pos(metric.positions, tree.root),
        "clean_rows": torch.as_tensor(ref),
        "clean_pos": ref_pos,
        "baseline_rows": torch.as_tensor(base),
        "baseline_pos": resolve_positions(metric.positions, dataset, base),
    }


def tree_seed(hyp) -> int:
    return hyp.spec.defaults.seed if hyp.spec.defaults.seed is not None else 0


# -- the two sides ----------------------------------------------------------------------------
class Case:
    """One hypothesis at one n: scrub's objects, and the file the worker reads."""

    def __init__(self, path: Path, model, n: int, folder: Path) -> None:
        self.hyp = scrub.load_hypothesis(path)
        if self.hyp.spec.metric.kind != "loss" or self.hyp.spec.metric.labels != "next":
            raise SystemExit(
                f"bench_rust_circuit: the worker computes next-token loss only ({path})"
            )
        self.model, self.n, self.seed = model, n, tree_seed(self.hyp)
        self.name = f"{path.stem}-{n}"
        self.dataset = make_dataset_for(self.hyp, seed=self.seed)
        bound = scrub.bind(self.hyp, model, self.dataset)
        self.tree = scrub.sample_tree(bound, n=n, seed=self.seed)
        self.pos = resolve_positions(self.hyp.spec.metric.positions, self.dataset,
                                     self.tree.rows(self.tree.root))  # fmt: skip
        self.exported = export_tree(self.hyp, self.tree, self.tree.dataset)
        torch.save(self.exported, folder / f"{self.name}.pt")

    def fast(self) -> np.ndarray:
        logits = FastEngine()(self.model, self.tree, positions=self.pos)
        return per_example_metric(self.hyp.spec.metric, logits, reference=self.tree.reference,
                                  dataset=self.tree.dataset)  # fmt: skip

    def run(self):
        return scrub.run(self.hyp, model=self.model, dataset=self.dataset, n=self.n,
                         seed=self.seed)  # fmt: skip


class Worker:
    """The rust_circuit subprocess (one per benchmark, serving every case)."""

    def __init__(self, python: str, folder: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}  # fmt: skip
        self.proc = subprocess.Popen(
            [python, str(WORKER), str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        self.ready = self._reply()

    def _reply(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench_rust_circuit: the worker died (exit {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit("bench_rust_circuit: the worker failed:\n" + reply["error"])
        return reply

    def __call__(self, case: str, what: str, mode: str, losses: bool = False) -> dict:
        assert self.proc.stdin is not None
        req = {"case": case, "what": what, "mode": mode, "losses": losses}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def geomean(xs: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(x) for x in xs))


ROWS = ("scrub fast", "scrub.run", "rc scrub", "rc run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="200,1000", help="comma-separated reference batch sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv", default=os.environ.get("RC_VENV", DEFAULT_VENV))
    parser.add_argument("--hypotheses", default="induction", help="folder under hypotheses/")
    parser.add_argument(
        "--rc-eval", default="optimize", choices=("optimize", "plain"),
        help="rust_circuit evaluation: optimize_and_evaluate (its causal-scrubbing default) or "
        "Circuit.evaluate",
    )  # fmt: skip
    args = parser.parse_args()
    python = rc_python(args.venv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", scrub.ScrubWarning)
    ns = [int(x) for x in args.n.split(",")]
    files = sorted((ROOT / "hypotheses" / args.hypotheses).glob("*.yaml"))
    model = scrub.load_model("induction")
    with tempfile.TemporaryDirectory(prefix="scrub-rc-") as tmp:
        folder = Path(tmp)
        cases = [Case(f, model, n, folder) for n in ns for f in files]
        seq_len = cases[0].tree.dataset.seq_len
        assert all(c.tree.dataset.seq_len == seq_len for c in cases)
        torch.save(export_weights(model, seq_len), folder / "weights.pt")
        worker = Worker(python, folder)
        print(f"rust_circuit worker: {worker.ready}; scrub torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s); rc evaluation: {args.rc_eval}")  # fmt: skip
        worst = 0.0
        for c in cases:  # check (and warm up both sides)
            ours = c.run()
            fast = c.fast()
            theirs = worker(c.name, "run", args.rc_eval, losses=True)["losses"]
            if ours.draws != c.tree.draws():
                raise SystemExit(f"{c.name}: scrub.run drew other rows than the exported tree")
            diffs = {
                "scrubbed": np.abs(np.asarray(theirs["scrubbed"]) - fast).max(),
                "run": np.abs(np.asarray(ours.per_example) - fast).max(),
                "clean": np.abs(np.asarray(theirs["clean"]) - ours.per_example_clean).max(),
                "baseline": np.abs(np.asarray(theirs["baseline"]) - ours.per_example_baseline).max(),
            }  # fmt: skip
            print(f"{c.name:28s} max |rc − scrub| per-example loss: scrubbed "
                  f"{diffs['scrubbed']:.1e}, clean {diffs['clean']:.1e}, baseline "
                  f"{diffs['baseline']:.1e} (scrub.run vs fast {diffs['run']:.1e}); "
                  f"mean loss {fast.mean():.4f}")  # fmt: skip
            worst = max(worst, diffs["scrubbed"], diffs["clean"], diffs["baseline"])
            worker(c.name, "scrub", args.rc_eval)
        if worst > TOLERANCE:
            raise SystemExit(f"rust_circuit and scrub disagree: max |difference| {worst:.2e}")
        times: dict[str, dict[str, list[tuple[float, float]]]] = {
            c.name: {r: [] for r in ROWS} for c in cases
        }
        for _ in range(args.repeat):  # round-robin: every case, both sides, each round
            for c in cases:
                t = times[c.name]
                t["scrub fast"].append(timed(c.fast))
                t["scrub.run"].append(timed(c.run))
                for row, what in (("rc scrub", "scrub"), ("rc run", "run")):
                    reply = worker(c.name, what, args.rc_eval)
                    t[row].append((reply["cpu"], reply["wall"]))
        worker.close()
    report(cases, times, ns, worst, args.repeat)


def report(cases, times, ns, worst, repeat) -> None:
    med = {name: {r: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v))
                  for r, v in rows.items()} for name, rows in times.items()}  # fmt: skip
    print(f"\nmedian of {repeat}, seconds (CPU / wall); max |rc − scrub| over every per-example "
          f"loss: {worst:.1e}")  # fmt: skip
    head = " ".join(f"{r:>15s}" for r in ROWS)
    print(f"{'case':28s} {head}   rc/fast CPU  wall   rc/run CPU  wall")
    for n in ns:
        ratios: dict[str, list[float]] = {k: [] for k in ("fc", "fw", "rc", "rw")}
        for c in (c for c in cases if c.n == n):
            m = med[c.name]
            cells = " ".join(f"{m[r][0]:7.3f}/{m[r][1]:7.3f}" for r in ROWS)
            fc, fw = m["rc scrub"][0] / m["scrub fast"][0], m["rc scrub"][1] / m["scrub fast"][1]
            rc_, rw = m["rc run"][0] / m["scrub.run"][0], m["rc run"][1] / m["scrub.run"][1]
            for k, v in zip(ratios, (fc, fw, rc_, rw), strict=True):
                ratios[k].append(v)
            print(f"{c.name:28s} {cells}   {fc:10.2f} {fw:5.2f}   {rc_:9.2f} {rw:5.2f}")
        g = {k: geomean(v) for k, v in ratios.items()}
        print(f"n = {n}: geometric mean over {len(ratios['fc'])} hypotheses: rc scrub / scrub "
              f"fast = {g['fc']:.2f} CPU, {g['fw']:.2f} wall; rc run / scrub.run = {g['rc']:.2f} "
              f"CPU, {g['rw']:.2f} wall  (> 1: scrub is faster)")  # fmt: skip


if __name__ == "__main__":
    main()
