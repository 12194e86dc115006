"""Start-up cost of the light commands (``scrub --help``, ``scrub check``, ``scrub graph``).

Each command runs in a fresh interpreter (``python -m scrub.cli ...``) ``--repeat`` times; the
table gives the median wall time and the median CPU time of the child (user + system, from
``resource.getrusage(RUSAGE_CHILDREN)``), and which heavy packages the command imported
(``-X importtime``, one extra run).

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_startup.py --repeat 3
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_startup.py --root ../main
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    ("--help",),
    ("check", "hypotheses/induction/kcomp.yaml"),
    ("check", "hypotheses/ioi_names/circuit.yaml"),
    ("check", "hypotheses/ioi/gpt2_circuit.yaml"),
    ("graph", "hypotheses/induction/kcomp.yaml"),
)
HEAVY = ("torch", "scipy", "transformers", "transformer_lens", "pandas", "matplotlib")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "").replace(str(ROOT), "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def timed(args: tuple[str, ...]) -> tuple[float, float, int]:
    """Wall seconds, child CPU seconds and exit code of one ``scrub ARGS`` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "scrub.cli", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def heavy_imports(args: tuple[str, ...]) -> list[str]:
    """The packages of :data:`HEAVY` that ``scrub ARGS`` imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "scrub.cli", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return [h for h in HEAVY if h in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, help="the checkout to time (default: this one)")
    args = parser.parse_args()
    if args.root is not None:
        global ROOT
        ROOT = args.root.resolve()
    print(f"checkout {ROOT}")
    print("| command | wall (median) | CPU (median) | exit | heavy imports |")
    print("| --- | --- | --- | --- | --- |")
    for command in COMMANDS:
        runs = [timed(command) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        codes = sorted({r[2] for r in runs})
        imported = ", ".join(heavy_imports(command)) or "none"
        print(
            f"| `scrub {' '.join(command)}` | {wall:.2f} s | {cpu:.2f} s | "
            f"{','.join(map(str, codes))} | {imported} |"
        )


if __name__ == "__main__":
    main()
