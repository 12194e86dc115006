"""Dataset generators, registered by name, and the :class:`Dataset` they return.

A generator is a function ``g(*, rng, **params) -> Dataset``. Hypothesis files name one in
``dataset.generator`` (a registered name, or ``package.module:function`` for your own) and pass
``dataset.params``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from scrub._errors import HypothesisError
from scrub._imports import import_object
from scrub.data._dataset import Dataset, Feature, Generator
from scrub.data.induction import induction
from scrub.data.ioi import ioi, ioi_abc
from scrub.data.ioi_names import ioi_names
from scrub.data.ioi_toy import ioi_toy
from scrub.data.parens import parens

__all__ = ["GENERATORS", "Dataset", "Feature", "Generator", "make_dataset"]

GENERATORS: Mapping[str, Callable[..., Dataset]] = {
    "induction": induction,
    "parens": parens,
    "ioi": ioi,
    "ioi_abc": ioi_abc,
    "ioi_toy": ioi_toy,
    "ioi_names": ioi_names,
}
"""The registered dataset generators."""


def make_dataset(generator: str, params: Mapping[str, Any], rng: np.random.Generator) -> Dataset:
    """Make a dataset with ``generator`` and ``params``, drawing from ``rng``.

    Raises:
        HypothesisError: unknown generator or parameter.
    """
    fn = GENERATORS.get(generator)
    if fn is None:
        if ":" not in generator:
            raise HypothesisError(
                f"unknown dataset generator {generator!r}",
                key=("generator",),
                hint=f"registered generators: {', '.join(sorted(GENERATORS))}; "
                "or name your own as 'package.module:function'",
            )
        try:
            fn = import_object(generator, what="dataset generator")
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=("generator",)) from None
    accepted = {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "rng"
    }
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise HypothesisError(
            f"dataset generator {generator!r} has no parameter {unknown[0]!r}",
            key=("params", unknown[0]),
            hint=f"its parameters are: {', '.join(sorted(accepted))}",
        )
    try:
        return fn(rng=rng, **params)
    except (TypeError, ValueError) as exc:
        raise HypothesisError(
            f"dataset generator {generator!r} rejected its params: {exc}", key=("params",)
        ) from exc
