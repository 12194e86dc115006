"""Train the IOI-names model shipped with scrub: a small GPT-2 that solves IOI for names it never saw.

The IOI-toy model (``scripts/train_ioi_toy.py``) solves IOI only for names it saw in IOI
prompts: it memorised, per name, which one is the answer. This script trains a model of the same
kind (a Hugging Face ``GPT2LMHeadModel`` over a word-level vocabulary, see
:class:`scrub.data.ioi_toy.Vocab`) so that it has to *move* the name from the context:

* **Names are symbols.** The vocabulary has the 159 IOI names and ``--synthetic-names`` made-up
  ones (syllables, "Keloran"). Every name's embedding (tied with its unembedding) is built from
  a fixed random code: ``W_E[name] = name_mean + z_name @ M`` with ``z_name ~ N(0, I_k)``
  (``k = --name-code-dim``, 16) drawn once from the seed and never trained, and ``name_mean``
  (``d_model``) and ``M`` (``k × d_model``) learned and shared by all names. Nothing a
  name-specific parameter could memorise exists, and a held-out name is a code from the same
  distribution as a training name. (``--name-code-dim 0``: ``W_E[name] = name_mean + scale *
  r_name`` with a full-width random ``r_name``; ``--name-embedding learned``: ordinary trained
  rows. Both are comparison runs of the model card.) The saved checkpoint is a plain GPT-2 whose
  embedding rows are those sums.
* **Held-out names never occur in training at all** (not as IO or S, not in any other sentence);
  held-out templates never occur with an IOI answer (their ABC/BAC versions, without answer, do).
* **Generic copying.** Besides IOI sentences with their answer, the mix has ABC/BAC prompts
  without answer, copy sentences (one name, copied as the last word), distractor sentences and
  repeated random token strings (induction text), all with training names only.

Loss: next-token cross-entropy on every non-pad target plus ``--answer-weight`` times the mean
cross-entropy of the IOI answers. Every ``--eval-every`` steps the script measures IO > S and
the logit difference on fresh held-out-name and training-name prompts (``training_log.txt``)
and saves the checkpoint, so a cut-short run leaves a usable model.

Evaluation and the model card are written by ``scripts/eval_ioi_names.py``.

Usage::

    python scripts/train_ioi_names.py --out scrub/models/ioi_names
    python scripts/eval_ioi_names.py --out scrub/models/ioi_names
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
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
from scrub.data.ioi_toy import (
    COPY_TEMPLATES,
    DISTRACTOR_TEMPLATES,
    Vocab,
    make_word_ioi,
    render,
    split_words,
)

N_POSITIONS = 64
MIX = {"prefix": 0.0, "ioi": 0.7, "abc": 0.05, "copy": 0.05, "induction": 0.15}
"""Probabilities: a prefix sentence; then the main sentence kind (distractor: the rest)."""

_ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_ONSETS += ("br", "ch", "cl", "dr", "fl", "gr", "kr", "sh", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ia", "ou")
_CODAS = ("", "", "", "n", "l", "r", "s", "th", "m", "x")


def synthetic_names(n: int, rng: np.random.Generator, *, avoid: set[str]) -> list[str]:
    """``n`` distinct made-up names of two or three syllables, none in ``avoid``."""
    out: dict[str, None] = {}
    while len(out) < n:
        syllables = int(rng.integers(2, 4))
        word = "".join(
            _ONSETS[int(rng.integers(len(_ONSETS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
            for _ in range(syllables)
        )
        word = (word + _CODAS[int(rng.integers(len(_CODAS)))]).capitalize()
        if word not in avoid and split_words(word) == [word]:
            out[word] = None
    return list(out)


def make_config(vocab_size: int, args: argparse.Namespace) -> GPT2Config:
    """The GPT-2 config of the model (no dropout, tied embeddings, ``<bos>`` = 0, ``<pad>`` = 1)."""
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_POSITIONS,
        n_embd=args.d_model,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=args.d_mlp,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


class Sampler:
    """Draws training sequences (see the module docstring) from a numpy Generator."""

    def __init__(self, vocab: Vocab, rng: np.random.Generator, mix: dict[str, float]) -> None:
        self.vocab = vocab
        self.rng = rng
        self.mix = mix
        self.names = vocab.names("train")
        self.templates = vocab.templates("train")
        self.induction_pool = (*self.names, *PLACES, *OBJECTS)

    def _choice(self, items):
        return items[int(self.rng.integers(len(items)))]

    def _names(self, k: int) -> list[str]:
        idx = self.rng.choice(len(self.names), size=k, replace=False)
        return [self.names[int(i)] for i in idx]

    def _values(self, names: list[str]) -> dict[str, str]:
        values = dict(zip(("[A]", "[B]", "[C]"), names, strict=False))
        values["[PLACE]"] = self._choice(PLACES)
        values["[OBJECT]"] = self._choice(OBJECTS)
        return values

    def sentence(self, templates) -> list[str]:
        return render(self._choice(templates), self._values(self._names(3)))[0]

    def induction(self) -> list[str]:
        k = int(self.rng.integers(4, 11))
        words = [self._choice(self.induction_pool) for _ in range(k)]
        return [*words, *words]

    def sequence(self) -> tuple[list[int], int | None]:
        """One sequence's ids, and the index of its IOI answer (None if it has none)."""
        words = ["<bos>"]
        if self.rng.random() < self.mix["prefix"]:
            words += self.sentence((*DISTRACTOR_TEMPLATES, *COPY_TEMPLATES))
        u = self.rng.random()
        answer = None
        if u < self.mix["ioi"]:
            t = self._choice(self.templates)
            family = ABBA_TEMPLATES if self.rng.random() < 0.5 else BABA_TEMPLATES
            io, s = self._names(2)
            words += render(family[t], self._values([io, s]))[0]
            answer = len(words)
            words.append(io)
        elif (u := u - self.mix["ioi"]) < self.mix["abc"]:
            words += self.sentence(ABC_TEMPLATES if self.rng.random() < 0.5 else BAC_TEMPLATES)
        elif (u := u - self.mix["abc"]) < self.mix["copy"]:
            words += self.sentence(COPY_TEMPLATES)
        elif u - self.mix["copy"] < self.mix["induction"]:
            words += self.induction()
        else:
            words += self.sentence(DISTRACTOR_TEMPLATES)
        return self.vocab.encode(words[:N_POSITIONS]), answer

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


class NamesAsSymbols(torch.nn.Module):
    """A GPT-2 whose name embeddings are built from fixed random codes.

    ``code_dim == 0``: ``W_E[name] = name_mean + scale * r_name``, ``r_name ~ N(0, I / d_model)``
    fixed. ``code_dim = k > 0``: ``W_E[name] = name_mean + z_name @ M`` with a fixed code
    ``z_name ~ N(0, I_k)`` and a learned ``k × d_model`` map ``M`` shared by all names (the names
    live in a learned k-dimensional subspace, which one attention head can copy whole).
    ``frozen=False``: every embedding row is an ordinary trained parameter (a comparison run).
    """

    def __init__(
        self,
        cfg: GPT2Config,
        name_ids: torch.Tensor,
        *,
        seed: int,
        init_std: float,
        frozen: bool,
        code_dim: int = 0,
    ) -> None:
        super().__init__()
        self.model = build_model(cfg, seed, init_std)
        self.frozen = frozen
        self.code_dim = code_dim
        gen = torch.Generator().manual_seed(seed + 1)
        mask = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        mask[name_ids] = True
        width = code_dim or cfg.n_embd
        r = torch.zeros(cfg.vocab_size, width)
        r[name_ids] = torch.randn(len(name_ids), width, generator=gen)
        if not code_dim:
            r /= math.sqrt(cfg.n_embd)
        self.register_buffer("is_name", mask[:, None])
        self.register_buffer("r", r)
        self.name_mean = torch.nn.Parameter(torch.zeros(cfg.n_embd))
        self.log_scale = torch.nn.Parameter(
            torch.tensor(math.log(init_std * math.sqrt(cfg.n_embd)))
        )
        if code_dim:
            m = torch.randn(code_dim, cfg.n_embd, generator=gen) * init_std / math.sqrt(code_dim)
            self.code_map = torch.nn.Parameter(m)

    def embedding(self) -> torch.Tensor:
        """The (tied) embedding matrix, ``vocab d_model``."""
        wte = self.model.transformer.wte.weight
        if not self.frozen:
            return wte
        names = self.r @ self.code_map if self.code_dim else self.log_scale.exp() * self.r
        return torch.where(self.is_name, self.name_mean + names, wte)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits, ``batch pos vocab``."""
        w = self.embedding()
        hidden = self.model.transformer(inputs_embeds=w[tokens]).last_hidden_state
        return hidden @ w.T

    def losses(
        self, tokens: torch.Tensor, answers: torch.Tensor, pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token loss over non-pad targets, and mean loss of the IOI answers.

        Unembeds only the positions whose target is not padding (a third of a padded batch).
        """
        w = self.embedding()
        hidden = self.model.transformer(inputs_embeds=w[tokens]).last_hidden_state[:, :-1]
        targets = tokens[:, 1:]
        keep = targets != pad_id
        ce = F.cross_entropy(hidden[keep] @ w.T, targets[keep], reduction="none")
        lm = ce.mean()
        rows = torch.nonzero(answers >= 0)[:, 0]
        if not len(rows):
            return lm, ce.new_zeros(())
        # Index of each answer's target among the kept (non-pad) targets, row-major.
        flat = torch.cumsum(keep.flatten(), 0) - 1
        at = flat.view_as(keep)[rows, answers[rows] - 1]
        return lm, ce[at].mean()

    def export(self) -> GPT2LMHeadModel:
        """The plain GPT-2 (its embedding rows set to :meth:`embedding`)."""
        with torch.no_grad():
            self.model.transformer.wte.weight.copy_(self.embedding())
        return self.model


def build_model(cfg: GPT2Config, seed: int, init_std: float) -> GPT2LMHeadModel:
    """A fresh model, every weight matrix drawn from a seeded torch Generator."""
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


@torch.no_grad()
def quick_eval(net: NamesAsSymbols, vocab_path: Path, names: str, templates: str, n: int) -> dict:
    """IO > S fraction and logit difference (mean, std) on ``n`` fresh prompts (seed fixed)."""
    ds = make_word_ioi(
        rng=np.random.default_rng([777, len(names), len(templates)]),
        size=n,
        names=names,
        templates=templates,
        prompt_type="mixed",
        vocab=str(vocab_path),
        name="ioi_names",
        default_vocab=vocab_path,
    )
    logits = net(ds.tokens)
    rows = torch.arange(n)
    at_end = logits[rows, torch.as_tensor(ds.positions["END"][:, 0])]
    ld = (
        at_end[rows, torch.as_tensor(ds.fields["io"])]
        - at_end[rows, torch.as_tensor(ds.fields["s"])]
    )
    return {
        "io_above_s": (ld > 0).double().mean().item(),
        "ld": ld.mean().item(),
        "ld_std": ld.std().item(),
    }


def train(args: argparse.Namespace) -> None:
    """Trains the model, saving it, its vocabulary and a summary to ``args.out`` as it goes."""
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    base = Vocab.build()
    names = [*NAMES, *synthetic_names(args.synthetic_names, rng, avoid=set(base.tokens))]
    real_held = rng.choice(len(NAMES), size=args.heldout_real, replace=False)
    synth_held = len(NAMES) + rng.choice(
        args.synthetic_names, size=args.heldout_synthetic, replace=False
    )
    heldout = sorted(names[int(i)] for i in (*real_held, *synth_held))
    vocab = Vocab.build(
        heldout_names=heldout, heldout_templates=args.heldout_templates, names=names
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = out / "word_vocab.json"
    vocab.save(vocab_path)
    cfg = make_config(len(vocab), args)
    net = NamesAsSymbols(
        cfg,
        torch.as_tensor(vocab.ids(names)),
        seed=args.seed,
        init_std=args.init_std,
        frozen=args.name_embedding == "frozen",
        code_dim=args.name_code_dim,
    )
    net.train()
    decay = [p for n, p in net.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in net.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    mix = {**MIX, **json.loads(args.mix)}
    sampler = Sampler(vocab, rng, mix)
    n_params = sum(p.numel() for p in net.model.parameters())
    print(
        f"vocab {len(vocab)} ({len(names)} names, {len(heldout)} held out); parameters {n_params}",
        flush=True,
    )

    def summary(step: int, wall: float, evals: list) -> dict:
        return {
            "command": shlex.join(["python", "scripts/train_ioi_names.py", *sys.argv[1:]]),
            "args": vars(args),
            "steps_done": step,
            "mix": mix,
            "n_parameters": n_params,
            "n_names": len(names),
            "n_heldout_names": len(heldout),
            "wall_time_s": round(wall, 1),
            "torch_version": torch.__version__,
            "evals": evals,
        }

    start = time.time()
    window: list[tuple[float, float]] = []
    log: list[str] = []
    evals: list[dict] = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        tokens, answers = sampler.batch(args.batch_size)
        lm, answer = net.losses(tokens, answers, vocab.pad_id)
        loss = lm + args.answer_weight * answer
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        window.append((lm.item(), answer.item()))
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            lm_mean, ans_mean = np.mean(window, axis=0)
            line = (
                f"step {done:6d}  lr {opt.param_groups[0]['lr']:.2e}  lm loss {lm_mean:.4f}  "
                f"IOI answer loss {ans_mean:.4f}  ({time.time() - start:.0f}s)"
            )
            window = []
            if done % args.eval_every == 0 or done == args.steps:
                net.eval()
                held = quick_eval(net, vocab_path, "heldout", "train", args.eval_n)
                held_t = quick_eval(net, vocab_path, "heldout", "heldout", args.eval_n)
                train_n = quick_eval(net, vocab_path, "train", "train", args.eval_n)
                net.train()
                evals.append(
                    {"step": done, "heldout_names": held, "heldout_both": held_t, "train": train_n}
                )
                line += (
                    f"  | held-out names IO>S {held['io_above_s']:.3f} ld {held['ld']:.2f}"
                    f"  held-out names+templates {held_t['io_above_s']:.3f}"
                    f"  train names {train_n['io_above_s']:.3f} ld {train_n['ld']:.2f}"
                )
                save(net, out, [*log, line], summary(done, time.time() - start, evals))
            print(line, flush=True)
            log.append(line)
    save(net, out, log, summary(args.steps, time.time() - start, evals))
    print(f"saved to {out} after {time.time() - start:.0f}s", flush=True)


def save(net: NamesAsSymbols, out: Path, log: list[str], summary: dict) -> None:
    """Writes the plain GPT-2 checkpoint, the log and the summary (the vocabulary is saved once)."""
    model = net.export()
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    (out / "training_log.txt").write_text("\n".join(log) + "\n")
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    """Parses command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scrub/models/ioi_names", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--init-std", type=float, default=0.05)
    p.add_argument("--answer-weight", type=float, default=1.0)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--d-mlp", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--name-embedding", choices=("frozen", "learned"), default="frozen")
    p.add_argument("--name-code-dim", type=int, default=16, help="0: full-width random names")
    p.add_argument("--mix", default="{}", help='JSON overrides of MIX, e.g. {"ioi": 0.7}')
    p.add_argument("--synthetic-names", type=int, default=700)
    p.add_argument("--heldout-real", type=int, default=30, help="IOI names held out")
    p.add_argument("--heldout-synthetic", type=int, default=120, help="made-up names held out")
    p.add_argument(
        "--heldout-templates", type=int, nargs="*", default=[9, 14], help="BABA template indices"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the split, init and data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-n", type=int, default=200, help="prompts per in-training eval")
    return p.parse_args()


if __name__ == "__main__":
    train(parse_args())
