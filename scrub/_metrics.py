"""Metrics: one number per reference example, from the root's output.

The metric reads the output at ``metric.positions``, resolved on the rows the output was computed
on (the root's rows): the engines return the logits at those positions only. It compares them
with labels taken from the **reference** examples at their own positions (rank-aligned, like
every named position). Per example, values are averaged over the
metric positions.

- ``loss``: cross-entropy of the label token (lower is better);
- ``accuracy``: whether the label token is the argmax;
- ``logit_diff``: logit of ``correct`` minus logit of ``wrong`` (compatibility mode shifts logits
  by a per-position constant, which cancels here);
- ``kl``: KL(clean ‖ output) of the next-token distributions (0 for the clean model).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scrub._positions import resolve_positions
from scrub._schema import MetricSpec
from scrub.data import Dataset

__all__ = ["per_example_metric"]


def _labels(name: str, ds: Dataset, reference: np.ndarray, ref_pos: np.ndarray) -> Tensor:
    if name == "next":
        tokens = ds.tokens[torch.as_tensor(reference)]
        return tokens.gather(1, torch.as_tensor(ref_pos + 1))
    values = np.asarray(ds.fields[name][reference])
    if values.ndim == 1:
        values = np.broadcast_to(values[:, None], ref_pos.shape)
    return torch.tensor(values, dtype=torch.long)


def per_example_metric(
    spec: MetricSpec,
    logits: Float[Tensor, "batch k vocab"],
    *,
    reference: np.ndarray,
    dataset: Dataset,
    clean_logits: Float[Tensor, "batch k vocab"] | None = None,
) -> np.ndarray:
    """The metric for each reference example, shape ``(batch,)``, float64.

    Args:
        spec: the metric.
        logits: the output at the metric's positions, resolved on the rows it was computed on.
        reference: the reference examples (labels come from these).
        dataset: the dataset the reference indexes.
        clean_logits: the clean model's logits at the metric's positions (needed for ``kl``).
    """
    ref_pos = resolve_positions(spec.positions, dataset, reference)
    out = logits.double()  # (batch, k, vocab)
    if spec.kind in ("loss", "accuracy"):
        assert spec.labels is not None
        labels = _labels(spec.labels, dataset, reference, ref_pos).to(out.device)
        if spec.kind == "loss":
            values = -out.log_softmax(-1).gather(-1, labels[..., None])[..., 0]
        else:
            values = (out.argmax(-1) == labels).double()
    elif spec.kind == "logit_diff":
        assert spec.correct is not None and spec.wrong is not None
        correct = _labels(spec.correct, dataset, reference, ref_pos).to(out.device)
        wrong = _labels(spec.wrong, dataset, reference, ref_pos).to(out.device)
        values = (
            out.gather(-1, correct[..., None])[..., 0] - out.gather(-1, wrong[..., None])[..., 0]
        )
    else:  # kl
        assert clean_logits is not None, "kl needs the clean logits"
        clean = clean_logits.double().log_softmax(-1)
        values = (clean.exp() * (clean - out.log_softmax(-1))).sum(-1)
    return values.mean(-1).cpu().numpy()
