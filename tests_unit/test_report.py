"""Reports: per-test results merged across phases, the ConformanceReport YAML shape, JUnit
properties and the terminal section, also when results come from xdist workers."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
import yaml

from llmd_conformance.report import ROUTING_PROPERTY, ConformanceReport, Recorder, RunInfo, summary_lines, table
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
    """Core holds the healthy-deployment checks, extended the `faults` ones; results follow Gateway API's words."""
    collected = ConformanceReport()
    collected.add_report(report("a", markers=("pattern2", "pattern1")))
    collected.add_report(report("b", "failed", markers=("pattern2",), longrepr="AssertionError: wrong pool"))
    collected.add_report(report("c", "skipped", markers=("pattern1",), longrepr=("f", 1, "Skipped: one model")))
    collected.add_report(report("d", markers=("pattern2", "faults")))
    collected.add_report(report("unit", markers=()))
    profiles = {p["name"]: p for p in collected.profiles()}
    assert profiles["pattern2"]["core"] == {
        "result": "failure", "statistics": {"Passed": 1, "Failed": 1, "Skipped": 0}, "failedTests": ["b"],
        "summary": "Core tests failed with 1 test failures."}
    assert profiles["pattern2"]["extended"]["result"] == "success"
    assert profiles["pattern1"] == {"name": "pattern1", "core": {
        "result": "partial", "statistics": {"Passed": 1, "Failed": 0, "Skipped": 1}, "skippedTests": ["c"],
        "summary": "Core tests partially succeeded with 1 test skips."}}


def test_tests_without_profile_markers_write_no_report():
    """A run of harness tests only has no conformance results."""
    collected = ConformanceReport()
    collected.add_report(report("unit", markers=()))
    assert not collected.has_conformance_results and collected.profiles() == []


def test_recorded_figures_are_taken_once_across_phases():
    """user_properties repeat in every phase's report; each figure is taken once."""
    collected = ConformanceReport()
    routing = (ROUTING_PROPERTY, json.dumps({"accuracy": 0.5}))
    collected.add_report(report("r", when="call", properties=[routing]))
    collected.add_report(report("r", when="teardown", properties=[routing, ("llmd.property.mode", '"aggregated"')]))
    assert collected.routing == [{"test": "r", "accuracy": 0.5}]
    assert collected.properties == {"mode": "aggregated"}


def test_yaml_has_the_conformance_report_shape(tmp_path):
    """apiVersion/kind, detected versions, implementation, mode, profiles, properties and routing."""
    collected = ConformanceReport()
    versions = {"gatewayAPI": "v1.4.1", "gatewayAPIChannel": "standard", "inferenceExtension": "v1.5.0"}
    collected.add_report(report("a", properties=[("llmd.property.detectedVersions", json.dumps(versions)),
                                                 (ROUTING_PROPERTY, json.dumps({"passed": True}))]))
    path = collected.write(tmp_path / "out" / "r.yaml", RUN)
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["apiVersion", "kind", "date", "gatewayAPIVersion", "gatewayAPIChannel",
                          "GatewayAPIInferenceExtensionVersion", "implementation", "mode", "target", "topology",
                          "versions", "profiles", "properties", "routing"]
    assert (data["apiVersion"], data["kind"], data["mode"]) == ("gateway.networking.k8s.io/v1", "ConformanceReport",
                                                                "default")
    assert (data["gatewayAPIVersion"], data["GatewayAPIInferenceExtensionVersion"]) == ("v1.4.1", "v1.5.0")
    assert datetime.strptime(data["date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= datetime.now(UTC)
    assert set(data["implementation"]) == {"organization", "project", "url", "version", "contact"}
    assert data["versions"] == {"epp": "v1.5.0", **versions}
    assert data["target"] == {"name": "local", "description": "local cluster"}
    assert data["profiles"][0]["core"]["result"] == "success"
    assert data["properties"] == {} and data["routing"] == [{"test": "a", "passed": True}]


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
    """Under -n 2 the controller gets results and figures from the workers and writes YAML, JUnit and summary."""
    suite_pytester.makepyfile(dedent("""
        import pytest

        pytestmark = pytest.mark.pattern2

        def test_pass(conformance_report):
            conformance_report.record_routing({"accuracy": 1.0, "models": {"gemma": {"requests": 3, "ok": 3}}})
            conformance_report.add_property("gatewayModelsListing", "aggregated")

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
    result = suite_pytester.runpytest_subprocess("-n", "2", "--target", "fake", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    data = yaml.safe_load((suite_pytester.path / "reports" / "pattern2-fake-report.yaml").read_text())
    pattern2 = next(p for p in data["profiles"] if p["name"] == "pattern2")
    assert pattern2["core"]["statistics"] == {"Passed": 2, "Failed": 1, "Skipped": 1}
    assert pattern2["core"]["failedTests"] == ["test_reports_from_an_xdist_run.py::test_fail"]
    assert pattern2["extended"]["statistics"] == {"Passed": 1, "Failed": 0, "Skipped": 0}
    assert [p["name"] for p in data["profiles"]] == ["pattern2", "pattern1"]
    assert data["routing"] == [{"test": "test_reports_from_an_xdist_run.py::test_pass", "accuracy": 1.0,
                                "models": {"gemma": {"requests": 3, "ok": 3}}}]
    assert data["properties"] == {"gatewayModelsListing": "aggregated"}
    suite = ET.parse(suite_pytester.path / "junit.xml").getroot().find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert properties["target"] == "fake" and properties["topology"] == "pattern2"
    assert properties["gatewayModelsListing"] == "aggregated"
    result.stdout.fnmatch_lines([
        "*llm-d conformance*",
        "target: fake ((not set up))",
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
    ], consecutive=False)
