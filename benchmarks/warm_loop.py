"""Cold and warm runs of `pytest suites -m smoke` and `-m pattern2` on the local target: cold starts
and stops the target in the run; warm reuses a target a `--keep-target` run left up. Goals here:
warm smoke <= 3 s, warm pattern2 <= 10 s, cold pattern2 <= 30 s (binaries built). Prints each command,
its wall time (process start to exit, what a developer waits) and the time pytest reports itself.

    LLMD_INSTANCE=<n> python -m benchmarks.warm_loop [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

REPO = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "suites", "-q", "-p", "no:cacheprovider"]
DOWN = [sys.executable, "-m", "llmd_conformance.local", "down"]


def run(argv: list[str]) -> tuple[float, float | None, str]:
    """Wall seconds, pytest's own "in N s" (None for other commands), the summary line."""
    began = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - began
    lines = result.stdout.strip().splitlines() or [f"exit {result.returncode}"]
    match = re.search(r" in ([\d.]+)s", lines[-1])
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed (exit {result.returncode}):\n{result.stdout[-3000:]}"
                         f"{result.stderr[-2000:]}")
    return wall, float(match.group(1)) if match else None, lines[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"instance {os.environ.get('LLMD_INSTANCE', '0')}; load average before: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    figures: dict[str, list[tuple[float, float | None]]] = {}
    commands: dict[str, str] = {}

    def measure(name: str, command: list[str], report_dir: str) -> None:
        wall, reported, summary = run([*command, "--report-dir", report_dir])
        figures.setdefault(name, []).append((wall, reported))
        commands[name] = shlex.join(["python", *command[1:]])
        print(f"  {name:28s} {wall:5.1f}s wall  ({summary})", flush=True)

    run(DOWN)
    with TemporaryDirectory() as reports:
        for n in range(args.runs):
            report = f"{reports}/{n}"
            measure("startup (--collect-only)", [*PYTEST, "-m", "smoke", "--collect-only"], report)
            measure("cold smoke", [*PYTEST, "-m", "smoke"], report)
            measure("cold pattern2", [*PYTEST, "-m", "pattern2"], report)
            measure("cold smoke, kept", [*PYTEST, "-m", "smoke", "--keep-target"], report)
            measure("warm smoke", [*PYTEST, "-m", "smoke", "--keep-target"], report)
            measure("warm pattern2", [*PYTEST, "-m", "pattern2", "--keep-target"], report)
            run(DOWN)
    print("medians (wall / pytest's own):")
    for name, values in figures.items():
        walls = [w for w, _ in values]
        reported = [r for _, r in values if r is not None]
        own = f"{statistics.median(reported):5.2f}s" if reported else "    -"
        print(f"  {name:28s} {statistics.median(walls):5.1f}s / {own}   runs {', '.join(f'{w:.1f}' for w in walls)}"
              f"   $ {commands[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
