"""Errors and warnings that scrub raises to its users.

An error says what went wrong, where (file, YAML key path, node), what was found and how to fix
it. ``HypothesisError`` is for anything the author of a hypothesis file can fix; ``ScrubWarning``
flags a scrub that is valid but may not mean what its author thinks (for example a conditional
sampler that can only return the reference example, so that part of the hypothesis scrubs
nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["HypothesisError", "ScrubWarning"]


def _format_key(key: Sequence[str | int]) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class HypothesisError(ValueError):
    """A hypothesis file (or a hypothesis built in Python) is invalid.

    Attributes:
        problem: what is wrong, in one sentence.
        file: the hypothesis file, when there is one.
        key: the YAML key path of the offending entry, e.g. ``("nodes", "ind", "components", 0)``.
        hint: how to fix it.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        key: Sequence[str | int] = (),
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.key = tuple(key)
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(f"at {_format_key(self.key)}")
        head = ": ".join([" ".join(where), self.problem]) if where else self.problem
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def with_context(
        self, *, file: str | Path | None = None, key_prefix: Sequence[str | int] = ()
    ) -> HypothesisError:
        """Return a copy located in ``file`` with ``key_prefix`` prepended to the key."""
        return HypothesisError(
            self.problem,
            file=file if file is not None else self.file,
            key=(*key_prefix, *self.key),
            hint=self.hint,
        )


class ScrubWarning(UserWarning):
    """A scrub that runs, but whose result may not mean what its author expects."""


HypothesisError.__module__ = "scrub"
ScrubWarning.__module__ = "scrub"
