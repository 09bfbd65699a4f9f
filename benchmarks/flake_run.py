"""Flake run: the healthy pattern2 suite N times in a row against one local target. Target: 0 failures.

    python -m benchmarks.flake_run [--runs 20] [--topology pattern2] [--report-dir reports/flake]

Starts the local target once (cluster, pod runner, gateway controller, helmfile sync), then runs
`pytest suites -m <marker> --target cluster --kubeconfig <admin kubeconfig>` N times, each with a
fresh random mix seed (printed, so a failing run can be replayed with --mix-seed). Prints each
run's result as it finishes, then the failures (test, run, first line of the message) and the
wall-time distribution. Each run's JUnit XML and log stay in <report dir>/run-<i>/.
Exit status: 0 when every run passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from llmd_conformance.faults import excerpt, run_suite
from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import TopologyError, load_topology

RUN_TIMEOUT = 900  # seconds; a healthy pattern2 run takes about 10


def distribution(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    spread = f", stdev {statistics.stdev(ordered):.1f}" if len(ordered) > 1 else ""
    return (f"min {ordered[0]:.1f}s, median {statistics.median(ordered):.1f}s, p90 {p90:.1f}s, "
            f"max {ordered[-1]:.1f}s, mean {statistics.fmean(ordered):.1f}s{spread}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="suite runs in a row (default 20)")
    parser.add_argument("--topology", default="pattern2")
    parser.add_argument("--marker", default="pattern2", help="the -m marker of each run (default pattern2)")
    parser.add_argument("--report-dir", default="reports/flake", type=Path)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        parser.error(str(exc))
    report_dir = args.report_dir.resolve()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.runs} runs of "
          f"-m {args.marker} on topology {topology.name}", flush=True)
    target = LocalTarget(topology, report_dir, log=lambda m: print(m, flush=True))
    started = time.monotonic()
    target.setup()
    print(f"local target up in {time.monotonic() - started:.0f}s", flush=True)
    seconds: list[float] = []
    failures: list[str] = []
    failed_runs = 0
    try:
        for i in range(1, args.runs + 1):
            seed = random.SystemRandom().randrange(2**32)
            run = run_suite(("suites",), ("-m", args.marker, "--mix-seed", str(seed)), kubeconfig=target.kubeconfig,
                            topology=topology.name, out_dir=report_dir / f"run-{i}", timeout=RUN_TIMEOUT)
            seconds.append(run.seconds)
            failed = run.failed()
            ok = run.returncode == 0 and bool(run.cases) and not failed
            failed_runs += not ok
            passed = sum(c.outcome == "passed" for c in run.cases.values())
            print(f"run {i:2d}/{args.runs}: {'ok  ' if ok else 'FAIL'} {passed} passed, {len(failed)} failed "
                  f"in {run.seconds:.1f}s (mix seed {seed})", flush=True)
            if not ok and not failed:
                failures.append(f"run {i}: exit {'timeout' if run.timed_out else run.returncode} without a failed "
                                f"test (log {run.log})")
            failures += [f"run {i} (mix seed {seed}): {c.nodeid} {c.outcome}: {excerpt(c.message)}" for c in failed]
    finally:
        target.teardown()
    print(f"\n{args.runs - failed_runs}/{args.runs} runs green; {len(failures)} failure(s)")
    for line in failures:
        print(f"  {line}")
    print(f"wall time per run: {distribution(seconds)}; total {time.monotonic() - started:.0f}s")
    return 0 if not failed_runs else 1


if __name__ == "__main__":
    sys.exit(main())
