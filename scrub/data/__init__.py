"""Dataset generators, registered by name, and the :class:`Dataset` they return.

A generator is a function ``g(*, rng, **params) -> Dataset``. Hypothesis files name one in
``dataset.generator`` (a registered name, or ``package.module:function`` for your own, marked
``@scrub.dataset_generator``) and pass ``dataset.params``.

Params are checked before the generator runs: names against its keyword-only parameters, values
strictly against their annotations (``size: true`` or ``size: "100"`` is an error, not 1 or
100), and ``size`` against :data:`~scrub.data._dataset.MAX_POOL_SIZE`, so a typo such as
``size: 100000000000`` is refused instead of allocating hundreds of GiB.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pydantic

from scrub._errors import HypothesisError
from scrub._imports import import_marked
from scrub.data._dataset import (
    MAX_POOL_SIZE,
    MAX_POOL_TOKENS,
    Dataset,
    Feature,
    Generator,
    check_pool_size,
)
from scrub.data.induction import induction
from scrub.data.ioi import ioi, ioi_abc
from scrub.data.ioi_names import ioi_names
from scrub.data.ioi_toy import ioi_toy
from scrub.data.parens import parens
from scrub.data.tracr import tracr

__all__ = [
    "GENERATORS",
    "MAX_POOL_SIZE",
    "MAX_POOL_TOKENS",
    "Dataset",
    "Feature",
    "Generator",
    "make_dataset",
]

GENERATORS: Mapping[str, Callable[..., Dataset]] = {
    "induction": induction,
    "parens": parens,
    "ioi": ioi,
    "ioi_abc": ioi_abc,
    "ioi_toy": ioi_toy,
    "ioi_names": ioi_names,
    "tracr": tracr,
}
"""The registered dataset generators."""


def make_dataset(generator: str, params: Mapping[str, Any], rng: np.random.Generator) -> Dataset:
    """Make a dataset with ``generator`` and ``params``, drawing from ``rng``.

    Raises:
        HypothesisError: unknown generator, unknown parameter or bad value (located at
            ``generator`` / ``params.NAME``), or a generator that fails or returns no dataset.
    """
    fn = GENERATORS.get(generator)
    registered = fn is not None
    if fn is None:
        if ":" not in generator:
            raise HypothesisError(
                f"unknown dataset generator {generator!r}",
                key=("generator",),
                hint=f"registered generators: {', '.join(sorted(GENERATORS))}; "
                "or name your own as 'package.module:function'",
            )
        try:
            fn = import_marked(generator, what="dataset generator")
        except HypothesisError as exc:
            raise exc.with_context(key_prefix=("generator",)) from None
    _check_params(generator, fn, params)
    try:
        ds = fn(rng=rng, **params)
    except HypothesisError as exc:
        prefix = () if exc.key[:1] == ("params",) else ("params",)
        raise exc.with_context(key_prefix=prefix) from None
    except (TypeError, ValueError) as exc:
        raise HypothesisError(
            f"dataset generator {generator!r} rejected its params: {exc}",
            key=("params",),
            hint=f"see the docstring of {getattr(fn, '__module__', '?')}."
            f"{getattr(fn, '__name__', '?')} for what each parameter may be",
        ) from exc
    except Exception as exc:
        if registered:
            raise
        raise HypothesisError(  # the user's generator failed
            f"dataset generator {generator!r} failed: {type(exc).__name__}: {exc}",
            key=("generator",),
            hint="fix the generator function (call it from Python to see the traceback)",
        ) from exc
    if not isinstance(ds, Dataset):
        raise HypothesisError(
            f"dataset generator {generator!r} returned a {type(ds).__name__}, not a scrub.Dataset",
            key=("generator",),
            hint="a dataset generator returns scrub.Dataset(name=..., params=..., tokens=..., "
            "positions=...)",
        )
    return ds


def _check_params(generator: str, fn: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """Names, strict types (from the annotations) and the pool size, before generating."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    accepted = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "rng"
    }
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise HypothesisError(
            f"dataset generator {generator!r} has no parameter {unknown[0]!r}",
            key=("params", unknown[0]),
            hint=f"its parameters are: {', '.join(sorted(accepted))}",
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations (a user's generator): names only
        hints = {}
    for name, value in params.items():
        if name not in hints:
            continue
        try:
            pydantic.TypeAdapter(hints[name]).validate_python(value, strict=True)
        except pydantic.ValidationError:
            expected = getattr(hints[name], "__name__", None) or str(hints[name])
            raise HypothesisError(
                f"dataset parameter {name!r} must be {expected}, not {value!r} "
                f"({type(value).__name__})",
                key=("params", name),
                hint=f"write a value of type {expected}"
                + (" (a whole number without quotes, e.g. 1000)" if expected == "int" else ""),
            ) from None
        except pydantic.PydanticSchemaGenerationError:
            continue
    if "size" in accepted:
        default = accepted["size"].default
        size = params.get("size", default)
        if isinstance(size, int) and not isinstance(size, bool):
            check_pool_size(size)
