"""What section renderers share: the document's derived objects, found once per report.

:class:`Context` looks up, at most once per document, the hypothesis a result was scored with
and the dataset fields of its reference rows (see :mod:`scrub.report._documents` for where they
come from and their pitfalls). Failures become :class:`~scrub.report._documents.Skip` with the
reason, so each section that needs them says why it is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scrub._errors import HypothesisError
from scrub.report._documents import Document, Skip, candidate_paths, get_str, sha256_of

__all__ = ["Context", "locate_hypothesis"]

MAX_CATEGORIES = 12
"""A dataset field with more distinct values over the reference rows is not broken down by."""


@dataclass
class Context:
    """Per-document lookups for one report build.

    Attributes:
        doc: the document.
        key: a page-unique prefix for the document's ids (``r1``).
        strict: raise from a failing section instead of noting it (tests).
    """

    doc: Document
    key: str
    strict: bool = False
    _memo: dict[str, Any] = field(default_factory=dict)

    def hypothesis(self) -> Any:
        """The :class:`~scrub.Hypothesis` the result was scored with.

        Raises:
            Skip: not recorded, not found, changed since, or no longer valid.
        """
        if "hypothesis" not in self._memo:
            try:
                self._memo["hypothesis"] = self._find_hypothesis()
            except Skip as exc:
                self._memo["hypothesis"] = exc
        found = self._memo["hypothesis"]
        if isinstance(found, Skip):
            raise found
        return found

    def _find_hypothesis(self) -> Any:
        from scrub._hypothesis import hypothesis_from_dict

        doc = self.doc
        if doc.context.get("hypothesis") is not None:
            return doc.context["hypothesis"]
        embedded = doc.data.get("hypothesis_spec")
        if isinstance(embedded, dict):
            try:
                return hypothesis_from_dict(embedded, default_name=str(doc.data.get("hypothesis")))
            except HypothesisError as exc:
                raise Skip(
                    f"the hypothesis recorded in the result is not valid now: {exc}"
                ) from None
        recorded = get_str(doc.data, "hypothesis_file")
        if recorded is None:
            raise Skip("the result records no hypothesis file, so the hypothesis cannot be drawn")
        return locate_hypothesis(doc, recorded, get_str(doc.data, "hypothesis_sha256"))

    def reference_fields(self) -> tuple[dict[str, np.ndarray], str]:
        """Categorical dataset fields of the reference rows, and where they came from.

        Raises:
            Skip: the dataset cannot be made, or does not match the result.
        """
        if "fields" not in self._memo:
            try:
                self._memo["fields"] = self._find_fields()
            except Skip as exc:
                self._memo["fields"] = exc
        found = self._memo["fields"]
        if isinstance(found, Skip):
            raise found
        return found

    def _find_fields(self) -> tuple[dict[str, np.ndarray], str]:
        from scrub._tree import stream
        from scrub.data import make_dataset

        data = self.doc.data
        reference = data.get("reference")
        if not isinstance(reference, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in reference
        ):
            raise Skip("the result records no reference rows")
        dataset = self.doc.context.get("dataset")
        source = "the run's dataset"
        spec = data.get("dataset")
        if dataset is None:
            seed = data.get("seed")
            if not isinstance(spec, dict) or not isinstance(spec.get("generator"), str):
                raise Skip("the result records no dataset generator")
            if not isinstance(seed, int):
                raise Skip("the result records no seed, so its dataset cannot be remade")
            params: dict[str, Any] = spec["params"] if isinstance(spec.get("params"), dict) else {}
            try:
                dataset = make_dataset(spec["generator"], params, stream(seed, "dataset"))
            except HypothesisError as exc:
                raise Skip(f"the dataset cannot be remade: {exc}") from None
            if _canonical(dict(dataset.params)) != _canonical(params):
                raise Skip(
                    "the remade dataset's params differ from the recorded ones, so its "
                    "fields may not be the run's"
                )
            source = (
                f"the {spec['generator']} dataset remade from its recorded generator, params "
                f"and seed ({seed}), as 'scrub run' makes it"
            )
        rows = np.asarray(reference, dtype=np.int64)
        if rows.size == 0 or rows.min() < 0 or rows.max() >= len(dataset):
            raise Skip("the reference rows lie outside the dataset")
        fields: dict[str, np.ndarray] = {}
        for name in sorted(dataset.fields):
            values = np.asarray(dataset.fields[name])
            if values.ndim != 1 or values.dtype.kind not in "biuUSO":
                continue
            picked = values[rows]
            if 2 <= len(np.unique(picked.astype(str))) <= MAX_CATEGORIES:
                fields[name] = picked
        return fields, source


def locate_hypothesis(doc: Document, recorded: str, want: str | None) -> Any:
    """Load the hypothesis file a document names, if it is still the file that was scored.

    Raises:
        Skip: not found, changed since (its sha256 differs from ``want``), or invalid now.
    """
    from scrub._hypothesis import load_hypothesis

    candidates = candidate_paths(doc, recorded)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        raise Skip(
            f"the hypothesis file {recorded} is not found (looked at "
            f"{', '.join(str(p) for p in candidates)})"
        )
    matching = [p for p in existing if want is None or sha256_of(p) == want]
    if not matching:
        raise Skip(
            f"the hypothesis file {existing[0]} has changed since this result was made "
            f"(its sha256 is {(sha256_of(existing[0]) or '?')[:12]}…, the result records "
            f"{(want or '?')[:12]}…), so it may not be the hypothesis that was scored"
        )
    try:
        return load_hypothesis(matching[0])
    except HypothesisError as exc:
        raise Skip(f"the hypothesis file no longer loads: {exc}") from None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
