"""The report page: documents → sections → one self-contained HTML file.

:func:`build_report` renders each document's sections (:data:`KIND_SECTIONS`, keyed by the
document's kind), a comparison across documents where there are several results, and lays them
out with the Jinja2 template ``templates/report.html.j2``. Styles are inline and figures are
inline SVG, so the page needs no network and survives being mailed.

A section that does not apply says so in its place (:class:`~scrub.report._documents.Skip`); a
section that fails says that it could not be drawn and why, and the rest of the page still
renders (``strict=True`` raises instead, for tests). A document of a kind this version does not
know gets a note and a list of its fields.

Pitfall: the page is deterministic (no timestamp, fixed SVG ids), so two reports of the same
results are byte-identical and can be diffed; the time of making is not recorded.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import jinja2
from markupsafe import Markup

from scrub.report import (
    _diagnosis_sections,
    _experiment_sections,
    _patch_sections,
    _result_sections,
)
from scrub.report._context import Context
from scrub.report._documents import Document, Skip, load_document
from scrub.report._html import kv_table, note

__all__ = ["KIND_SECTIONS", "Section", "build_report", "write_report"]

SectionFn = Callable[[Context], Markup]

KIND_SECTIONS: MappingProxyType[str, tuple[tuple[str, str, SectionFn], ...]] = MappingProxyType(
    {
        "scrub_result": _result_sections.SECTIONS,
        "comparison": _experiment_sections.COMPARISON_SECTIONS,
        "diagnosis": _diagnosis_sections.DIAGNOSIS_SECTIONS,
        "patching": _patch_sections.PATCHING_SECTIONS,
        "attention": _patch_sections.ATTENTION_SECTIONS,
        "knockout": _patch_sections.KNOCKOUT_SECTIONS,
    }
)
"""Per document kind: its sections as ``(id, title, renderer)``, in page order."""


@dataclass(frozen=True)
class Section:
    """One rendered section: its body, or the note that stands in its place."""

    id: str
    kind: str
    title: str
    body: Markup | None = None
    note: str | None = None


@dataclass(frozen=True)
class Block:
    """One document's part of the page."""

    id: str
    kind: str
    title: str
    subtitle: str
    sections: tuple[Section, ...]


def _render(section_id: str, title: str, fn: Callable[[], Markup], *, strict: bool) -> Section:
    kind = section_id.rsplit("-", 1)[-1]
    try:
        return Section(section_id, kind, title, body=fn())
    except Skip as exc:
        return Section(section_id, kind, title, note=f"Not shown: {exc}")
    except Exception as exc:  # a broken section must not take the page down
        if strict:
            raise
        return Section(
            section_id,
            kind,
            title,
            note=f"This section could not be drawn ({type(exc).__name__}: {exc}). "
            "Please report it with the result file.",
        )


def _block(doc: Document, index: int, *, strict: bool) -> Block:
    key = f"r{index}"
    ctx = Context(doc=doc, key=key, strict=strict)
    title = _title(doc)
    subtitle = f"from {doc.source}" if doc.path is not None else ""
    specs = KIND_SECTIONS.get(doc.kind)
    if specs is None:
        return Block(key, doc.kind, title, subtitle, (_unknown(doc, key),))
    try:
        description = ctx.hypothesis().spec.description
    except Exception:  # the graph section says why the hypothesis is missing
        description = None
    if description:
        subtitle = f"{description.strip()} ({subtitle})" if subtitle else description.strip()
    sections = tuple(
        _render(f"{key}-{sid}", stitle, functools.partial(fn, ctx), strict=strict)
        for sid, stitle, fn in specs
    )
    return Block(key, doc.kind, title, subtitle, sections)


def _title(doc: Document) -> str:
    data = doc.data
    if doc.kind == "comparison" and isinstance(data.get("hypotheses"), list):
        names = [str(h.get("name")) for h in data["hypotheses"] if isinstance(h, dict)]
        return "comparison: " + ", ".join(names)
    if doc.kind == "diagnosis" and data.get("hypothesis"):
        return f"diagnosis: {data['hypothesis']}"
    return str(data.get("hypothesis") or data.get("name") or doc.source)


def _unknown(doc: Document, key: str) -> Section:
    known = ", ".join(sorted(KIND_SECTIONS))
    text = (
        f"This scrub version does not know how to draw a result of kind {doc.kind!r} "
        f"(it draws: {known}); its top-level fields are listed below."
    )
    pairs = [(k, _short(v)) for k, v in sorted(doc.data.items())]
    body = Markup("").join([note(text, cls="note skipped"), kv_table(pairs)])
    return Section(f"{key}-unknown", "unknown", "Unrecognised result", body=body)


def _short(value: object, limit: int = 200) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def build_report(
    documents: Sequence[Document],
    *,
    title: str | None = None,
    command_line: Sequence[str] | None = None,
    strict: bool = False,
) -> str:
    """The report page for ``documents``, as HTML text.

    Args:
        documents: the results, in the order to show them.
        title: the page's title (default: from the documents).
        command_line: the command that made the report, shown at the foot of the page.
        strict: raise from a failing section instead of noting it in the page.
    """
    if not documents:
        raise ValueError("a report needs at least one document")
    blocks = [_block(doc, i + 1, strict=strict) for i, doc in enumerate(documents)]
    overview: list[Section] = []
    results = [d for d in documents if d.kind == "scrub_result"]
    if len(results) > 1:
        overview.append(
            _render(
                "overview-comparison",
                "Comparison",
                lambda: _result_sections.compare_results(results, "overview"),
                strict=strict,
            )
        )
    if title is None:
        names = [b.title for b in blocks]
        title = names[0] if len(names) == 1 else f"{len(names)} results: " + ", ".join(names)
    from scrub import __version__

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scrub.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    css = (Path(__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html.j2").render(
        title=title,
        css=Markup(css),
        overview=overview,
        blocks=blocks,
        version=__version__,
        command_line=" ".join(command_line) if command_line else None,
    )


def write_report(
    sources: Sequence[str | Path | Document],
    out: str | Path,
    *,
    title: str | None = None,
    command_line: Sequence[str] | None = None,
) -> Path:
    """Write the report of ``sources`` (result files or documents) to ``out``.

    Raises:
        ReportError: a result file cannot be read.
    """
    docs = [s if isinstance(s, Document) else load_document(s) for s in sources]
    html = build_report(docs, title=title, command_line=command_line)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
