"""Resolve ``package.module:function`` references from hypothesis files (never ``eval``)."""

from __future__ import annotations

import importlib
from typing import Any

from scrub._errors import HypothesisError

__all__ = ["import_object"]


def import_object(ref: str, *, what: str) -> Any:
    """Import ``package.module:attribute``.

    Raises:
        HypothesisError: the reference is malformed, or the module or attribute does not exist.
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise HypothesisError(
            f"{what} {ref!r} is neither a registered name nor 'package.module:function'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HypothesisError(
            f"cannot import module {module_name!r} for {what} {ref!r}: {exc}",
            hint="make sure the module is importable (installed, or on PYTHONPATH)",
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise HypothesisError(
            f"module {module_name!r} has no attribute {attr!r} (for {what} {ref!r})"
        ) from None
