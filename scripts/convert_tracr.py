"""Compile causal RASP programs with Tracr and convert each into a GPT-2 checkpoint scrub loads.

Tracr (DeepMind's RASP compiler; ``pip install -e '.[tracr]'``: tracr-pypi, jax, dm-haiku)
builds transformers whose circuits are known by construction. This script compiles the programs
of :data:`PROGRAMS` (causal ones only: a causal GPT-2 cannot run a program that reads later
tokens), converts each into a Hugging Face ``GPT2LMHeadModel`` and writes it, with its
``tracr.json`` (vocabulary, output ids, the program, examples evaluated by RASP itself) and a
model card, to ``scrub/models/tracr_<name>/``:

    python scripts/convert_tracr.py            # all programs
    python scripts/convert_tracr.py --check    # recompile and compare with the shipped files

The conversion (``convert``):

- **residual**: Tracr's residual basis (one dimension per RASP value, e.g. ``tokens:a``,
  ``indices:3``, ``one``), plus one *balancing* dimension that every writer (embeddings,
  attention and MLP outputs) sets to minus the sum of what it writes elsewhere, so the residual
  stream always has mean zero; padded with zeros to a multiple of the head count.
- **LayerNorm**: compiled models have none, GPT-2 has one before each block and the unembedding.
  With mean zero and epsilon 2^40, weight 2^20, bias 0, ``LN(x) = x * 2^20 / sqrt(var + 2^40)``,
  which in float32 is exactly ``x`` while ``var < 2^16`` (Tracr's residuals hold values in
  [0, max_seq_len]); scrub can also load the checkpoint with ``layernorm: identity``.
- **attention**: GPT-2 scales scores by ``1/sqrt(d_head)``, Tracr by ``1/sqrt(key_size)``; the
  query weights are multiplied by ``sqrt(d_head / key_size)`` and q/k/v padded with zeros.
  Biases are zero in Tracr and stay zero. MLPs are ReLU (``activation_function: relu``).
- **unembedding** (untied from the embedding): a categorical output writes ``SCALE`` into the
  logit of its value's output id (the input id for programs whose outputs are input tokens, the
  value itself for counts); a numerical output writes ``SCALE * value`` into logit 1.

Each conversion is verified before it is written: on random inputs the Hugging Face model's
final residual equals Tracr's on Tracr's dimensions (max difference recorded in ``tracr.json``),
and its argmax (categorical) or logit 1 / SCALE (numerical) equals the program's output as RASP
evaluates it (``tracr.rasp.causal_eval``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = ("a", "b", "c", "x")
MAX_SEQ_LEN = 10
BOS = "BOS"
SCALE = 10.0
LN_EPS = 2.0**40
LN_WEIGHT = 2.0**20


def _programs() -> dict[str, dict[str, Any]]:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return {
        "prev_token": {
            "program": lib.shift_by(1, rasp.tokens).named("prev_token"),
            "source": "shift_by(1, tokens)  # Aggregate(Select(indices, indices, q == k + 1), tokens)",
            "what": "the previous token (a causal shift by one)",
            "first": 2,
            "circuit": [
                "`a0.h0` attends from position i to position i - 1: its query reads `indices` "
                "(the position embedding) and `one` (token embedding), its key `indices` and "
                "`tokens:BOS` (so a query with nothing to select attends to BOS); its value reads "
                "`tokens` (token embedding) and it writes `prev_token:*`, the only dimensions the "
                "logits read.",
                "`m0` is empty (all weights zero).",
                "Circuit: `embed` -(q, k)-> `a0.h0` <-(v)- `tok_embed`; `a0.h0` -> `logits`.",
            ],  # position 1 has no previous token (RASP: None)
        },
        "frac_x": {
            "program": lib.make_frac_prevs(rasp.tokens == "x").named("frac_x"),
            "source": 'make_frac_prevs(tokens == "x")  # numerical Aggregate(Select(indices, '
            "indices, LEQ), numerical(Map(tokens == x)))",
            "what": "the fraction of the tokens so far (this one included) that are x",
            "first": 1,
            "circuit": [
                "`m0` reads `tokens` (token embedding) and writes `is_x` (a numerical Map: 1 for "
                "x, else 0).",
                "`a0.h0` and `m1` are empty (all weights zero).",
                "`a1.h0` attends uniformly to every position so far: its query reads `indices` "
                "and `one`, its key `indices` and `tokens:BOS`; its value reads only `is_x` "
                "(m0's output), and it writes `frac_x`, which the unembedding puts into logit 1.",
                "Circuit: `tok_embed` -> `m0` -(v)-> `a1.h0` <-(q, k)- `embed`; `a1.h0` -> "
                "`logits`. The tokens matter only through where the x's are.",
            ],
        },
        "hist": {
            "program": lib.make_hist().named("hist"),
            "source": "make_hist()  # SelectorWidth(Select(tokens, tokens, EQ)), causal",
            "what": "how many tokens so far (this one included) equal this one",
            "first": 1,
            "circuit": [
                "`a0.h0` (SelectorWidth's attention) attends from each token to the equal tokens "
                "so far and to BOS: its query reads `tokens` and `one`, its key `tokens` "
                "(BOS included), its value `tokens:BOS`; it writes 1 / (count + 1) into one "
                "dimension.",
                "`m0` decodes that into the count: it reads the attention output, `one` and "
                "`tokens`, writes the one-hot count `hist:*` (and clears the attention output).",
                "Positions play no part (the causal mask alone makes it causal).",
                "Circuit: `tok_embed` -(q, k, v)-> `a0.h0` -> `m0` <- `tok_embed`; `m0` -> "
                "`logits`. The tokens matter only through which of them are equal.",
            ],
        },
    }


def _np(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def convert(assembled: Any, *, numerical: bool, label: str) -> tuple[Any, dict[str, Any]]:
    """A ``GPT2LMHeadModel`` computing what ``assembled`` (a Tracr model) computes.

    Returns:
        The model and the id maps: ``input`` (token → id), ``output`` (value → output id).

    ``label`` is the output SOp's label (its residual dimensions are ``label`` or ``label:v``).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = assembled.model_config
    params = {k: {kk: _np(vv) for kk, vv in v.items()} for k, v in assembled.params.items()}
    labels = list(assembled.residual_labels)
    d_tracr = len(labels)
    n_heads, key_size = cfg.num_heads, cfg.key_size
    d_model = max(d_tracr + 1, n_heads * key_size)
    d_model += -d_model % n_heads
    d_head = d_model // n_heads
    hidden = max(cfg.mlp_hidden_size, 1)
    if hidden == d_model:  # a square MLP trips a TransformerBridge folding bug (see _model.py)
        hidden += 1
    balance = d_tracr  # index of the balancing dimension

    def writer(w: np.ndarray) -> np.ndarray:
        """``(rows, d_tracr)`` writes → ``(rows, d_model)`` with the balancing dimension."""
        out = np.zeros((w.shape[0], d_model))
        out[:, :d_tracr] = w
        out[:, balance] = -w.sum(1)
        return out

    def reader(w: np.ndarray, width: int) -> np.ndarray:
        """``(d_tracr, n)`` reads → ``(d_model, width)``."""
        out = np.zeros((d_model, width))
        out[:d_tracr, : w.shape[1]] = w
        return out

    def per_head(w: np.ndarray) -> np.ndarray:
        """``(d_tracr, n_heads * key_size)`` → ``(d_model, n_heads * d_head)``, padded per head."""
        out = np.zeros((d_model, n_heads * d_head))
        for h in range(n_heads):
            out[:d_tracr, h * d_head : h * d_head + key_size] = w[
                :, h * key_size : (h + 1) * key_size
            ]
        return out

    in_map = dict(assembled.input_encoder.encoding_map)
    if numerical:
        out_map: dict[str, int] = {}
        out_ids = 2
    else:
        enc = assembled.output_encoder.encoding_map
        tokens_out = all(str(v) in in_map for v in enc)
        out_map = {str(v): (in_map[str(v)] if tokens_out else int(v)) for v in enc}
        out_ids = max(out_map.values()) + 1
    d_vocab = max(len(in_map), out_ids)

    config = GPT2Config(
        vocab_size=d_vocab, n_positions=MAX_SEQ_LEN + 1, n_embd=d_model, n_layer=cfg.num_layers,
        n_head=n_heads, n_inner=hidden, activation_function="relu", layer_norm_epsilon=LN_EPS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=in_map[BOS], eos_token_id=in_map[BOS], pad_token_id=in_map["compiler_pad"],
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    state: dict[str, np.ndarray] = {}
    wte = np.zeros((d_vocab, d_model))
    wte[: len(in_map)] = writer(params["token_embed"]["embeddings"])
    state["transformer.wte.weight"] = wte
    state["transformer.wpe.weight"] = writer(params["pos_embed"]["embeddings"])
    q_scale = math.sqrt(d_head / key_size)
    for layer in range(cfg.num_layers):
        p = f"transformer/layer_{layer}"
        h = f"transformer.h.{layer}"
        qkv = [per_head(params[f"{p}/attn/{n}"]["w"]) for n in ("query", "key", "value")]
        qkv[0] = qkv[0] * q_scale
        state[f"{h}.attn.c_attn.weight"] = np.concatenate(qkv, axis=1)
        state[f"{h}.attn.c_attn.bias"] = np.zeros(3 * d_model)
        w_o = params[f"{p}/attn/linear"]["w"]  # (n_heads * key_size, d_tracr)
        proj = np.zeros((n_heads * d_head, d_model))
        for hd in range(n_heads):
            proj[hd * d_head : hd * d_head + key_size] = writer(
                w_o[hd * key_size : (hd + 1) * key_size]
            )
        state[f"{h}.attn.c_proj.weight"] = proj
        state[f"{h}.attn.c_proj.bias"] = np.zeros(d_model)
        state[f"{h}.mlp.c_fc.weight"] = reader(params[f"{p}/mlp/linear_1"]["w"], hidden)
        state[f"{h}.mlp.c_fc.bias"] = np.zeros(hidden)
        fc_out = np.zeros((hidden, d_model))
        w2 = params[f"{p}/mlp/linear_2"]["w"]
        fc_out[: w2.shape[0]] = writer(w2)
        state[f"{h}.mlp.c_proj.weight"] = fc_out
        state[f"{h}.mlp.c_proj.bias"] = np.zeros(d_model)
        for ln in ("ln_1", "ln_2"):
            state[f"{h}.{ln}.weight"] = np.full(d_model, LN_WEIGHT)
            state[f"{h}.{ln}.bias"] = np.zeros(d_model)
    state["transformer.ln_f.weight"] = np.full(d_model, LN_WEIGHT)
    state["transformer.ln_f.bias"] = np.zeros(d_model)
    unembed = np.zeros((d_vocab, d_model))
    if numerical:
        unembed[1, labels.index(label)] = SCALE
    else:
        for value, out_id in out_map.items():
            unembed[out_id, labels.index(f"{label}:{value}")] = SCALE
    state["lm_head.weight"] = unembed
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and all("attn.bias" in m or "masked_bias" in m for m in missing), (
        missing,
        unexpected,
    )
    model.eval()
    return model, {"input": in_map, "output": out_map, "d_tracr": d_tracr, "residual": labels}


def _random_inputs(n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[VOCAB[i] for i in rng.integers(0, len(VOCAB), MAX_SEQ_LEN)] for _ in range(n)]


def build(name: str, spec: dict[str, Any], out: Path, *, n_check: int = 200) -> dict[str, Any]:
    """Compile, convert, verify and (if ``out``) write one program. Returns its ``tracr.json``."""
    from tracr.compiler import compiling
    from tracr.rasp import causal_eval

    program = spec["program"]
    assembled = compiling.compile_rasp_to_model(
        program, vocab=set(VOCAB), max_seq_len=MAX_SEQ_LEN, causal=True, compiler_bos=BOS
    )
    numerical = assembled.output_encoder is None or not hasattr(
        assembled.output_encoder, "encoding_map"
    )
    model, maps = convert(assembled, numerical=numerical, label=program.label)
    inputs = _random_inputs(n_check, seed=0)
    ids = torch.tensor([[maps["input"][BOS]] + [maps["input"][t] for t in x] for x in inputs])
    with torch.no_grad():
        hf = model(ids, output_hidden_states=True)
    worst_resid, wrong, examples = 0.0, 0, []
    first = spec["first"]
    for row, x in enumerate(inputs):
        tr = assembled.apply([BOS, *x])
        ours = hf.hidden_states[-1][row, :, : maps["d_tracr"]].numpy()
        worst_resid = max(
            worst_resid, float(np.abs(ours - np.asarray(tr.transformer_output[0])).max())
        )
        expected = causal_eval.evaluate(program, x)
        logits = hf.logits[row]
        for i in range(first, MAX_SEQ_LEN + 1):
            value = expected[i - 1]
            if numerical:
                ok = abs(float(logits[i, 1]) / SCALE - float(value)) < 1e-4
            else:
                ok = int(logits[i].argmax()) == maps["output"][str(value)]
            wrong += not ok
        if row < 20:
            examples.append({"tokens": x, "output": [_jsonable(v) for v in expected]})
    if worst_resid > 1e-4 or wrong:
        raise SystemExit(
            f"{name}: conversion differs from Tracr (residual {worst_resid:.3g}, {wrong} wrong outputs)"
        )
    info = {
        "program": name,
        "rasp": spec["source"],
        "computes": spec["what"],
        "output_kind": "numerical" if numerical else "categorical",
        "scale": SCALE,
        "vocab": list(VOCAB),
        "max_seq_len": MAX_SEQ_LEN,
        "input_ids": maps["input"],
        "output_ids": maps["output"],
        "first_output_position": first,
        "residual_labels": maps["residual"],
        "layers": _layer_summary(assembled),
        "verified": {
            "inputs": n_check,
            "max_residual_difference_vs_tracr": worst_resid,
            "outputs_differing_from_rasp": wrong,
        },
        "examples": examples,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        (out / "tracr.json").write_text(json.dumps(info, indent=1) + "\n")
        write_card(out, info, spec["circuit"], model.config)
    return info


def write_card(out: Path, info: dict[str, Any], circuit: list[str], config: Any) -> None:
    """MODEL_CARD.md: what the model computes, its ground-truth circuit, how it was verified.

    The scores section between the ``<!-- scores -->`` markers is kept from the existing card
    (``scripts/tracr_results.py --write`` fills it in).
    """
    card = out / "MODEL_CARD.md"
    scores = "<!-- scores -->\n(run `python scripts/tracr_results.py --write`)\n<!-- /scores -->"
    if card.exists() and "<!-- scores -->" in (old := card.read_text()):
        scores = old[old.index("<!-- scores -->") : old.index("<!-- /scores -->") + 16]
    name, v = info["program"], info["verified"]
    kind = info["output_kind"]
    if kind == "numerical":
        readout = (
            f"logit 1 = {info['scale']:g} x the fraction (scrub's logits are centred per position, "
            f"so the fraction is (logit 1 - logit 0) / {info['scale']:g})"
        )
    else:
        readout = (
            f"the logit of the output's id is {info['scale']:g}, every other logit 0; output ids: "
            + ", ".join(f"`{k}` -> {i}" for k, i in info["output_ids"].items())
        )
    text = f"""# tracr_{name}: a Tracr-compiled transformer with a known circuit

Computes **{info["computes"]}**, at every position from {info["first_output_position"]} on: the
causal RASP program

    {info["rasp"]}

compiled by Tracr (tracr-pypi, `causal=True`, vocabulary {{{", ".join(info["vocab"])}}}, max_seq_len
{info["max_seq_len"]}) and converted into a `GPT2LMHeadModel` by `scripts/convert_tracr.py`. Nobody
trained it: its circuit is known by construction, so scrub's scores on it can be checked.

## Ground-truth circuit

{chr(10).join("- " + line for line in circuit)}

Everything else is zero by construction: Tracr's residual stream has one dimension per RASP value
(`{"`, `".join(info["residual_labels"])}`), and each block reads and writes only its own.

## Format

- GPT-2: {config.n_layer} layer(s), {config.n_head} head(s), d_model {config.n_embd} (Tracr's
  {len(info["residual_labels"])} dimensions, one balancing dimension that keeps the residual's
  mean at zero, padding), d_mlp {config.n_inner}, ReLU, context {config.n_positions} (BOS +
  {info["max_seq_len"]} tokens), vocabulary {config.vocab_size}, untied unembedding, zero biases.
- LayerNorms: epsilon 2^40, weight 2^20, bias 0 on a mean-zero residual: an exact identity in
  float32 while the residual's variance is below 2^16 (here below 1). scrub loads it as is
  (`model: tracr_{name}`), or with `layernorm: identity` in a model spec file (the same
  outputs; see the README's "Architectures").
- Input ids: {", ".join(f"`{k}` {i}" for k, i in info["input_ids"].items())}; inputs start with BOS.
- Output: {readout}.
- Inputs for scrub: `dataset: {{generator: tracr, params: {{program: {name}}}}}`
  (`datasets/tracr_{name}.yaml`), position set `OUT` (where the program has an output),
  fields `{"value" if kind == "numerical" else "label"}`, `x_pattern`, `equality`.

## Verification (by the converter, before writing)

On {v["inputs"]} random inputs: the Hugging Face model's final residual equals Tracr's on Tracr's
dimensions to {v["max_residual_difference_vs_tracr"]:.2g} (max abs), and its output differs from
RASP's own evaluation (`tracr.rasp.causal_eval`) at {v["outputs_differing_from_rasp"]} positions.
`python scripts/convert_tracr.py --check` recompiles and compares; the slow test
`tests/test_tracr.py::test_recompiled_programs_match_the_shipped_checkpoints` checks the weights
are bit-identical.

## scrub scores (true and deliberately wrong hypotheses, `hypotheses/tracr/{name}_*.yaml`)

{scores}
"""
    card.write_text(text)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    return float(v) if isinstance(v, float) else int(v)


def _layer_summary(assembled: Any) -> list[dict[str, Any]]:
    """Which Tracr blocks have weights (attention / MLP per layer), and what they read/write."""
    labels = list(assembled.residual_labels)
    summary = []
    for layer in range(assembled.model_config.num_layers):
        p = f"transformer/layer_{layer}"
        entry: dict[str, Any] = {"layer": layer}
        for block, reads, writes in (
            ("attn", ("query", "key", "value"), "linear"),
            ("mlp", ("linear_1",), "linear_2"),
        ):
            w_out = _np(assembled.params[f"{p}/{block}/{writes}"]["w"])
            if not np.abs(w_out).max():
                entry[block] = None
                continue
            entry[block] = {
                r: sorted(
                    {
                        labels[i].split(":")[0]
                        for i in np.flatnonzero(
                            np.abs(_np(assembled.params[f"{p}/{block}/{r}"]["w"])).sum(1)
                        )
                    }
                )
                for r in reads
            }
            entry[block]["writes"] = sorted(
                {labels[i].split(":")[0] for i in np.flatnonzero(np.abs(w_out).sum(0))}
            )
        summary.append(entry)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="*", help="programs to build (default: all)")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files")
    args = parser.parse_args()
    programs = _programs()
    for name in args.programs or programs:
        out = ROOT / "scrub" / "models" / f"tracr_{name}"
        if args.check:
            info = build(name, programs[name], None)
            shipped = json.loads((out / "tracr.json").read_text())
            same = {
                k: info[k] == shipped[k]
                for k in ("input_ids", "output_ids", "residual_labels", "examples")
            }
            print(f"{name}: {same}")
            continue
        info = build(name, programs[name], out)
        print(f"wrote {out}: {info['verified']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
