"""``scrub reproduce ioi``: every IOI circuit claim, run with scrub's own tools, in one command.

A reproduction is a fixed list of **steps**, each one of scrub's existing experiments on shipped
files, so that every number it writes can be re-measured alone with the command printed beside
it:

- **patches** (:func:`scrub.experiments.patch`): the iterative path patching grids that find the
  circuit (``experiments/ioi_names/``), saved with their figures;
- **knockouts** (``kind: knockout`` experiments, :mod:`scrub.experiments._knockout`): the IOI
  paper's node-level faithfulness F(C) / F(M), every head outside the circuit mean-ablated over
  the ABC prompts per template and position (``experiments/ioi_names/``, ``experiments/ioi/``);
- **claims** (:func:`scrub.experiments.compare`): each claim of the IOI paper and of Redwood's
  REMIX exercises as competing hypothesis files (``hypotheses/ioi_names/`` for the shipped
  offline model, ``hypotheses/ioi/`` for GPT-2 small), scored on one experiment per claim
  (difference, paired CI, sign-flip p, Holm within the claim);
- **diagnosis** (:func:`scrub.experiments.diagnose`) of the claim-1 winner.

It writes ``results.md`` (the tables, each with its command), ``results.json`` (every
comparison, diagnosis and grid summary) and figures (``patches/*.png``) into the output folder.

Pitfalls:

- The files are found in the source checkout (``hypotheses/``, ``experiments/`` next to the
  ``scrub`` package); an installed wheel without them is refused with a hint.
- ``n`` overrides every file's ``defaults.n``; the commands written beside each number carry the
  same ``--n``, so they reproduce it. A tiny ``n`` (the fast test) gives wide or undefined
  intervals, not wrong ones.
- The GPT-2 target needs GPT-2's weights (``--model gpt2`` with them in the Hugging Face cache,
  or a local checkpoint); it has no patching grids (the IOI paper's heads are given).
"""

from __future__ import annotations

import json
import math
import shlex
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scrub._errors import HypothesisError, ScrubWarning
from scrub._hypothesis import Hypothesis
from scrub._model import ScrubModel, load_model
from scrub._precision import check_precision
from scrub._result import bootstrap_ci
from scrub._tree import stream
from scrub.experiments._attention import AttentionResult
from scrub.experiments._knockout import KnockoutResult
from scrub.experiments.compare import Comparison, compare
from scrub.experiments.diagnose import diagnose
from scrub.experiments.patching import patch

__all__ = ["CLAIMS", "KNOCKOUTS", "PATCHES", "Claim", "Reproduction", "reproduce"]

ROOT = Path(__file__).resolve().parent.parent.parent
"""The source checkout: ``hypotheses/`` and ``experiments/`` live here."""


@dataclass(frozen=True)
class Claim:
    """One claim as rival hypothesis files, scored together with ``scrub compare``.

    Attributes:
        key: short identifier (``--only`` and the JSON key).
        title: the claim in words.
        files: hypothesis files, relative to the target's folder (the first is the claim).
        read: how to read the comparison (what supports or refutes the claim).
    """

    key: str
    title: str
    files: tuple[str, ...]
    read: str


_IOI_NAMES_CLAIMS = (
    Claim(
        "circuit",
        "The whole circuit under resample ablation",
        ("circuit.yaml", "circuit_copiers.yaml"),
        "recovered by the circuit the grids find; adding the name copiers tests whether they "
        "matter for IO - S",
    ),
    Claim(
        "faithfulness_mean",
        "The IOI paper's faithfulness check: mean ablation over the ABC distribution",
        ("circuit_mean.yaml", "direct_movers_mean.yaml"),
        "F(C) / F(M) is the scrubbed logit difference over the clean one (the paper's 87% on "
        "GPT-2 small); recovered subtracts the all-mean-ablated baseline",
    ),
    Claim(
        "direct_paths",
        "Only the direct paths from the movers to the logits matter (REMIX: about 50%)",
        ("direct_movers.yaml", "circuit.yaml"),
        "direct_movers keeps the movers' whole computation on the prompt; circuit explains it",
    ),
    Claim(
        "claim2_keys",
        "REMIX claim 2: the movers' keys need only a name at each name position",
        ("keys_exact.yaml", "keys_any_name.yaml"),
        "a difference near 0 supports the claim",
    ),
    Claim(
        "claim3_signal",
        "REMIX claim 3: token signal vs position signal",
        ("signal_token.yaml", "signal_position.yaml"),
        "which signal the movers' S input carries",
    ),
    Claim(
        "claim4_v",
        "REMIX claim 4: the movers read duplicate-token / induction output at S2 through V",
        ("v_from_heads.yaml", "v_from_mlps.yaml"),
        "heads' writes at S2 vs the S token through embedding and MLPs",
    ),
    Claim(
        "claim5_qcomp",
        "REMIX claim 5: duplicate-token heads Q-compose with later induction heads",
        ("dup_qcomp.yaml", "v_from_heads.yaml"),
        "the Q-composition chain vs the heads at S2 alone",
    ),
    Claim(
        "claim6_only_movers",
        "REMIX claim 6: only the movers can make the logit difference positive",
        ("without_movers.yaml",),
        "the scrubbed logit difference without the movers' direct paths (≤ 0 supports it)",
    ),
)

_GPT2_CLAIMS = (
    Claim(
        "circuit",
        "The whole circuit under resample ablation",
        ("gpt2_circuit.yaml", "direct_movers.yaml"),
        "the IOI paper's 26 heads as a hypothesis vs the movers' direct paths alone",
    ),
    Claim(
        "faithfulness_mean",
        "The IOI paper's faithfulness check: mean ablation over the ABC distribution",
        ("circuit_mean.yaml", "direct_movers_mean.yaml"),
        "F(C) / F(M): the paper reports F(M) = 3.56 and a circuit at about 87% of it",
    ),
    Claim(
        "direct_paths",
        "Only the direct paths from the (negative) name movers to the logits matter",
        ("direct_movers.yaml", "gpt2_circuit.yaml"),
        "REMIX: about 50% of the logit difference",
    ),
    Claim(
        "claim2_keys",
        "REMIX claim 2: the name movers' keys need only a name at IO",
        ("keys_exact.yaml", "keys_any_name.yaml"),
        "a difference near 0 supports the claim",
    ),
    Claim(
        "claim3_signal",
        "REMIX claim 3: the S-inhibition heads send a token vs a position signal",
        ("signal_token.yaml", "signal_position.yaml"),
        "REMIX: mostly position",
    ),
    Claim(
        "claim4_v",
        "REMIX claim 4: S-inhibition reads duplicate-token and induction output at S2 via V",
        ("sinh_v_dup_induction.yaml", "sinh_v_resampled.yaml"),
        "induction and duplicate-token heads at S2 vs everything at S2 resampled",
    ),
    Claim(
        "claim5_qcomp",
        "REMIX claim 5: duplicate-token heads Q-compose with later induction heads",
        ("induction_qcomp.yaml", "sinh_v_dup_induction.yaml"),
        "the induction heads' queries at S2 from the duplicate-token heads",
    ),
    Claim(
        "claim6_only_movers",
        "REMIX claim 6: only the name movers can make the logit difference positive",
        ("without_movers.yaml",),
        "the scrubbed logit difference without the movers' direct paths (≤ 0 supports it)",
    ),
)

CLAIMS: dict[str, tuple[Claim, ...]] = {"ioi_names": _IOI_NAMES_CLAIMS, "gpt2": _GPT2_CLAIMS}
"""The claims of each target (``ioi_names``: the shipped offline model; ``gpt2``: GPT-2 small)."""

PATCHES: dict[str, tuple[str, ...]] = {
    "ioi_names": (
        "iterative_path_logits.yaml",
        "iterative_path_logits_io.yaml",
        "iterative_path_logits_s2.yaml",
        "path_into_movers_q.yaml",
        "path_into_movers_k.yaml",
        "path_into_movers_v.yaml",
        "attention_movers.yaml",
    ),
    "gpt2": (),
}
"""Patching experiments (in ``experiments/<target>/``) run before the claims."""

KNOCKOUTS: dict[str, tuple[str, ...]] = {
    "ioi_names": ("knockout_circuit.yaml", "knockout_movers.yaml", "knockout_movers_s2.yaml"),
    "gpt2": ("knockout_circuit.yaml",),
}
"""Node-level knockout experiments (in ``experiments/<target>/``): the IOI paper's F(C) / F(M)."""

NODE_LEVEL = "faithfulness_node"
"""The ``--only`` key of the knockout step (its results.json key is ``knockouts``)."""

_FOLDERS = {
    "ioi_names": ("hypotheses/ioi_names", "experiments/ioi_names"),
    "gpt2": ("hypotheses/ioi", "experiments/ioi"),
}


@dataclass(frozen=True)
class Reproduction:
    """What :func:`reproduce` wrote: the output folder, its files, and the results."""

    out: Path
    files: list[Path]
    results: dict[str, Any]

    def __repr__(self) -> str:
        return f"Reproduction({str(self.out)!r}, {len(self.files)} files)"


def _target(model: str | None) -> str:
    if model is None or model == "ioi_names":
        return "ioi_names"
    return "gpt2"


def _command(*parts: object) -> str:
    return "scrub " + " ".join(shlex.quote(str(p)) for p in parts)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "undefined"
    return f"{x:.{digits}f}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x < 0.001 else f"{x:.4f}" if x < 0.1 else f"{x:.3f}"


def reproduce(
    what: str = "ioi",
    *,
    model: ScrubModel | str | None = None,
    out: str | Path = "results/reproduce-ioi",
    n: int | None = None,
    only: Sequence[str] | None = None,
    patches: bool = True,
    max_batch_rows: int = 1024,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Reproduction:
    """Run every IOI claim and write ``results.md``, ``results.json`` and figures into ``out``.

    Args:
        what: the paper to reproduce; only ``"ioi"``.
        model: ``None`` or ``"ioi_names"`` (the shipped offline model, the default), or a GPT-2
            source (``"gpt2"``, a local checkpoint; it runs the ``hypotheses/ioi/`` files), or
            a loaded model of either kind.
        out: the output folder (created).
        n: reference examples for every step (default: each file's ``defaults.n``).
        only: claim keys to run (default: all), ``faithfulness_node`` for the knockouts; the
            patching grids run unless ``patches`` is False.
        patches: run the patching grids (ioi_names only).
        max_batch_rows: most rows in one forward pass.
        device, dtype: where and in which type to load ``model`` (default ``cpu``,
            ``float32``), as in :func:`scrub.run`; a loaded ``model`` must match them.

    Returns:
        the :class:`Reproduction` (its ``results`` are what ``results.json`` holds).

    Raises:
        HypothesisError: an unknown ``what`` or claim key, or the shipped files are missing.
    """
    if what != "ioi":
        raise HypothesisError(f"nothing to reproduce named {what!r}", hint="scrub reproduce ioi")
    source = model.source if isinstance(model, ScrubModel) else model
    target = _target(source)
    claims = CLAIMS[target]
    knockouts = only is None or NODE_LEVEL in only
    if only is not None:
        keys = [c.key for c in claims] + [NODE_LEVEL]
        unknown = sorted(set(only) - set(keys))
        if unknown:
            raise HypothesisError(
                f"unknown claim {unknown[0]!r}", hint=f"claims: {', '.join(keys)}"
            )
        claims = tuple(c for c in claims if c.key in only)
    hyp_dir, exp_dir = (ROOT / f for f in _FOLDERS[target])
    if not hyp_dir.is_dir():
        raise HypothesisError(
            f"the IOI hypothesis files are not here ({hyp_dir})",
            hint="run scrub reproduce from a source checkout of scrub (git clone)",
        )
    out = Path(out)
    (out / "patches").mkdir(parents=True, exist_ok=True)
    if not isinstance(model, ScrubModel):
        model = load_model(source or "ioi_names", device=device or "cpu", dtype=dtype or "float32")
    else:
        check_precision(model, device=device, dtype=dtype)
    model_opt = (
        () if target == "ioi_names" and source in (None, "ioi_names") else ("--model", source)
    )
    n_opt = () if n is None else ("--n", n)
    results: dict[str, Any] = {"what": what, "target": target, "model": model.source, "n": n}
    results.update(model.precision)
    md = [f"# IOI reproduced on `{model.source}`", ""]
    md += [f"Written by `{_command('reproduce', 'ioi', *model_opt, *n_opt, '--out', out)}`.", ""]
    files: list[Path] = []
    if patches and PATCHES[target]:
        results["patches"], lines, written = _patches(
            exp_dir, PATCHES[target], out, model, n, n_opt, max_batch_rows
        )
        md += lines
        files += written
    if knockouts:
        opts = (*model_opt, *n_opt)
        results["knockouts"], lines = _knockouts(
            exp_dir, KNOCKOUTS[target], model, n, opts, max_batch_rows
        )
        md += lines
        _write(out, results, md)
    results["claims"] = {}
    winner = None
    for claim in claims:
        paths = [hyp_dir / f for f in claim.files]
        rivals: list[Hypothesis | str | Path] = list(paths)
        with warnings.catch_warnings():  # each score keeps its warnings (results.json)
            warnings.simplefilter("ignore", ScrubWarning)
            cmp = compare(rivals, model=model, n=n, max_batch_rows=max_batch_rows)
        cmd = _command("compare", *map(_rel, paths), *model_opt, *n_opt)
        results["claims"][claim.key] = {"title": claim.title, "command": cmd, **cmp.to_dict()}
        md += _claim_section(claim, cmp, cmd, results["claims"][claim.key])
        _write(out, results, md)  # so far, in case a later step fails
        if claim.key == "circuit":
            best = max(range(len(paths)), key=lambda i: cmp.hypotheses[i].recovered)
            winner = paths[best]
    if winner is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScrubWarning)
            diag = diagnose(winner, model=model, n=n, max_batch_rows=max_batch_rows)
        cmd = _command("diagnose", _rel(winner), *model_opt, *n_opt)
        results["diagnosis"] = {"command": cmd, **diag.to_dict()}
        md += [
            "## Diagnosis of the claim-1 winner",
            "",
            f"`{cmd}`",
            "",
            "```",
            diag.table(),
            "```",
            "",
        ]
    _write(out, results, md)
    files += [out / "results.md", out / "results.json"]
    return Reproduction(out, files, results)


def _write(out: Path, results: dict[str, Any], md: list[str]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    (out / "results.md").write_text("\n".join(md).rstrip() + "\n")


def _patches(
    exp_dir: Path,
    names: Sequence[str],
    out: Path,
    model: ScrubModel,
    n: int | None,
    n_opt: tuple,
    max_batch_rows: int,
) -> tuple[dict[str, Any], list[str], list[Path]]:
    summary: dict[str, Any] = {}
    md = ["## Finding the circuit: iterative path patching", ""]
    written: list[Path] = []
    for name in names:
        path = exp_dir / name
        with warnings.catch_warnings():  # the result keeps its warnings
            warnings.simplefilter("ignore", ScrubWarning)
            result = patch(path, model=model, n=n, max_batch_rows=max_batch_rows)
        assert not isinstance(result, KnockoutResult), "knockouts are their own step"
        written += [p for p in result.save(out / "patches") if p.suffix == ".png"]
        cmd = _command("patch", _rel(path), *n_opt, "--out", "DIR")
        if isinstance(result, AttentionResult):
            summary[result.name] = {"command": cmd, "mean_abs_change": result.mean_abs_change}
            pictures = ", ".join(f"`patches/{result.name}.{h}.example0.png`" for h in result.heads)
            md += [f"### {result.name}", "", f"`{cmd}`: attention pictures {pictures}.", ""]
            continue
        frame = result.to_frame()
        frame = frame.reindex(frame["normalized"].abs().sort_values(ascending=False).index)
        top = frame.head(8)
        summary[result.name] = {
            "command": cmd,
            "clean": float(result.clean.mean()),
            "source": float(result.scale_values.mean()),
            "top": top.to_dict(orient="records"),
        }
        md += [f"### {result.name}", "", f"`{cmd}` (grid: `patches/{result.name}.grid.png`)", ""]
        md += [
            f"clean {result.clean.mean():.3f}, source run {result.scale_values.mean():.3f}; "
            f"the 8 cells of largest |normalized effect| (p adjusted by {result.correction}):",
            "",
            "| sender | position | effect | normalized | 95% CI | p (adj.) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in top.to_dict(orient="records"):
            md.append(
                f"| {row['sender']} | {row['position']} | {row['effect']:+.3f} | "
                f"{_fmt(row['normalized'])} | [{_fmt(row['normalized_low'])}, "
                f"{_fmt(row['normalized_high'])}] | {_p(row['p_adjusted'])} |"
            )
        md.append("")
    return summary, md, written


def _knockouts(
    exp_dir: Path,
    names: Sequence[str],
    model: ScrubModel,
    n: int | None,
    opts: tuple,
    max_batch_rows: int,
) -> tuple[dict[str, Any], list[str]]:
    summary: dict[str, Any] = {}
    md = [
        "## IOI paper faithfulness, node level",
        "",
        "Every head outside the circuit has its output replaced by its mean over the ABC prompts "
        "(per template and position, as Wang et al. 2022 do); the circuit's heads, the MLPs and "
        "the embeddings are computed on what that gives them. F(M): the clean model; F(∅): every "
        "head knocked out; recovered = (F(C) − F(∅)) / (F(M) − F(∅)); 95% paired bootstrap CIs "
        "over the reference examples.",
        "",
        "| circuit | F(M) | F(C) | F(∅) | F(C) / F(M) | 95% CI | recovered | 95% CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commands = []
    for name in names:
        path = exp_dir / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScrubWarning)
            result = patch(path, model=model, n=n, max_batch_rows=max_batch_rows)
        assert isinstance(result, KnockoutResult), f"{name} is not a knockout"
        cmd = _command("patch", _rel(path), *opts)
        summary[result.name] = {"command": cmd, **result.to_dict()}
        commands.append(f"`{cmd}`")
        md.append(
            f"| `{result.name}` ({result.kept_nodes} nodes kept) | {result.clean.mean():.3f} | "
            f"{result.circuit.mean():.3f} | {result.baseline.mean():.3f} | "
            f"{_fmt(result.faithfulness)} | [{_fmt(result.faithfulness_ci[0])}, "
            f"{_fmt(result.faithfulness_ci[1])}] | {_fmt(result.recovered)} | "
            f"[{_fmt(result.recovered_ci[0])}, {_fmt(result.recovered_ci[1])}] |"
        )
    n_used = next(iter(summary.values()))["n"] if summary else n
    md += ["", f"n = {n_used}; commands: " + ", ".join(commands) + ".", ""]
    for name, record in summary.items():
        if record["completeness"]:
            md += _completeness_table(name, record["completeness"])
    return summary, md


def _completeness_table(name: str, rows: list[dict[str, Any]]) -> list[str]:
    md = [
        f"Completeness of `{name}` (the paper's class-based check: K one class of the circuit; "
        "small |F(C \\ K) − F(M \\ K)| for every K if the circuit is complete):",
        "",
        "| K | F(C \\ K) | F(M \\ K) | incompleteness | 95% CI |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lo, hi = row["incompleteness_ci"]
        md.append(
            f"| {row['removed']} | {row['circuit_without']:.3f} | {row['model_without']:.3f} | "
            f"{_fmt(row['incompleteness'])} | [{_fmt(lo)}, {_fmt(hi)}] |"
        )
    return [*md, ""]


def _claim_section(claim: Claim, cmp: Comparison, cmd: str, record: dict[str, Any]) -> list[str]:
    md = [f"## {claim.title}", "", f"`{cmd}` ({claim.read})", ""]
    md += [
        f"clean {cmp.clean:.3f}, baseline {cmp.baseline:.3f} "
        f"({_kind(cmp.experiment['baseline'])}, ablation {_kind(cmp.experiment['ablation'])}), "
        f"n = {cmp.experiment['n']}",
        "",
        "| hypothesis | recovered | 95% CI | scrubbed metric | 95% CI | scrubbed / clean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    record["scrubbed_ci"] = {}
    for h in cmp.hypotheses:
        values = np.asarray(h.per_example, dtype=float)
        lo, hi = bootstrap_ci(
            (values,), np.mean, rng=stream(cmp.experiment["seed"], "reproduce", h.name)
        )
        record["scrubbed_ci"][h.name] = [lo, hi]
        ratio = h.scrubbed / cmp.clean if cmp.clean else math.nan
        md.append(
            f"| `{h.name}` | {_fmt(h.recovered)} | [{_fmt(h.ci[0])}, {_fmt(h.ci[1])}] | "
            f"{h.scrubbed:.3f} | [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(ratio)} |"
        )
    if cmp.pairs:
        md += [
            "",
            "| A vs B | A − B | 95% CI | p | p (Holm) | verdict |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for p in cmp.pairs:
            md.append(
                f"| `{p.a}` vs `{p.b}` | {p.difference:+.3f} | [{_fmt(p.ci[0])}, "
                f"{_fmt(p.ci[1])}] | {_p(p.p)} | {_p(p.p_holm)} | {p.verdict} |"
            )
    md.append("")
    return md


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", value))
    return str(value)
