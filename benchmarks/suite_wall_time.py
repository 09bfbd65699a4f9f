"""Wall time of `pytest suites -m smoke` and `-m pattern2` on the local target, with and without the
cluster start, measured side by side in one run. Targets: smoke <= 10 s, pattern2 <= 45 s, cluster
start included, binaries built.

    python -m benchmarks.suite_wall_time [--runs 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import load_topology

REPO = Path(__file__).resolve().parents[1]


def timed_pytest(marker: str, *extra: str) -> tuple[float, int]:
    with TemporaryDirectory() as reports:
        began = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "suites", "-m", marker, "-q", "-p", "no:cacheprovider",
                                 "--report-dir", reports, *extra], cwd=REPO, capture_output=True, text=True)
        return time.monotonic() - began, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    figures: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for marker in ("smoke", "pattern2"):
            seconds, code = timed_pytest(marker)
            figures.setdefault(f"{marker}, cluster start included", []).append(seconds)
            print(f"  {marker:8s} local target (starts and stops the cluster): {seconds:5.1f}s exit {code}", flush=True)
        with TemporaryDirectory() as reports:
            target = LocalTarget(load_topology("pattern2"), Path(reports), log=lambda _m: None)
            target.setup()
            try:
                for marker in ("smoke", "pattern2"):
                    seconds, code = timed_pytest(marker, "--target", "cluster", "--kubeconfig", str(target.kubeconfig))
                    figures.setdefault(f"{marker}, cluster already up", []).append(seconds)
                    print(f"  {marker:8s} against the running cluster:                 {seconds:5.1f}s exit {code}",
                          flush=True)
            finally:
                target.teardown()
    for name, values in figures.items():
        print(f"{name:36s} median {statistics.median(values):5.1f}s  (runs: {', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
