"""The fault catalogue (manifests/faults/catalogue.yaml) and the runner's pure parts, without a cluster.

- The catalogue is valid, covers every fault issue 7 lists, names checks that exist in the suite
  (with parametrizations the topology produces), and its helm overrides render what each fault
  says (helmfile template; needs the helm/helmfile binaries and Go for the GIE charts).
- Bad catalogues are refused with the path of each problem.
- JUnit parsing, the verdict on a run, undo patches and the table, on made-up data.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmd_conformance.faults import (
    CATALOGUE,
    Case,
    CatalogueError,
    FaultResult,
    SuiteRun,
    assertion_text,
    excerpt,
    format_table,
    helmfile,
    inverse_merge_patch,
    judge,
    load_catalogue,
    markdown_table,
    matching,
    parse_catalogue,
    parse_junit,
    recreatable,
    release_names,
    write_reports,
)

REPO = Path(__file__).resolve().parents[1]

# Issue 7's list, each mapped to the fault that covers it.
ISSUE_FAULTS = {
    "a wrong serving label on one model's pods": "wrong-serving-label-on-one-model",
    "both models forced onto one GPU node": "both-models-pinned-to-one-gpu-node",
    "the pool resized to one node (a pod Pending)": "gpu-pool-resized-to-one-node",
    "a pool selector that matches nothing": "pool-selector-matches-nothing",
    "a wrong targetPort": "pool-wrong-target-port",
    "the EPP Service missing": "epp-service-missing",
    "the EPP down with FailClose": "epp-down-fail-close",
    "the EPP down with FailOpen": "epp-down-fail-open",
    "an HTTPRoute to a missing pool": "route-to-missing-pool",
    "an HTTPRoute naming the pool with the wrong API group": "route-pool-wrong-api-group",
    "the seed's single-pool design": "seed-single-pool-design",
    "BBR missing": "bbr-missing",
    "a backend whose served model name differs from the topology": "served-model-name-differs",
    "a backend that never becomes Ready": "backend-never-ready",
    "a backend injecting 5% errors": "backend-injects-5pct-errors",
    "a backend slower than the request timeout": "backend-slower-than-request-timeout",
    "a GPU node with no allocatable GPU": "gpu-node-without-allocatable-gpu",
    "a Gateway without an address": "gateway-without-address",
    "a backend answering unknown models with 200": "backend-answers-unknown-models",
    "a route rule for one model pointing at the other model's pool": "route-rule-to-other-models-pool",
    "an extra stray pod carrying the serving label": "stray-pod-with-serving-labels",
}


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


# ------------------------------------------------------------------ the shipped catalogue

def test_catalogue_has_at_least_20_faults_covering_issue_7(catalogue):
    """At least 20 faults, one for every item issue 7 lists."""
    names = {f.name for f in catalogue.faults}
    missing = {item: name for item, name in ISSUE_FAULTS.items() if name not in names}
    assert len(catalogue.faults) >= 20, f"expected at least 20 faults in {CATALOGUE}, found {len(catalogue.faults)}"
    assert not missing, f"issue 7 items without their fault in {CATALOGUE}: {missing}"


def test_every_fault_names_a_failing_check_with_words(catalogue):
    """Each fault expects at least one check to fail, with at least one word (or, a healthy variation,
    every check to pass), and says what it is."""
    bad = [f.name for f in catalogue.faults
           if not (f.expect or f.must_pass) or not all(e.words for e in f.expect) or len(f.description) < 40]
    assert not bad, f"faults without an expected failing check, its words or a description: {bad}"


def _collected(topology: str) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "suites", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--topology", topology], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"collecting suites for topology {topology} failed:\n{result.stdout[-2000:]}"
    return {line.strip() for line in result.stdout.splitlines() if "::" in line}


def test_expected_checks_are_collected_for_the_topology_the_fault_runs(catalogue):
    """Every expect/stillPass check id names a test the suite collects for the fault's topology
    (a parametrization that does not exist would make a fault undetectable)."""
    collected = {t: _collected(t) for t in {f.run_topology for f in catalogue.faults}}
    problems = []
    for fault in catalogue.faults:
        cases = {nodeid: Case(nodeid, "passed", "") for nodeid in collected[fault.run_topology]}
        for check in [e.check for e in fault.expect] + list(fault.still_pass):
            if not matching(cases, check):
                problems.append(f"{fault.name}: {check} is not collected for topology {fault.run_topology}")
            selected = [s for s in fault.select if check == s or check.startswith(s.rstrip("/") + "/")
                        or check.startswith(s + "::") or s == "suites"]
            if not selected:
                problems.append(f"{fault.name}: {check} is outside the fault's select {list(fault.select)}")
    assert not problems, "\n".join(problems)


def test_helm_overrides_name_releases_of_the_topology(catalogue):
    """releaseValues and disabledReleases name releases the helmfile renders for the topology they apply to."""
    releases = {catalogue.healthy: set(release_names(catalogue.healthy))}
    problems = []
    for fault in catalogue.faults:
        for step in (s for s in fault.steps if s.kind == "helmfile"):
            topology = step.spec.get("topology", catalogue.healthy)
            known = releases.setdefault(topology, set(release_names(topology)))
            named = set(step.spec.get("releaseValues") or {}) | set(step.spec.get("disabledReleases") or [])
            if named - known:
                problems.append(f"{fault.name}: {sorted(named - known)} not in {sorted(known)}")
    assert not problems, "\n".join(problems)


def _render(catalogue, fault_name: str) -> list[dict]:
    """The objects `helmfile template` renders with the fault's helm step (its releases only)."""
    step = next(s for s in catalogue.fault(fault_name).steps if s.kind == "helmfile")
    values = step.spec.get("releaseValues") or {}
    out = helmfile(step.spec.get("topology", catalogue.healthy), "template", "--skip-deps", names=sorted(values),
                   values=values, disabled=step.spec.get("disabledReleases") or [])
    return [o for o in yaml.safe_load_all(out) if o]


def _one(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, rendered: {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return found[0]


def _container(objects: list[dict], deployment: str) -> dict:
    return _one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def test_wrong_serving_label_fault_replaces_the_label(catalogue):
    """The Phi pods carry llm-d.ai/inference-serving and no longer llm-d.ai/inferenceServing."""
    labels = _one(_render(catalogue, "wrong-serving-label-on-one-model"), "Deployment",
                  "ms-phi-decode")["spec"]["template"]["metadata"]["labels"]
    assert labels.get("llm-d.ai/inference-serving") == "true" and "llm-d.ai/inferenceServing" not in labels, labels


def test_never_ready_fault_probes_a_readiness_that_never_comes(catalogue):
    """The Phi server's readiness probe asks /health/ready, which the sim answers 503 for 24h."""
    container = _container(_render(catalogue, "backend-never-ready"), "ms-phi-decode")
    args = container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready", container["readinessProbe"]
    assert args[args.index("--startup-duration") + 1] == "24h", args


def test_unknown_model_fault_serves_and_maps_the_unknown_names(catalogue):
    """The Gemma server serves the unknown-model check's names and BBR maps them to Gemma."""
    objects = _render(catalogue, "backend-answers-unknown-models")
    args = _container(objects, "ms-gemma-decode")["args"]
    names = args[args.index("--served-model-name") + 1:args.index("--port")]
    adapters = yaml.safe_load(_one(objects, "ConfigMap", "ms-gemma-bbr-allowlist")["data"]["adapters"])
    unknown = ["llmd-conformance-unknown/no-such-model", "llmd-conformance-unknown/another-missing-model"]
    assert names == ["google/gemma-2b-it", *unknown] and adapters == unknown, (names, adapters)


def test_error_and_latency_faults_pass_the_sim_flags(catalogue):
    """5% server_error injection and a 10 s time to first token reach the sim's command line."""
    errors = _container(_render(catalogue, "backend-injects-5pct-errors"), "ms-phi-decode")["args"]
    slow = _container(_render(catalogue, "backend-slower-than-request-timeout"), "ms-phi-decode")["args"]
    assert errors[errors.index("--failure-injection-rate") + 1] == "5", errors
    assert errors[errors.index("--failure-types") + 1] == "server_error", errors
    assert slow[slow.index("--time-to-first-token") + 1] == "10s", slow


def test_route_faults_render_the_broken_rules(catalogue):
    """The route faults point the Phi rule at gaie-phi-v2 / gaie-gemma, and the group fault at v1alpha2."""
    def phi_ref(fault: str) -> dict:
        route = _one(_render(catalogue, fault), "HTTPRoute", "llm-d-pattern2")
        rule = next(r for r in route["spec"]["rules"]
                    if r["matches"][0]["headers"][0]["value"] == "microsoft/Phi-3-mini-4k-instruct")
        return rule["backendRefs"][0]
    assert phi_ref("route-to-missing-pool")["name"] == "gaie-phi-v2"
    assert phi_ref("route-rule-to-other-models-pool")["name"] == "gaie-gemma"
    assert phi_ref("route-pool-wrong-api-group")["group"] == "inference.networking.x-k8s.io"


def test_pool_faults_render_the_broken_pool(catalogue):
    """The selector typo and the wrong target port land in the gaie-phi InferencePool."""
    selector = _one(_render(catalogue, "pool-selector-matches-nothing"), "InferencePool", "gaie-phi")["spec"]["selector"]
    ports = _one(_render(catalogue, "pool-wrong-target-port"), "InferencePool", "gaie-phi")["spec"]["targetPorts"]
    assert selector["matchLabels"]["llm-d.ai/model"] == "phi-3-mini", selector
    assert ports == [{"number": 8001}], ports


def test_lightest_model_fault_points_its_pool_at_its_own_and_the_qwen_pod(catalogue):
    """The patched gaie-smollm selects llm-d.ai/size=small instead of its model label; the SmolLM and Qwen
    pods carry it, so the pool selects exactly those two pods (one of another model), and gaie-qwen still
    selects the Qwen pod."""
    fault = catalogue.fault("lightest-model-pool-selects-another-models-pod")
    objects = _render(catalogue, fault.name)
    pool = next(s.spec for s in fault.steps if s.kind == "patch")
    assert (pool["kind"], pool["name"]) == ("InferencePool", "gaie-smollm")
    pools = [o for o in yaml.safe_load_all(helmfile(fault.run_topology, "template", "--skip-deps",
                                                    names=["gaie-smollm"])) if o]
    rendered = _one(pools, "InferencePool", "gaie-smollm")["spec"]["selector"]["matchLabels"]
    patched = {k: v for k, v in {**rendered, **pool["patch"]["spec"]["selector"]["matchLabels"]}.items() if v is not None}
    assert patched == {"llm-d.ai/inferenceServing": "true", "llm-d.ai/size": "small"}, patched
    labels = {name: _one(objects, "Deployment", f"{name}-decode")["spec"]["template"]["metadata"]["labels"]
              for name in ("ms-smollm", "ms-qwen")}
    assert all(set(patched.items()) <= set(pod.items()) for pod in labels.values()), labels
    assert labels["ms-qwen"]["llm-d.ai/model"] == "qwen2.5-1.5b-instruct"  # gaie-qwen still selects it


# ------------------------------------------------------------------ validation of bad catalogues

GOOD_FAULT = {
    "name": "epp-gone", "description": "The EPP Service is deleted, so the pool cannot resolve its endpoint picker.",
    "steps": [{"delete": {"apiVersion": "v1", "kind": "Service", "name": "gaie-phi-epp"}}],
    "expect": [{"check": "suites/test_smoke.py::test_status_conditions_are_true", "words": ["ResolvedRefs"]}],
}


def _problems(data) -> str:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(data, Path("catalogue.yaml"))
    return str(info.value)


def test_a_minimal_catalogue_parses_with_defaults():
    catalogue = parse_catalogue({"healthy": "pattern2", "faults": [GOOD_FAULT]}, Path("catalogue.yaml"))
    fault = catalogue.fault("epp-gone")
    assert (fault.run_topology, fault.select, fault.wait_ready, fault.timeout) == ("pattern2", ("suites",), True, 300)


@pytest.mark.parametrize("change, expected", [
    ({"steps": [{"reboot": {}}]}, "faults[0] (epp-gone).steps[0]: a step is a mapping with one key, one of helmfile"),
    ({"steps": [{"helmfile": {}}]}, "steps[0].helmfile: give at least one of releaseValues, disabledReleases, topology"),
    ({"steps": [{"helmfile": {"topology": "nope"}}]}, "steps[0].helmfile.topology: 'nope' is not a topology"),
    ({"steps": [{"patch": {"apiVersion": "v1", "kind": "Node", "name": "n", "patch": {}, "subresource": "scale"}}]},
     "steps[0].patch.subresource: only 'status' is supported"),
    ({"steps": [{"resizeGpuPool": {"size": -1}}]}, "steps[0].resizeGpuPool.size: expected a node count >= 0, found -1"),
    ({"steps": [{"create": {"manifest": {"kind": "Pod"}}}]},
     "steps[0].create.manifest: expected an object with apiVersion, kind and metadata.name"),
    ({"expect": [{"check": "suites/test_smoke.py::test_nothing_like_this", "words": ["x"]}]},
     "expect[0].check: suites/test_smoke.py has no test function test_nothing_like_this"),
    ({"expect": [{"check": "test_smoke.py::test_status_conditions_are_true", "words": ["x"]}]},
     "is not a check id: suites/<file>.py::<test name>[<param>]"),
    ({"expect": [{"check": "suites/test_smoke.py::test_status_conditions_are_true", "words": []}]},
     "expect[0].words: must not be empty"),
    ({"expect": []}, "expect: name at least one check that must fail"),
    ({"expectPass": True}, "faults[0] (epp-gone): expectPass: true means every check passes; it cannot also expect"),
    ({"expectPass": "yes"}, "expectPass: expected true (or leave it out), found 'yes'"),
    ({"name": "Bad Name"}, "faults[0].name: 'Bad Name' must be lower-case words joined by dashes"),
    ({"retries": 3}, "faults[0]: unknown key(s) retries (allowed: name, description, steps"),
    ({"timeout": 0}, "timeout: expected seconds in (0, 1800], found 0"),
    ({"select": ["tests_unit"]}, "select[0]: 'tests_unit' must be suites or a path/node id under suites/"),
])
def test_bad_faults_are_refused_with_the_path_of_the_problem(change, expected):
    assert expected in _problems({"healthy": "pattern2", "faults": [GOOD_FAULT | change]})


def test_duplicate_names_and_unknown_healthy_topology_are_refused():
    problems = _problems({"healthy": "pattern9", "faults": [GOOD_FAULT, GOOD_FAULT]})
    assert "healthy: 'pattern9' is not a topology of manifests/topologies/" in problems
    assert "faults[1].name: 'epp-gone' is used by an earlier fault; names must be unique" in problems


def test_unreadable_catalogue_says_which_file(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text("faults: [unclosed\n")
    with pytest.raises(CatalogueError, match=f"{path}: invalid YAML"):
        load_catalogue(path)


# ------------------------------------------------------------------ JUnit, verdict, table

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="suites.test_gpu_placement" name="test_model_pods_are_running_and_ready[google/gemma-2b-it]"/>
<testcase classname="suites.test_gpu_placement" name="test_model_pods_are_running_and_ready[microsoft/Phi-3-mini-4k-instruct]">
<failure message="AssertionError: model ...">def check():
    INSUFFICIENT = "Insufficient nvidia.com/gpu"
&gt;   assert not explained
E   AssertionError: model microsoft/Phi-3-mini-4k-instruct: 1 of 1 pod(s) not Running and Ready:
E       pod ms-phi-x (phase Pending): FailedScheduling: 0/4 nodes are available</failure>
</testcase>
<testcase classname="suites.test_smoke" name="test_status_conditions_are_true">
<error message="failed on setup">fixture error</error>
</testcase>
<testcase classname="suites.test_gpu_placement" name="test_models_run_on_distinct_gpu_nodes">
<skipped message="allowed">skipped</skipped>
</testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def run(tmp_path) -> SuiteRun:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    return SuiteRun(["pytest"], 1, 12.0, parse_junit(path), tmp_path / "pytest.log")


def test_junit_cases_get_node_ids_outcomes_and_only_the_assertion_text(run):
    phi = run.cases["suites/test_gpu_placement.py::test_model_pods_are_running_and_ready[microsoft/Phi-3-mini-4k-instruct]"]
    assert phi.outcome == "failed"
    assert "not Running and Ready" in phi.message and "Insufficient" not in phi.message  # source lines are not evidence
    assert [c.outcome for c in run.cases.values()] == ["passed", "failed", "error", "skipped"]
    assert assertion_text("plain message from pytest.fail") == "plain message from pytest.fail"


def test_check_ids_without_a_parameter_match_every_parametrization(run):
    assert len(matching(run.cases, "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready")) == 2
    assert len(matching(run.cases, "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready[google/gemma-2b-it]")) == 1
    assert matching(run.cases, "suites/test_gpu_placement.py::test_model_pods_are") == []


def _fault(expect, still_pass=()):
    data = GOOD_FAULT | {"expect": expect, "stillPass": list(still_pass)}
    return parse_catalogue({"healthy": "pattern2", "faults": [data]}, Path("c.yaml")).faults[0]


def test_judge_detects_a_failure_with_every_word(run):
    fault = _fault([{"check": "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready",
                     "words": ["not Running and Ready", "phase Pending"]}],
                   ["suites/test_gpu_placement.py::test_model_pods_are_running_and_ready[google/gemma-2b-it]"])
    result = judge(fault, run)
    result.restored = True
    assert result.passed, result.explain()
    assert result.detections[0].excerpt == "pod ms-phi-x (phase Pending): FailedScheduling: 0/4 nodes are available"
    assert result.other_failures == ["suites/test_smoke.py::test_status_conditions_are_true"]


@pytest.mark.parametrize("expect, still_pass, found", [
    ([{"check": "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready", "words": ["Insufficient"]}], [],
     "failed without ['Insufficient']"),  # the word is only in the source lines
    ([{"check": "suites/test_smoke.py::test_status_conditions_are_true", "words": ["fixture"]}], [],
     "test_status_conditions_are_true error"),  # an error is not the check failing
    ([{"check": "suites/test_gpu_placement.py::test_models_run_on_distinct_gpu_nodes", "words": ["x"]}], [],
     "skipped"),
    ([{"check": "suites/test_gpu_placement.py::test_gpu_nodes_are_available", "words": ["x"]}], [],
     "no such test case in the run"),
])
def test_judge_says_why_a_fault_went_undetected(run, expect, still_pass, found):
    result = judge(_fault(expect, still_pass), run)
    assert not result.passed and not result.detections[0].detected
    assert found in result.detections[0].found, result.detections[0].found
    assert "NOT DETECTED" in result.explain()


def test_judge_fails_a_fault_that_breaks_a_check_it_must_not(run):
    fault = _fault([{"check": "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready[microsoft/Phi-3-mini-4k-instruct]",
                     "words": ["Pending"]}], ["suites/test_smoke.py::test_status_conditions_are_true"])
    result = judge(fault, run)
    result.restored = True
    assert result.detections[0].detected and not result.passed
    assert result.broke_healthy == ["suites/test_smoke.py::test_status_conditions_are_true error: fixture error"]


def test_a_healthy_variation_passes_only_when_every_check_passes(run, tmp_path):
    """expectPass: any failed or erroring check of the run is a false fail; the table says which."""
    data = {k: v for k, v in GOOD_FAULT.items() if k != "expect"} | {"expectPass": True}
    fault = parse_catalogue({"healthy": "pattern2", "faults": [data]}, Path("c.yaml")).faults[0]
    assert fault.must_pass and fault.expect == ()
    result = judge(fault, run)
    result.restored = True
    assert not result.passed
    assert "failed although every check must pass: suites/test_smoke.py::test_status_conditions_are_true" in result.explain()
    assert format_table([result]).splitlines()[1].split()[:5] == ["epp-gone", "(every", "check", "passes)", "NO"]
    path = tmp_path / "green.xml"
    path.write_text(JUNIT.split("<testcase classname=\"suites.test_gpu_placement\" name=\"test_model_pods_are_running_and_ready[micro")[0]
                    + "</testsuite></testsuites>")
    green = judge(fault, SuiteRun(["pytest"], 0, 5.0, parse_junit(path), tmp_path / "pytest.log"))
    green.restored = True
    assert green.passed, green.explain()
    assert format_table([green]).splitlines()[1].split()[4:] == ["yes", "all", "passed"]


def test_judge_reports_a_run_that_timed_out_or_wrote_nothing(tmp_path):
    fault = _fault([{"check": "suites/test_smoke.py::test_status_conditions_are_true", "words": ["x"]}])
    result = judge(fault, SuiteRun(["pytest"], None, 300.0, {}, tmp_path / "pytest.log"))
    assert any("did not finish within 300s" in p for p in result.problems)
    assert any("wrote no JUnit results" in p for p in result.problems)


def test_table_and_reports_show_fault_check_verdict_and_excerpt(run, tmp_path):
    good = judge(_fault([{"check": "suites/test_gpu_placement.py::test_model_pods_are_running_and_ready",
                          "words": ["phase Pending"]}]), run)
    good.restored = True
    bad = judge(_fault([{"check": "suites/test_gpu_placement.py::test_gpu_nodes_are_available", "words": ["x"]}]), run)
    header, first, second = format_table([good, bad]).splitlines()
    assert header.split() == ["fault", "expected", "check", "detected?", "message", "excerpt"]
    assert first.split()[:3] == ["epp-gone", "test_gpu_placement.py::test_model_pods_are_running_and_ready", "yes"]
    assert second.split()[:3] == ["epp-gone", "test_gpu_placement.py::test_gpu_nodes_are_available", "NO"]
    assert second.endswith("no such test case in the run")
    broken = FaultResult(good.fault, problems=["applying the fault failed: helmfile sync failed"])
    row = format_table([broken]).splitlines()[1]
    assert row.split()[1:4] == ["(not", "judged)", "NO"]
    assert row.endswith("applying the fault failed: helmfile sync failed")
    assert markdown_table([good]).splitlines()[2].startswith("| epp-gone | test_gpu_placement.py::")
    markdown, details = write_reports([good, bad], tmp_path, 42.0)
    assert "1 of 2 faults failed by their expected checks, in 42s" in markdown.read_text()
    data = yaml.safe_load(details.read_text())
    assert [f["passed"] for f in data["faults"]] == [True, False] and data["faults"][0]["steps"] == [
        "delete Service gaie-phi-epp"]


def test_excerpt_keeps_the_expected_word_in_view():
    line = "AssertionError: " + "x" * 300 + " the word " + "y" * 50
    short = excerpt(line, "word", limit=100)
    assert "word" in short and len(short) <= 100 and short.startswith("…")
    assert excerpt("first\nsecond line", None) == "first"


# ------------------------------------------------------------------ undo helpers

def test_inverse_merge_patch_restores_changed_and_removes_added_fields():
    original = {"spec": {"replicas": 1, "template": {"x": 1}}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}}
    patch = {"spec": {"replicas": 0, "paused": True}, "status": {"allocatable": {"nvidia.com/gpu": "0"}}}
    assert inverse_merge_patch(original, patch) == {"spec": {"replicas": 1, "paused": None},
                                                    "status": {"allocatable": {"nvidia.com/gpu": "1"}}}


def test_deleted_objects_are_recreated_without_server_fields():
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "s", "uid": "u", "resourceVersion": "7", "managedFields": [], "labels": {"a": "b"}},
               "spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"], "ports": [{"port": 9002}]},
               "status": {"loadBalancer": {}}}
    assert recreatable(service) == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "b"}},
                                    "spec": {"ports": [{"port": 9002}]}}
