"""One fault of the catalogue, N times in a row on one local target: how often the suite fails it as
expected (a fault whose verdict rests on random routing must be caught every time).

    LLMD_INSTANCE=3 python -m benchmarks.fault_repeat --fault lightest-model-pool-selects-another-models-pod --runs 20

Starts the local target with the catalogue's healthy topology once, then runs the fault through the
catalogue's own bench (llmd_conformance/faults.py FaultBench: healthy check, apply, suite run, judge,
restore) `--runs` times. Prints each run's verdict and time, then the count and the time
distribution; the fault table and details go to <report dir>/faults.md and faults.yaml.
Exit status: 0 when every run went as the catalogue expects, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.flake_run import distribution
from llmd_conformance.faults import BenchConfig, FaultBench, load_catalogue
from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import load_topology

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault", required=True, help="a fault name of manifests/faults/catalogue.yaml")
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default 20)")
    parser.add_argument("--report-dir", type=Path, default=REPO / "reports" / "fault-repeat")
    args = parser.parse_args(argv)
    catalogue = load_catalogue()
    try:
        fault = catalogue.fault(args.fault)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    topology = load_topology(catalogue.healthy)
    target = LocalTarget(topology, args.report_dir, log=lambda _m: None)
    target.setup()
    try:
        bench = FaultBench(catalogue, topology, target.cluster.api_client(), target.cluster,
                           BenchConfig(kubeconfig=target.kubeconfig, report_dir=args.report_dir), log=lambda _m: None)
        for i in range(1, args.runs + 1):
            result = bench.run(fault)
            verdict = "as expected" if result.passed else "NOT as expected: " + result.explain().splitlines()[0]
            print(f"run {i}/{args.runs}: {fault.name} {verdict} ({result.seconds:.0f}s)", flush=True)
        bench.write_reports()
    finally:
        target.teardown()
    caught = sum(r.passed for r in bench.results)
    print(f"{fault.name}: {caught} of {len(bench.results)} runs as the catalogue expects; "
          f"time per run {distribution([r.seconds for r in bench.results])}")
    return 0 if caught == len(bench.results) else 1


if __name__ == "__main__":
    sys.exit(main())
