"""Model components: the pieces of a transformer that write into the residual stream.

A component is named as in the causal-scrubbing literature:

- ``embed`` (token + positional embedding), or one of its halves ``tok_embed`` / ``pos_embed``;
- ``a{L}.h{H}``: attention head H of layer L;
- ``m{L}``: the MLP of layer L;
- ``logits``: the model output, which reads the final residual stream.

Each consumer reads the residual stream through **input channels**: a head through ``q``, ``k``
and ``v``; an MLP and the logits through ``in``. A component may be restricted to positions,
written ``a9.h9@END`` or ``m3@S2,END`` (see :mod:`scrub._positions`).

Pitfall: "upstream" is about the residual stream, not the layer index alone. The MLP of layer L
reads the outputs of layer L's heads, but a head of layer L does not read another head of layer L.
In a parallel block (GPT-NeoX / Pythia) the MLP of layer L does not read layer L's heads either:
use :meth:`ModelShape.upstream`, which knows the architecture (see :mod:`scrub._architectures`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from scrub._errors import HypothesisError

__all__ = ["CHANNELS", "Channel", "Component", "ModelShape", "parse_component"]

Channel = Literal["q", "k", "v", "in"]
CHANNELS: tuple[Channel, ...] = ("q", "k", "v", "in")

_HEAD = re.compile(r"^a(\d+)\.h(\d+)$")
_MLP = re.compile(r"^m(\d+)$")
_PLAIN = ("embed", "tok_embed", "pos_embed", "logits")


@dataclass(frozen=True, order=True)
class Component:
    """One model component, without positions.

    Attributes:
        kind: ``"tok_embed"``, ``"pos_embed"``, ``"head"``, ``"mlp"`` or ``"logits"``.
        layer: the layer index (-1 for embeddings, ``n_layers`` for logits once bound).
        head: the head index for heads, else -1.
    """

    kind: str
    layer: int = -1
    head: int = -1

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"a{self.layer}.h{self.head}"
        if self.kind == "mlp":
            return f"m{self.layer}"
        return self.kind

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The input channels through which this component reads the residual stream."""
        if self.kind == "head":
            return ("q", "k", "v")
        if self.kind in ("mlp", "logits"):
            return ("in",)
        return ()

    def order(self, n_layers: int, *, parallel: bool = False) -> tuple[int, int]:
        """Position in the residual stream: (layer, 0 for attention / 1 for MLP).

        In a parallel block (``parallel``: GPT-NeoX) a layer's MLP reads the same residual
        stream as its heads, so both are at (layer, 0).
        """
        if self.kind in ("tok_embed", "pos_embed"):
            return (-1, 1)
        if self.kind == "head":
            return (self.layer, 0)
        if self.kind == "mlp":
            return (self.layer, 0 if parallel else 1)
        return (n_layers, 0)

    def __repr__(self) -> str:
        return f"Component({self.name!r})"

    def __str__(self) -> str:
        return self.name


def parse_component(text: str) -> tuple[Component, ...]:
    """Parse a component name (without positions) into one or more components.

    ``embed`` expands to ``tok_embed`` and ``pos_embed``.

    Raises:
        HypothesisError: the name is not a component name.
    """
    name = text.strip()
    if name == "embed":
        return (Component("tok_embed"), Component("pos_embed"))
    if name in _PLAIN:
        return (Component(name),)
    if m := _HEAD.match(name):
        return (Component("head", int(m.group(1)), int(m.group(2))),)
    if m := _MLP.match(name):
        return (Component("mlp", int(m.group(1))),)
    raise HypothesisError(
        f"unknown component name {text!r}",
        hint="components are 'embed', 'tok_embed', 'pos_embed', 'a{L}.h{H}' (e.g. 'a1.h3'), "
        "'m{L}' (e.g. 'm0') and 'logits', optionally followed by '@POSITIONS'",
    )


@dataclass(frozen=True)
class ModelShape:
    """What a hypothesis needs to know about a model to be validated against it.

    Attributes:
        name: how errors name the model.
        n_layers, n_heads, n_ctx, d_vocab: its sizes.
        n_kv_heads: key/value heads (fewer than ``n_heads`` under grouped-query attention).
        parallel: attention and MLP of a layer read the same residual stream (GPT-NeoX).
        pos_embed: the model has a positional embedding in the residual stream (not RoPE).
        head_outputs: each head has its own residual-stream contribution (not Gemma-2).
        architecture: the family's name (``"GPT-2"``, ``"Llama"``, ...).
    """

    name: str
    n_layers: int
    n_heads: int
    n_ctx: int
    d_vocab: int
    n_kv_heads: int | None = None
    parallel: bool = False
    pos_embed: bool = True
    head_outputs: bool = True
    architecture: str = "GPT-2"

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // (self.n_kv_heads or self.n_heads)

    def order(self, comp: Component) -> tuple[int, int]:
        """``comp``'s position in this model's residual stream (see :meth:`Component.order`)."""
        return comp.order(self.n_layers, parallel=self.parallel)

    def check(self, comp: Component) -> None:
        """Raise ``HypothesisError`` if ``comp`` does not exist in this model."""
        if comp.kind == "head":
            if not (0 <= comp.layer < self.n_layers and 0 <= comp.head < self.n_heads):
                raise HypothesisError(
                    f"unknown component {comp.name!r}: {self.name} has heads "
                    f"a0.h0 .. a{self.n_layers - 1}.h{self.n_heads - 1} "
                    f"(layers 0–{self.n_layers - 1}, heads 0–{self.n_heads - 1})",
                    hint="pick a head inside that range",
                )
        elif comp.kind == "mlp" and not 0 <= comp.layer < self.n_layers:
            raise HypothesisError(
                f"unknown component {comp.name!r}: {self.name} has MLPs m0 .. m{self.n_layers - 1}",
                hint="pick an MLP inside that range",
            )

    def upstream(self, child: Component, parent: Component) -> bool:
        """Whether ``child`` writes into the residual stream before ``parent`` reads it."""
        return self.order(child) < self.order(parent)

    def all_components(self) -> tuple[Component, ...]:
        """Every component that writes into the residual stream, in residual order."""
        comps = [Component("tok_embed")] + [Component("pos_embed")] * self.pos_embed
        for layer in range(self.n_layers):
            comps += [Component("head", layer, h) for h in range(self.n_heads)]
            comps.append(Component("mlp", layer))
        return tuple(comps)
