"""Model sources: where a model name or path points (shipped, local directory or hub name).

:func:`resolve` turns what a user wrote (``model:`` in a hypothesis file, ``--model``,
:func:`scrub.load_model`) into a path to load and its kind: ``shipped`` (a directory under
:data:`SHIPPED_MODELS`), ``local`` (a Hugging Face directory, relative to the hypothesis file
when there is one) or ``hub`` (a name for the Hugging Face cache). The error helpers here say
which of these was meant and how to fix it.

Pitfall: a relative path is relative to the hypothesis file, not the current directory; the
hint says so when the two differ. A shipped name wins over a same-named local directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scrub._errors import HypothesisError
from scrub._model_variants import WEIGHTS_HINT, ModelSpecFile, read_model_spec

__all__ = [
    "SHIPPED_MODELS",
    "architecture_name",
    "load_error",
    "model_spec_file",
    "path_hint",
    "resolve",
    "shipped_names",
    "spec_file_errors",
]

SHIPPED_MODELS = Path(__file__).parent / "models"
"""Directory of the models shipped with scrub (one HF-format directory each)."""


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_MODELS.iterdir() if (p / "config.json").exists())


def _looks_like_path(source: str) -> bool:
    """A path rather than a hub name (``org/name``): ``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``."""
    return (
        source.startswith((".", "/", "~"))
        or "\\" in source
        or source.count("/") > 1
        or source.endswith("/")
    )


def resolve(source: str, relative_to: str | Path | None) -> tuple[str, str]:
    """Where to load ``source`` from, and its kind: shipped, local or hub."""
    shipped = SHIPPED_MODELS / source
    if "/" not in source and (shipped / "config.json").exists():
        return str(shipped), "shipped"
    local = Path(source).expanduser()
    if not local.is_absolute() and relative_to is not None:
        local = Path(relative_to) / local
    if local.is_dir():
        if not (local / "config.json").exists():
            raise HypothesisError(
                f"model directory {source!r} ({local}) has no config.json",
                hint="save a Hugging Face model there with model.save_pretrained(dir)",
            )
        return str(local), "local"
    if _looks_like_path(source) or local.exists():
        raise HypothesisError(
            f"cannot load model {source!r}: no such directory {os.path.normpath(local)}",
            hint=path_hint(source, relative_to),
        )
    return source, "hub"


def path_hint(source: str, relative_to: str | Path | None) -> str:
    hint = (
        "a relative 'model:' path is relative to the hypothesis file"
        if relative_to is not None
        else "a relative model path is relative to the current directory"
    )
    if relative_to is not None and Path(source).expanduser().is_dir():
        hint += f"; there is a {source!r} relative to the current directory: use --model {source}"
    return hint + f"; shipped models: {', '.join(shipped_names())}"


def load_error(
    source: str, path: str, kind: str, exc: Exception, relative_to: str | Path | None
) -> HypothesisError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if kind == "hub":
        local = os.path.normpath(Path(relative_to or ".") / source)
        return HypothesisError(
            f"cannot load model {source!r}: "
            + (f"no such directory ({local}), and " if "/" in source else "")
            + f"not a model in the Hugging Face cache ({str(exc).splitlines()[0]})",
            hint=f"shipped models: {', '.join(shipped_names())}; or a local Hugging Face "
            "directory (relative to the hypothesis file); hub names like 'gpt2' need the "
            "weights in your Hugging Face cache"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else "")
            + ": "
            + WEIGHTS_HINT.format(name=source),
        )
    return HypothesisError(
        f"cannot load model {source!r} from {path}: {str(exc).splitlines()[0]}",
        hint="the directory must hold a Hugging Face model (config.json and weights) of a "
        "supported architecture (GPT-2 style)",
    )


def architecture_name(bridge: Any, path: str) -> str:
    """The model's architecture name, from its config (for messages)."""
    try:
        import json

        config = json.loads((Path(path) / "config.json").read_text())
        names = config.get("architectures") or [config.get("model_type", "unknown")]
        return ", ".join(str(n) for n in names)
    except (OSError, ValueError):
        return str(getattr(bridge.cfg, "architecture", None) or "unknown")


def model_spec_file(source: str, relative_to: str | Path | None) -> ModelSpecFile:
    """The model spec file ``source`` names (relative to ``relative_to``), read and checked.

    Raises:
        HypothesisError: no such file, or what :func:`read_model_spec` refuses.
    """
    file = Path(source).expanduser()
    if not file.is_absolute() and relative_to is not None:
        file = Path(relative_to) / file
    if not file.is_file():
        raise HypothesisError(
            f"cannot load model {source!r}: no such model spec file {os.path.normpath(file)}",
            hint=path_hint(source, relative_to),
        )
    return read_model_spec(file)


@contextlib.contextmanager
def spec_file_errors(file: Path) -> Iterator[None]:
    """Errors raised while loading what a spec file names point at the file (key ``path``)."""
    try:
        yield
    except HypothesisError as exc:
        if exc.file is not None:
            raise
        raise exc.with_context(file=file, key_prefix=() if exc.key else ("path",)) from None
