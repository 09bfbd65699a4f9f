"""Local cluster figures: cold build time per component, start time with binaries built, teardown time.

    python benchmarks/local_cluster.py [--runs 3] [--cold]

--cold builds every component from an empty Go build cache into a temporary bin folder (about
half an hour on 2 cores); without it only start/teardown are measured. Target: start <= 20 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmd_conformance.local.cluster import LocalCluster  # noqa: E402


def cold_build() -> None:
    with tempfile.TemporaryDirectory() as bins, tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, LLMD_BIN_DIR=bins, GOCACHE=cache)
        print("cold build (empty GOCACHE; modules from the module cache):", flush=True)
        subprocess.run([sys.executable, "-m", "llmd_conformance.build"], env=env, check=True,
                       cwd=Path(__file__).resolve().parents[1])


def start_stop(runs: int) -> None:
    starts, stops = [], []
    for run in range(1, runs + 1):
        with tempfile.TemporaryDirectory() as logs:
            cluster = LocalCluster(logs_dir=Path(logs), log=lambda _m: None)
            began = time.monotonic()
            cluster.start()
            starts.append(time.monotonic() - began)
            phases = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
            began = time.monotonic()
            cluster.stop()
            stops.append(time.monotonic() - began)
        print(f"run {run}: start {starts[-1]:.1f}s ({phases}); teardown {stops[-1]:.1f}s", flush=True)
    print(f"start: median {statistics.median(starts):.1f}s, min {min(starts):.1f}s, max {max(starts):.1f}s (target <= 20s)")
    print(f"teardown: median {statistics.median(stops):.1f}s, max {max(stops):.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a cold build of every component")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.cold:
        cold_build()
    start_stop(args.runs)


if __name__ == "__main__":
    main()
