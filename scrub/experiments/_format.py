"""Text tables of comparisons and diagnoses, for the terminal."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scrub.experiments.compare import Comparison
    from scrub.experiments.diagnose import Diagnosis

__all__ = ["format_comparison", "format_diagnosis"]


def num(value: float | None, digits: int = 3, *, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def interval(ci: tuple[float, float] | None, digits: int = 3) -> str:
    if ci is None or not all(math.isfinite(v) for v in ci):
        return "n/a"
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def pvalue(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return [fmt(header).rstrip(), *(fmt(r).rstrip() for r in rows)]


def _experiment_line(exp: dict) -> str:
    ablation = exp["ablation"]["kind"]
    return (
        f"{exp['metric']['kind']} on {exp['model']}, dataset {exp['dataset']['generator']}, "
        f"n={exp['n']}, seed={exp['seed']}, draws={len(exp['draw_seeds'])}, "
        f"baseline {exp['baseline']['kind']}, ablation {ablation}"
    )


def format_comparison(cmp: Comparison) -> str:
    """The table ``scrub compare`` prints."""
    exp = cmp.experiment
    pct = f"{exp['confidence']:.0%}"
    eps = exp["margin"]
    lines = [
        _experiment_line(exp),
        f"clean {cmp.clean:.4g}, baseline {cmp.baseline:.4g}",
        "",
    ]
    header = ["hypothesis", "recovered", f"{pct} CI"]
    several = len(exp["draw_seeds"]) > 1
    if several:
        header += ["draw sd", "± examples / draws", f"{pct} CI (examples + draws)"]
    header += ["p(recovered < 1)", f"TOST p (ε={eps:g})"]
    controls = any(h.controls for h in cmp.hypotheses)
    if controls:
        header.append("vs random controls")
    rows = []
    for h in cmp.hypotheses:
        row = [h.name, num(h.recovered), interval(h.ci)]
        if several:
            sd = float(np.std(h.per_draw, ddof=1))
            examples = (h.ci[1] - h.ci[0]) / 2
            row += [num(sd, 4), f"{num(examples, 4)} / {num(h.draws_half_width, 4)}"]
            row.append(interval(h.total_ci))
        row += [pvalue(h.complete["p_incomplete"]), pvalue(h.complete["p_equivalent"])]
        if controls:
            c = h.controls
            row.append(
                f"percentile {c['percentile']:.0f} of {c['count']} (median {num(c['median'])})"
                if c
                else ""
            )
        rows.append(row)
    lines += _grid(header, rows)
    if cmp.pairs:
        lines.append("")
        header = ["A vs B", "recovered A − B", f"{pct} CI"]
        if several:
            header.append(f"{pct} CI (examples + draws)")
        header += ["p", "p (Holm)", "verdict"]
        rows = []
        for p in cmp.pairs:
            row = [f"{p.a} vs {p.b}", num(p.difference, sign=True), interval(p.ci)]
            if several:
                row.append(interval(p.total_ci))
            row += [pvalue(p.p), pvalue(p.p_holm), p.verdict]
            rows.append(row)
        lines += _grid(header, rows)
    warnings = [f"{h.name}: {w}" for h in cmp.hypotheses for w in h.warnings]
    lines += [f"  warning: {w}" for w in warnings]
    return "\n".join(lines)


def format_diagnosis(diag: Diagnosis) -> str:
    """The table ``scrub diagnose`` prints: variants ranked by loss."""
    exp = diag.experiment
    pct = f"{exp['confidence']:.0%}"
    lines = [
        f"{diag.hypothesis}: " + _experiment_line(exp),
        f"recovered {num(diag.recovered)} {interval(diag.ci)}",
        "",
    ]
    groups = list(diag.groups)
    header = ["node", "change", "recovered", "Δ vs hypothesis", f"{pct} CI", "p"]
    header += [f"{diag.by}={g}" for g in groups]
    rows = []
    for v in diag.rows:
        row = [v.node, v.change, num(v.recovered), num(v.difference, sign=True)]
        row += [interval(v.ci), pvalue(v.p)]
        row += [num(v.by_group.get(g)) for g in groups]
        rows.append(row)
    lines += _grid(header, rows)
    lines += [f"  skipped: {s}" for s in diag.skipped]
    lines += [f"  warning: {w}" for w in diag.warnings]
    return "\n".join(lines)
