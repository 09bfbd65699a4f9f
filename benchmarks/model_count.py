"""Growth with the number of models: 2, 4, 8 and 16 models, each on a cold local target (a fresh
cluster), timed per phase. Goal: 16 models <= 60 s here, cost linear in models.

    LLMD_INSTANCE=3 python -m benchmarks.model_count [--topology pattern2 --topology pattern2-16-models ...]

Per topology (default pattern2, pattern2-4-models, pattern2-8-models, pattern2-16-models): the local
target's setup steps run one by one and are timed (cluster: lock, control plane, pod runner, gateway
controller; releases: helmfile sync; pods Ready), then `pytest suites -m pattern2 --target cluster`
runs the checks against it (checks), then the target is torn down. Printed: the phases, the wall
time, the routing requests sent and the verdict, then a table over all topologies with the cost per
model. Each run's reports stay in <report dir>/<topology>/.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import TopologyError, load_topology

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOPOLOGIES = ("pattern2", "pattern2-4-models", "pattern2-8-models", "pattern2-16-models")
# Setup steps of LocalTarget, by the phase they are counted in.
PHASES = {"root": "cluster", "build": "cluster", "lock": "cluster", "cluster": "cluster", "pod-runner": "cluster",
          "gateway": "cluster", "releases": "releases", "pods": "pods Ready"}
CHECKS_TIMEOUT = 900


def routing_figures(report_dir: Path, topology: str) -> tuple[str, str]:
    """(requests sent, verdict) from the run's details file."""
    details = report_dir / f"{topology}-cluster-details.yaml"
    if not details.is_file():
        return "-", f"no details file ({details})"
    runs = yaml.safe_load(details.read_text()).get("routing") or []
    if not runs:
        return "-", "no routing run"
    run = runs[0]
    failed = run.get("models_failed") or []
    verdict = "PASS" if run["passed"] else f"FAIL ({', '.join(failed) or run['reason'][:80]})"
    return str(run["requests_sent"]), verdict


def one_topology(name: str, report_root: Path) -> dict:
    topology = load_topology(name)
    report_dir = report_root / name
    target = LocalTarget(topology, report_dir, log=lambda _m: None)
    phases = dict.fromkeys(("cluster", "releases", "pods Ready", "checks", "teardown"), 0.0)
    began = time.monotonic()
    exit_code = None
    try:
        for step in target.steps():
            started = time.monotonic()
            target.engine.run_step(step)
            phases[PHASES[step.name]] += time.monotonic() - started
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "suites", "-m", "pattern2", "-q", "-p", "no:cacheprovider",
             "--target", "cluster", "--kubeconfig", str(target.kubeconfig), "--topology", name,
             "--report-dir", str(report_dir)],
            cwd=REPO, capture_output=True, text=True, timeout=CHECKS_TIMEOUT)
        phases["checks"] = time.monotonic() - started
        exit_code = result.returncode
        (report_dir / "checks.log").write_text(result.stdout + result.stderr)
    finally:
        started = time.monotonic()
        target.teardown()
        phases["teardown"] = time.monotonic() - started
    sent, verdict = routing_figures(report_dir, name)
    return {"topology": name, "models": len(topology.models), "wall": time.monotonic() - began, "phases": phases,
            "sent": sent, "verdict": verdict, "exit": exit_code}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", help=f"topology to run (repeat; default {', '.join(DEFAULT_TOPOLOGIES)})")
    parser.add_argument("--report-dir", type=Path, default=REPO / "reports" / "model-count")
    args = parser.parse_args(argv)
    names = args.topology or list(DEFAULT_TOPOLOGIES)
    try:
        for name in names:
            load_topology(name)
    except TopologyError as exc:
        parser.error(str(exc))
    rows = []
    for name in names:
        row = one_topology(name, args.report_dir)
        rows.append(row)
        phases = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in row["phases"].items())
        print(f"{name}: {row['models']} models, wall {row['wall']:.1f}s ({phases}); routing requests sent "
              f"{row['sent']}, {row['verdict']}; pytest exit {row['exit']}", flush=True)
    print()
    header = f"{'models':>6}  {'topology':20}  {'wall s':>6}  {'cluster':>7}  {'releases':>8}  {'pods Ready':>10}  " \
             f"{'checks':>6}  {'teardown':>8}  {'sent':>5}  {'s/model':>7}  verdict"
    print(header)
    for row in rows:
        p = row["phases"]
        print(f"{row['models']:>6}  {row['topology']:20}  {row['wall']:6.1f}  {p['cluster']:7.1f}  {p['releases']:8.1f}  "
              f"{p['pods Ready']:10.1f}  {p['checks']:6.1f}  {p['teardown']:8.1f}  {row['sent']:>5}  "
              f"{row['wall'] / row['models']:7.1f}  {row['verdict']}")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
