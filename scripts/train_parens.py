"""Train and evaluate the 3-layer paren-balance classifier shipped with scrub.

The model is a tiny Hugging Face ``GPT2LMHeadModel`` (vocabulary 6, context 42, width 56,
3 layers, 2 heads per layer, MLP width 224) trained to classify strings of ``(`` and ``)`` as
balanced or not. It reads the dataset of :mod:`scrub.data.parens` directly: every training batch
is a fresh ``parens(rng=..., size=batch)`` draw, so the model is trained on exactly the
distribution the library scrubs on (balanced 50%, count-only failures 20%, horizon-only failures
20%, both 10%; lengths up to 40).

Read-out
--------
Tokens are ``[START] c_1 .. c_n [PAD]..``. The answer is the model's next-token prediction **at
the last character** (``END`` = position n): the class tokens ``BALANCED`` (4) and
``UNBALANCED`` (5) are ordinary vocabulary entries, so the LM head is the classifier and scrub's
``loss``/``accuracy`` metrics (``labels: label``, ``positions: END``) read it directly. The loss
is cross-entropy over the whole vocabulary at END only; no other position is trained.

The causal-scrubbing paper's paren model was bidirectional and answered at position 0. GPT-2
attention is causal, so here the answer must come at the end, where the whole string is visible.

Evaluation
----------
``--eval-only`` loads the saved checkpoint offline with ``TransformerBridge.boot_transformers``
in compatibility mode (as ``scrub.load_model`` does) and measures, on held-out draws (numpy seed
``--eval-seed``; training used ``--seed``):

* **standard**: the dataset's own distribution;
* **hard**: only hard negatives and balanced strings: 50% balanced, 25% count-only, 25%
  horizon-only failures whose elevation dips to exactly -1 (``near_miss=1``).

Per failure kind: accuracy, mean loss (nats) and example counts; the hard subsets (count
failures ending at elevation 1 or 2, horizon failures with minimum elevation -1); accuracy by
length; the max |difference| of log-probabilities between TransformerLens and Hugging Face; and
the fraction of held-out strings that also occurred in training (short strings are few, so they
necessarily repeat). Results go to ``eval_results.json`` and ``MODEL_CARD.md``.

Usage::

    python scripts/train_parens.py --out scrub/models/parens --steps 4000 --threads 1
    python scripts/train_parens.py --out scrub/models/parens --eval-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from scrub.data.parens import KINDS, PAD, START, VOCAB, parens

MAX_LEN = 40
N_CTX = 42  # START + 40 characters, plus one spare position


def make_config() -> GPT2Config:
    """Returns the GPT-2 config of the paren classifier."""
    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=N_CTX,
        n_embd=56,
        n_layer=3,
        n_head=2,
        n_inner=224,
        bos_token_id=START,
        eos_token_id=START,
        pad_token_id=PAD,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def build_model(seed: int, init_std: float) -> GPT2LMHeadModel:
    """Builds the model with weights drawn from a local, seeded ``torch.Generator``.

    Args:
        seed: Seed of the generator.
        init_std: Standard deviation of every weight matrix (residual-stream output
            projections are further scaled by ``1 / sqrt(2 * n_layer)``, as in GPT-2);
            biases are 0 and LayerNorm gains 1.

    Returns:
        The freshly initialised model.
    """
    model = GPT2LMHeadModel(make_config())
    gen = torch.Generator().manual_seed(seed)
    n_layer = model.config.n_layer
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                std = init_std / math.sqrt(2 * n_layer) if "c_proj" in name else init_std
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif "ln_" in name and name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model


def end_logits(logits: torch.Tensor, end: np.ndarray) -> torch.Tensor:
    """The ``(batch, vocab)`` logits at each example's END position."""
    return logits[torch.arange(len(end)), torch.as_tensor(end[:, 0])]


def lr_at(step: int, total: int, peak: float, warmup: int, final_frac: float = 0.05) -> float:
    """Linear warmup then cosine decay to ``final_frac * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def training_batches(seed: int, steps: int, batch_size: int):
    """The training data: ``steps`` fresh datasets of ``batch_size`` strings, from one stream."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield parens(rng=rng, size=batch_size, max_len=MAX_LEN)


def train(args: argparse.Namespace) -> None:
    """Trains the model and saves it to ``args.out``.

    Args:
        args: Parsed command-line arguments.
    """
    torch.set_num_threads(args.threads)
    model = build_model(args.seed, args.init_std)
    model.train()
    decay = [p for p in model.parameters() if p.ndim == 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}; steps={args.steps} batch={args.batch_size} lr={args.lr}")
    start = time.time()
    window_loss, window_acc = [], []
    for step, ds in enumerate(training_batches(args.seed, args.steps, args.batch_size)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        labels = torch.as_tensor(ds.fields["label"])
        out = end_logits(model(ds.tokens).logits, ds.positions["END"])
        loss = F.cross_entropy(out, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window_loss.append(loss.item())
        window_acc.append((out.argmax(-1) == labels).float().mean().item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(
                f"step {step + 1:6d}  lr {opt.param_groups[0]['lr']:.2e}  "
                f"loss {np.mean(window_loss):.5f}  acc {np.mean(window_acc):.4f}  "
                f"({time.time() - start:.0f}s)",
                flush=True,
            )
            window_loss, window_acc = [], []
    wall = time.time() - start
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "generation_config.json").unlink(missing_ok=True)
    summary = {
        "command": " ".join(["python", "scripts/train_parens.py", *sys.argv[1:]]),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "training_examples": args.steps * args.batch_size,
        "peak_lr": args.lr,
        "warmup_steps": args.warmup,
        "weight_decay": args.weight_decay,
        "init_std": args.init_std,
        "seed": args.seed,
        "threads": args.threads,
        "parameters": n_params,
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
    }
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved to {out_dir} after {wall:.0f}s")


def _scores(logp: torch.Tensor, ds) -> dict[str, Any]:
    """Accuracy and loss per kind, on the hard subsets and by length."""
    labels = torch.as_tensor(ds.fields["label"])
    loss = -logp.gather(1, labels[:, None])[:, 0].double().numpy()
    correct = (logp.argmax(-1) == labels).numpy()
    f = ds.fields
    groups: dict[str, np.ndarray] = {"all": np.ones(len(ds), dtype=bool)}
    for code, name in enumerate(KINDS):
        groups[name] = f["kind"] == code
    groups["count, ends at elevation 1 or 2"] = (f["kind"] == 1) & (f["elevation"] <= 2)
    groups["horizon, dips to exactly -1"] = (f["kind"] == 2) & (f["min_elevation"] == -1)
    res: dict[str, Any] = {}
    for name, sel in groups.items():
        res[name] = {
            "n": int(sel.sum()),
            "accuracy": float(correct[sel].mean()) if sel.any() else None,
            "errors": int((~correct[sel]).sum()),
            "loss": float(loss[sel].mean()) if sel.any() else None,
        }
    buckets = [(1, 10), (11, 20), (21, 30), (31, 40)]
    res["accuracy_by_length"] = {
        f"{lo}-{hi}": float(correct[(f["length"] >= lo) & (f["length"] <= hi)].mean())
        for lo, hi in buckets
    }
    # Confidence: the probability the model gives to the right class, worst case.
    res["min_p_correct"] = float(np.exp(-loss.max()))
    return res


def evaluate(args: argparse.Namespace) -> dict:
    """Evaluates the saved checkpoint and writes eval_results.json and MODEL_CARD.md.

    Args:
        args: Parsed command-line arguments.

    Returns:
        The evaluation results.
    """
    from transformer_lens.model_bridge import TransformerBridge

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    bridge = TransformerBridge.boot_transformers(str(out), device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()

    summary = json.loads((out / "training_summary.json").read_text())
    seen: set[bytes] = set()
    for ds in training_batches(summary["seed"], summary["steps"], summary["batch_size"]):
        seen.update(row.tobytes() for row in ds.tokens.numpy())

    rng = np.random.default_rng(args.eval_seed)  # held out: training used --seed
    layouts = {
        "standard": {},
        "hard": {"p_balanced": 0.5, "p_count": 0.25, "p_horizon": 0.25, "near_miss": 1.0},
    }
    results: dict[str, Any] = {"eval_seed": args.eval_seed, "n_per_layout": args.eval_examples}
    for name, params in layouts.items():
        ds = parens(rng=rng, size=args.eval_examples, max_len=MAX_LEN, **params)
        with torch.no_grad():
            hf_logp = hf(ds.tokens).logits.log_softmax(-1)
            tl_logp = bridge(ds.tokens).log_softmax(-1)
        diff = (hf_logp - tl_logp).abs().max().item()
        res = _scores(end_logits(tl_logp, ds.positions["END"]), ds)
        res["params"] = dict(ds.params)
        res["max_abs_logprob_diff_tl_vs_hf"] = diff
        res["fraction_seen_in_training"] = float(
            np.mean([row.tobytes() in seen for row in ds.tokens.numpy()])
        )
        unseen = np.array([row.tobytes() not in seen for row in ds.tokens.numpy()])
        labels = torch.as_tensor(ds.fields["label"])
        correct = (end_logits(tl_logp, ds.positions["END"]).argmax(-1) == labels).numpy()
        res["accuracy_unseen_in_training"] = float(correct[unseen].mean())
        res["n_unseen_in_training"] = int(unseen.sum())
        results[name] = res
        print(f"\n== {name} (n={len(ds)}) |TL-HF| logprob {diff:.2e} ==")
        for group in (
            "all",
            *KINDS,
            "count, ends at elevation 1 or 2",
            "horizon, dips to exactly -1",
        ):
            g = res[group]
            if g["n"]:
                print(
                    f"{group:34s} n={g['n']:5d}  acc {g['accuracy']:.4f}  "
                    f"errors {g['errors']:3d}  loss {g['loss']:.5f}"
                )
        print(f"by length: {res['accuracy_by_length']}")
        print(
            f"seen in training: {res['fraction_seen_in_training']:.3f}; accuracy on unseen "
            f"{res['accuracy_unseen_in_training']:.4f} (n={res['n_unseen_in_training']})"
        )
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_model_card(out, results, summary, args)
    return results


def _kind_table(res: dict) -> str:
    rows = [
        ("all", "all"),
        ("balanced", "balanced (label: balanced)"),
        ("count", "count-only failure (counts differ, no prefix negative)"),
        ("horizon", "horizon-only failure (equal counts, some prefix negative)"),
        ("both", "both tests fail"),
        ("count, ends at elevation 1 or 2", "  hard: count failure ending at elevation 1 or 2"),
        ("horizon, dips to exactly -1", "  hard: horizon failure dipping to exactly -1"),
    ]
    lines = ["| examples | n | accuracy | errors | mean loss (nats) |", "|---|---|---|---|---|"]
    for key, label in rows:
        g = res[key]
        if g["n"]:
            lines.append(
                f"| {label} | {g['n']} | {g['accuracy']:.4f} | {g['errors']} | {g['loss']:.2e} |"
            )
    return "\n".join(lines)


def write_model_card(out: Path, results: dict, summary: dict, args: argparse.Namespace) -> None:
    """Writes MODEL_CARD.md from the training summary and the evaluation."""
    std, hard = results["standard"], results["hard"]
    files = ", ".join(f"`{p.name}`" for p in sorted(out.iterdir()) if p.is_file())
    size_kb = (out / "model.safetensors").stat().st_size / 1000
    by_len = " / ".join(f"{v:.4f}" for v in std["accuracy_by_length"].values())
    notes = f"\n\nNote: {summary['notes']}" if summary.get("notes") else ""
    card = f"""# scrub paren-balance classifier (3 layers x 2 heads)

A tiny GPT-2-format model that classifies strings of `(` and `)` as balanced or not, the
setting of the causal-scrubbing paper's paren experiment. It is shipped with `scrub` as a
fixture for causal-scrubbing experiments on the `parens` dataset (`scrub/data/parens.py`).
Files: {files} (weights {size_kb:.0f} KB).

This file is generated by `scripts/train_parens.py --eval-only` from `training_summary.json`
and the evaluation it runs; every number in it was measured by that script.

## Architecture

`transformers.GPT2LMHeadModel(GPT2Config(vocab_size=6, n_positions=42, n_embd=56,
n_layer=3, n_head=2, n_inner=224, bos_token_id=1, eos_token_id=1, pad_token_id=0,
resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))`: learned absolute positions, tied input/output
embeddings, head dimension 28, GELU MLPs, {summary["parameters"]} parameters.

Tokens: 0 PAD, 1 START, 2 `(`, 3 `)`, 4 BALANCED, 5 UNBALANCED. There is no tokenizer; feed
ids directly. An example is `[START] c_1 .. c_n [PAD] ..` (n <= 40, 41 tokens in the dataset).

**Read-out.** The class is the model's next-token prediction at the last character (`END`,
position n): BALANCED (4) vs UNBALANCED (5). In scrub: `metric: {{kind: loss, positions: END,
labels: label}}` (or `accuracy`, or `logit_diff` with `correct: label, wrong: wrong_label`).
Outputs at other positions were never trained and mean nothing. Padding comes after END, so the
causal model never sees it there.

**Difference from the paper.** The causal-scrubbing paper's paren classifier was bidirectional
and read its answer at position 0. GPT-2 attention is causal, so this model answers at the end
of the string, the only position that sees all of it. Hypotheses about "the answer at position
0" translate to "the answer at END" here; mechanisms may differ (e.g. a horizon check can be
computed at every prefix position and gathered at END).

## Training data

Fresh draws of `scrub.data.parens.parens(size={summary["batch_size"]}, max_len=40)` each step:
50% balanced, 20% count-only failures (never negative, ending at elevation h > 0, h mostly the
smallest value of the length's parity), 20% horizon-only failures (equal counts, some prefix
negative; half dip to exactly -1), 10% failing both; lengths uniform over those allowed for
the kind (balanced and horizon failures have even length). Loss: cross-entropy over the
vocabulary at END only.

## Training

- Command: `{summary["command"]}`
- Steps: {summary["steps"]}, batch {summary["batch_size"]} ({summary["training_examples"]}
  strings), AdamW (betas 0.9/0.98, weight decay {summary["weight_decay"]} on matrices), peak lr
  {summary["peak_lr"]} with {summary["warmup_steps"]} warmup steps then cosine decay to 5%,
  grad-norm clip 1.0, seed {summary["seed"]} (data: numpy; init: a local torch Generator).
- Init: weight matrices N(0, {summary["init_std"]}^2) (output projections further scaled by
  1/sqrt(2 n_layer)), biases 0, LayerNorm gains 1.
- Wall time: {summary["wall_time_s"]:.0f} s with {summary["threads"]} torch CPU thread(s)
  (torch {summary["torch_version"]}).{notes}

## Evaluation

Reproduce with:

```
python scripts/train_parens.py --out scrub/models/parens --eval-only
```

{results["n_per_layout"]} held-out draws per layout (numpy seed {results["eval_seed"]};
training used seed {summary["seed"]}), loaded offline with
`TransformerBridge.boot_transformers(dir, device="cpu")` +
`enable_compatibility_mode(disable_warnings=True)`, as `scrub.load_model("parens")` does. Max
|log-prob difference| TransformerLens vs Hugging Face: {std["max_abs_logprob_diff_tl_vs_hf"]:.1e}.
The loss is the cross-entropy of the label token over the full vocabulary.

### Standard layout (the dataset's distribution)

{_kind_table(std)}

Accuracy by length 1-10 / 11-20 / 21-30 / 31-40: {by_len}. Lowest probability given to the
correct class: {std["min_p_correct"]:.3f}.
{std["fraction_seen_in_training"]:.1%} of these strings also occur in the training stream (short
strings are few); accuracy on the {std["n_unseen_in_training"]} unseen ones:
{std["accuracy_unseen_in_training"]:.4f}.

### Hard layout (balanced and hard negatives only)

50% balanced, 25% count-only failures, 25% horizon-only failures that all dip to exactly -1
(`near_miss=1`).

{_kind_table(hard)}

Lowest probability given to the correct class: {hard["min_p_correct"]:.3f}; unseen in training:
{hard["n_unseen_in_training"]}, accuracy on them {hard["accuracy_unseen_in_training"]:.4f}.

### Note for scrubbing

The model is very confident (the clean loss is of order 1e-8 nats), so a scrubbed `loss` is
dominated by the few examples a hypothesis gets confidently wrong (tens of nats each);
`accuracy` and `logit_diff` (`correct: label, wrong: wrong_label`) are useful second views.
`scripts/parens_results.py` prints all three for the shipped hypotheses.
"""
    (out / "MODEL_CARD.md").write_text(card)
    print(f"wrote {out / 'MODEL_CARD.md'}")


def parse_args() -> argparse.Namespace:
    """Parses command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scrub/models/parens", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--init-std", type=float, default=0.02, help="std of the weight-matrix init")
    p.add_argument("--seed", type=int, default=0, help="seed for init and training data")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed for held-out eval data")
    p.add_argument("--eval-examples", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument(
        "--eval-only", action="store_true", help="skip training; evaluate the saved checkpoint"
    )
    return p.parse_args()


def main() -> None:
    """Entry point: train (unless --eval-only), then evaluate."""
    args = parse_args()
    if not args.eval_only:
        train(args)
    evaluate(args)


if __name__ == "__main__":
    main()
