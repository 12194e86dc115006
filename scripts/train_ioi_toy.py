"""Train and evaluate the IOI-toy model shipped with scrub: an offline stand-in for GPT-2 on IOI.

The model is a small Hugging Face ``GPT2LMHeadModel`` (4 layers, 8 heads, width 128) over a
word-level vocabulary (:class:`scrub.data.ioi_toy.Vocab`: every word, name, place, object and
punctuation mark of the IOI templates and of a few distractor sentences is one token, plus
``<bos>`` and ``<pad>``). It is trained by next-token prediction on a mix of sentences, so that
the only way to get the IOI prompts right is to copy the name that is *not* repeated.

Training data
-------------
Every sequence is ``<bos>``, then (with probability ``P_PREFIX``) one distractor or copy sentence, then
one main sentence, right-padded with ``<pad>`` (padding is never a target). The main sentence is:

* with probability ``P_IOI``: a full IOI sentence (an ABBA or BABA template of
  :mod:`scrub.data.ioi_templates` followed by the IO name) from the **training templates** with
  IO and S drawn from the **training names**. The answer (the IO name after the last prompt
  token) gets an extra loss term, weighted by ``--answer-weight``;
* with probability ``P_ABC``: an ABC or BAC prompt (three distinct names, no repeated name) from
  **any** template with **any** names, without an answer (it stops after the last prompt word).
  These teach the words of the held-out templates and that ``... to`` is not always followed by a
  name from the context, without ever showing an IOI answer for a held-out template;
* with probability ``P_COPY``: a copy sentence (:data:`scrub.data.ioi_toy.COPY_TEMPLATES`) with
  any name: one name, copied as the last word. These teach copying every name, held-out ones
  included (without them the model copied only the names of its IOI prompts: in a first run,
  held-out names got 0.8 logit difference and 18% accuracy against 15 and 100% for the others);
* otherwise: a distractor sentence (:data:`scrub.data.ioi_toy.DISTRACTOR_TEMPLATES`) with any
  names, place and object: ordinary next-token prediction, where a name is not predictable.

Held-out names (``--heldout-names`` of them, drawn with the seed) and templates
(``--heldout-templates``) are saved in ``word_vocab.json``; held-out names still occur in distractor
and ABC sentences, so their embeddings are trained, but never as the IO or S of an IOI prompt.

Evaluation
----------
``--eval-only`` loads the saved checkpoint offline through ``scrub.load_model`` (TransformerBridge
in compatibility mode) and measures, on fresh ``ioi_toy`` datasets for each names × templates
split and each order: the logit difference IO − S at ``END``, whether IO is the argmax over the
names and over the whole vocabulary; the largest |log-prob| difference between the Hugging Face
model and the bridge; per-head attention from ``END`` to ``IO``, ``S1`` and ``S2``; and the
direct logit attribution of each head's output at ``END`` to IO − S. It writes
``eval_results.json`` and renders ``MODEL_CARD.md``.

Usage::

    python scripts/train_ioi_toy.py --out scrub/models/ioi_toy --steps 5000
    python scripts/train_ioi_toy.py --out scrub/models/ioi_toy --eval-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from scrub.data.ioi_templates import (
    ABBA_TEMPLATES,
    ABC_TEMPLATES,
    BABA_TEMPLATES,
    BAC_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
)
from scrub.data.ioi_toy import COPY_TEMPLATES, DISTRACTOR_TEMPLATES, Vocab, ioi_toy, render

N_POSITIONS = 64
P_PREFIX = 0.3
P_IOI = 0.55
P_ABC = 0.15
P_COPY = 0.1


def make_config(
    vocab_size: int, *, d_model: int, n_layer: int, n_head: int, d_mlp: int
) -> GPT2Config:
    """The GPT-2 config of the IOI-toy model."""
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_POSITIONS,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=d_mlp,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


class TrainingSampler:
    """Draws training sequences (see the module docstring) from a numpy Generator.

    Args:
        vocab: the vocabulary, with the held-out split.
        rng: the generator every draw comes from.
    """

    def __init__(self, vocab: Vocab, rng: np.random.Generator) -> None:
        self.vocab = vocab
        self.rng = rng
        self.train_names = vocab.names("train")
        self.train_templates = vocab.templates("train")

    def _choice(self, items):
        return items[int(self.rng.integers(len(items)))]

    def _names(self, pool, k: int) -> list[str]:
        idx = self.rng.choice(len(pool), size=k, replace=False)
        return [pool[int(i)] for i in idx]

    def _values(self, names: list[str]) -> dict[str, str]:
        values = dict(zip(("[A]", "[B]", "[C]"), names, strict=False))
        values["[PLACE]"] = self._choice(PLACES)
        values["[OBJECT]"] = self._choice(OBJECTS)
        return values

    def distractor(self, templates=DISTRACTOR_TEMPLATES) -> list[str]:
        template = self._choice(templates)
        words, _ = render(template, self._values(self._names(NAMES, 3)))
        return words

    def sequence(self) -> tuple[list[int], int | None]:
        """One sequence's ids, and the index of its IOI answer (None if it has none)."""
        words = ["<bos>"]
        if self.rng.random() < P_PREFIX:
            words += self.distractor((*DISTRACTOR_TEMPLATES, *COPY_TEMPLATES))
        u = self.rng.random()
        answer = None
        if u < P_IOI:
            t = self._choice(self.train_templates)
            family = ABBA_TEMPLATES if self.rng.random() < 0.5 else BABA_TEMPLATES
            io, s = self._names(self.train_names, 2)
            prompt, _ = render(family[t], self._values([io, s]))
            words += prompt
            answer = len(words)
            words.append(io)
        elif u < P_IOI + P_ABC:
            family = ABC_TEMPLATES if self.rng.random() < 0.5 else BAC_TEMPLATES
            prompt, _ = render(self._choice(family), self._values(self._names(NAMES, 3)))
            words += prompt
        elif u < P_IOI + P_ABC + P_COPY:
            words += self.distractor(COPY_TEMPLATES)
        else:
            words += self.distractor()
        return self.vocab.encode(words), answer

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(size, T)`` ids right-padded with ``<pad>``, and the answer index per row (-1: none)."""
        seqs = [self.sequence() for _ in range(size)]
        length = max(len(ids) for ids, _ in seqs)
        tokens = torch.full((size, length), self.vocab.pad_id, dtype=torch.long)
        answers = torch.full((size,), -1, dtype=torch.long)
        for i, (ids, answer) in enumerate(seqs):
            tokens[i, : len(ids)] = torch.tensor(ids)
            if answer is not None:
                answers[i] = answer
        return tokens, answers


def build_model(cfg: GPT2Config, seed: int, init_std: float) -> GPT2LMHeadModel:
    """A fresh model, every weight matrix drawn from a seeded torch Generator.

    Args:
        cfg: the config.
        seed: seed of the local ``torch.Generator``.
        init_std: std of the weight matrices (output projections scaled by 1/sqrt(2 n_layer)).
    """
    model = GPT2LMHeadModel(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                std = init_std / math.sqrt(2 * cfg.n_layer) if "c_proj" in name else init_std
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith(".bias"):
                p.zero_()
    return model


def lr_at(step: int, total: int, peak: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warmup then cosine decay to ``final_frac * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def losses(
    logits: torch.Tensor, tokens: torch.Tensor, answers: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss over non-pad targets, and mean loss of the IOI answers."""
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    mask = tokens[:, 1:] != pad_id
    lm = (ce * mask).sum() / mask.sum()
    rows = torch.nonzero(answers >= 0)[:, 0]
    answer = ce[rows, answers[rows] - 1].mean() if len(rows) else ce.new_zeros(())
    return lm, answer


def train(args: argparse.Namespace) -> None:
    """Trains the model and saves it, its vocabulary and a training summary to ``args.out``."""
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    names = list(NAMES)
    heldout_names = sorted(
        names[int(i)] for i in rng.choice(len(names), size=args.heldout_names, replace=False)
    )
    vocab = Vocab.build(heldout_names=heldout_names, heldout_templates=args.heldout_templates)
    cfg = make_config(
        len(vocab), d_model=args.d_model, n_layer=args.layers, n_head=args.heads, d_mlp=args.d_mlp
    )
    model = build_model(cfg, args.seed, args.init_std)
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
    sampler = TrainingSampler(vocab, rng)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(vocab)}; parameters {n_params}; steps {args.steps} batch {args.batch_size}")

    start = time.time()
    window: list[tuple[float, float]] = []
    log = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        tokens, answers = sampler.batch(args.batch_size)
        logits = model(tokens).logits
        lm, answer = losses(logits, tokens, answers, vocab.pad_id)
        loss = lm + args.answer_weight * answer
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append((lm.item(), answer.item()))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            lm_mean, ans_mean = np.mean(window, axis=0)
            line = (
                f"step {step + 1:6d}  lr {opt.param_groups[0]['lr']:.2e}  lm loss {lm_mean:.4f}  "
                f"IOI answer loss {ans_mean:.4f}  ({time.time() - start:.0f}s)"
            )
            print(line, flush=True)
            log.append(line)
            window = []
    wall = time.time() - start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    vocab.save(out / "word_vocab.json")
    (out / "training_log.txt").write_text("\n".join(log) + "\n")
    summary = {
        "command": " ".join(["python", "scripts/train_ioi_toy.py", *sys.argv[1:]]),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "peak_lr": args.lr,
        "warmup_steps": args.warmup,
        "weight_decay": args.weight_decay,
        "init_std": args.init_std,
        "answer_weight": args.answer_weight,
        "mix": {"p_prefix": P_PREFIX, "p_ioi": P_IOI, "p_abc": P_ABC, "p_copy": P_COPY},
        "seed": args.seed,
        "threads": args.threads,
        "n_parameters": n_params,
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved to {out} after {wall:.0f}s")


# -- evaluation ------------------------------------------------------------------------------------
SPLITS = (("train", "train"), ("heldout", "train"), ("train", "heldout"), ("heldout", "heldout"))


def _split_key(names: str, templates: str, order: str) -> str:
    return f"names={names},templates={templates},order={order}"


def evaluate(args: argparse.Namespace) -> dict:
    """Evaluates the saved checkpoint; writes ``eval_results.json`` and ``MODEL_CARD.md``."""
    import scrub

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    vocab_path = str(out / "word_vocab.json")
    vocab = Vocab.load(vocab_path)
    model = scrub.load_model(str(out))
    bridge = model.bridge
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    name_ids = torch.as_tensor(vocab.ids(NAMES))
    cfg = hf.config
    results: dict = {
        "n_per_cell": args.eval_examples,
        "eval_seed": args.eval_seed,
        "vocab_size": len(vocab),
        "heldout_names": list(vocab.heldout_names),
        "heldout_templates": list(vocab.heldout_templates),
        "cells": {},
    }
    max_diff = 0.0
    for i, (names, templates) in enumerate(SPLITS):
        for j, order in enumerate(("ABBA", "BABA")):
            rng = np.random.default_rng([args.eval_seed, i, j])
            ds = ioi_toy(
                rng=rng,
                size=args.eval_examples,
                names=names,
                templates=templates,
                prompt_type=order,
                vocab=vocab_path,
            )
            rows = torch.arange(len(ds))
            end = torch.as_tensor(ds.positions["END"][:, 0])
            io = torch.as_tensor(ds.fields["io"])
            s = torch.as_tensor(ds.fields["s"])
            hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layer)]
            hooks += [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layer)]
            hooks.append("ln_final.hook_scale")
            with torch.no_grad():
                logits, cache = bridge.run_with_cache(ds.tokens, names_filter=list(hooks))
                hf_logits = hf(ds.tokens).logits
            lp_tl = logits[rows, end].log_softmax(-1)
            lp_hf = hf_logits[rows, end].log_softmax(-1)
            max_diff = max(max_diff, (lp_tl - lp_hf).abs().max().item())
            at_end = logits[rows, end]
            ld = at_end[rows, io] - at_end[rows, s]
            acc_names = name_ids[at_end[:, name_ids].argmax(-1)] == io
            acc_vocab = at_end.argmax(-1) == io
            top2 = name_ids[at_end[:, name_ids].topk(2, dim=-1).indices]  # batch 2
            io_s_top2 = ((top2 == io[:, None]) | (top2 == s[:, None])).all(-1)
            cell = {
                "logit_diff": ld.mean().item(),
                "logit_diff_std": ld.std().item(),
                "frac_io_above_s": (ld > 0).double().mean().item(),
                "acc_names": acc_names.double().mean().item(),
                "acc_vocab": acc_vocab.double().mean().item(),
                "frac_io_s_top2_names": io_s_top2.double().mean().item(),
                "prob_io": lp_tl[rows, io].exp().mean().item(),
            }
            # Attention from END to IO / S1 / S2 and direct logit attribution per head.
            attn = {k: [] for k in ("IO", "S1", "S2")}
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
            results["cells"][_split_key(names, templates, order)] = cell
            print(
                f"{_split_key(names, templates, order):45s} logit diff {cell['logit_diff']:6.2f}"
                f"  acc(names) {cell['acc_names']:.3f}  acc(vocab) {cell['acc_vocab']:.3f}"
            )
    results["max_abs_logprob_diff_tl_vs_hf"] = max_diff
    results["name_movers"] = _name_movers(results, cfg.n_layer, cfg.n_head)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"max |logprob TL - HF| at END: {max_diff:.2e}")
    print(f"name-mover-like heads: {results['name_movers']}")
    write_model_card(out, results, cfg)
    return results


def _name_movers(results: dict, n_layer: int, n_head: int) -> list[dict]:
    """Heads whose END attention goes mostly to IO (mean over every cell) and that write IO − S.

    A head is listed if its mean attention from END to IO is at least 0.3 and at least twice
    its attention to S1 + S2, and its direct logit attribution to IO − S is positive.
    """
    cells = list(results["cells"].values())
    heads = []
    for layer in range(n_layer):
        for head in range(n_head):
            io = float(np.mean([c["attn_end_to"]["IO"][layer][head] for c in cells]))
            s1 = float(np.mean([c["attn_end_to"]["S1"][layer][head] for c in cells]))
            s2 = float(np.mean([c["attn_end_to"]["S2"][layer][head] for c in cells]))
            dla = float(np.mean([c["head_dla"][layer][head] for c in cells]))
            if io >= 0.3 and io >= 2 * (s1 + s2) and dla > 0:
                heads.append(
                    {"head": f"a{layer}.h{head}", "attn_io": io, "attn_s": s1 + s2, "dla": dla}
                )
    return heads


def write_model_card(out: Path, results: dict, cfg: GPT2Config) -> None:
    """Renders MODEL_CARD.md from the measured results and the training summary."""
    summary_path = out / "training_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    size_kb = (out / "model.safetensors").stat().st_size / 1024
    rows = []
    for key, c in results["cells"].items():
        n, t, o = (part.split("=")[1] for part in key.split(","))
        rows.append(
            f"| {n} | {t} | {o} | {c['logit_diff']:.2f} ± {c['logit_diff_std']:.2f} | "
            f"{c['frac_io_above_s']:.3f} | {c['acc_names']:.3f} | {c['acc_vocab']:.3f} | "
            f"{c['prob_io']:.3f} |"
        )
    table = "\n".join(rows)
    first = results["cells"][_split_key("train", "train", "ABBA")]
    cells = list(results["cells"].values())

    def mean_over_cells(kind: str, key: str | None, layer: int, head: int) -> float:
        if key is None:
            return float(np.mean([c[kind][layer][head] for c in cells]))
        return float(np.mean([c[kind][key][layer][head] for c in cells]))

    head_rows = []
    for layer in range(cfg.n_layer):
        for head in range(cfg.n_head):
            io = mean_over_cells("attn_end_to", "IO", layer, head)
            s1 = mean_over_cells("attn_end_to", "S1", layer, head)
            s2 = mean_over_cells("attn_end_to", "S2", layer, head)
            dla = mean_over_cells("head_dla", None, layer, head)
            if max(io, s1, s2) >= 0.2 or abs(dla) >= 0.5:
                head_rows.append(
                    f"| a{layer}.h{head} | {io:.3f} | {s1:.3f} | {s2:.3f} | {dla:+.2f} |"
                )
    movers = ", ".join(h["head"] for h in results["name_movers"]) or "none"
    wall = summary.get("wall_time_s")
    notes = f" Note: {summary['notes']}" if summary.get("notes") else ""
    held = [c for k, c in results["cells"].items() if "names=heldout" in k]
    trained = [c for k, c in results["cells"].items() if "names=train" in k]

    def span(cs: list[dict], key: str) -> str:
        lo, hi = min(c[key] for c in cs), max(c[key] for c in cs)
        return f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f} to {hi:.2f}"

    del first
    card = f"""# scrub IOI-toy model (4-layer GPT-2, word-level vocabulary)

A small GPT-2-architecture language model trained on the IOI paper's sentence templates
(Wang et al. 2022) and distractor sentences in a word-level vocabulary, so that on an IOI prompt
("Then, Mary and John went to the store. John gave a ring to") it predicts the name that is not
repeated. It is shipped with `scrub` as an offline stand-in for GPT-2 small on indirect object
identification: `scrub.load_model("ioi_toy")`, dataset generator `ioi_toy`
(`scrub/data/ioi_toy.py`). Files: `MODEL_CARD.md`, `config.json`, `eval_results.json`,
`model.safetensors` ({size_kb:.0f} KB), `training_log.txt`, `training_summary.json`, `word_vocab.json`.

This file is generated by `scripts/train_ioi_toy.py --eval-only`; every number in it was measured
by that script.

## Architecture

`transformers.GPT2LMHeadModel(GPT2Config(vocab_size={cfg.vocab_size}, n_positions={cfg.n_positions},
n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_inner={cfg.n_inner}, bos_token_id=0,
eos_token_id=0, pad_token_id=1, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))`: learned absolute
positions, tied input/output embeddings, head dimension {cfg.n_embd // cfg.n_head},
{summary.get("n_parameters", "n/a")} parameters.

## Vocabulary (`word_vocab.json`)

One token per word: `<bos>` (0, always at position 0), `<pad>` (1, right padding, never a
target), every word and punctuation mark of the ABBA/BABA/ABC/BAC templates of
`scrub/data/ioi_templates.py` and of the distractor sentences (`DISTRACTOR_TEMPLATES` in
`scrub/data/ioi_toy.py`), then the {len(NAMES)} names, {len(PLACES)} places and {len(OBJECTS)} objects
of `ioi_templates`. Text is split by `scrub.data.ioi_toy.split_words` (`"Then, [B] and"` →
`Then`, `,`, `[B]`, `and`). There is no BPE and no leading-space issue.

`word_vocab.json` also holds the split the model was trained on:

- held-out names ({len(results["heldout_names"])}): {", ".join(results["heldout_names"])};
- held-out templates (indices into `BABA_TEMPLATES`, both orders): {", ".join(str(t) for t in results["heldout_templates"])}.

## Training data

Each sequence is `<bos>`, with probability {P_PREFIX} a distractor or copy sentence, then a main
sentence: an IOI sentence with its answer (probability {P_IOI}; training templates and training
names only; ABBA or BABA at random), an ABC/BAC prompt without an answer (probability {P_ABC}; any
template, any names), a copy sentence (probability {P_COPY}; `COPY_TEMPLATES`, one name, which is
also the last word: "Tom was at the park, so the ring went to Tom."), or a distractor sentence
(otherwise; any names; `DISTRACTOR_TEMPLATES`). Right padding with `<pad>` (never a target). Loss: next-token cross-entropy on
every non-pad target, plus {summary.get("answer_weight", "n/a")} × the mean cross-entropy of the IOI answers.
Held-out names never appear as the IO or S of a training IOI prompt but do appear in distractor,
copy and ABC sentences (their embeddings are trained, and the model learns to copy them); held-out
templates never appear with an IOI answer but their ABC/BAC versions (same words, three distinct
names, no answer) do. The copy sentences were added after a first run without them (same
settings otherwise, 4000 steps): it was perfect on training names (logit difference 15, accuracy
1.00) but did not generalise to held-out names (logit difference 0.5-0.9, accuracy over names
0.14-0.19).

## Training

- Command: `{summary.get("command", "n/a")}`
- Steps: {summary.get("steps", "n/a")}, batch {summary.get("batch_size", "n/a")}, AdamW (betas 0.9/0.98,
  weight decay {summary.get("weight_decay", "n/a")} on matrices), peak lr {summary.get("peak_lr", "n/a")} with
  {summary.get("warmup_steps", "n/a")} warmup steps then cosine decay to 10%, grad-norm clip 1.0, seed {summary.get("seed", "n/a")}.
- Init: weight matrices N(0, {summary.get("init_std", "n/a")}^2) from a seeded torch Generator (output
  projections scaled by 1/sqrt(2 n_layer)), biases 0, LayerNorm gains 1.
- Wall time: {f"{wall:.0f} s ({wall / 60:.1f} min)" if wall is not None else "n/a"} with {summary.get("threads", "n/a")} torch CPU thread(s) (torch {summary.get("torch_version", "n/a")}).{notes}
- `n_inner` is not `n_embd` on purpose: with square MLP matrices (`n_inner == n_embd`) the
  TransformerLens 4.x bridge's compatibility mode mis-folds `ln_2` (measured: log-probabilities off
  by up to 0.4 on a random model with perturbed `ln_2`; exact for `n_inner` 64, 256, 512).

## Evaluation

Reproduce with:

```
python scripts/train_ioi_toy.py --out {out} --eval-only
```

{results["n_per_cell"]} fresh `ioi_toy` prompts per cell (numpy seed [{results["eval_seed"]}, split, order]),
loaded offline with `scrub.load_model` (TransformerBridge, compatibility mode: logits shift by a
per-position constant, so logit differences and argmaxes are those of the Hugging Face model; the
largest |log-prob difference| at END between the two was {results["max_abs_logprob_diff_tl_vs_hf"]:.1e}).
Logit difference = logit(IO) − logit(S) at END (mean ± std over prompts); "IO > S" = fraction
with a positive logit difference; accuracy = IO is the argmax over the {len(NAMES)} names / over the
whole vocabulary; p(IO) = mean probability of IO.

| names | templates | order | logit diff | IO > S | acc (names) | acc (vocab) | p(IO) |
|---|---|---|---|---|---|---|---|
{table}

### Generalisation

On the names it was trained on, the model solves IOI on the training templates and, nearly as
well, on the held-out templates (accuracy over names {span(trained, "acc_names")}, logit difference
{span(trained, "logit_diff")}). It does **not** generalise to held-out names: with them the logit
difference is {span(held, "logit_diff")} and the accuracy over names {span(held, "acc_names")}; IO and S
are the two highest names in {span(held, "frac_io_s_top2_names")} of those prompts (training names:
{span(trained, "frac_io_s_top2_names")}, where S is pushed down): it often ranks the prompt's two names
highest but does not tell IO from S. So the
part of its IOI mechanism that tells IO from S is specific to the names it saw in IOI prompts.
Use the training names (`names: train`, the `ioi_toy` default) for circuit work.

### Heads

Mean attention from END to the IO, S1 and S2 tokens, and direct logit attribution to IO − S
(each head's output at END, centred and divided by the final LayerNorm scale, projected on
W_U[IO] − W_U[S]), averaged over the {len(cells)} cells above. Heads with attention ≥ 0.2 to one of
them or |DLA| ≥ 0.5 are listed.

| head | END→IO | END→S1 | END→S2 | DLA (IO − S) |
|---|---|---|---|---|
{chr(10).join(head_rows)}

Name-mover-like heads (attention END→IO ≥ 0.3 and ≥ 2 × END→(S1 + S2), positive DLA): **{movers}**.
This is an attention/DLA measurement, not a causal claim; the hypotheses in `hypotheses/ioi_toy/`
test causal claims.
"""
    (out / "MODEL_CARD.md").write_text(card)
    print(f"wrote {out / 'MODEL_CARD.md'}")


def parse_args() -> argparse.Namespace:
    """Parses command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scrub/models/ioi_toy", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--init-std", type=float, default=0.05)
    p.add_argument("--answer-weight", type=float, default=1.0)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-mlp", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--heldout-names", type=int, default=30, help="how many names to hold out")
    p.add_argument(
        "--heldout-templates", type=int, nargs="*", default=[9, 14], help="BABA template indices"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the split, init and data")
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--eval-examples", type=int, default=500, help="prompts per eval cell")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=250)
    p.add_argument("--eval-only", action="store_true", help="evaluate the saved checkpoint")
    return p.parse_args()


def main() -> None:
    """Entry point: train (unless --eval-only), then evaluate."""
    args = parse_args()
    if not args.eval_only:
        train(args)
    evaluate(args)


if __name__ == "__main__":
    main()
