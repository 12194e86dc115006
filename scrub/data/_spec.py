"""Dataset spec files: ``dataset: PATH`` in a hypothesis file names a YAML file of its own.

A spec file holds ``generator`` and ``params`` (a :class:`~scrub._schema.DatasetSpec`), so that
competing hypotheses scrub on one definition. Its path is relative to the hypothesis file.
Errors in it are located in the spec file itself (with lines); errors reading it at the
hypothesis file's ``dataset:`` key. A spec inside the hypothesis's directory tree is named by
the path the hypothesis was given with; one outside it (``../../datasets/x.yaml``) by its plain
absolute path, never by a chain of ``..``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydantic

from scrub._errors import HypothesisError
from scrub._schema import DatasetSpec, schema_error
from scrub._yaml import YamlDocument, parse_yaml, read_bounded

__all__ = ["dataset_spec_path", "in_dataset_file", "load_dataset_spec"]


def in_dataset_file(err: HypothesisError, doc: YamlDocument) -> HypothesisError:
    """An error at ``dataset.X`` of the merged spec, moved to key ``X`` of the spec file."""
    if err.key[:1] != ("dataset",):
        return err
    return HypothesisError(
        err.problem, file=doc.file, key=err.key[1:], hint=err.hint, line=err.line
    )


def dataset_spec_path(ref: str, file: str | None) -> str:
    """Where a ``dataset: PATH`` spec is, as errors name it.

    Relative to the hypothesis file's directory; a spec inside that directory's tree is named
    by the path the hypothesis was given with (``hypotheses/x/data.yaml``), one outside it by its
    plain absolute path (``/work/datasets/induction.yaml``), never by a chain of ``..``.
    """
    base = Path(file).parent if file else Path()
    joined = Path(ref).expanduser()
    if not joined.is_absolute():
        joined = base / joined
    resolved = joined.resolve()
    if resolved.is_relative_to(base.resolve()):
        return os.path.normpath(joined)
    return str(resolved)


def load_dataset_spec(ref: str, file: str | None) -> YamlDocument:
    """Read a dataset spec file named by ``dataset: PATH`` (relative to the hypothesis file)."""
    path = dataset_spec_path(ref, file)
    try:
        raw = read_bounded(path, what="dataset spec")
    except HypothesisError as exc:  # located at this file's 'dataset:'
        detail = exc.problem.removeprefix("cannot read dataset spec: ")
        raise HypothesisError(
            f"cannot read dataset spec {ref!r} ({path}): {detail}",
            file=file,
            key=("dataset",),
            hint=(exc.hint + "; " if exc.hint else "")
            + "'dataset:' is a mapping (generator, params) or the path of a dataset spec "
            "file, relative to this hypothesis file",
        ) from None
    doc = parse_yaml(raw, file=path, what="dataset spec")  # errors located in the spec file
    if not isinstance(doc.data, dict):
        raise HypothesisError(
            f"a dataset spec file must be a mapping with 'generator' and 'params', not "
            f"{type(doc.data).__name__} (named by {file or 'the hypothesis'} at 'dataset:')",
            file=path,
            hint="write 'generator: NAME' and 'params: {...}'",
        )
    try:
        DatasetSpec.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        raise doc.locate(schema_error(exc, path, prefix=("dataset",))) from None
    return doc
