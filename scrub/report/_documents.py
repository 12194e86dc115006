"""The documents a report is made of: result JSON files, read defensively.

A document is one JSON object and its **kind**: the value of its ``kind`` key, or, for the
``scrub run`` JSON that has no such key, ``scrub_result`` when it has the keys of a
:class:`~scrub.ScrubResult`. Sections read fields through the helpers here, which return
``None`` for a missing or mistyped field instead of raising, so a result written by an older or
newer scrub draws what it can.

What a JSON file does not carry, a report may find elsewhere: the hypothesis (to draw it) from
the file the result names, checked against the recorded sha256; the dataset's fields (for
breakdowns) by regenerating the dataset from its recorded generator, params and seed. A
document made in memory (``scrub run --report``) carries the objects themselves in
``context``.

Pitfall: a regenerated dataset is the run's dataset only if the run made it from its file (as
``scrub run`` does); a result of ``scrub.run(..., dataset=...)`` on another dataset has other
fields. Sections that use it say so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Document",
    "ReportError",
    "Skip",
    "detect_kind",
    "document_from_result",
    "get_ci",
    "get_dict",
    "get_floats",
    "get_num",
    "get_str",
    "load_document",
]

KIND_ALIASES = {
    "run": "scrub_result",
    "scrub_result": "scrub_result",
    "result": "scrub_result",
    "compare": "comparison",
    "diagnose": "diagnosis",
    "activation": "patching",
    "path": "patching",
    "iterative_path": "patching",
}
"""``kind`` values and the kind of document they mean (``scrub patch`` writes its experiment's)."""

_RESULT_KEYS = {"recovered", "scrubbed", "per_example"}
"""A document with ``hypothesis`` and one of these is a ``scrub run`` result, even if partial."""


class ReportError(Exception):
    """A file given to the report cannot be read at all (missing, not JSON, not an object)."""


class Skip(Exception):
    """A section that does not apply or cannot be drawn; its message is shown in its place."""


@dataclass(frozen=True)
class Document:
    """One result to report on.

    Attributes:
        data: the JSON object.
        kind: what it is (see :func:`detect_kind`).
        source: where it came from, for headings and notes.
        path: the file it was read from, if any (relative paths inside are resolved from it).
        context: objects a document made in memory carries: ``hypothesis`` (a
            :class:`~scrub.Hypothesis`), ``dataset`` (a :class:`~scrub.Dataset`),
            ``command_line`` (a list of strings).
    """

    data: Mapping[str, Any]
    kind: str
    source: str
    path: Path | None = None
    context: Mapping[str, Any] = field(default_factory=dict)


def detect_kind(data: Mapping[str, Any]) -> str:
    """The document's kind: its ``kind`` key, else guessed from its keys (``scrub run``,
    ``scrub compare`` and ``scrub diagnose`` JSON have no ``kind``), else ``unknown``."""
    kind = data.get("kind")
    if isinstance(kind, str) and kind:
        return KIND_ALIASES.get(kind, kind)
    if {"experiment", "hypotheses"} <= set(data):
        return "comparison"
    if {"experiment", "rows", "hypothesis"} <= set(data):
        return "diagnosis"
    if "hypothesis" in data and _RESULT_KEYS & set(data):
        return "scrub_result"
    return "unknown"


def load_document(path: str | Path) -> Document:
    """Read a result JSON file.

    Raises:
        ReportError: the file is missing, not JSON, or not a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path} is not a text (UTF-8) file: {exc.reason}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ReportError(
            f"{path} holds a JSON {type(data).__name__}, not an object: a result file is an "
            "object such as the one 'scrub run --out' writes"
        )
    return Document(data=data, kind=detect_kind(data), source=str(path), path=path)


def document_from_result(result: Any, **context: Any) -> Document:
    """A document for an in-memory :class:`~scrub.ScrubResult` (or anything with ``to_dict``)."""
    data = result.to_dict()
    return Document(data=data, kind=detect_kind(data), source="(this run)", context=context)


# --------------------------------------------------------------------------------------------
def get_num(data: Mapping[str, Any], key: str) -> float | None:
    """A finite number at ``key``, else ``None`` (missing, null, NaN or not a number)."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def get_ci(data: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """A ``[low, high]`` pair of finite numbers at ``key``, else ``None``."""
    value = data.get(key)
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    pair = get_num({"v": value[0]}, "v"), get_num({"v": value[1]}, "v")
    if pair[0] is None or pair[1] is None:
        return None
    return (pair[0], pair[1])


def get_dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The mapping at ``key``, else an empty one (missing, null or not a mapping)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def get_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def get_floats(data: Mapping[str, Any], key: str) -> list[float] | None:
    """A list of numbers at ``key`` (``None`` entries become NaN), else ``None``."""
    value = data.get(key)
    if not isinstance(value, list) or not value:
        return None
    out = []
    for item in value:
        if item is None:
            out.append(math.nan)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            out.append(float(item))
        else:
            return None
    return out


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def candidate_paths(doc: Document, recorded: str) -> list[Path]:
    """Where a path recorded in ``doc`` may be now: as written, then from the file's folders."""
    raw = Path(recorded)
    if raw.is_absolute():
        return [raw]
    out = [raw]
    if doc.path is not None:
        here = doc.path.resolve().parent
        out += [base / raw for base in (here, *list(here.parents)[:3])]
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen
