"""Discovery round trips on the local target (instance 7): what `python -m llmd_conformance discover`
reads from a running pattern2 is manifests/topologies/pattern2.yaml, and the suite passes with it; what it
reads from the seed's single-pool deployment is pattern2-single-pool, and the suite fails with it on
routing accuracy, with the model-blind diagnosis."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmd_conformance.faults import run_suite
from llmd_conformance.topology import load_topology
from tests_unit.conftest import read_until
from tests_unit.test_discover import semantic

REPO = Path(__file__).resolve().parents[1]
SUITE_TIMEOUT = 600  # seconds; a pattern2 run takes about 15 here
UP = "local target up: "

pytestmark = [pytest.mark.local, pytest.mark.serial]

# The local target in a child process of its own (the instance is fixed when its modules are imported);
# closing its stdin tears it down, which works whatever signals the test runner ignores.
TARGET = f"""
import sys
from pathlib import Path
from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import load_topology
target = LocalTarget(load_topology(sys.argv[1]), Path(sys.argv[2]), log=lambda m: print(m, flush=True))
target.setup()
try:
    print("{UP}" + str(target.kubeconfig), flush=True)
    sys.stdin.read()
finally:
    target.teardown()
"""


@contextmanager
def local_target(topology: str, report_dir: Path) -> Iterator[Path]:
    """The local target running `topology` on instance 7; yields its admin kubeconfig."""
    proc = subprocess.Popen([sys.executable, "-c", TARGET, topology, str(report_dir)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "LLMD_INSTANCE": "7", "LLMD_CLUSTER_WAIT": "600"})
    output = read_until(proc, UP, timeout=900)
    try:
        yield Path(output.splitlines()[-1].split(UP, 1)[1].strip())
    except BaseException:
        proc.communicate("", timeout=180)
        raise
    rest, _ = proc.communicate("", timeout=180)
    assert proc.returncode == 0, f"local target teardown failed:\n{output}{rest}"


def discover(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "llmd_conformance", "discover", "--kubeconfig", str(kubeconfig),
                           "--context", "llmd-local", "--namespace", "llm-d", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_discovery_on_pattern2_reproduces_it_and_the_suite_passes(tmp_path):
    with local_target("pattern2", tmp_path / "target") as kubeconfig:
        discovered = tmp_path / "discovered.yaml"
        discovered.write_text(discover(kubeconfig))
        assert semantic(load_topology(discovered)) == semantic(load_topology("pattern2"))
        run = run_suite(("suites",), ("-m", "pattern2"), kubeconfig=kubeconfig, topology=str(discovered),
                        out_dir=tmp_path / "suite", timeout=SUITE_TIMEOUT)
    assert run.returncode == 0 and run.cases and not run.failed(), run.log.read_text()[-4000:]


def test_discovery_on_the_seeds_single_pool_gives_a_topology_the_suite_fails_model_blind(tmp_path):
    with local_target("pattern2-single-pool", tmp_path / "target") as kubeconfig:
        discovered = tmp_path / "discovered.yaml"
        discovered.write_text(discover(kubeconfig, "--name", "seed"))
        assert semantic(load_topology(discovered)) == semantic(load_topology("pattern2-single-pool"))
        run = run_suite(("suites",), ("-m", "pattern2"), kubeconfig=kubeconfig, topology=str(discovered),
                        out_dir=tmp_path / "suite", timeout=SUITE_TIMEOUT)
    log = run.log.read_text()[-4000:]
    assert run.returncode == 1, log
    routing = run.cases["suites/test_routing_accuracy.py::test_first_attempt_routing_accuracy_meets_threshold"]
    assert routing.outcome == "failed", log
    assert ("model-blind pool: InferencePool gaie-pattern2 selects pods of 2 models (google/gemma-2b-it, "
            "microsoft/Phi-3-mini-4k-instruct)") in routing.message, routing.message
