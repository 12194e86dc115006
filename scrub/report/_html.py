"""Small HTML builders for section bodies: tables, figures and notes, every value escaped.

Section renderers return :class:`markupsafe.Markup`; anything that came from a file goes
through :func:`markupsafe.escape` here, so a hypothesis named ``<script>`` stays text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from markupsafe import Markup, escape

__all__ = ["ci_text", "figure", "kv_table", "note", "num_text", "table"]


def num_text(value: float | None, digits: int = 4) -> str:
    """A number for a table: 4 significant digits; ``None``/NaN as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def ci_text(ci: tuple[float, float] | None, digits: int = 4) -> str:
    if ci is None:
        return "n/a"
    return f"[{num_text(ci[0], digits)}, {num_text(ci[1], digits)}]"


def table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric_from: int = 1, cls: str = ""
) -> Markup:
    """A table; columns from ``numeric_from`` on are right-aligned with tabular digits."""
    head = "".join(
        f'<th class="{"num" if i >= numeric_from else ""}">{escape(h)}</th>'
        for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"num" if i >= numeric_from else ""}">{escape(c)}</td>'
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return Markup(
        f'<div class="table-scroll"><table class="data {escape(cls)}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def kv_table(pairs: Iterable[tuple[str, Any]]) -> Markup:
    """A two-column key/value table; values that are Markup are kept as they are."""
    rows = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in pairs
    )
    return Markup(f'<table class="kv"><tbody>{rows}</tbody></table>')


def figure(svg: str, caption: str, *, kind: str) -> Markup:
    """A figure: inline SVG (trusted: made by matplotlib or Graphviz) and its caption."""
    return Markup(
        f'<figure class="figure" data-figure="{escape(kind)}">'
        f'<div class="svg">{svg}</div><figcaption>{escape(caption)}</figcaption></figure>'
    )


def note(text: str, *, cls: str = "note") -> Markup:
    return Markup(f'<p class="{escape(cls)}">{escape(text)}</p>')
