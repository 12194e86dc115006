"""Paste ``scrub reproduce ioi``'s ``results.md`` into README.md's "Reproducing IOI" section.

Usage: ``python scripts/readme_ioi.py DIR/results.md`` (after ``scrub reproduce ioi --out DIR``).
The text between the ``reproduce-ioi`` markers in README.md is replaced by the results, with
their headings demoted under the section's own and the output folder written as ``DIR``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- reproduce-ioi:begin -->", "<!-- reproduce-ioi:end -->"


def main(results_md: str) -> None:
    """Replace the marked README section by ``results_md``'s tables."""
    text = Path(results_md).read_text()
    body = text.split("\n", 1)[1].strip()  # drop the title; the section has its own
    body = re.sub(r"--out \S+`", "--out DIR`", body)
    body = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 1) + " ", body, flags=re.M)
    readme = README.read_text()
    start, stop = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + body + "\n" + readme[stop:])


if __name__ == "__main__":
    main(sys.argv[1])
