"""Architectures: what scrub knows about each transformer family, and what a channel means there.

Treeifying a model needs four things of it (DESIGN.md): every component writes into the residual
stream by addition; each head reads the residual stream through its own ``q``, ``k`` and ``v``
inputs (TransformerBridge's split q/k/v inputs); each MLP through its own input; and the logits
through the final residual stream. :data:`ARCHITECTURES` lists the Hugging Face families scrub
loads, with the facts that change what a hypothesis means on them:

- **parallel blocks** (GPT-NeoX / Pythia): attention and MLP of a layer both read the block's
  input residual stream, so a head of layer L is *not* upstream of ``m{L}``; the MLP of layer L
  reads the outputs of layers < L only. :meth:`ModelShape.upstream` knows this, and binding
  rejects an input from a head of layer L into ``m{L}``.
- **grouped-query attention** (Llama, Qwen2, Gemma-2 with fewer key/value heads than query
  heads): the ``k`` and ``v`` inputs are per key/value head, shared by a group of query heads. A
  splice into head H's ``k`` is a splice into its group's key *as head H reads it*: in the
  treeified model every query head has its own copy of its group's key and value computation,
  exactly as if the K/V projections were repeated per query head (the model EAP-IG "ungroups"
  into). Heads of one group mapped by different nodes each get their own inputs; heads of one
  group in one node get the same inputs (a node's inputs are per channel, not per head).
- **rotary position embeddings** (RoPE: every family here but GPT-2): positions act inside ``q``
  and ``k``, after the input channel. A splice into a head's ``q``/``k`` at parent position t is
  rotated by t's angle (the position where it is read), whatever position the child's value came
  from. There is no ``pos_embed`` component: ``embed`` means ``tok_embed`` alone.
- **post-attention normalisation** (Gemma-2): the attention layer's output is RMS-normalised
  after its heads are summed, so a single head has no residual-stream contribution of its own. A
  head can be mapped with ``paths: all`` (an activation patch of its ``z``) but not through a
  direct path; binding refuses direct paths from heads there.

Pitfall: the table states what each family *is*; :func:`check_architecture` also measures it
once on the loaded model (the residual stream must decompose into the components' outputs), so
a checkpoint that does not match its family's facts is refused rather than scrubbed wrongly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from scrub._errors import HypothesisError

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "adapt_hypothesis",
    "boot",
    "check_architecture",
    "check_paths",
]


@dataclass(frozen=True)
class Architecture:
    """What a transformer family means for channels and paths.

    Attributes:
        name: the family's name, e.g. ``"GPT-NeoX"``.
        parallel: attention and MLP of a layer read the same residual stream.
        rotary: positions enter through rotary embeddings inside q and k (no ``pos_embed``).
        head_outputs: each head has its own residual-stream contribution ``z @ W_O`` (False
            where the attention output is normalised after the heads are summed).
    """

    name: str
    parallel: bool = False
    rotary: bool = False
    head_outputs: bool = True

    def __repr__(self) -> str:
        flags = [f for f in ("parallel", "rotary") if getattr(self, f)]
        if not self.head_outputs:
            flags.append("no per-head outputs")
        return f"Architecture({self.name!r}{''.join(', ' + f for f in flags)})"


ARCHITECTURES: dict[str, Architecture] = {
    "GPT2LMHeadModel": Architecture("GPT-2"),
    "GPTNeoXForCausalLM": Architecture("GPT-NeoX", parallel=True, rotary=True),
    "LlamaForCausalLM": Architecture("Llama", rotary=True),
    "Qwen2ForCausalLM": Architecture("Qwen2", rotary=True),
    "Gemma2ForCausalLM": Architecture("Gemma-2", rotary=True, head_outputs=False),
}
"""Hugging Face ``architectures`` entry → the family's facts (see the module docstring)."""

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _supported() -> str:
    return ", ".join(f"{a.name} ({k})" for k, a in ARCHITECTURES.items())


def architecture_of(path: str) -> tuple[str, Architecture]:
    """The HF architecture name in ``path``'s config.json and its entry in the table.

    Raises:
        HypothesisError: the config names an architecture scrub does not support.
    """
    config_file = Path(path) / "config.json"
    if not config_file.exists():  # a hub name: its config comes with the weights
        return "", Architecture("unknown")
    config = json.loads(config_file.read_text())
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return name, ARCHITECTURES[name]
    found = ", ".join(names) or f"model_type {config.get('model_type')!r}"
    raise HypothesisError(
        f"model {path!r} is a {found}, which scrub cannot treeify: it needs a decoder whose "
        "heads read the residual stream through their own q, k and v inputs (TransformerBridge's "
        "split q/k/v inputs) and whose components add their outputs into one residual stream",
        hint=f"supported architectures: {_supported()}",
    )


def token_id_tokenizer(d_vocab: int) -> Any:
    """A placeholder tokenizer for a directory without one: token ``<i>`` is id ``i``.

    scrub feeds token ids to the model, never text, so the tokenizer only has to exist for
    TransformerBridge to boot.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(d_vocab)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<0>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {name: "<0>" for name in ("unk_token", "bos_token", "eos_token", "pad_token")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, add_bos_token=True, **special)
    tokenizer.init_kwargs["name_or_path"] = "scrub-token-ids"  # TransformerBridge reads it
    return tokenizer


def boot(path: str, *, device: str, hf_model: Any = None) -> tuple[Any, Architecture]:
    """Boot a TransformerBridge for ``path`` with split q/k/v inputs and ``hook_mlp_in``.

    A local directory without tokenizer files (or whose tokenizer cannot be built here, e.g. a
    SentencePiece model without ``sentencepiece``) gets :func:`token_id_tokenizer`. ``hf_model``
    is the Hugging Face model already loaded from ``path`` (with changed weights), if any.

    Raises:
        HypothesisError: an architecture scrub cannot treeify (BERT, ...), naming what is missing.
        OSError, ValueError: what TransformerBridge raises for a path it cannot load.
    """
    from transformer_lens.model_bridge import TransformerBridge

    hf_name, arch = architecture_of(path)
    tokenizer = None
    local = Path(path).is_dir()
    if local and not any((Path(path) / f).exists() for f in _TOKENIZER_FILES):
        tokenizer = token_id_tokenizer(_vocab_size(path))
    try:
        bridge = TransformerBridge.boot_transformers(
            path, device=device, tokenizer=tokenizer, hf_model=hf_model
        )
    except ValueError as exc:
        if not local or tokenizer is not None or "tokenizer" not in str(exc):
            raise
        bridge = TransformerBridge.boot_transformers(
            path, device=device, tokenizer=token_id_tokenizer(_vocab_size(path)), hf_model=hf_model
        )
    if not hf_name:
        hf_name = (getattr(bridge.cfg, "architecture", None) or "").strip()
        if hf_name not in ARCHITECTURES:
            raise HypothesisError(
                f"model {path!r} is a {hf_name or 'model of unknown architecture'}, which scrub "
                "has not been checked on",
                hint=f"supported architectures: {_supported()}",
            )
        arch = ARCHITECTURES[hf_name]
    for setter in (bridge.set_use_split_qkv_input, bridge.set_use_hook_mlp_in):
        try:
            setter(True)
        except NotImplementedError as exc:
            raise HypothesisError(
                f"model {path!r} ({hf_name}): TransformerBridge has no hook before this "
                f"architecture's q/k/v projections or MLP ({exc})",
                hint=f"supported architectures: {_supported()}",
            ) from None
    return bridge, arch


def _vocab_size(path: str) -> int:
    config = json.loads((Path(path) / "config.json").read_text())
    return int(config.get("vocab_size") or 1)


@torch.inference_mode()
def check_architecture(bridge: Any, arch: Architecture, *, source: str) -> None:
    """Measure the family's facts on the loaded model once (random tokens, one pass).

    The residual stream must start as the embeddings; each block's update must equal the sum of
    its heads' ``z @ W_O`` (where heads have outputs), the attention bias and its MLP output; each MLP must read the block's input
    (parallel) or the residual after attention; q/k/v inputs the block's input.

    Raises:
        HypothesisError: naming the fact that does not hold.
    """
    cfg = bridge.cfg
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.d_vocab, (2, min(8, cfg.n_ctx)), generator=generator)
    _, cache = bridge.run_with_cache(tokens.to(bridge.W_O.device))

    def fail(what: str) -> HypothesisError:
        return HypothesisError(
            f"model {source!r} ({arch.name}) does not decompose as scrub needs: {what}",
            hint="this checkpoint differs from its family's standard layout; scrub cannot "
            "treeify it",
        )

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        scale = max(1.0, float(b.abs().max()))
        return float((a - b).abs().max()) <= 1e-4 * scale

    embed = cache["hook_embed"]
    if not arch.rotary:
        embed = embed + cache["hook_pos_embed"]
    if not close(embed, cache["blocks.0.hook_resid_pre"]):
        raise fail("the residual stream does not start as the embeddings")
    for layer in range(cfg.n_layers):
        pre, post = (
            cache[f"blocks.{layer}.hook_resid_pre"],
            cache[f"blocks.{layer}.hook_resid_post"],
        )
        attn = post - pre - cache[f"blocks.{layer}.hook_mlp_out"]
        if arch.head_outputs:
            z = cache[f"blocks.{layer}.attn.hook_z"]
            heads = torch.einsum("bphd,hdm->bpm", z, bridge.W_O[layer])
            with contextlib.suppress(AttributeError):  # bias-free projections have no b_O
                heads = heads + bridge.b_O[layer]
            if not close(heads, attn):
                raise fail(f"layer {layer}'s attention output is not the sum of its heads' z @ W_O")
        mlp_in = cache[f"blocks.{layer}.hook_mlp_in"]
        if not close(mlp_in, pre if arch.parallel else pre + attn):
            reads = "the block's input" if arch.parallel else "the residual after attention"
            raise fail(f"the MLP of layer {layer} does not read {reads}")
        q_in = cache[f"blocks.{layer}.hook_q_input"][:, :, 0]
        if not close(q_in, pre):
            raise fail(f"the queries of layer {layer} do not read the block's input")


def adapt_hypothesis(hypothesis: Any, arch: Architecture) -> Any:
    """The hypothesis with components the architecture lacks removed (``pos_embed`` on RoPE).

    RoPE models have no positional embedding in the residual stream; its output there is zero,
    so dropping it from ``embed`` changes nothing. A node left with no component is an error.

    Raises:
        HypothesisError: a node maps only ``pos_embed`` on a model without one.
    """
    if not arch.rotary:
        return hypothesis
    graph = hypothesis.graph
    changed = False
    new = nx.DiGraph(graph)
    for name in graph:
        interp = graph.nodes[name]["interp"]
        kept = tuple(mc for mc in interp.components if mc.component.kind != "pos_embed")
        if len(kept) == len(interp.components):
            continue
        if not kept:
            raise HypothesisError(
                f"node {name!r} maps only pos_embed, but {arch.name} models have rotary position "
                "embeddings (inside q and k), not a positional embedding in the residual stream",
                key=("nodes", name, "components"),
                hint="map tok_embed (or embed, which on this model is tok_embed alone)",
            )
        new.nodes[name]["interp"] = dataclasses.replace(interp, components=kept)
        changed = True
    return dataclasses.replace(hypothesis, graph=new) if changed else hypothesis


def check_paths(hypothesis: Any, shape: Any) -> None:
    """Refuse inputs the architecture makes meaningless (see the module docstring).

    - a child component that is not upstream of a parent component it feeds, by the model's
      own order (in a parallel block a head of layer L does not feed ``m{L}``);
    - a direct path from a head where heads have no residual contribution of their own.

    Raises:
        HypothesisError: at the offending input's key.
    """
    for parent in hypothesis.graph:
        for i, child in enumerate(hypothesis.children(parent)):
            corr = hypothesis.edge(child, parent)
            key = ("nodes", parent, "inputs", i)
            for cmc in hypothesis.node(child).components:
                c = cmc.component
                if c.kind == "head" and corr.paths == "direct" and not shape.head_outputs:
                    raise HypothesisError(
                        f"{c.name} (node {child!r}) feeds node {parent!r} through a direct path, "
                        f"but {shape.architecture} normalises the attention output after summing "
                        "its heads, so a single head has no residual-stream contribution",
                        key=(*key, "paths"),
                        hint="use 'paths: all' (an activation patch of the head's z)",
                    )
                for pmc in hypothesis.node(parent).components:
                    p = pmc.component
                    if not set(corr.channels) & set(p.channels) or shape.upstream(c, p):
                        continue
                    why = (
                        f"{shape.architecture} blocks are parallel, so the MLP of layer L reads "
                        "the block's input, not layer L's heads"
                        if shape.parallel
                        else "it writes into the residual stream after the parent reads it"
                    )
                    raise HypothesisError(
                        f"{c.name} (node {child!r}) is not upstream of {p.name} (node "
                        f"{parent!r}) in {shape.name}: {why}",
                        key=(*key, "node"),
                        hint="feed m{L} from layers before L, or feed layer L's heads into a "
                        "later layer",
                    )
