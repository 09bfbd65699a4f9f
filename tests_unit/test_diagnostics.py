"""The diagnostics bundle: collected through the API from a fake API server, redacted, written on
failure only, before the target's teardown, in the controller under xdist, and never in the way of
the test result."""
from __future__ import annotations

import pytest
import yaml

from llmd_conformance import diagnostics
from llmd_conformance.kube import connect
from llmd_conformance.redact import MASK
from llmd_conformance.topology import load_topology
from tests_unit.conftest import FAKE_TARGET_CONFTEST, dedent, events
from tests_unit.fake_cluster import TOKEN, api_routes, deployment, restart, write_kubeconfig

# Every file a failing pattern2 run leaves (the EPP of gaie-phi restarted once: its previous log too).
LISTING = [
    "events.txt",
    "gateway.yaml",
    "index.yaml",
    "logs/body-based-router-0/bbr.log",
    "logs/gaie-gemma-epp-0/epp.log",
    "logs/gaie-phi-epp-0/epp.log",
    "logs/gaie-phi-epp-0/epp.previous.log",
    "logs/ms-gemma-decode-0/vllm.log",
    "logs/ms-phi-decode-0/vllm.log",
    "objects/deployments.yaml",
    "objects/endpointslices.yaml",
    "objects/gateways.yaml",
    "objects/httproutes.yaml",
    "objects/inferencepools.yaml",
    "objects/pods.yaml",
    "objects/services.yaml",
]

# The fake target, with the diagnostics plugin loaded as the root conftest.py loads it, noting at
# teardown whether the bundle is already there.
CONFTEST = FAKE_TARGET_CONFTEST.replace('pytest_plugins = ["llmd_conformance.fixtures.plugin"]',
                                        'pytest_plugins = ["llmd_conformance.fixtures.plugin", "llmd_conformance.fixtures.diagnostics_plugin"]') + '''

def _teardown(self):
    bundled = (Path.cwd() / "reports" / "diagnostics" / "index.yaml").is_file()
    record("teardown-after-bundle" if bundled else "teardown-without-bundle")


FakeTarget.teardown = _teardown
'''

CHECKS = dedent("""
    def test_deliberately_failing_check(target):
        assert False, "a deliberately failing check"

    def test_passing_check(target):
        pass
""")


@pytest.fixture(scope="module")
def pattern2():
    return load_topology("pattern2")


@pytest.fixture
def cluster(api_server, pattern2, tmp_path):
    """The fake API server holding a pattern2 deployment whose phi EPP restarted; its kubeconfig."""
    api_server.routes.update(api_routes(pattern2, restart(deployment(pattern2), "gaie-phi-epp", annotation=False)))
    return write_kubeconfig(tmp_path / "kubeconfig", api_server.url)


def listing(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def bundle_pytester(suite_pytester, monkeypatch, kubeconfig, checks: str = CHECKS):
    monkeypatch.setenv("FAKE_KUBECONFIG", str(kubeconfig))
    (suite_pytester.path / "conftest.py").write_text(CONFTEST)
    suite_pytester.makepyfile(test_checks=checks)
    return suite_pytester


def test_a_failing_run_leaves_a_redacted_bundle_written_before_the_teardown(suite_pytester, monkeypatch, cluster,
                                                                            api_server):
    pytester = bundle_pytester(suite_pytester, monkeypatch, cluster)
    result = pytester.runpytest_subprocess("--target", "fake", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    folder = pytester.path / "reports" / "diagnostics"
    result.stdout.fnmatch_lines(["*= llm-d diagnostics =*", f"diagnostics of the failed run: {folder} (index.yaml*"])
    assert [e for e, _ in events(pytester)] == ["setup", "teardown-after-bundle"]
    print("\n".join(listing(folder)))
    assert listing(folder) == LISTING
    index = yaml.safe_load((folder / "index.yaml").read_text())
    assert index["why"] == ["test_checks.py::test_deliberately_failing_check (call failed)"]
    assert index["gateway"]["url"] == "http://127.77.0.4:80"  # the target has none: from the Gateway's status
    assert index["problems"] == []
    epp = index["components"]["EPP of pool gaie-phi (Service gaie-phi-epp)"]
    assert epp == {"readyEndpoints": 1, "pods": {"gaie-phi-epp-0": {
        "ready": True, "restarts": 1, "logs": ["logs/gaie-phi-epp-0/epp.log", "logs/gaie-phi-epp-0/epp.previous.log"]}}}
    assert index["components"]["BBR (Service body-based-router)"]["pods"]["body-based-router-0"]["logs"] == [
        "logs/body-based-router-0/bbr.log"]
    gateway = yaml.safe_load((folder / "gateway.yaml").read_text())
    assert (gateway["controllerName"], gateway["addresses"]) == ("llm-d.ai/local-gateway",
                                                                [{"type": "IPAddress", "value": "127.77.0.4"}])
    assert "Warning BackOff Pod/gaie-phi-epp-0 x2: Back-off restarting failed container" in (
        folder / "events.txt").read_text()
    text = "\n".join(p.read_text() for p in folder.rglob("*") if p.is_file())
    assert TOKEN not in text and "plain-secret-value" not in text and "hf_QQQQ" not in text
    assert "managedFields" not in text and f"token {MASK}" in (folder / "logs/gaie-phi-epp-0/epp.log").read_text()
    pods = yaml.safe_load((folder / "objects/pods.yaml").read_text())["items"]
    assert {e["value"] for p in pods for c in p["spec"]["containers"] for e in c.get("env") or []} == {MASK}
    assert not [path for path, _ in api_server.requests if "secret" in path.lower()]


def test_a_passing_run_and_a_run_without_a_target_collect_nothing(suite_pytester, monkeypatch, cluster, api_server):
    pytester = bundle_pytester(suite_pytester, monkeypatch, cluster, checks=dedent("""
        def test_passing_check(target):
            pass

        def test_failing_without_the_target():
            assert False
    """))
    pytester.runpytest_subprocess("--target", "fake", "-k", "passing").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("--target", "fake", "-k", "without").assert_outcomes(failed=1)
    assert not (pytester.path / "reports" / "diagnostics").exists() and api_server.requests == []


def test_under_xdist_the_controller_collects_before_its_teardown(suite_pytester, monkeypatch, cluster):
    pytester = bundle_pytester(suite_pytester, monkeypatch, cluster)
    result = pytester.runpytest_subprocess("--target", "fake", "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    assert [e for e, _ in events(pytester)] == ["setup", "teardown-after-bundle"]
    assert listing(pytester.path / "reports" / "diagnostics") == LISTING


def test_a_setup_failure_on_an_unreachable_cluster_still_leaves_an_index(suite_pytester, monkeypatch, tmp_path):
    """Nothing answers at the kubeconfig's server: the index says why it was collected and what failed."""
    pytester = bundle_pytester(suite_pytester, monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1"))
    monkeypatch.setenv("FAKE_SETUP_ERROR", "no cluster here")
    result = pytester.runpytest_subprocess("--target", "fake", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    folder = pytester.path / "reports" / "diagnostics"
    assert listing(folder) == ["index.yaml"]
    index = yaml.safe_load((folder / "index.yaml").read_text())
    assert index["why"][0] == "target setup failed: RuntimeError: no cluster here"
    assert index["why"][1:] == ["test_checks.py::test_deliberately_failing_check (setup failed)",
                                "test_checks.py::test_passing_check (setup failed)"]
    assert [p.split(":")[0] for p in index["problems"]] == ["connecting to the cluster"]
    assert "127.0.0.1" in index["problems"][0] and index["target"] == "fake (setup failed)"


def test_a_collection_that_fails_is_printed_and_changes_neither_result_nor_teardown(suite_pytester, monkeypatch,
                                                                                   cluster):
    """A --report-dir whose diagnostics/ is someone else's folder: not replaced, said, exit code 1."""
    pytester = bundle_pytester(suite_pytester, monkeypatch, cluster)
    (pytester.path / "reports" / "diagnostics").mkdir(parents=True)
    (pytester.path / "reports" / "diagnostics" / "notes.txt").write_text("mine")
    result = pytester.runpytest_subprocess("--target", "fake", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["diagnostics not collected: OSError: */reports/diagnostics exists and is not a "
                                 "diagnostics bundle of this suite; not replaced*"])
    assert [e for e, _ in events(pytester)] == ["setup", "teardown-without-bundle"]
    assert listing(pytester.path / "reports" / "diagnostics") == ["notes.txt"]


def test_an_interrupted_run_goes_straight_to_its_teardown(suite_pytester, monkeypatch, cluster, api_server):
    """Ctrl-C (or SIGTERM) after a failure: nothing read from the cluster, said in the summary."""
    pytester = bundle_pytester(suite_pytester, monkeypatch, cluster, checks=CHECKS + dedent("""
        def test_interrupted(target):
            raise KeyboardInterrupt
    """))
    result = pytester.runpytest_subprocess("--target", "fake", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["diagnostics not collected: the run was interrupted; the target is torn down "
                                 "without waiting for a collection"])
    assert [e for e, _ in events(pytester)] == ["setup", "teardown-without-bundle"] and api_server.requests == []


def test_failed_parts_are_noted_and_the_rest_collected(cluster, api_server, pattern2, tmp_path):
    """A log the API server refuses and a previous bundle replaced; the rest is all there."""
    refused = next(p for p in api_server.routes if "body-based-router-0/log" in p)
    api_server.routes[refused] = (500, {"kind": "Status", "message": "dial tcp 10.244.255.254:10250: refused"})
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "diagnostics" / "index.yaml").write_text(f"kind: {diagnostics.KIND}\n")
    (tmp_path / "diagnostics" / "stale.log").write_text("from the previous run")
    folder = diagnostics.collect(tmp_path, pattern2, lambda: connect(cluster, None), why=["t (call failed)"],
                                 target="fake", gateway_url="http://127.77.0.4:80")
    files = listing(folder)
    assert "stale.log" not in files and "logs/body-based-router-0/bbr.log" not in files
    assert len(files) == len(LISTING) - 1
    index = yaml.safe_load((folder / "index.yaml").read_text())
    assert index["problems"] == ['logs of body-based-router-0/bbr: HTTP 500 Internal Server Error: {"kind": '
                                 '"Status", "message": "dial tcp 10.244.255.254:10250: refused"}']
    assert index["gateway"] == {"name": pattern2.gateway_name, "url": "http://127.77.0.4:80"}


def test_a_spent_budget_skips_the_rest_and_says_so(cluster, pattern2, tmp_path):
    folder = diagnostics.collect(tmp_path, pattern2, lambda: connect(cluster, None), why=["t"], target="fake",
                                 gateway_url=None, budget=0)
    index = yaml.safe_load((folder / "index.yaml").read_text())
    assert listing(folder) == ["index.yaml"]
    assert index["problems"] == ["connecting to the cluster: skipped, the collection's 0s budget was spent"]


def test_env_values_and_spec_copies_are_masked_wherever_they_sit():
    """Pods and pod templates alike; valueFrom names a Secret without holding it, so it stays."""
    template = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"env": "x"}',
                                             "keep": "me"}, "managedFields": [{"manager": "helm"}]},
                "spec": {"template": {"spec": {"containers": [{"env": [
                    {"name": "A", "value": "a-secret"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}]}}}}
    masked = diagnostics.mask_env(template)
    assert masked == {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": MASK,
                                                   "keep": "me"}},
                      "spec": {"template": {"spec": {"containers": [{"env": [
                          {"name": "A", "value": MASK},
                          {"name": "B", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]}]}}}}
