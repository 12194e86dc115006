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
from typing import Any

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

    One error can carry several independent problems of one file (every key pydantic rejected,
    for example): ``problem``, ``file``, ``key``, ``hint`` and ``line`` describe the first, and
    :attr:`errors` lists them all; the message shows every one.

    Attributes:
        problem: what is wrong, in one sentence.
        file: the hypothesis file, when there is one.
        key: the YAML key path of the offending entry, e.g. ``("nodes", "ind", "components", 0)``.
        hint: how to fix it.
        line: the 1-based line of the entry in ``file``, where known.
        source_line: the text of that line, where known.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        key: Sequence[str | int] = (),
        hint: str | None = None,
        line: int | None = None,
        source_line: str | None = None,
        more: Sequence[HypothesisError] = (),
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.key = tuple(key)
        self.hint = hint
        self.line = line
        self.source_line = source_line
        self.more: tuple[HypothesisError, ...] = tuple(e for err in more for e in err.errors)
        super().__init__(self._message())

    @property
    def errors(self) -> tuple[HypothesisError, ...]:
        """Every problem this error reports, the first one (this error's own fields) first."""
        return (self._alone(), *self.more)

    @classmethod
    def collect(cls, errors: Sequence[HypothesisError]) -> HypothesisError:
        """One error reporting all of ``errors`` (at least one), the first one first."""
        flat = [e for err in errors for e in err.errors]
        if not flat:
            raise ValueError("collect() needs at least one error")
        first = flat[0]
        return first._copy(more=flat[1:])

    def _alone(self) -> HypothesisError:
        return self._copy(more=()) if self.more else self

    def _copy(self, **changes: Any) -> HypothesisError:
        fields: dict[str, Any] = {
            "file": self.file,
            "key": self.key,
            "hint": self.hint,
            "line": self.line,
            "source_line": self.source_line,
            "more": self.more,
        }
        fields.update(changes)
        return HypothesisError(self.problem, **fields)

    def _head(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.key:
            where.append(f"at {_format_key(self.key)}")
        head = ": ".join([" ".join(where), self.problem]) if where else self.problem
        if self.line is not None:
            source = self.source_line
            if source and len(source) > 120:
                source = source[:117] + "..."
            head += f"\n  line {self.line}" + (f": {source}" if source else "")
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def _message(self) -> str:
        if not self.more:
            return self._head()
        rest = "\n".join(e._head() for e in self.more)
        n = len(self.more)
        return f"{self._head()}\nand {n} more problem{'s' if n > 1 else ''}:\n{rest}"

    def at_line(self, line: int | None, source_line: str | None = None) -> HypothesisError:
        """A copy of the first problem located at ``line`` of its file."""
        return self._copy(line=line, source_line=source_line)

    def with_context(
        self, *, file: str | Path | None = None, key_prefix: Sequence[str | int] = ()
    ) -> HypothesisError:
        """Return a copy located in ``file`` with ``key_prefix`` prepended to every key."""

        def moved(err: HypothesisError) -> HypothesisError:
            return err._copy(
                file=file if file is not None else err.file,
                key=(*key_prefix, *err.key),
                more=(),
            )

        return HypothesisError.collect([moved(e) for e in self.errors])


class ScrubWarning(UserWarning):
    """A scrub that runs, but whose result may not mean what its author expects."""


HypothesisError.__module__ = "scrub"
ScrubWarning.__module__ = "scrub"
