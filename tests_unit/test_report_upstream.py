"""The ConformanceReport the suite writes decodes strictly (unknown fields, duplicate keys, wrong types
are errors) into Gateway API's own Go types, sigs.k8s.io/gateway-api/conformance/apis/v1 at the version
localcluster/reportcheck/go.mod pins, so its shape cannot drift from upstream's."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmd_conformance import build
from llmd_conformance.report import ROUTING_PROPERTY, ConformanceReport, ProfileClaim, RunInfo

MODULE = build.LOCALCLUSTER / "reportcheck"
# Our own source, so its hash is its version: a changed main.go is rebuilt like a changed go.sum.
REPORTCHECK = build.Component("reportcheck", "main.go " + hashlib.sha256((MODULE / "main.go").read_bytes()).hexdigest()[:12],
                              ".", module="reportcheck")
RUN = RunInfo(target="local", target_description="local cluster", topology="pattern2",
              topology_source="manifests/topologies/pattern2.yaml", versions={"envoy": "1.36.4"})


@pytest.fixture(scope="module")
def reportcheck() -> Path:
    """The built checker, from the binary cache when its stamp matches (like every pinned program)."""
    if shutil.which("go") is None:
        pytest.skip("'go' is not on PATH: the strict decoding needs Go to build localcluster/reportcheck")
    if not build.is_current(REPORTCHECK):
        build.bin_dir().mkdir(parents=True, exist_ok=True)
        build.build(REPORTCHECK, build.check_go())
    return build.binary(REPORTCHECK.name)


def check(reportcheck: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(reportcheck), str(path)], capture_output=True, text=True, timeout=60)


def written_report(folder: Path) -> Path:
    """A report from the real writer with every part filled: core with a failure and a skip, extended,
    the implementation, versions, properties and a routing summary (which must stay out of it)."""
    collected = ConformanceReport()
    properties = [("llmd.property.detectedVersions", json.dumps({"gatewayAPI": "v1.4.1", "gatewayAPIChannel": "standard"})),
                  ("llmd.property.gatewayProfile", json.dumps({"controllerName": "istio.io/gateway-controller"})),
                  (ROUTING_PROPERTY, json.dumps({"passed": False, "models": {"gemma": {"requests": 3}}}))]
    outcomes = [("ok", "passed", ("pattern2", "pattern1"), None),
                ("broken", "failed", ("pattern2",), "AssertionError: wrong pool"),
                ("skipped", "skipped", ("pattern2",), ("f.py", 1, "Skipped: one model")),
                ("fault", "passed", ("pattern2", "faults"), None)]
    for nodeid, outcome, markers, longrepr in outcomes:
        collected.add_report(pytest.TestReport(nodeid, ("f.py", 1, nodeid), {}, outcome, longrepr, "call",
                                               user_properties=properties, llmd_markers=list(markers)))
    report, _details = collected.write(folder, RUN, ProfileClaim("pattern2"))
    return report


def test_written_report_decodes_strictly_into_upstreams_types(reportcheck, tmp_path):
    """Our writer's output is a valid confv1.ConformanceReport: strict decoding, implementation, summaries, results."""
    report = written_report(tmp_path)
    result = check(reportcheck, report)
    assert result.returncode == 0, f"reportcheck refused {report}:\n{result.stderr}\n{report.read_text()}"
    assert result.stdout.strip() == f"{report}: a strict gateway.networking.k8s.io/v1 ConformanceReport"


@pytest.mark.parametrize("change, refusal", [
    # the shape this suite used to write: summary inside core, extras at the top level
    pytest.param(lambda d: d["profiles"][0]["core"].update(summary="Core tests succeeded."),
                 'unknown field "summary"', id="summary-in-core"),
    pytest.param(lambda d: d.update(routing=[]), 'unknown field "routing"', id="routing-at-top"),
    pytest.param(lambda d: d.update(GatewayAPIInferenceExtensionVersion="v1.5.0"),
                 'unknown field "GatewayAPIInferenceExtensionVersion"', id="gie-version-at-top"),
    pytest.param(lambda d: d["profiles"][0].update(summary=""), 'summary "" must both be set', id="empty-summary"),
    pytest.param(lambda d: d["implementation"].update(version=""), "implementation's version cannot be empty",
                 id="empty-implementation-version"),
    pytest.param(lambda d: d["profiles"][0]["core"].update(result="success"), 'result "success", but statistics',
                 id="result-against-statistics"),
    pytest.param(lambda d: d["profiles"][0]["core"]["statistics"].update(Passed="two"), "cannot unmarshal string",
                 id="wrong-type"),
])
def test_the_checker_refuses_what_upstream_would_not_read(reportcheck, tmp_path, change, refusal):
    """The check is strict: each drift from upstream's shape is refused, naming the field."""
    data = yaml.safe_load(written_report(tmp_path).read_text())
    change(data)
    drifted = tmp_path / "drifted.yaml"
    drifted.write_text(yaml.safe_dump(data, sort_keys=False))
    result = check(reportcheck, drifted)
    assert result.returncode == 1 and refusal in result.stderr, result.stderr
