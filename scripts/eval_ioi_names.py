"""Evaluate the IOI-names model and write its model card (every number in it measured here).

Loads the checkpoint offline through ``scrub.load_model`` (TransformerBridge, compatibility
mode) and measures, on fresh ``ioi_names`` prompts for each names × templates split and each
order (ABBA, BABA): the logit difference IO − S at ``END`` (mean ± std), the fraction with
IO > S, whether IO is the argmax over the names and over the vocabulary, p(IO), the largest
|log-prob| difference between the Hugging Face model and the bridge, and per head the attention
from ``END`` to IO / S1 / S2 and the direct logit attribution to IO − S. Writes
``eval_results.json`` and ``MODEL_CARD.md`` (the narrative parts of the card come from
``card_notes.md`` in the model directory, if present; the comparison runs from ``runs.json``).

Usage::

    python scripts/eval_ioi_names.py --out scrub/models/ioi_names
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from transformers import GPT2LMHeadModel

import scrub
from scrub.data.ioi_toy import Vocab, make_word_ioi

SPLITS = (("train", "train"), ("heldout", "train"), ("train", "heldout"), ("heldout", "heldout"))


def cell_key(names: str, templates: str, order: str) -> str:
    """The key of one evaluation cell in ``eval_results.json``."""
    return f"names={names},templates={templates},order={order}"


def evaluate(out: Path, *, n: int, seed: int, threads: int) -> dict:
    """Measures every cell (see the module docstring) and returns the results."""
    torch.set_num_threads(threads)
    vocab_path = out / "word_vocab.json"
    vocab = Vocab.load(vocab_path)
    model = scrub.load_model(str(out))
    bridge = model.bridge
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    cfg = hf.config
    name_ids = torch.as_tensor(vocab.ids(vocab.name_pool))
    results: dict = {
        "n_per_cell": n,
        "eval_seed": seed,
        "vocab_size": len(vocab),
        "n_names": len(vocab.name_pool),
        "heldout_names": list(vocab.heldout_names),
        "heldout_templates": list(vocab.heldout_templates),
        "cells": {},
    }
    max_diff = 0.0
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layer)]
    hooks += [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layer)]
    hooks.append("ln_final.hook_scale")
    for i, (names, templates) in enumerate(SPLITS):
        for j, order in enumerate(("ABBA", "BABA")):
            ds = make_word_ioi(
                rng=np.random.default_rng([seed, i, j]),
                size=n,
                names=names,
                templates=templates,
                prompt_type=order,
                vocab=str(vocab_path),
                name="ioi_names",
                default_vocab=vocab_path,
            )
            rows = torch.arange(len(ds))
            end = torch.as_tensor(ds.positions["END"][:, 0])
            io = torch.as_tensor(ds.fields["io"])
            s = torch.as_tensor(ds.fields["s"])
            with torch.no_grad():
                logits, cache = bridge.run_with_cache(ds.tokens, names_filter=list(hooks))
                hf_logits = hf(ds.tokens).logits
            lp = logits[rows, end].log_softmax(-1)
            max_diff = max(max_diff, (lp - hf_logits[rows, end].log_softmax(-1)).abs().max().item())
            at_end = logits[rows, end]
            ld = at_end[rows, io] - at_end[rows, s]
            cell = {
                "logit_diff": ld.mean().item(),
                "logit_diff_std": ld.std().item(),
                "frac_io_above_s": (ld > 0).double().mean().item(),
                "acc_names": (name_ids[at_end[:, name_ids].argmax(-1)] == io)
                .double()
                .mean()
                .item(),
                "acc_vocab": (at_end.argmax(-1) == io).double().mean().item(),
                "prob_io": lp[rows, io].exp().mean().item(),
            }
            attn: dict[str, list] = {k: [] for k in ("IO", "S1", "S2")}
            dla = []
            w_u = bridge.W_U.detach()  # d_model vocab
            direction = (w_u[:, io] - w_u[:, s]).T  # batch d_model
            scale = cache["ln_final.hook_scale"][rows, end]  # batch 1
            for layer in range(cfg.n_layer):
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # batch head q k
                for key in attn:
                    pos = torch.as_tensor(ds.positions[key][:, 0])
                    attn[key].append(pattern[rows, :, end, pos].mean(0).tolist())
                z = cache[f"blocks.{layer}.attn.hook_z"][rows, end]  # batch head d_head
                out_h = torch.einsum("bhd,hdm->bhm", z, model.W_O[layer])
                out_h = out_h - out_h.mean(-1, keepdim=True)  # the final LN centres
                dla.append((torch.einsum("bhm,bm->bh", out_h, direction) / scale).mean(0).tolist())
            cell["attn_end_to"] = attn
            cell["head_dla"] = dla
            results["cells"][cell_key(names, templates, order)] = cell
            print(
                f"{cell_key(names, templates, order):45s} logit diff {cell['logit_diff']:6.2f} "
                f"± {cell['logit_diff_std']:.2f}  IO>S {cell['frac_io_above_s']:.3f}  "
                f"acc(names) {cell['acc_names']:.3f}",
                flush=True,
            )
    results["max_abs_logprob_diff_tl_vs_hf"] = max_diff
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def head_table(results: dict, n_layer: int, n_head: int) -> list[str]:
    """Rows for heads with mean attention ≥ 0.2 to IO/S1/S2 from END or |DLA| ≥ 0.5."""
    cells = list(results["cells"].values())
    rows = []
    for layer in range(n_layer):
        for head in range(n_head):
            att = {
                k: float(np.mean([c["attn_end_to"][k][layer][head] for c in cells]))
                for k in ("IO", "S1", "S2")
            }
            dla = float(np.mean([c["head_dla"][layer][head] for c in cells]))
            if max(att.values()) >= 0.2 or abs(dla) >= 0.5:
                rows.append(
                    f"| a{layer}.h{head} | {att['IO']:.3f} | {att['S1']:.3f} | {att['S2']:.3f} "
                    f"| {dla:+.2f} |"
                )
    return rows


def runs_table(out: Path) -> str:
    """The comparison runs (``runs.json``: name, what changed, command, in-training evals)."""
    path = out / "runs.json"
    if not path.exists():
        return "(no comparison runs recorded)"
    lines = [
        "| run | what | steps | held-out names IO > S | held-out logit diff | "
        "training names IO > S | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in json.loads(path.read_text()):
        last = run["evals"][-1]
        lines.append(
            f"| {run['name']} | {run['what']} | {last['step']} | "
            f"{last['heldout_names']['io_above_s']:.3f} | {last['heldout_names']['ld']:.2f} | "
            f"{last['train']['io_above_s']:.3f} | `{run['command']}` |"
        )
    return "\n".join(lines)


def write_card(out: Path, results: dict) -> None:
    """Renders MODEL_CARD.md from the results, the training summary and ``card_notes.md``."""
    cfg = GPT2LMHeadModel.from_pretrained(out).config
    summary = json.loads((out / "training_summary.json").read_text())
    args = summary["args"]
    notes_path = out / "card_notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    size_kb = (out / "model.safetensors").stat().st_size / 1024
    table = []
    for key, c in results["cells"].items():
        names, templates, order = (part.split("=")[1] for part in key.split(","))
        table.append(
            f"| {names} | {templates} | {order} | {c['logit_diff']:.2f} ± "
            f"{c['logit_diff_std']:.2f} | {c['frac_io_above_s']:.3f} | {c['acc_names']:.3f} | "
            f"{c['acc_vocab']:.3f} | {c['prob_io']:.3f} |"
        )
    curve = [
        f"| {e['step']} | {e['heldout_names']['io_above_s']:.3f} | {e['heldout_names']['ld']:.2f} "
        f"| {e['heldout_both']['io_above_s']:.3f} | {e['train']['io_above_s']:.3f} | "
        f"{e['train']['ld']:.2f} |"
        for e in summary["evals"]
    ]
    wall = summary["wall_time_s"]
    card = f"""# scrub IOI-names model (GPT-2 architecture, word-level, names as symbols)

A small GPT-2 that solves indirect object identification ("Then, Mary and John went to the
store. John gave a ring to" → "Mary") **for names it never saw in training**: its name
embeddings are built from fixed random {args["name_code_dim"]}-dimensional codes, so it cannot
memorise a name and has to move the name from the context. It is shipped with `scrub` as an offline stand-in for GPT-2 small on IOI:
`scrub.load_model("ioi_names")`, dataset generator `ioi_names` (`scrub/data/ioi_names.py`,
`datasets/ioi_names.yaml`), hypotheses in `hypotheses/ioi_names/`. Files: `MODEL_CARD.md`,
`card_notes.md`, `config.json`, `eval_results.json`, `model.safetensors` ({size_kb:.0f} KB),
`runs.json`, `training_log.txt`, `training_summary.json`, `word_vocab.json`.

Generated by `python scripts/eval_ioi_names.py --out {out}`; every number below was
measured by that script or, for the training curve and the comparison runs, by
`scripts/train_ioi_names.py` during training.

## Architecture

`transformers.GPT2LMHeadModel(GPT2Config(vocab_size={cfg.vocab_size}, n_positions={cfg.n_positions},
n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_inner={cfg.n_inner}, bos_token_id=0,
eos_token_id=0, pad_token_id=1, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))`: learned absolute
positions, tied input/output embeddings, head dimension {cfg.n_embd // cfg.n_head},
{summary["n_parameters"]} parameters. `n_inner` ≠ `n_embd` on purpose (see the warning in
`scrub/_model.py`).

## Vocabulary and names (`word_vocab.json`)

One token per word (`scrub.data.ioi_toy.split_words`): `<bos>` (0), `<pad>` (1), the words of
the IOI templates (`scrub/data/ioi_templates.py`) and of the distractor and copy sentences
(`scrub/data/ioi_toy.py`), then {summary["n_names"]} names (the 159 IOI names and
{args["synthetic_names"]} made-up ones, "names" in `word_vocab.json`), the places and the objects.
Held out: {summary["n_heldout_names"]} names ({args["heldout_real"]} IOI names and
{args["heldout_synthetic"]} made-up ones, `heldout_names`), which occur in **no** training
sequence, and the templates {", ".join(str(t) for t in results["heldout_templates"])} (indices into
`BABA_TEMPLATES`, both orders), never trained with an IOI answer.

{notes}

## Training

- Command: `{summary["command"]}` (run with `--out` elsewhere and copied here; the
  script's defaults are this run's settings)
- Names: `--name-embedding {args["name_embedding"]}`, `--name-code-dim {args["name_code_dim"]}`.
- Steps: {summary["steps_done"]}, batch {args["batch_size"]}, AdamW (betas 0.9/0.98, weight decay
  {args["weight_decay"]} on matrices), peak lr {args["lr"]}, {args["warmup"]} warmup steps, cosine
  decay to 10%, grad-norm clip 1.0, seed {args["seed"]}, init N(0, {args["init_std"]}²).
- Mix (`MIX` in the script): {json.dumps(summary["mix"])}; IOI answer loss weight
  {args["answer_weight"]}.
- Wall time: {wall:.0f} s ({wall / 60:.1f} min), {args["threads"]} torch thread on a shared
  2-core CPU (torch {summary["torch_version"]}).

Training curve ({args["eval_n"]} fresh prompts per point, mixed ABBA/BABA; IO > S fraction and
mean logit difference):

| step | held-out names IO > S | held-out names logit diff | held-out names and templates IO > S | training names IO > S | training names logit diff |
|---|---|---|---|---|---|
{chr(10).join(curve)}

## Evaluation

Reproduce with `python scripts/eval_ioi_names.py --out {out}`. {results["n_per_cell"]} fresh
prompts per cell (numpy seed [{results["eval_seed"]}, split, order]), loaded offline with
`scrub.load_model` (largest |log-prob difference| at END between the bridge and the Hugging Face
model: {results["max_abs_logprob_diff_tl_vs_hf"]:.1e}). Logit difference = logit(IO) − logit(S)
at END, mean ± std over prompts; IO > S = fraction with a positive logit difference; accuracy =
IO is the argmax over the {results["n_names"]} names / over the whole vocabulary.

| names | templates | order | logit diff | IO > S | acc (names) | acc (vocab) | p(IO) |
|---|---|---|---|---|---|---|---|
{chr(10).join(table)}

## Comparison runs

Runs of the same script (what each one changed is under "what"; numbers from each run's last
in-training evaluation, 200 or 256 fresh prompts, mixed order, training templates):

{runs_table(out)}

## Heads

Mean attention from END to IO, S1 and S2 and direct logit attribution to IO − S (head output at
END, centred, divided by the final LayerNorm scale, projected on W_U[IO] − W_U[S]), averaged over
the {len(results["cells"])} cells. Heads with attention ≥ 0.2 or |DLA| ≥ 0.5. An attention/DLA
measurement, not a causal claim (the circuit is for patching to find).

| head | END→IO | END→S1 | END→S2 | DLA (IO − S) |
|---|---|---|---|---|
{chr(10).join(head_table(results, cfg.n_layer, cfg.n_head))}
"""
    (out / "MODEL_CARD.md").write_text(card)
    print(f"wrote {out / 'MODEL_CARD.md'}")


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scrub/models/ioi_names", help="checkpoint directory")
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--eval-examples", type=int, default=500, help="prompts per cell")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    out = Path(args.out)
    results = evaluate(out, n=args.eval_examples, seed=args.eval_seed, threads=args.threads)
    write_card(out, results)


if __name__ == "__main__":
    main()
