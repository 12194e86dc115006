"""Counterfactual attention maps: a head's attention pattern under an intervention, minus clean.

``kind: attention`` reads each listed head's pattern where the treeified model evaluates it:

- ``under: {components: [...], positions: ...}``: an activation patch (those components' outputs
  from the source examples, all paths) into the base run; the head's pattern is the one it
  computes in the patched run (a head downstream of the patch attends differently);
- ``under: path/to/hypothesis.yaml``: the whole scrub of that hypothesis on this file's dataset;
  the head's pattern is read in the row group of the node that maps it (its treeified q and k
  inputs), or in the root's pass when no node maps it. A head mapped by a leaf node runs on the
  leaf's own data: its pattern is that of a plain pass on those rows.

**Clean** is the head's pattern in the clean model on the reference examples. The difference
``under − clean`` is a counterfactual only if the head read the reference tokens under the
intervention too: with ``base: exact`` (the default here would be the file's ``base``), or in a
hypothesis node whose data is the reference. When the head's rows are other examples, the result
says so in ``warnings`` (the two patterns are then over different tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrub._bind import bind
from scrub._components import Component
from scrub._errors import HypothesisError
from scrub._hypothesis import load_hypothesis
from scrub._model import ScrubModel
from scrub._positions import format_positions
from scrub._run import _versions
from scrub._tree import SampledTree, sample_tree
from scrub.data import Dataset
from scrub.engine import ActivationCache, FastEngine
from scrub.experiments._cells import Cell, components_of, trees_of
from scrub.experiments._patch_result import _clean, _describe, token_labels
from scrub.experiments._patch_schema import AttentionSpec, PatchUnder

__all__ = ["AttentionResult", "attention"]


@dataclass
class AttentionResult:
    """Attention patterns of heads, clean and under an intervention, on some examples.

    Attributes:
        heads: the head names.
        under_label: the intervention, in words.
        examples: dataset rows of the shown reference examples (the first ``examples``).
        tokens: each shown example's tokens; ``lengths``: its real length (before padding).
        clean, under: head → ``(examples, pos, pos)`` patterns (query × key).
        mean_abs_change: head → mean over all reference examples and causal (query, key)
            pairs of ``|under − clean|``.
        device, dtype: where and in which type the model ran.
    """

    kind: str
    name: str
    file: str | None
    sha256: str
    model: str
    dataset: dict[str, Any]
    n: int
    seed: int
    base: str
    source: str
    heads: list[str]
    under_label: str
    examples: list[int]
    tokens: list[list[str]]
    lengths: list[int]
    clean: dict[str, np.ndarray]
    under: dict[str, np.ndarray]
    mean_abs_change: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"

    def __repr__(self) -> str:
        change = ", ".join(f"{h}: {v:.3f}" for h, v in self.mean_abs_change.items())
        return f"AttentionResult({self.name!r}, under {self.under_label}, mean |change| {change})"

    def to_frame(self):
        """A long pandas table: head, example, query, key, clean, under, difference."""
        import pandas as pd

        rows = []
        for head in self.heads:
            for e, row in enumerate(self.examples):
                length = self.lengths[e]
                for q in range(length):
                    for k in range(q + 1):
                        c, u = float(self.clean[head][e, q, k]), float(self.under[head][e, q, k])
                        rows.append(
                            {"head": head, "example": row, "query": q, "key": k,
                             "query_token": self.tokens[e][q], "key_token": self.tokens[e][k],
                             "clean": c, "under": u, "difference": u - c}
                        )  # fmt: skip
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("clean", "under")}
        out["clean"] = {h: v.tolist() for h, v in self.clean.items()}
        out["under"] = {h: v.tolist() for h, v in self.under.items()}
        return _clean(out)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, out: str | Path, *, figures: bool = True) -> list[Path]:
        """Write ``NAME.json``, ``NAME.npz`` and one figure per head and example."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / f"{self.name}.json", out / f"{self.name}.npz"]
        written[0].write_text(self.to_json() + "\n")
        arrays: dict[str, Any] = {f"clean_{h}": v for h, v in self.clean.items()}
        arrays |= {f"under_{h}": v for h, v in self.under.items()}
        arrays["examples"] = np.asarray(self.examples)
        np.savez_compressed(written[1], **arrays)
        if figures:
            from scrub.experiments._patch_plots import attention_figures

            written += attention_figures(self, out)
        return written


def attention(su, *, max_batch_rows: int, max_memory: int | None = None) -> AttentionResult:
    """Run a ``kind: attention`` experiment on a :class:`~scrub.experiments.patching.Setup`.

    ``max_memory`` is the engine's activation budget of one pass in bytes (``None``: default).
    """
    spec = su.experiment.spec
    assert isinstance(spec, AttentionSpec)
    model, ds, file = su.model, su.dataset, su.experiment.file
    try:
        heads = components_of(spec.heads, model.shape, key=("heads",))
    except HypothesisError as exc:
        raise exc.with_context(file=file) from None
    for i, head in enumerate(heads):
        if head.kind != "head":
            raise HypothesisError(
                f"{head.name} is not an attention head", file=file, key=("heads", i)
            )
    messages = list(su.warnings)
    if isinstance(spec.under, PatchUnder):
        tree = _patch_tree(su, spec.under)
        label = "patch of " + ", ".join(spec.under.components)
        if spec.under.positions is not None:
            label += f" at {format_positions(spec.under.positions)}"
    else:
        tree = _hypothesis_tree(su, spec.under)
        label = f"hypothesis {Path(spec.under).stem}"
    owners = {head: _owner(tree, head) for head in heads}
    computed = [h for h in heads if owners[h] is None or not owners[h].is_leaf]
    cache = ActivationCache(max_batch_rows=max_batch_rows, max_memory=max_memory)
    engine = FastEngine(cache=cache, max_batch_rows=max_batch_rows, max_memory=max_memory)
    found = engine.evaluate_many(model, [tree], patterns=computed).patterns[0]
    under: dict[str, np.ndarray] = {}
    clean: dict[str, np.ndarray] = {}
    change: dict[str, float] = {}
    causal = np.tril(np.ones((ds.seq_len, ds.seq_len), dtype=bool))
    for head in heads:
        owner = owners[head]
        if head in found:
            rows = tree.root.name if owner is None else owner.name
            read_rows = tree.rows(tree.root) if owner is None else tree.rows(owner)
            values = found[head].float().cpu()
        else:
            assert owner is not None
            rows, read_rows = owner.name, tree.rows(owner)
            values = plain_patterns(model, ds, read_rows, [head])[head]
        if not np.array_equal(read_rows, su.reference):
            messages.append(
                f"{head.name} is evaluated on the rows of {rows!r}, not on the reference "
                "examples: its clean and intervened patterns are over different tokens"
            )
        reference = plain_patterns(model, ds, su.reference, [head])[head]
        diff = (values - reference).abs().numpy()
        change[head.name] = float(diff[:, causal].mean())
        shown = slice(0, min(spec.examples, su.n))
        under[head.name] = values[shown].numpy()
        clean[head.name] = reference[shown].numpy()
    shown_rows = su.reference[: min(spec.examples, su.n)]
    lengths = ds.fields["length"][shown_rows] if "length" in ds.fields else None
    return AttentionResult(
        kind="attention",
        name=su.experiment.name,
        file=file,
        sha256=su.experiment.sha256,
        model=model.source,
        dataset={"generator": spec.dataset.generator, "params": dict(spec.dataset.params)},
        n=su.n,
        seed=su.seed,
        base=_describe(spec.base),
        source=_describe(spec.source),
        heads=[h.name for h in heads],
        under_label=label,
        examples=shown_rows.tolist(),
        tokens=[token_labels(ds, int(r)) for r in shown_rows],
        lengths=[int(v) for v in lengths]
        if lengths is not None
        else [ds.seq_len] * len(shown_rows),
        clean=clean,
        under=under,
        mean_abs_change=change,
        warnings=sorted(set(messages)),
        versions=dict(_versions()),
        **model.precision,
    )


def _owner(tree: SampledTree, head: Component):
    for node in tree.root.walk():
        if node.edge is not None and any(mc.component == head for mc in node.interp.components):
            return node
    return None


def _patch_tree(su, under: PatchUnder) -> SampledTree:
    try:
        comps = components_of(under.components, su.model.shape, key=("under", "components"))
    except HypothesisError as exc:
        raise exc.with_context(file=su.experiment.file) from None
    positions = None if under.positions is None else list(under.positions)
    nodes = {
        "out": {
            "components": ["logits"],
            "inputs": [{"node": "patched", "paths": "all", "positions": positions}],
        },
        "patched": {"components": [c.name for c in comps]},
    }
    cell = Cell(("under",), nodes, (("out", "other", "base"), ("patched", "sampler", "source")))
    (tree,) = trees_of(
        [cell], su.hypothesis_base(), su.model, su.dataset,
        {"base": su.base, "source": su.source}, n=su.n, seed=su.seed, file=su.experiment.file,
    )  # fmt: skip
    return tree


def _hypothesis_tree(su, ref: str) -> SampledTree:
    file = su.experiment.file
    path = (Path(file).parent / ref) if file and not Path(ref).is_absolute() else Path(ref)
    hyp = load_hypothesis(path)
    if hyp.spec.dataset != su.experiment.spec.dataset:
        raise HypothesisError(
            f"hypothesis {ref!r} scrubs on another dataset than this experiment",
            file=file,
            key=("under",),
            hint="give the experiment the hypothesis's 'dataset:' so both read the same examples",
        )
    return sample_tree(bind(hyp, su.model, su.dataset), n=su.n, seed=su.seed)


@torch.inference_mode()
def plain_patterns(
    model: ScrubModel, ds: Dataset, rows: np.ndarray, heads: list[Component]
) -> dict[Component, torch.Tensor]:
    """Heads' attention patterns ``(rows, pos, pos)`` in a plain forward pass on ``rows``."""
    store: dict[Component, torch.Tensor] = {}

    def reader(head: Component):
        def hook(t: torch.Tensor, hook=None) -> torch.Tensor:
            store[head] = t[:, head.head].clone()
            return t

        return hook

    hooks = [(f"blocks.{h.layer}.attn.hook_pattern", reader(h)) for h in heads]
    stop = max(h.layer for h in heads) + 1
    tokens = ds.tokens[torch.as_tensor(rows)].to(model.device)
    with model.bridge.hooks(fwd_hooks=hooks):
        if stop >= model.shape.n_layers:
            model.bridge(tokens)
        else:
            model.bridge(tokens, stop_at_layer=stop)
    return {h: store[h].float().cpu() for h in heads}  # float32 in every model dtype
