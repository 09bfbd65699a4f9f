"""GIE's own conformance suite against the local gateway (python -m llmd_conformance.local.gie_conformance).

The pure tests read `go test -v` output and build the command line. The local test runs two quick
upstream tests, unmodified, on a local cluster: the weighted split over two InferencePools and the
served-endpoint report to the EPP. Traffic goes only to the gateway's loopback addresses.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmd_conformance.local import gie_conformance as gc

REPO = Path(__file__).resolve().parents[1]

GO_TEST_OUTPUT = """\
=== RUN   TestConformance
=== RUN   TestConformance/GatewayWeightedAcrossTwoInferencePools
    gateway_weighted_two_pools.go:180: Weighted split OK: primary=0.690 (hits=138/200)
=== RUN   TestConformance/GatewayWeightedAcrossTwoInferencePools/sub
    --- PASS: TestConformance/GatewayWeightedAcrossTwoInferencePools/sub (0.10s)
    --- PASS: TestConformance/GatewayWeightedAcrossTwoInferencePools (12.34s)
=== RUN   TestConformance/InferencePoolAccepted
    --- FAIL: TestConformance/InferencePoolAccepted (300.01s)
=== RUN   TestConformance/InferencePoolAppProtocol
    --- SKIP: TestConformance/InferencePoolAppProtocol (0.00s)
=== RUN   TestConformance/InferencePoolResolvedRefsCondition
panic: test timed out after 90m0s
"""


def test_progress_reads_each_tests_result_and_seconds():
    """Results and seconds per upstream test (sub-tests ignored); a test never reached is 'not run'."""
    lines = []
    progress = gc.Progress(lines.append)
    for line in GO_TEST_OUTPUT.splitlines():
        progress.feed(line)
    rows = {r.name: (r.result, r.seconds) for r in progress.table(gc.UPSTREAM_TESTS)}
    assert rows["GatewayWeightedAcrossTwoInferencePools"] == ("passed", 12.34)
    assert rows["InferencePoolAccepted"] == ("FAILED", 300.01)
    assert rows["InferencePoolAppProtocol"] == ("skipped", 0.0)
    assert rows["EppUnAvailableFailOpen"] == ("not run", None)
    assert rows["InferencePoolResolvedRefsCondition"] == ("unfinished", None)
    assert len(rows) == 13
    assert "gie-conformance: InferencePoolAccepted FAILED in 300.0s" in lines
    assert any(line.startswith("gie-conformance: GatewayWeightedAcrossTwoInferencePools done after") for line in lines)
    table = gc.format_table(progress.table(gc.UPSTREAM_TESTS))
    assert table[-1] == "1 of 13 passed"
    assert any(line.startswith("GatewayWeightedAcrossTwoInferencePools") and line.endswith("12.3") for line in table)


def test_command_selects_tests_and_names_the_implementation(tmp_path):
    """One test → -run-test; several → -skip-tests of the others; all → neither; the class is ours."""
    one = gc.suite_command(Path("/b/gie-conformance"), tmp_path / "r.yaml", ("InferencePoolAccepted",), 90, "v")
    assert "-run-test=InferencePoolAccepted" in one and "-gateway-class=llmd-local" in one
    assert "-test.timeout=90m" in one and f"-report-output={tmp_path / 'r.yaml'}" in one
    two = gc.suite_command(Path("/b/t"), tmp_path / "r.yaml", gc.UPSTREAM_TESTS[:2], 90, "v")
    [skip] = [a for a in two if a.startswith("-skip-tests=")]
    assert set(skip.removeprefix("-skip-tests=").split(",")) == set(gc.UPSTREAM_TESTS[2:])
    every = gc.suite_command(Path("/b/t"), tmp_path / "r.yaml", gc.UPSTREAM_TESTS, 90, "v")
    assert not [a for a in every if a.startswith(("-skip-tests", "-run-test"))]
    assert "-organization=llm-d" in every


def test_unknown_test_name_is_refused_before_anything_starts(capsys):
    """A typo gets the list of upstream tests, exit 2, and nothing is built or started."""
    with pytest.raises(SystemExit) as exc:
        gc.main(["--run-test", "InferencePoolAcepted"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "InferencePoolAcepted: not a test of GIE v1.5.0's suite" in err and "InferencePoolAccepted" in err


@pytest.mark.local
@pytest.mark.serial
def test_upstream_weighted_split_and_served_endpoint_pass(tmp_path):
    """GIE v1.5.0's GatewayWeightedAcrossTwoInferencePools and GatewayDestinationEndpointServed, run
    unmodified from its test binary, pass against the local gateway; upstream's report says so."""
    tests = ["GatewayWeightedAcrossTwoInferencePools", "GatewayDestinationEndpointServed"]
    cmd = [sys.executable, "-m", "llmd_conformance.local.gie_conformance", "--report-dir", str(tmp_path), "--timeout", "30"]
    for name in tests:
        cmd += ["--run-test", name]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=45 * 60, env=dict(os.environ))
    log = tmp_path / "gie-conformance" / "go-test.log"
    tail = log.read_text()[-6000:] if log.is_file() else "(no go test log)"
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}\n--- go test log tail:\n{tail}"
    assert "2 of 2 passed" in result.stdout
    assert "Weighted split OK" in log.read_text(), "upstream's own line with the primary share"
    report = yaml.safe_load((tmp_path / gc.REPORT_NAME).read_text())
    [profile] = report["profiles"]
    assert profile["name"] == "Gateway" and profile["core"]["result"] != "failure", profile
    assert profile["core"]["statistics"]["Passed"] == 2, profile["core"]
    assert report["GatewayAPIInferenceExtensionVersion"] == "v1.5.0"
