"""Reports: per-test results merged across phases, the one profile a run may claim, the ConformanceReport
in upstream's shape and the details beside it, the gateway implementation, JUnit properties, the terminal
section and the GitHub step summary, also when results come from xdist workers."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
import yaml

from llmd_conformance.local.gateway import CONTROLLER_NAME
from llmd_conformance.report import (
    KNOWN_IMPLEMENTATIONS,
    LOCAL_CONTROLLER,
    ROUTING_PROPERTY,
    ConformanceReport,
    ProfileClaim,
    Recorder,
    RunInfo,
    implementation_of,
    markdown_table,
    profile_claim,
    summary_lines,
    table,
)
from llmd_conformance.topology import load_topology
from tests_unit.conftest import dedent

RUN = RunInfo(target="local", target_description="local cluster", topology="pattern2",
              topology_source="manifests/topologies/pattern2.yaml", versions={"epp": "v1.5.0"})


def report(nodeid, outcome="passed", when="call", markers=("pattern2",), longrepr=None, properties=()):
    return pytest.TestReport(nodeid, ("f.py", 1, nodeid), {}, outcome, longrepr, when,
                             user_properties=list(properties), llmd_markers=list(markers))


def test_phases_merge_into_one_outcome():
    """A test fails if any phase fails, is skipped if skipped at setup, passes otherwise."""
    collected = ConformanceReport()
    for phase in ("setup", "call", "teardown"):
        collected.add_report(report("t::ok", when=phase))
    collected.add_report(report("t::broken_teardown", when="call"))
    collected.add_report(report("t::broken_teardown", "failed", when="teardown", longrepr="boom"))
    collected.add_report(report("t::skipped", "skipped", when="setup", longrepr=("f.py", 3, "Skipped: not here")))
    outcomes = {nodeid: (r.outcome, r.message) for nodeid, r in collected.results.items()}
    assert outcomes == {"t::ok": ("passed", ""), "t::broken_teardown": ("failed", "boom"),
                        "t::skipped": ("skipped", "not here")}


def test_profiles_count_core_and_extended_separately():
    """Core holds the healthy-deployment checks, extended the `faults` ones; results and the profile's
    summary follow upstream's words (conformance/utils/suite/reports.go)."""
    collected = ConformanceReport()
    collected.add_report(report("a", markers=("pattern2", "pattern1")))
    collected.add_report(report("b", "failed", markers=("pattern2",), longrepr="AssertionError: wrong pool"))
    collected.add_report(report("c", "skipped", markers=("pattern1",), longrepr=("f", 1, "Skipped: one model")))
    collected.add_report(report("d", markers=("pattern2", "faults")))
    collected.add_report(report("unit", markers=()))
    assert collected.profile("pattern2") == {
        "name": "pattern2", "summary": "Core tests failed with 1 test failures. Extended tests succeeded.",
        "core": {"result": "failure", "statistics": {"Passed": 1, "Failed": 1, "Skipped": 0}, "failedTests": ["b"]},
        "extended": {"result": "success", "statistics": {"Passed": 1, "Failed": 0, "Skipped": 0}}}
    assert collected.profile("pattern1") == {
        "name": "pattern1", "summary": "Core tests partially succeeded with 1 test skips.",
        "core": {"result": "partial", "statistics": {"Passed": 1, "Failed": 0, "Skipped": 1}, "skippedTests": ["c"]}}


def test_a_profile_needs_its_core_checks():
    """Upstream's core is required and an empty one reads as success: no core check run, no profile."""
    collected = ConformanceReport()
    collected.add_report(report("unit", markers=()))
    assert not collected.has_conformance_results
    collected.add_report(report("fault", markers=("pattern2", "faults")))
    assert collected.profile("pattern2") is None and collected.profile("pattern1") is None
    assert collected.verdict_lines(ProfileClaim("pattern2")) == [
        "no profile claimed: none of profile pattern2's core checks ran"]


@pytest.mark.parametrize("topology, markexpr, claimed", [
    ("pattern2", "pattern2", "pattern2"),  # the checks carry pattern1 too: still only pattern2
    ("pattern2", "", "pattern2"),
    ("pattern2", "pattern2 and not slow", "pattern2"),
    ("pattern2-single-pool", "pattern2", "pattern2"),
    ("pattern1", "pattern1", "pattern1"),
    ("pattern1", "", "pattern1"),
    ("pattern2", "smoke", None),
    ("pattern2", "pattern1", None),
    ("pattern1", "pattern2", None),
])
def test_a_run_claims_only_its_deployments_profile_and_only_when_selected(topology, markexpr, claimed):
    """The topology's shape decides the profile (several models: pattern2); -m must select its checks."""
    claim = profile_claim(load_topology(topology), markexpr)
    assert claim.profile == claimed
    if claimed is None:
        assert f"-m {markexpr!r} does not select that profile's checks" in claim.why_not


def test_recorded_figures_are_taken_once_across_phases():
    """user_properties repeat in every phase's report; each figure is taken once."""
    collected = ConformanceReport()
    routing = (ROUTING_PROPERTY, json.dumps({"accuracy": 0.5}))
    collected.add_report(report("r", when="call", properties=[routing]))
    collected.add_report(report("r", when="teardown", properties=[routing, ("llmd.property.mode", '"aggregated"')]))
    assert collected.routing == [{"test": "r", "accuracy": 0.5}]
    assert collected.properties == {"mode": "aggregated"}


def test_report_has_upstreams_fields_and_the_details_the_rest(tmp_path):
    """The ConformanceReport holds exactly upstream's fields; target, topology, versions, properties and
    routing go to the details file beside it, which names it."""
    collected = ConformanceReport()
    versions = {"gatewayAPI": "v1.4.1", "gatewayAPIChannel": "standard", "inferenceExtension": "v1.5.0"}
    gateway = {"profile": "reference", "chosenBy": "GatewayClass llmd-local controllerName",
               "controllerName": CONTROLLER_NAME}
    collected.add_report(report("a", properties=[("llmd.property.detectedVersions", json.dumps(versions)),
                                                 ("llmd.property.gatewayProfile", json.dumps(gateway)),
                                                 (ROUTING_PROPERTY, json.dumps({"passed": True}))]))
    run = RunInfo(**{**RUN.__dict__, "versions": {"envoy": "1.36.4"}})
    report_path, details_path = collected.write(tmp_path / "out", run, ProfileClaim("pattern2"))
    assert (report_path.name, details_path.name) == ("pattern2-local-report.yaml", "pattern2-local-details.yaml")
    data = yaml.safe_load(report_path.read_text())
    assert list(data) == ["apiVersion", "kind", "date", "gatewayAPIVersion", "gatewayAPIChannel", "implementation",
                          "mode", "profiles"]
    assert (data["apiVersion"], data["kind"], data["mode"]) == ("gateway.networking.k8s.io/v1", "ConformanceReport",
                                                                "default")
    assert (data["gatewayAPIVersion"], data["gatewayAPIChannel"]) == ("v1.4.1", "standard")
    assert datetime.strptime(data["date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= datetime.now(UTC)
    assert data["implementation"] == {"organization": "llm-d", "project": "llmd-conformance local gateway (Envoy)",
                                      "url": "https://github.com/llm-d/llm-d", "version": "1.36.4",
                                      "contact": ["https://github.com/llm-d/llm-d/issues"]}
    assert data["profiles"] == [{"name": "pattern2", "summary": "Core tests succeeded.", "core": {
        "result": "success", "statistics": {"Passed": 1, "Failed": 0, "Skipped": 0}}}]
    details = yaml.safe_load(details_path.read_text())
    assert list(details) == ["date", "conformanceReport", "profile", "target", "topology", "versions", "properties",
                             "routing"]
    assert (details["conformanceReport"], details["profile"]) == ("pattern2-local-report.yaml", "pattern2")
    assert details["versions"] == {"envoy": "1.36.4", **versions}
    assert details["target"] == {"name": "local", "description": "local cluster"}
    assert details["properties"] == {"gatewayProfile": gateway}
    assert details["routing"] == [{"test": "a", "passed": True}]


def test_without_a_claimed_profile_only_the_details_are_written(tmp_path):
    """-m smoke ran part of a profile: no ConformanceReport, and the details say why."""
    collected = ConformanceReport()
    collected.add_report(report("smoke"))
    claim = ProfileClaim(None, "-m 'smoke' does not select that profile's checks")
    [details_path] = collected.write(tmp_path, RUN, claim)
    assert yaml.safe_load(details_path.read_text())["profile"] == (
        "none claimed: -m 'smoke' does not select that profile's checks")
    assert collected.verdict_lines(claim) == ["no profile claimed: -m 'smoke' does not select that profile's checks"]


def test_implementation_names_the_controller_with_the_version_where_known():
    """Known controllers by name, versions only where the suite knows them; on the local target the
    local gateway, whatever class it answers to (GKE mode uses GKE's controllerName)."""
    assert LOCAL_CONTROLLER == CONTROLLER_NAME and LOCAL_CONTROLLER in KNOWN_IMPLEMENTATIONS
    versions = {"envoy": "1.36.4", "kubernetes": "v1.33.5-gke.1080000"}
    gke = implementation_of("networking.gke.io/gateway", "gke", versions)
    assert (gke["project"], gke["version"]) == ("GKE Gateway controller", "v1.33.5-gke.1080000")
    local = implementation_of("networking.gke.io/gateway", "local", versions)
    assert (local["project"], local["version"]) == ("llmd-conformance local gateway (Envoy)", "1.36.4")
    assert implementation_of(None, "local", versions) == local
    assert implementation_of(CONTROLLER_NAME, "cluster", versions) == local  # a local stack attached as a cluster
    assert implementation_of("istio.io/gateway-controller", "cluster", versions)["version"] == "unknown"
    assert implementation_of("example.com/gw", "cluster", versions) == {
        "organization": "example.com", "project": "example.com/gw", "url": "unknown", "version": "unknown",
        "contact": ["unknown"]}
    assert implementation_of(None, "cluster", versions)["organization"] == "unknown"


def test_summary_renders_scalars_and_tables():
    """Scalars as lines, dicts of dicts (per model, matrix) as aligned tables."""
    summary = {"accuracy": 0.51234, "passed": False,
               "models": {"gemma": {"requests": 10, "correct": 5}, "phi": {"requests": 12, "correct": 6, "misrouted": 6}}}
    assert summary_lines(summary) == [
        "accuracy: 0.5123", "passed: False", "models:",
        "         requests  correct  misrouted",
        "  gemma        10        5",
        "  phi          12        6          6"]
    assert table({}) == [""]


def test_summary_shows_the_compact_matrix_and_leaves_the_full_one_to_the_details_file():
    """With a compact matrix, the full one (a column per pod) is only named; it stays in the details."""
    summary = {"matrix_compact": {"a": {"own pods": 9}, "b": {"own pods": 5, "pool gaie-a": 4}},
               "matrix": {"a": {"ms-a-0": 9}, "b": {"ms-a-0": 4, "ms-b-0": 5}}}
    assert summary_lines(summary) == [
        "matrix: requested model x pod, in the details file", "matrix_compact:",
        "     own pods  pool gaie-a", "  a         9", "  b         5            4"]


def test_recorder_refuses_what_it_cannot_carry():
    """Outside a test, non-dict summaries and non-JSON values are errors that say so."""
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="only be recorded while a test runs"):
        recorder.record_routing({"a": 1})
    recorder.item = pytest.Function.__new__(pytest.Function)
    recorder.item.user_properties = []
    with pytest.raises(TypeError, match="summary must be a dict, got list"):
        recorder.record_routing([1])
    with pytest.raises(TypeError, match="value must be JSON data"):
        recorder.add_property("x", object())
    with pytest.raises(TypeError, match="value must be JSON data"):
        recorder.add_property("x", float("nan"))
    recorder.add_property("x", {"b": 1})
    assert recorder.item.user_properties == [("llmd.property.x", '{"b": 1}')]


def test_reports_from_an_xdist_run(suite_pytester):
    """Under -n 2 -m pattern2 the controller gets results and figures from the workers and writes the
    report (profile pattern2 only, though checks carry pattern1 too), the details, JUnit and the summary."""
    suite_pytester.makepyfile(dedent("""
        import pytest

        pytestmark = pytest.mark.pattern2

        def test_pass(conformance_report):
            conformance_report.record_routing({"accuracy": 1.0, "models": {"gemma": {"requests": 3, "ok": 3}}})
            conformance_report.add_property("gatewayModelsListing", "aggregated")
            conformance_report.add_property("gatewayProfile", {"profile": "istio", "controllerName":
                                            "istio.io/gateway-controller", "chosenBy": "GatewayClass istio controllerName"})

        def test_fail():
            assert False, "pool gaie-gemma selects pod ms-phi-0"

        def test_skip():
            pytest.skip("one model only")

        @pytest.mark.faults
        def test_fault():
            pass

        @pytest.mark.pattern1
        def test_both_profiles():
            pass
    """))
    result = suite_pytester.runpytest_subprocess("-n", "2", "-m", "pattern2", "--target", "fake", "--junitxml",
                                                 "junit.xml")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    data = yaml.safe_load((suite_pytester.path / "reports" / "pattern2-fake-report.yaml").read_text())
    [pattern2] = data["profiles"]
    assert pattern2["name"] == "pattern2"
    assert pattern2["summary"] == "Core tests failed with 1 test failures. Extended tests succeeded."
    assert pattern2["core"]["statistics"] == {"Passed": 2, "Failed": 1, "Skipped": 1}
    assert pattern2["core"]["failedTests"] == ["test_reports_from_an_xdist_run.py::test_fail"]
    assert pattern2["extended"]["statistics"] == {"Passed": 1, "Failed": 0, "Skipped": 0}
    assert (data["implementation"]["project"], data["implementation"]["version"]) == ("istio", "unknown")
    details = yaml.safe_load((suite_pytester.path / "reports" / "pattern2-fake-details.yaml").read_text())
    assert details["routing"] == [{"test": "test_reports_from_an_xdist_run.py::test_pass", "accuracy": 1.0,
                                   "models": {"gemma": {"requests": 3, "ok": 3}}}]
    assert details["properties"]["gatewayModelsListing"] == "aggregated"
    suite = ET.parse(suite_pytester.path / "junit.xml").getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["target"] == "fake" and properties["topology"] == "pattern2"
    assert properties["gatewayModelsListing"] == "aggregated"
    result.stdout.fnmatch_lines([
        "*llm-d conformance*",
        "target: fake ((not set up))",
        "implementation: istio, version unknown (controllerName istio.io/gateway-controller; GatewayClass istio "
        "controllerName)",
        "profile pattern2 core: failure (Passed 2, Failed 1, Skipped 1)",
        "profile pattern2 extended: success (Passed 1, Failed 0, Skipped 0)",
        "failed checks:",
        "  test_reports_from_an_xdist_run.py::test_fail: AssertionError: pool gaie-gemma selects pod ms-phi-0",
        "gatewayModelsListing: aggregated",
        "routing (test_reports_from_an_xdist_run.py::test_pass):",
        "  accuracy: 1",
        "  models:",
        "           requests  ok",
        "    gemma         3   3",
        "conformance report: */reports/pattern2-fake-report.yaml",
        "run details: */reports/pattern2-fake-details.yaml",
    ], consecutive=False)
    assert "profile pattern1" not in result.stdout.str()


def test_github_step_summary_gets_the_verdicts_and_routing_tables(suite_pytester, tmp_path, monkeypatch):
    """With GITHUB_STEP_SUMMARY set, the run appends Markdown: the verdicts, a row per check, and per routing
    run its verdict, per-model table and routing matrix; what was in the file stays."""
    summary_file = tmp_path / "step-summary.md"
    summary_file.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    suite_pytester.makepyfile(test_ci=dedent("""
        import pytest

        pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]

        def test_routing(conformance_report):
            conformance_report.record_routing({
                "passed": False, "reason": "2 misroutes > 0 allowed", "accuracy": 0.5, "diagnosis": "model-blind pool",
                "lower_bound": None,
                "models": {"gemma": {"requests": 2, "correct": 2}, "phi": {"requests": 2, "correct": 0, "misrouted": 2}},
                "matrix_compact": {"gemma": {"own pods": 2}, "phi": {"pool gaie-gemma": 2}},
                "matrix": {"gemma": {"ms-gemma-0": 2}, "phi": {"ms-gemma-0": 2}}})

        def test_fail():
            assert False, "pool a|b selects pod ms-phi-0"
    """))
    suite_pytester.runpytest_subprocess("--target", "fake", "-m", "pattern2", "-p", "no:cacheprovider",
                                        ).assert_outcomes(passed=1, failed=1)
    text = summary_file.read_text()
    assert text.startswith("earlier step\n## llm-d conformance: topology pattern2 on target fake\n")
    for line in ["- target: (not set up)",
                 "- implementation: unknown, version unknown (controllerName not read: no check read the Gateway)",
                 "- profile pattern2 core: failure (Passed 1, Failed 1, Skipped 0)",
                 "| check | result | message |",
                 "| test_ci.py::test_routing | passed |  |",
                 r"| test_ci.py::test_fail | failed | AssertionError: pool a\|b selects pod ms-phi-0 |",
                 "### Routing accuracy: FAIL (test_ci.py::test_routing)",
                 "- reason: 2 misroutes > 0 allowed", "- diagnosis: model-blind pool", "- accuracy: 0.5",
                 "**Per model (verdict on its own requests; fail rate <= the exact one-sided bound)**", "| | requests | correct | misrouted |", "|---|---:|---:|---:|",
                 "| gemma | 2 | 2 |  |", "| phi | 2 | 0 | 2 |",
                 "**Routing matrix, compact (requested model × answering pods grouped by pool; the full matrix "
                 "by pod is in the details file)**", "| | own pods | pool gaie-gemma |",
                 "| gemma | 2 |  |", "| phi |  | 2 |"]:
        assert line in text.splitlines(), f"{line!r} missing from the step summary:\n{text}"
    assert "lower_bound" not in text  # None says nothing
    assert "reports/pattern2-fake-report.yaml" in text and "reports/pattern2-fake-details.yaml" in text


def test_step_summary_that_cannot_be_written_leaves_the_run_alone(suite_pytester, tmp_path, monkeypatch):
    """An unwritable GITHUB_STEP_SUMMARY is a warning line; verdicts, reports and exit status stand."""
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing-folder" / "summary.md"))
    suite_pytester.makepyfile(test_ci="import pytest\n\n@pytest.mark.pattern2\ndef test_ok():\n    pass\n")
    result = suite_pytester.runpytest_subprocess("--target", "fake", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["GitHub step summary not written: *No such file or directory*missing-folder*"])
    assert (suite_pytester.path / "reports" / "pattern2-fake-report.yaml").is_file()


def test_markdown_table_escapes_cells():
    """Pipes and newlines cannot break a row."""
    assert markdown_table({"a|b": {"x": "one\ntwo", "y": 1.23456}}) == [
        "| | x | y |", "|---|---:|---:|", r"| a\|b | one two | 1.235 |"]
