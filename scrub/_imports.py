"""Code a file may name: functions marked ``@scrub.feature`` or ``@scrub.dataset_generator``.

A hypothesis file names your own features and dataset generators as ``package.module:function``
(never ``eval``). Importing a module runs it, but a file may only *call* functions their authors
declared callable from files, with a decorator in their module::

    import scrub

    @scrub.feature
    def first_is_even(dataset, rows):          # (Dataset, rows) -> one value per row
        return dataset.tokens[rows, 1].numpy() % 2

    @scrub.dataset_generator
    def my_prompts(*, rng, size=1000):         # keyword-only params, rng first
        ...

Anything else (``os:system``, ``subprocess:Popen``, ``builtins:dict``, an undecorated function,
a class, a constant) is refused when the file is checked, with a hint showing the decorator.
Relative module names (``.mod:f``) have no package to be relative to and are refused too.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from scrub._errors import HypothesisError

__all__ = ["dataset_generator", "feature", "import_marked"]

F = TypeVar("F", bound=Callable[..., Any])

_FEATURE = "__scrub_feature__"
_GENERATOR = "__scrub_dataset_generator__"


def _mark(fn: F, attr: str, what: str) -> F:
    if not callable(fn):
        raise TypeError(f"@scrub.{what} decorates a function, not {fn!r}")
    setattr(fn, attr, True)
    return fn


def feature(fn: F) -> F:
    """Mark ``fn(dataset, rows) -> values`` as a feature hypothesis files may name.

    ``values`` has one entry (or one row of entries) per row of ``rows``; examples with equal
    values are in the same class of a ``cond`` sampler.
    """
    return _mark(fn, _FEATURE, "feature")


def dataset_generator(fn: F) -> F:
    """Mark ``fn(*, rng, **params) -> scrub.Dataset`` as a generator files may name."""
    return _mark(fn, _GENERATOR, "dataset_generator")


_KINDS = {
    "feature": (_FEATURE, "feature", "def f(dataset, rows)"),
    "dataset generator": (_GENERATOR, "dataset_generator", "def g(*, rng, size=1000)"),
}


def import_marked(ref: str, *, what: str) -> Callable[..., Any]:
    """Import ``package.module:function``, which must be marked as a ``what``.

    Args:
        ref: the reference, as written in the file.
        what: ``"feature"`` or ``"dataset generator"``.

    Raises:
        HypothesisError: malformed or relative reference, the module does not import, no such
            attribute, or the attribute is not marked with the decorator.
    """
    attr_name, decorator, signature = _KINDS[what]
    example = f"@scrub.{decorator}\n    {signature}: ..."
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise HypothesisError(
            f"{what} {ref!r} is neither a registered name nor 'package.module:function'",
            hint=f"name a registered {what}, or your own function as 'mypackage.module:name'",
        )
    if module_name.startswith("."):
        raise HypothesisError(
            f"{what} {ref!r} names a relative module ({module_name!r}); a file has no package "
            "to be relative to",
            hint=f"write the module's full name, e.g. 'mypackage{module_name}:{attr}', and make "
            "sure it is importable (installed, or on PYTHONPATH)",
        )
    parts = [*module_name.split("."), *attr.split(".")]
    if not all(p.isidentifier() for p in parts):
        raise HypothesisError(
            f"{what} {ref!r} is not 'package.module:function' (names are Python identifiers)",
            hint="e.g. 'mypackage.features:first_is_even'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HypothesisError(
            f"cannot import module {module_name!r} for {what} {ref!r}: {exc}",
            hint="make sure the module is importable (installed, or on PYTHONPATH)",
        ) from exc
    except Exception as exc:  # the user's module failed while importing
        raise HypothesisError(
            f"importing module {module_name!r} for {what} {ref!r} failed: "
            f"{type(exc).__name__}: {exc}",
            hint="fix the error in that module (run 'python -c \"import "
            f"{module_name}\"' to see the traceback)",
        ) from exc
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise HypothesisError(
                f"module {module_name!r} has no attribute {attr!r} (for {what} {ref!r})",
                hint=f"check the spelling; define it in {module_name} and mark it:\n    {example}",
            ) from None
    if getattr(obj, attr_name, False) is not True:
        kind = (
            "a class"
            if inspect.isclass(obj)
            else "a function"
            if callable(obj)
            else f"a {type(obj).__name__}, not a function,"
        )
        raise HypothesisError(
            f"{ref!r} is {kind} not marked as a scrub {what}; a file may only call functions "
            f"declared with @scrub.{decorator}",
            hint=f"in {module_name}, decorate it:\n    {example}",
        )
    return obj
