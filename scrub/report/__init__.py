"""Reports: one self-contained HTML page per result (or per set of results compared).

``scrub report RESULT.json [MORE.json ...] --out report.html`` (or ``scrub run --report``)
reads result files, picks the sections of each by its kind (:data:`KIND_SECTIONS`) and writes
one page with inline styles and inline SVG figures: the hypothesis as a diagram, recovered with
its CI, per-example distributions, breakdowns by dataset field, warnings and provenance.

The page is built to be trusted: a number is shown as recorded or not at all (undefined values
say why), a section that cannot be drawn says so in its place, and a result file of an unknown
kind still gets a page that lists its fields.

Other commands that make results put them on a page with::

    from scrub.report import document_from_result, write_report
    write_report([document_from_result(result, hypothesis=hyp, command_line=argv)], out)

where ``result`` has ``to_dict()`` returning JSON with a ``kind`` that :data:`KIND_SECTIONS`
knows (a new kind is one more entry there).
"""

from scrub.report._documents import (
    Document,
    ReportError,
    Skip,
    detect_kind,
    document_from_result,
    load_document,
)
from scrub.report.html import KIND_SECTIONS, build_report, write_report

__all__ = [
    "KIND_SECTIONS",
    "Document",
    "ReportError",
    "Skip",
    "build_report",
    "detect_kind",
    "document_from_result",
    "load_document",
    "write_report",
]
