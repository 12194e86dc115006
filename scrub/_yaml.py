"""Reading YAML files that users hand to scrub (hypotheses, dataset specs, experiments).

Every file scrub reads goes through :func:`read_yaml` (or :func:`read_yaml_document`, which also
keeps the bytes and where each key is), one safe loader that turns anything odd into a located
:class:`~scrub.HypothesisError` instead of a traceback, a hang or a silently different value:

- **size**: at most :data:`MAX_BYTES` are read, and only from regular files (``/dev/zero``, a
  pipe or a directory is refused before reading);
- **text**: the file must be UTF-8 text (a binary file or another encoding is refused, naming the
  first bad byte);
- **duplicate keys** anywhere are refused, with both lines (plain YAML keeps the last one and
  silently drops the first: a copied node block, or ``metric:`` twice);
- **bombs**: nesting deeper than :data:`MAX_DEPTH` and documents of more than :data:`MAX_NODES`
  values *after expanding aliases* (``&a [*b, *b, ...]`` chains) are refused while composing,
  before anything is built, so memory stays bounded;
- **tags**: only plain values are allowed (strings, numbers, booleans, null, lists, mappings and
  ``<<`` merges). ``!!binary``, ``!!python/...``, ``!!set`` or a custom ``!tag`` are refused, and
  dates are read as text (``2024-01-01`` is the string, not a ``datetime.date``).

Pitfall: YAML 1.1, which PyYAML implements, reads unquoted ``yes``/``no``/``on``/``off`` as
booleans, so a key or value meant as text must be quoted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scrub._errors import HypothesisError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YamlDocument",
    "parse_yaml",
    "read_bounded",
    "read_yaml",
    "read_yaml_document",
]

MAX_BYTES = 1 << 20
"""The largest YAML file scrub reads (1 MiB); hypothesis and dataset files are a few KiB."""

MAX_DEPTH = 64
"""The deepest nesting of lists and mappings in a file."""

MAX_NODES = 100_000
"""The most values a file may hold once every alias is expanded (guards against alias bombs)."""

_PLAIN = "a file scrub reads holds plain YAML: text, numbers, booleans, null, lists and mappings"

_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """Raised inside the loader; turned into a located HypothesisError by :func:`parse_yaml`."""

    def __init__(self, problem: str, *, line: int | None, hint: str, key: tuple = ()) -> None:
        super().__init__(problem)
        self.problem, self.line, self.hint, self.key = problem, line, hint, key


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, composing with bounded depth and size; no dates, no ``=``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._composed += 1
        if self._composed > MAX_NODES:
            raise _Refused(
                f"the file holds more than {MAX_NODES:,} values",
                line=self.peek_event().start_mark.line + 1,
                hint="hypothesis and dataset files are small; is this the right file?",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"lists and mappings are nested more than {MAX_DEPTH} deep",
                    line=self.peek_event().start_mark.line + 1,
                    hint="flatten the structure; no scrub file nests this deep",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# Dates and the '=' value tag are read as plain text: no scrub key takes a date.
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class YamlDocument:
    """A YAML file as read: its data, its bytes, and the line of every key path.

    Attributes:
        data: what the file holds (``{}`` for an empty file).
        raw: the file's bytes (hash them for provenance).
        file: the path as given.
        lines: YAML key path (``("nodes", "ind", "components", 1)``) → 1-based line.
    """

    data: Any
    raw: bytes
    file: str
    lines: Mapping[tuple, int] = field(default_factory=dict, repr=False)

    def line_of(self, key: tuple) -> int | None:
        """The line of ``key``, or of its nearest enclosing key that has one."""
        key = tuple(key)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return None

    def source_line(self, line: int) -> str | None:
        """The text of 1-based ``line``, stripped."""
        lines = self.raw.decode("utf-8", errors="replace").splitlines()
        return lines[line - 1].strip() if 0 < line <= len(lines) else None

    def locate(self, error: HypothesisError) -> HypothesisError:
        """``error`` (and every error it collects) with lines, where they are in this file."""
        found = []
        for err in error.errors:
            if err.line is None and err.file == self.file:
                line = self.line_of(err.key)
                if line is not None:
                    err = err.at_line(line, self.source_line(line))
            found.append(err)
        return HypothesisError.collect(found)


def read_yaml(path: str | Path, *, what: str) -> Any:
    """Read a YAML file safely (see the module docstring); ``{}`` if it is empty.

    Args:
        path: the file.
        what: what the file is, for messages (``"hypothesis file"``, ``"dataset spec"``).

    Raises:
        HypothesisError: unreadable, too large, not UTF-8, not YAML, or not plain YAML.
    """
    return read_yaml_document(path, what=what).data


def read_yaml_document(path: str | Path, *, what: str) -> YamlDocument:
    """Like :func:`read_yaml`, keeping the bytes and the line of every key."""
    raw = read_bounded(path, what=what)
    return parse_yaml(raw, file=str(path), what=what)


def read_bounded(path: str | Path, *, what: str, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Raises:
        HypothesisError: missing, unreadable, not a regular file, or larger than ``limit``.
    """
    path = Path(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise HypothesisError(
                f"cannot read {what}: it is a directory",
                file=path,
                hint=f"name the YAML file inside it, e.g. {path / 'name.yaml'}",
            )
        if not stat.S_ISREG(info.st_mode):
            raise HypothesisError(
                f"cannot read {what}: not a regular file (a device, pipe or socket)",
                file=path,
                hint="name a YAML file",
            )
        too_big = HypothesisError(
            f"{what} is larger than {limit:,} bytes",
            file=path,
            hint=f"{what}s are a few KiB; is this the right file?",
        )
        if info.st_size > limit:
            raise too_big
        with path.open("rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise HypothesisError(
            f"cannot read {what}: {exc.strerror or exc}",
            file=path,
            hint="check the path (relative paths are relative to the current directory)",
        ) from exc
    if len(raw) > limit:
        raise too_big
    return raw


def parse_yaml(raw: bytes | str, *, file: str | None = None, what: str) -> YamlDocument:
    """Parse YAML text safely (see the module docstring).

    Raises:
        HypothesisError: not UTF-8, not YAML, or not plain YAML; located in ``file``.
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    text = _decode(raw, file=file, what=what)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except _Refused as exc:
            raise HypothesisError(
                exc.problem, file=file, hint=exc.hint, line=exc.line, source_line=_line(text, exc)
            ) from None
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, file) from exc
        if node is None:
            return YamlDocument({}, raw, str(file))
        lines: dict[tuple, int] = {}
        try:
            _check_tree(node, loader, lines)
        except _Refused as exc:
            raise HypothesisError(
                exc.problem,
                file=file,
                key=exc.key,
                hint=exc.hint,
                line=exc.line,
                source_line=_line(text, exc),
            ) from None
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, file) from exc
    finally:
        loader.dispose()
    return YamlDocument({} if data is None else data, raw, str(file), lines)


def _line(text: str, exc: _Refused) -> str | None:
    lines = text.splitlines()
    if exc.line is None or not 0 < exc.line <= len(lines):
        return None
    line = lines[exc.line - 1].strip()
    return line if len(line) <= 120 else line[:117] + "..."


def _decode(raw: bytes, *, file: str | None, what: str) -> str:
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        line = raw[:offset].count(b"\n") + 1
        raise HypothesisError(
            f"{what} is not text: it holds a NUL byte (byte {offset}, line {line})",
            file=file,
            hint="name a YAML text file; is this the right file?",
        )
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HypothesisError(
            f"{what} is not UTF-8 text: byte {exc.start} (line {line}) is 0x{raw[exc.start]:02x}",
            file=file,
            hint="save the file as UTF-8 (scrub reads YAML files as UTF-8 only)",
        ) from None


def _yaml_error(exc: yaml.YAMLError, file: str | None) -> HypothesisError:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return HypothesisError(
        f"not valid YAML{where}: {problem}",
        file=file,
        hint="check the indentation and quoting near that line: 'key: value', lists as "
        "'- item' or [a, b], mappings as {key: value}",
    )


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_tree(root: Node, loader: _Loader, lines: dict[tuple, int]) -> None:
    """Tags, duplicate keys, recursion and expanded size of a composed document.

    Fills ``lines`` with the line of every key path (first occurrence, aliases not followed).
    """
    # Expanded size, bottom-up over distinct nodes (aliases are shared node objects).
    size: dict[int, int] = {}
    state: dict[int, int] = {}  # 1: on the stack, 2: done
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            size[id(node)] = 1 + sum(size[id(c)] for c in _children(node))
            state[id(node)] = 2
            if size[id(node)] > MAX_NODES:
                raise _Refused(
                    f"the file expands to more than {MAX_NODES:,} values once its aliases "
                    "(*name) are expanded",
                    line=node.start_mark.line + 1,
                    hint="an alias bomb? repeat small values instead of nesting aliases",
                )
            continue
        if state.get(id(node)) == 2:
            continue
        if state.get(id(node)) == 1:
            raise _Refused(
                "an alias (*name) refers to a value that contains it (a recursive structure)",
                line=node.start_mark.line + 1,
                hint="aliases may only repeat a value defined before them, outside it",
            )
        state[id(node)] = 1
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if state.get(id(c)) != 2)

    # Tags, keys and lines, top-down with key paths; each distinct node once.
    seen: set[int] = set()
    todo: list[tuple[Node, tuple]] = [(root, ())]
    while todo:
        node, path = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _ALLOWED_TAGS:
            raise _Refused(
                f"YAML tag {_short_tag(node.tag)!r} is not allowed",
                line=node.start_mark.line + 1,
                key=path,
                hint=f"{_PLAIN}; remove the tag (quote the value if it is text)",
            )
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                todo.append((item, (*path, i)))
        elif isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for knode, vnode in node.value:
                if knode.tag == _MERGE:
                    todo.append((vnode, path))
                    continue
                if not isinstance(knode, ScalarNode) or knode.tag not in _ALLOWED_TAGS:
                    raise _Refused(
                        "a mapping key must be a plain name, not a list, mapping or tagged value",
                        line=knode.start_mark.line + 1,
                        key=path,
                        hint="write keys as 'name: value'",
                    )
                key = loader.construct_object(knode)
                line = knode.start_mark.line + 1
                if key in first:
                    where = ".".join(str(p) for p in path) or "the top level"
                    raise _Refused(
                        f"duplicate key {key!r} in {where} (lines {first[key]} and {line}); "
                        "YAML would keep only the last one",
                        line=line,
                        key=(*path, key),
                        hint="each key may appear once in a mapping: merge the two entries, "
                        "or rename one",
                    )
                first[key] = line
                lines.setdefault((*path, key), line)
                todo.append((vnode, (*path, key)))


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag
