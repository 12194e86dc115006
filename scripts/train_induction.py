"""Train and evaluate the 2-layer attention-only induction model shipped with scrub.

The model is a tiny Hugging Face ``GPT2LMHeadModel`` (vocabulary 128, context 64,
width 64, 2 layers, 4 heads per layer) whose MLPs are zeroed and frozen, so it is
attention-only. It is trained to predict the next token on synthetic sequences
that contain repeated segments, which is the setting in which a previous-token
head (layer 0) and an induction head (layer 1) form.

Training data
-------------
Every sequence has length 64. Position 0 is the BOS token (id 0); every other
position holds a content token drawn uniformly from ``[1, 128)``. Then:

* 60% of sequences get one repeated segment: a segment of random length
  ``L ~ U[4, 24]`` starting at a random position ``s1`` is copied to a random
  later position ``s2 >= s1 + L`` (so the copies never overlap and the gap
  ``s2 - s1 - L`` between them is random, possibly zero);
* 30% try to get two such segments (all four intervals disjoint, so the second
  segment may sit before, between or after the copies of the first); when the
  first segment is long there may be no room for a second, which is then
  dropped, so in practice about 22% have two and 68% one;
* 10% have no repeat at all.

The loss is next-token cross-entropy on all positions. Only the tokens inside a
second occurrence (after its first token) are predictable; everything else is
uniform noise with irreducible loss ``log(127) ~= 4.84`` nats.

Why offsets are randomised: with learned absolute position embeddings and a
fixed layout (say, the copy always 13 positions after the original), a 2-layer
model can solve the task with a *positional* shortcut -- a layer-1 head that
attends to "13 positions back, plus one" -- without any previous-token /
induction circuit. Randomising segment length, start and gap makes the only
general solution the content-based one: layer 0 writes "my previous token was
x" into each position, and layer 1 attends from a token x to the position whose
previous token was x, then copies what it finds there.

Evaluation
----------
``--eval-only`` loads the saved checkpoint (offline) and measures, on held-out
sequences in two layouts:

* the *scrub evaluation layout* used by the library's dataset:
  ``[BOS] + prefix(3) + A(10) + gap(3) + A + suffix(2)`` (length 29);
* random-offset sequences drawn like the training data (with a different seed).

It reports per-head scores computed from TransformerLens's
``blocks.{L}.attn.hook_pattern`` (the checkpoint is loaded with
``TransformerBridge.boot_transformers``), losses on repeated / non-repeated
tokens, the max |difference| between the TransformerLens and Hugging Face
log-softmax outputs, and whether every MLP parameter is exactly zero. Results
go to ``eval_results.json`` and ``MODEL_CARD.md`` in the checkpoint directory.

Training notes
--------------
Two choices mattered in practice. (1) Initialisation: GPT-2's usual weight std
of 0.02 leaves layer 1's attention uniform for thousands of steps in a model this
narrow, so weight matrices start with std 0.1 (``--init-std``). (2) Batch size:
with batch 64 runs plateaued at a repeated-token loss of 1-1.8 nats, with
previous-token attention learned for only some positions (seed-dependent); with
batch 128 the circuit formed cleanly within about 2k steps.

Usage::

    python scripts/train_induction.py --out scrub/models/induction --steps 10000
    python scripts/train_induction.py --out scrub/models/induction --eval-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB_SIZE = 128
SEQ_LEN = 64
BOS = 0
MIN_SEG_LEN = 4
MAX_SEG_LEN = 24
P_NO_REPEAT = 0.1
P_TWO_REPEATS = 0.3

# Scrub evaluation layout: [BOS] + prefix + A + gap + A + suffix.
EVAL_PREFIX_LEN = 3
EVAL_SEG_LEN = 10
EVAL_GAP_LEN = 3
EVAL_SUFFIX_LEN = 2


@dataclass
class Batch:
    """A batch of token sequences plus the location of their repeated segments.

    Attributes:
        tokens: ``int64`` array of shape ``(batch, seq_len)``.
        segments: For each sequence, a list of ``(s1, s2, length)`` triples: the
            segment ``tokens[s1:s1+length]`` is repeated at ``tokens[s2:s2+length]``.
        predictable: Boolean array of shape ``(batch, seq_len)``; True at query
            positions ``t`` whose target ``tokens[t+1]`` is determined by an
            earlier occurrence, i.e. ``t in [s2, s2 + length - 2]``.
    """

    tokens: np.ndarray
    segments: list[list[tuple[int, int, int]]]
    predictable: np.ndarray


def make_config() -> GPT2Config:
    """Returns the GPT-2 config of the induction model."""
    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=SEQ_LEN,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=16,
        bos_token_id=BOS,
        eos_token_id=BOS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def _predictable_mask(segments: list[list[tuple[int, int, int]]], seq_len: int) -> np.ndarray:
    """Builds the mask of query positions whose next token is predictable.

    Args:
        segments: Per-sequence lists of ``(s1, s2, length)``.
        seq_len: Sequence length.

    Returns:
        Boolean array of shape ``(len(segments), seq_len)``.
    """
    mask = np.zeros((len(segments), seq_len), dtype=bool)
    for b, segs in enumerate(segments):
        for _, s2, length in segs:
            mask[b, s2 : s2 + length - 1] = True
    return mask


def _place_segment(
    rng: np.random.Generator, occupied: np.ndarray, seq_len: int, max_tries: int = 100
) -> tuple[int, int, int] | None:
    """Samples a segment and a later, non-overlapping copy avoiding ``occupied``.

    Args:
        rng: Source of randomness.
        occupied: Boolean array of positions already used by other segments;
            updated in place on success.
        seq_len: Sequence length.
        max_tries: Rejection-sampling budget.

    Returns:
        ``(s1, s2, length)``, or None if no placement was found.
    """
    for _ in range(max_tries):
        length = int(rng.integers(MIN_SEG_LEN, MAX_SEG_LEN + 1))
        if 1 + 2 * length > seq_len:
            continue
        s1 = int(rng.integers(1, seq_len - 2 * length + 1))  # leaves room for the copy
        s2 = int(rng.integers(s1 + length, seq_len - length + 1))  # random gap >= 0
        if occupied[s1 : s1 + length].any() or occupied[s2 : s2 + length].any():
            continue
        occupied[s1 : s1 + length] = True
        occupied[s2 : s2 + length] = True
        return s1, s2, length
    return None


def sample_training_batch(
    rng: np.random.Generator, batch_size: int, seq_len: int = SEQ_LEN
) -> Batch:
    """Samples random-offset sequences like the training data.

    Args:
        rng: Source of randomness.
        batch_size: Number of sequences.
        seq_len: Sequence length (including BOS).

    Returns:
        The sampled batch.
    """
    tokens = rng.integers(1, VOCAB_SIZE, size=(batch_size, seq_len), dtype=np.int64)
    tokens[:, 0] = BOS
    segments: list[list[tuple[int, int, int]]] = []
    for b in range(batch_size):
        u = rng.random()
        n_segments = 0 if u < P_NO_REPEAT else (2 if u < P_NO_REPEAT + P_TWO_REPEATS else 1)
        occupied = np.zeros(seq_len, dtype=bool)
        segs = []
        for _ in range(n_segments):
            seg = _place_segment(rng, occupied, seq_len)
            if seg is None:
                break
            s1, s2, length = seg
            tokens[b, s2 : s2 + length] = tokens[b, s1 : s1 + length]
            segs.append(seg)
        segments.append(segs)
    return Batch(tokens, segments, _predictable_mask(segments, seq_len))


def sample_scrub_layout_batch(rng: np.random.Generator, batch_size: int) -> Batch:
    """Samples sequences in the scrub evaluation layout.

    The layout is ``[BOS] + prefix(3) + A(10) + gap(3) + A + suffix(2)``, length 29,
    with every non-BOS token uniform in ``[1, VOCAB_SIZE)``.

    Args:
        rng: Source of randomness.
        batch_size: Number of sequences.

    Returns:
        The sampled batch (each sequence has the single segment ``(4, 17, 10)``).
    """
    seq_len = 1 + EVAL_PREFIX_LEN + 2 * EVAL_SEG_LEN + EVAL_GAP_LEN + EVAL_SUFFIX_LEN
    s1 = 1 + EVAL_PREFIX_LEN
    s2 = s1 + EVAL_SEG_LEN + EVAL_GAP_LEN
    tokens = rng.integers(1, VOCAB_SIZE, size=(batch_size, seq_len), dtype=np.int64)
    tokens[:, 0] = BOS
    tokens[:, s2 : s2 + EVAL_SEG_LEN] = tokens[:, s1 : s1 + EVAL_SEG_LEN]
    segments = [[(s1, s2, EVAL_SEG_LEN)] for _ in range(batch_size)]
    return Batch(tokens, segments, _predictable_mask(segments, seq_len))


def mlp_parameters(model: GPT2LMHeadModel) -> dict[str, torch.nn.Parameter]:
    """Returns every MLP weight and bias, keyed by name."""
    return {n: p for n, p in model.named_parameters() if ".mlp." in n}


def build_model(seed: int, init_std: float) -> GPT2LMHeadModel:
    """Builds the model with zeroed, frozen MLPs.

    Args:
        seed: Seed for the weight initialisation (a local ``torch.Generator``).
        init_std: Standard deviation of the Gaussian init of every weight matrix
            (residual-stream output projections are further scaled by
            ``1 / sqrt(2 * n_layer)``, as in GPT-2).

    Returns:
        The freshly initialised, attention-only model.
    """
    model = GPT2LMHeadModel(make_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Re-draw the weights from our own generator. GPT-2's default std of 0.02
        # is too small for a 64-wide model: the attention scores start near 0 and
        # layer 1's QK circuit sits on a saddle (uniform attention) for thousands
        # of steps, so we use a larger, width-appropriate std.
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.ndim == 2:
                std = (
                    init_std / math.sqrt(2 * model.config.n_layer) if "c_proj" in name else init_std
                )
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        for p in mlp_parameters(model).values():
            p.zero_()
            p.requires_grad_(False)
    return model


def loss_breakdown(
    logits: torch.Tensor, tokens: torch.Tensor, predictable: torch.Tensor
) -> dict[str, float]:
    """Splits next-token loss into repeated (predictable) and non-repeated tokens.

    Args:
        logits: ``(batch, seq, vocab)`` logits.
        tokens: ``(batch, seq)`` input ids.
        predictable: ``(batch, seq)`` mask of predictable query positions.

    Returns:
        Mean losses (nats) and token counts for the two groups and overall.
    """
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    pred = predictable[:, :-1].flatten()
    return {
        "loss_repeated": ce[pred].mean().item(),
        "loss_non_repeated": ce[~pred].mean().item(),
        "loss_overall": ce.mean().item(),
        "n_repeated": int(pred.sum()),
        "n_non_repeated": int((~pred).sum()),
    }


def repeated_loss_detail(logits: torch.Tensor, batch: Batch) -> dict:
    """Breaks the repeated-token loss down by offset in the copy and by distance.

    Args:
        logits: ``(batch, seq, vocab)`` logits.
        batch: The batch the logits were computed on.

    Returns:
        ``loss_by_j``: mean loss of the prediction made at ``s2 + j`` (of ``A[j+1]``),
        for each ``j``; ``loss_repeated_j0`` / ``loss_repeated_j_ge_1``: the first
        prediction in a copy (which only has a single-token match to go on) versus
        the rest; ``loss_by_distance``: mean loss binned by ``s2 - s1``.
    """
    tokens = torch.from_numpy(batch.tokens)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    rows = []  # (loss, j, distance)
    for b, segs in enumerate(batch.segments):
        for s1, s2, length in segs:
            for j in range(length - 1):
                rows.append((ce[b, s2 + j].item(), j, s2 - s1))
    arr = np.array(rows)
    by_j = {int(j): float(arr[arr[:, 1] == j, 0].mean()) for j in np.unique(arr[:, 1])}
    bins = [(4, 10), (10, 14), (14, 20), (20, 30), (30, SEQ_LEN)]
    by_d = {}
    for lo, hi in bins:
        sel = (arr[:, 2] >= lo) & (arr[:, 2] < hi)
        if sel.any():
            by_d[f"{lo}-{hi - 1}"] = {"loss": float(arr[sel, 0].mean()), "n": int(sel.sum())}
    return {
        "loss_by_j": by_j,
        "loss_repeated_j0": float(arr[arr[:, 1] == 0, 0].mean()),
        "loss_repeated_j_ge_1": float(arr[arr[:, 1] >= 1, 0].mean()),
        "loss_by_distance": by_d,
    }


def lr_at(step: int, total: int, peak: float, warmup: int, final_frac: float = 0.1) -> float:
    """Linear warmup then cosine decay to ``final_frac * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace) -> None:
    """Trains the model and saves it to ``args.out``.

    Args:
        args: Parsed command-line arguments.
    """
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = build_model(args.seed, args.init_std)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"trainable parameters: {n_trainable}; steps={args.steps} batch={args.batch_size} lr={args.lr}"
    )

    start = time.time()
    window: list[dict[str, float]] = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        batch = sample_training_batch(rng, args.batch_size)
        tokens = torch.from_numpy(batch.tokens)
        logits = model(tokens).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            window.append(loss_breakdown(logits, tokens, torch.from_numpy(batch.predictable)))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            rep = np.mean([w["loss_repeated"] for w in window])
            non = np.mean([w["loss_non_repeated"] for w in window])
            tot = np.mean([w["loss_overall"] for w in window])
            print(
                f"step {step + 1:6d}  lr {opt.param_groups[0]['lr']:.2e}  loss {tot:.4f}  "
                f"repeated {rep:.4f}  non-repeated {non:.4f}  ({time.time() - start:.0f}s)",
                flush=True,
            )
            window = []
    wall = time.time() - start

    for name, p in mlp_parameters(model).items():
        if torch.count_nonzero(p) != 0:
            raise RuntimeError(f"MLP parameter {name} is no longer zero")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    summary = {
        "command": " ".join(["python", "scripts/train_induction.py", *sys.argv[1:]]),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "peak_lr": args.lr,
        "warmup_steps": args.warmup,
        "weight_decay": args.weight_decay,
        "init_std": args.init_std,
        "seed": args.seed,
        "threads": args.threads,
        "wall_time_s": round(wall, 1),
        "torch_version": torch.__version__,
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved to {out} after {wall:.0f}s")


def _head_scores(patterns: list[torch.Tensor], batch: Batch) -> dict[str, list[list[float]]]:
    """Computes previous-token (layer 0) and induction-stripe (layer 1) scores.

    Args:
        patterns: Attention patterns per layer, each ``(batch, head, query, key)``.
        batch: The batch the patterns were computed on.

    Returns:
        Per-layer lists of per-head scores:
        ``prev_token`` (every layer): mean attention from ``t`` to ``t-1`` over ``t >= 1``;
        ``induction`` (every layer): mean attention from ``s2+j`` to ``s1+j+1`` for
        ``j in [0, L-2]`` (the predictable positions);
        ``induction_all`` (every layer): the same with ``j in [0, L-1]`` (also the
        last token of the copy, whose key is the token after the first occurrence).
    """
    tokens_len = batch.tokens.shape[1]
    t = torch.arange(1, tokens_len)
    q_pred, k_pred, b_pred, q_all, k_all, b_all = [], [], [], [], [], []
    for b, segs in enumerate(batch.segments):
        for s1, s2, length in segs:
            for j in range(length):
                q_all.append(s2 + j)
                k_all.append(s1 + j + 1)
                b_all.append(b)
                if j <= length - 2:
                    q_pred.append(s2 + j)
                    k_pred.append(s1 + j + 1)
                    b_pred.append(b)
    scores: dict[str, list[list[float]]] = {"prev_token": [], "induction": [], "induction_all": []}
    for pat in patterns:
        scores["prev_token"].append(pat[:, :, t, t - 1].mean(dim=(0, 2)).tolist())
        scores["induction"].append(pat[b_pred, :, q_pred, k_pred].mean(dim=0).tolist())
        scores["induction_all"].append(pat[b_all, :, q_all, k_all].mean(dim=0).tolist())
    return scores


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
    mlp_max = max(p.abs().max().item() for p in mlp_parameters(hf).values())
    mlp_all_zero = all(torch.count_nonzero(p).item() == 0 for p in mlp_parameters(hf).values())

    bridge = TransformerBridge.boot_transformers(str(out), device="cpu")
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()

    n_layers = hf.config.n_layer
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    rng = np.random.default_rng(args.eval_seed)  # held out: training uses --seed
    samplers = {
        "scrub_layout": lambda n: sample_scrub_layout_batch(rng, n),
        "random_offsets": lambda n: sample_training_batch(rng, n),
    }
    results: dict = {
        "n_sequences": args.eval_sequences,
        "eval_seed": args.eval_seed,
        "mlp_params_all_exactly_zero": mlp_all_zero,
        "mlp_params_max_abs": mlp_max,
    }
    for name, sample in samplers.items():
        batch = sample(args.eval_sequences)
        tokens = torch.from_numpy(batch.tokens)
        with torch.no_grad():
            hf_logits = hf(tokens).logits
            tl_logits, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in hooks)
        diff = (hf_logits.log_softmax(-1) - tl_logits.log_softmax(-1)).abs().max().item()
        patterns = [cache[h] for h in hooks]
        assert patterns[0].shape == (
            len(tokens),
            hf.config.n_head,
            tokens.shape[1],
            tokens.shape[1],
        )
        res: dict[str, Any] = dict(
            loss_breakdown(tl_logits, tokens, torch.from_numpy(batch.predictable))
        )
        res["hf_loss_repeated"] = loss_breakdown(
            hf_logits, tokens, torch.from_numpy(batch.predictable)
        )["loss_repeated"]
        res.update(repeated_loss_detail(tl_logits, batch))
        res["max_abs_logprob_diff_tl_vs_hf"] = diff
        n_segs = np.array([len(segs) for segs in batch.segments])
        res["fraction_with_n_repeats"] = {str(k): float((n_segs == k).mean()) for k in range(3)}
        res["seq_len"] = int(tokens.shape[1])
        res.update(_head_scores(patterns, batch))
        results[name] = res
        print(f"\n== {name} (n={len(tokens)}, len={tokens.shape[1]}) ==")
        print(
            f"loss repeated {res['loss_repeated']:.4f}  non-repeated {res['loss_non_repeated']:.4f}  "
            f"overall {res['loss_overall']:.4f}  |TL-HF| logprob {diff:.2e}"
        )
        print(
            f"repeated, first prediction in copy (j=0) {res['loss_repeated_j0']:.4f}, "
            f"later (j>=1) {res['loss_repeated_j_ge_1']:.4f}"
        )
        for layer in range(n_layers):
            for key in ("prev_token", "induction", "induction_all"):
                vals = "  ".join(f"{v:.3f}" for v in res[key][layer])
                print(f"layer {layer} {key:14s} {vals}")
    print(f"\nMLP params all exactly zero: {mlp_all_zero} (max |w| = {mlp_max})")
    if not mlp_all_zero:
        raise RuntimeError("MLP parameters are not exactly zero")
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_model_card(out, results, args)
    return results


def _classify(
    results: dict, layer: int, key: str, clear: float = 0.5, weak: float = 0.2
) -> tuple[list, list]:
    """Splits one layer's heads by a score into clear and partial ones.

    Args:
        results: Output of :func:`evaluate`.
        layer: Layer index.
        key: Score name (``"prev_token"`` or ``"induction"``).
        clear: A head is *clear* if its score is at least this on both layouts.
        weak: A head that is not clear is *partial* if its score reaches this on
            at least one layout.

    Returns:
        ``(clear_heads, partial_heads)``, lists of head indices.
    """
    layouts = ("scrub_layout", "random_offsets")
    n_heads = len(results[layouts[0]][key][layer])
    scores = [[results[lay][key][layer][h] for lay in layouts] for h in range(n_heads)]
    clear_heads = [h for h in range(n_heads) if min(scores[h]) >= clear]
    partial = [h for h in range(n_heads) if h not in clear_heads and max(scores[h]) >= weak]
    return clear_heads, partial


def write_model_card(out: Path, results: dict, args: argparse.Namespace) -> None:
    """Renders MODEL_CARD.md from the measured results and the training summary.

    Args:
        out: Checkpoint directory.
        results: Output of :func:`evaluate`.
        args: Parsed command-line arguments.
    """
    summary_path = out / "training_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    cfg = make_config()
    prev, prev_partial = _classify(results, 0, "prev_token")
    ind, ind_partial = _classify(results, 1, "induction")
    fmt = lambda v: f"{v:.3f}"  # noqa: E731

    def head_table(layout: str) -> str:
        res = results[layout]
        rows = [
            "| head | L0 prev-token | L1 prev-token | L0 induction | L1 induction | L1 induction (incl. last) |",
            "|---|---|---|---|---|---|",
        ]
        for h in range(cfg.n_head):
            rows.append(
                f"| {h} | {fmt(res['prev_token'][0][h])} | {fmt(res['prev_token'][1][h])} | "
                f"{fmt(res['induction'][0][h])} | {fmt(res['induction'][1][h])} | "
                f"{fmt(res['induction_all'][1][h])} |"
            )
        return "\n".join(rows)

    def loss_row(layout: str) -> str:
        r = results[layout]
        return (
            f"| {layout} ({r['seq_len']} tokens) | {r['loss_repeated']:.4f} ({r['n_repeated']}) | "
            f"{r['loss_repeated_j0']:.4f} | {r['loss_repeated_j_ge_1']:.4f} | "
            f"{r['loss_non_repeated']:.4f} ({r['n_non_repeated']}) | {r['loss_overall']:.4f} | "
            f"{r['max_abs_logprob_diff_tl_vs_hf']:.2e} |"
        )

    by_j = results["scrub_layout"]["loss_by_j"]
    j_header = "| j | " + " | ".join(str(j) for j in by_j) + " |"
    j_rule = "|---|" + "---|" * len(by_j)
    j_row = "| loss | " + " | ".join(f"{v:.3f}" for v in by_j.values()) + " |"
    dist_rows = "\n".join(
        f"| {k} | {v['loss']:.3f} | {v['n']} |"
        for k, v in results["random_offsets"]["loss_by_distance"].items()
    )

    files = ", ".join(
        f"`{f.name}`"
        + (f" ({f.stat().st_size / 1024:.0f} KB)" if f.suffix == ".safetensors" else "")
        for f in sorted(out.iterdir())
        if f.is_file()
    )
    notes = f" Note: {summary['notes']}" if summary.get("notes") else ""
    heads = lambda hs, layer: ", ".join(f"L{layer}H{h}" for h in hs) or "none"  # noqa: E731
    wall = summary.get("wall_time_s")
    card = f"""# scrub induction model (2-layer, attention-only)

A tiny GPT-2-format language model trained on synthetic repeated-segment data so
that it implements the textbook induction circuit: a **previous-token head** in
layer 0 and **induction heads** in layer 1. It is shipped with `scrub` as a
fixture for causal-scrubbing experiments. Files: {files}.

This file is generated by `scripts/train_induction.py --eval-only` from
`training_summary.json` and the evaluation it runs; every number in it was measured
by that script (the exploratory-run figures under Training come from earlier runs
of the same script with other settings).

## Architecture

`transformers.GPT2LMHeadModel(GPT2Config(vocab_size={cfg.vocab_size}, n_positions={cfg.n_positions},
n_embd={cfg.n_embd}, n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_inner={cfg.n_inner}, bos_token_id=0,
eos_token_id=0, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))`; learned absolute
positions, tied input/output embeddings, head dimension {cfg.n_embd // cfg.n_head}.

**Attention-only:** every MLP weight and bias (`transformer.h.*.mlp.*`) was set to
exactly zero before training and frozen, so each MLP outputs exactly 0 (GELU(0) = 0).
Checked on the saved checkpoint: all MLP parameters exactly zero =
**{results["mlp_params_all_exactly_zero"]}** (max |w| = {results["mlp_params_max_abs"]}).
(The `ln_2` LayerNorms feed only the MLPs, so they have no effect.)

Tokens: id 0 is BOS and is always at position 0; content tokens are ids 1..127.
There is no tokenizer; feed token ids directly.

## Training data

Length-64 sequences: BOS, then uniform random tokens in [1, 128). A sequence gets
one repeated segment (probability {1 - P_NO_REPEAT - P_TWO_REPEATS:.1f}), an attempt at two ({P_TWO_REPEATS:.1f}) or none ({P_NO_REPEAT:.1f}).
Each segment has random length L ~ U[{MIN_SEG_LEN}, {MAX_SEG_LEN}] and is copied from a random start to
a random later, non-overlapping start (random gap, possibly 0); with two segments
all four copies are disjoint, and the second is dropped if it does not fit. In the
{results["n_sequences"]} held-out random-offset eval sequences the fractions with 0 / 1 / 2 repeats were
{" / ".join(f"{v:.3f}" for v in results["random_offsets"]["fraction_with_n_repeats"].values())}.
Loss: next-token cross-entropy on all positions.

Offsets, lengths and gaps are randomised because with learned absolute positions
and a fixed layout a 2-layer model learns a positional shortcut ("attend k
positions back") instead of a content-based induction circuit.

## Training

- Command: `{summary.get("command", "n/a")}`
- Steps: {summary.get("steps", "n/a")}, batch {summary.get("batch_size", "n/a")}, AdamW (betas 0.9/0.98,
  weight decay {summary.get("weight_decay", "n/a")} on matrices), peak lr {summary.get("peak_lr", "n/a")} with
  {summary.get("warmup_steps", "n/a")} warmup steps then cosine decay to 10%, grad-norm clip 1.0, seed {summary.get("seed", "n/a")}.
- Init: weight matrices N(0, {summary.get("init_std", "n/a")}^2) (output projections further scaled by
  1/sqrt(2 n_layer)), biases 0, LayerNorm gains 1. GPT-2's usual std of 0.02 left layer 1's
  attention uniform (a saddle) for thousands of steps in this 64-wide model.
- Batch size mattered: in exploratory runs with batch 64 (same init and lr, 8k-12k
  steps, seeds 0/2/3/4) the training repeated-token loss plateaued between 1.0 and
  1.8 nats and previous-token attention was learned for only some positions; with
  batch 128 the circuit formed within about 2k steps (seeds 0, 1 and 2 all did).
- Wall time: {f"{wall:.0f} s ({wall / 60:.1f} min)" if wall is not None else "n/a"} with {summary.get("threads", "n/a")} torch CPU thread(s) (torch {summary.get("torch_version", "n/a")}).{notes}

## Evaluation

Reproduce with:

```
python scripts/train_induction.py --out {args.out} --eval-only
```

{results["n_sequences"]} held-out sequences per layout (numpy seed {results["eval_seed"]}; training used seed
{summary.get("seed", "n/a")}). The checkpoint is loaded offline with
`TransformerBridge.boot_transformers(dir, device="cpu")` +
`enable_compatibility_mode(disable_warnings=True)`; attention scores come from its
`blocks.{{L}}.attn.hook_pattern` cache (batch, head, query, key).

Layouts:

- **scrub_layout** (the library's evaluation layout): `[BOS] + prefix(3) + A(10) + gap(3) + A + suffix(2)`,
  29 tokens; A at positions 4..13 and again at 17..26.
- **random_offsets**: sequences drawn like the training data (64 tokens).

Scores:

- *prev-token*: mean attention from position t to t-1, over all t >= 1.
- *induction*: mean attention from a second-occurrence token at s2+j to s1+j+1
  (the token after the earlier occurrence), for j = 0..L-2 (the predictable positions).
  *induction (incl. last)* also includes j = L-1.

### Losses (nats; token counts in parentheses)

Repeated = predictions made at positions s2..s2+L-2 (predicting A[1..L-1] in the
second copy). Non-repeated = every other prediction (filler, the first copy, the
prediction of A[0] at s2-1 and of the token after the second copy); these are
unpredictable and their floor is log(127) = {math.log(127):.3f}. Losses use the
TransformerLens logits; `eval_results.json` also has `hf_loss_repeated` from the
Hugging Face model.

| layout | repeated | repeated, j=0 | repeated, j>=1 | non-repeated | overall | max abs logprob diff TL vs HF |
|---|---|---|---|---|---|---|
{loss_row("scrub_layout")}
{loss_row("random_offsets")}

The first prediction in a copy (j=0: at s2, predicting A[1]) is much worse than the
rest. A likely reason (not separately tested): at that point only one token matches
the earlier occurrence, and in the training data a one-token match is often a
coincidence (127 content tokens, up to 63 positions), so the model hedges; from
j=1 on the preceding token matches as well. Per-j loss on the scrub layout
(prediction made at s2+j, of A[j+1]):

{j_header}
{j_rule}
{j_row}

Repeated-token loss on random-offset sequences by distance s2 - s1 between the copies
(the loss is higher when the copies are close together; the scrub layout has
s2 - s1 = 13):

| s2 - s1 | repeated loss | tokens |
|---|---|---|
{dist_rows}

### Head scores, scrub layout

{head_table("scrub_layout")}

### Head scores, random-offset layout

{head_table("random_offsets")}

### Circuit

A head is listed as clear if its score is >= 0.5 on both layouts, and as partial
if it is not clear but reaches 0.2 on at least one layout.

- Previous-token head(s) in layer 0: **{heads(prev, 0)}**; partial: {heads(prev_partial, 0)}.
- Induction head(s) in layer 1: **{heads(ind, 1)}**; partial: {heads(ind_partial, 1)}.
"""
    (out / "MODEL_CARD.md").write_text(card)
    print(f"wrote {out / 'MODEL_CARD.md'}")


def parse_args() -> argparse.Namespace:
    """Parses command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="scrub/models/induction", help="checkpoint directory")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--init-std", type=float, default=0.1, help="std of the weight-matrix init")
    p.add_argument("--seed", type=int, default=0, help="seed for init and training data")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed for held-out eval data")
    p.add_argument("--eval-sequences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
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
