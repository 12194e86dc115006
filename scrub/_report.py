"""Reports: a short table of a :class:`~scrub.ScrubResult` for the terminal."""

from __future__ import annotations

import math

from scrub._result import ScrubResult

__all__ = ["format_result"]


def _ci(ci: tuple[float, float]) -> str:
    lo, hi = ci
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.4f}, {hi:.4f}]"


def format_result(result: ScrubResult) -> str:
    """A few lines: clean, baseline, scrubbed and recovered, each with its CI, then warnings."""
    pct = f"{result.confidence:.0%}"
    rows = [
        ("clean", result.clean, result.clean_ci),
        (f"baseline ({result.baseline_kind})", result.baseline, result.baseline_ci),
        ("scrubbed", result.scrubbed, result.scrubbed_ci),
        ("recovered", result.recovered, result.recovered_ci),
    ]
    width = max(len(name) for name, _, _ in rows)
    precision = "" if result.device == "cpu" else f", device={result.device}"
    precision += "" if result.dtype == "float32" else f", dtype={result.dtype}"
    lines = [
        f"{result.hypothesis}: {result.metric['kind']} on {result.model} "
        f"(n={result.n}, seed={result.seed}, engine={result.engine}{precision})",
        f"  {'':<{width}}  {'mean':>10}  {pct} CI",
    ]
    for name, value, ci in rows:
        if value is None:
            reason = result.recovered_undefined_reason or "no reason recorded"
            lines.append(f"  {name:<{width}}  {'undefined':>10}  ({reason})")
        else:
            lines.append(f"  {name:<{width}}  {value:>10.4f}  {_ci(ci)}")
    lines += [
        f"  warning: {w}"
        for w in result.warnings
        if not w.startswith("the fraction recovered is undefined")  # shown in its row
    ]
    return "\n".join(lines)
