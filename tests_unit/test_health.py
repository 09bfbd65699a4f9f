"""Gateway errors name their cause: the components behind each model (its pool's EPP, its backends,
BBR) read before and after the routing run, over fake cluster state, and the diagnosis built from them."""
from __future__ import annotations

import json

import pytest

from llmd_conformance.health import diagnose_errors, read_health
from llmd_conformance.mixes import COMPLETIONS, RequestSpec
from llmd_conformance.topology import load_topology
from llmd_conformance.traffic import Outcome, RequestResult
from tests_unit.fake_cluster import FakeCluster, deployment, endpoint_slice, find, restart
from tests_unit.test_routing_fakes import FakeGateway, by_model, topology_pods
from tests_unit.test_routing_plugin import FAKE_FIXTURES, SUITE, summaries

pytest_plugins = ["pytester"]

GEMMA, PHI = "google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct"


@pytest.fixture(scope="module")
def pattern2():
    return load_topology("pattern2")


def answer(index: int, model: str, outcome: Outcome = Outcome.OK, status: int | None = 200) -> RequestResult:
    spec = RequestSpec(model=model, endpoint=COMPLETIONS, stream=False, prompt="hi", max_tokens=4, temperature=0.0,
                       known=True)
    return RequestResult(index, spec, outcome, status, model if outcome is Outcome.OK else None, None, None,
                         None, 0.01, None)


def run_with_errors(model: str, errors: int, status: int | None = 500) -> list[RequestResult]:
    outcome = Outcome.TIMEOUT if status is None else Outcome.GATEWAY_ERROR
    ok = [answer(i, m) for i, m in enumerate([GEMMA, PHI] * 20)]
    return ok + [answer(100 + i, model, outcome, status) for i in range(errors)]


def looks(topology, *states):
    """Health before and after the run, from a cluster going through `states`."""
    cluster = FakeCluster(*states)
    return read_health(cluster, topology), read_health(cluster, topology)


@pytest.mark.parametrize("annotation", [True, False], ids=["local-annotation", "restartCount"])
def test_an_epp_restarted_during_the_run_is_named_with_the_healthy_parts(pattern2, annotation):
    """The issue's case: one pool's EPP killed mid-run, 500s for that model only; the restart is
    found in the local target's annotation as well as in restartCount."""
    healthy = deployment(pattern2)
    before, after = looks(pattern2, healthy, restart(healthy, "gaie-phi-epp", annotation=annotation))
    diagnosis = diagnose_errors(pattern2, run_with_errors(PHI, 22), before, after)
    assert diagnosis == (
        "22 gateway error(s)/timeout(s) in 62 requests: microsoft/Phi-3-mini-4k-instruct (22 × 500): likely the "
        "EPP of pool gaie-phi (Service gaie-phi-epp): pod gaie-phi-epp-0 restarted 1 time(s) during the run "
        "(healthy: backends of microsoft/Phi-3-mini-4k-instruct, BBR (Service body-based-router))")


def test_an_epp_not_ready_without_endpoints_is_named(pattern2):
    """Caught while down: the pod not Ready (with its container's waiting reason) and no ready endpoint."""
    down = deployment(pattern2)
    epp = find(down, "gaie-gemma-epp-0")
    epp["status"]["conditions"][0]["status"] = "False"
    epp["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    down["slices"] = [endpoint_slice("gaie-gemma-epp", {epp["status"]["podIP"]: False})
                      if s["metadata"]["labels"]["kubernetes.io/service-name"] == "gaie-gemma-epp" else s
                      for s in down["slices"]]
    before, after = looks(pattern2, deployment(pattern2), down)
    diagnosis = diagnose_errors(pattern2, run_with_errors(GEMMA, 3, status=None), before, after)
    assert ("google/gemma-2b-it (3 × timeout): likely the EPP of pool gaie-gemma (Service gaie-gemma-epp): "
            "pod gaie-gemma-epp-0 not Ready (CrashLoopBackOff), Service gaie-gemma-epp has no ready endpoint "
            "(healthy: ") in diagnosis


def replaced(state: dict) -> None:
    find(state, "ms-phi-decode-0")["metadata"].update(name="ms-phi-decode-1", uid="uid-new")


def scaled_to_zero(state: dict) -> None:
    state["pods"] = [p for p in state["pods"] if not p["metadata"]["name"].startswith("ms-phi")]


@pytest.mark.parametrize(("change", "evidence"), [
    (replaced, "pod ms-phi-decode-1 started during the run, pod ms-phi-decode-0 went away during the run"),
    (scaled_to_zero, "no pod, pod ms-phi-decode-0 went away during the run"),
])
def test_backends_replaced_or_gone_are_named_when_their_epp_is_healthy(pattern2, change, evidence):
    after = deployment(pattern2)
    change(after)
    before, after = looks(pattern2, deployment(pattern2), after)
    diagnosis = diagnose_errors(pattern2, run_with_errors(PHI, 4, status=503), before, after)
    assert (f"microsoft/Phi-3-mini-4k-instruct (4 × 503): likely the backends of microsoft/Phi-3-mini-4k-instruct: "
            f"{evidence} (healthy: EPP of pool gaie-phi (Service gaie-phi-epp), BBR (Service body-based-router))"
            ) in diagnosis


def test_bbr_comes_first_when_every_model_fails(pattern2):
    """BBR serves every model: with errors on all of them and BBR restarted, it is the likely one."""
    healthy = deployment(pattern2)
    before, after = looks(pattern2, healthy, restart(healthy, "body-based-router", annotation=False))
    results = run_with_errors(GEMMA, 2) + run_with_errors(PHI, 3)
    diagnosis = diagnose_errors(pattern2, results, before, after)
    for model, count in ((GEMMA, 2), (PHI, 3)):
        assert (f"{model} ({count} × 500): likely the BBR (Service body-based-router): pod body-based-router-0 "
                f"restarted 1 time(s) during the run") in diagnosis


def test_missing_epp_service_and_errors_for_unknown_names(pattern2):
    """A pool whose EPP Service is gone; errors on names no model serves are judged against BBR only."""
    gone = deployment(pattern2)
    gone["services"] = [s for s in gone["services"] if s["metadata"]["name"] != "gaie-phi-epp"]
    before, after = looks(pattern2, gone, gone)
    results = run_with_errors(PHI, 1) + [answer(900, "no/such-model", Outcome.GATEWAY_ERROR, 500)]
    diagnosis = diagnose_errors(pattern2, results, before, after)
    assert "microsoft/Phi-3-mini-4k-instruct (1 × 500): likely the EPP of pool gaie-phi (Service gaie-phi-epp): " \
           "Service gaie-phi-epp does not exist" in diagnosis
    assert "(unknown model names) (1 × 500): no component shows a fault" in diagnosis


@pytest.mark.parametrize(("status", "hint"), [
    (502, "; look at the answers below, the HTTPRoute's status and the gateway's logs in the diagnostics bundle"),
    (None, ": the answers were slower than the request timeout, from a slow backend or gateway"),
])
def test_healthy_components_say_so_and_where_to_look(pattern2, status, hint):
    """Seen in the fault catalogue: a route to a wrong backendRef group (500s), a backend slower than
    the request timeout; nothing behind the model is down, so no component is named."""
    healthy = deployment(pattern2)
    before, after = looks(pattern2, healthy, healthy)
    diagnosis = diagnose_errors(pattern2, run_with_errors(GEMMA, 1, status=status), before, after)
    assert diagnosis.endswith(f"google/gemma-2b-it (1 × {status or 'timeout'}): no component shows a fault (Ready, "
                              f"no restart, endpoints present){hint}")


def test_an_unreadable_cluster_is_said_and_never_raises(pattern2):
    """No look before the run: restarts are shown undated; no look after: the reason, no component."""
    class Broken:
        @property
        def core(self):
            raise ConnectionError("API server gone")

    healthy = deployment(pattern2)
    unreadable = read_health(Broken(), pattern2)
    assert unreadable.error == "ConnectionError: API server gone"
    restarted = read_health(FakeCluster(restart(healthy, "gaie-phi-epp", annotation=True)), pattern2)
    undated = diagnose_errors(pattern2, run_with_errors(PHI, 2), unreadable, restarted)
    assert "no look before the run (ConnectionError: API server gone), so restarts are not dated" in undated
    assert "pod gaie-phi-epp-0 restarted 1 time(s) (no earlier look to date them)" in undated
    blind = diagnose_errors(pattern2, run_with_errors(PHI, 2), restarted, unreadable)
    assert blind == ("2 gateway error(s)/timeout(s) in 42 requests; the cluster state could not be read to name a "
                     "component: ConnectionError: API server gone")


def test_no_errors_no_diagnosis(pattern2):
    healthy = deployment(pattern2)
    before, after = looks(pattern2, healthy, healthy)
    assert diagnose_errors(pattern2, run_with_errors(GEMMA, 0), before, after) is None


# The routing plugin tests' fake session fixtures, with a cluster whose phi EPP restarts between
# the look before the run and the look after it (a later definition of a fixture replaces the first).
RESTARTING_EPP = """

@pytest.fixture(scope="session")
def kube(topology):
    from tests_unit.fake_cluster import FakeCluster, deployment, restart
    healthy = deployment(topology)
    return FakeCluster(healthy, restart(healthy, "gaie-phi-epp", annotation=True))
"""


class PhiEppDown(FakeGateway):
    """pattern2 by model, except that every request for Phi gets Envoy's 500 (its EPP is gone)."""

    def respond(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if json.loads(body)["model"] == PHI:
            return 500, {}, b"upstream connect error or disconnect/reset before headers"
        return super().respond(path, body)


def test_the_routing_check_fails_naming_the_restarted_epp(pytester, pattern2):
    """suites/test_routing_accuracy.py itself: 500s for one model fail the verdict, and the failure
    (and the summary) carries the diagnosis naming that model's EPP, restarted during the run."""
    with PhiEppDown(topology_pods(pattern2), by_model).serve() as url:
        pytester.makeconftest(FAKE_FIXTURES.format(topology="pattern2", url=url) + RESTARTING_EPP)
        pytester.makepyfile(test_routing_accuracy=SUITE.read_text())
        result = pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                                    "--mix-seed", "7", "--concurrency", "4")
    result.assert_outcomes(failed=1, passed=1)  # the unknown-model check passes: BBR has no route for them
    result.stdout.fnmatch_lines([
        "*routing accuracy FAIL (stopped early after 10 of 300 requests)*",
        "diagnosis: * gateway error(s)/timeout(s) in 10 requests: microsoft/Phi-3-mini-4k-instruct (* × 500): "
        "likely the EPP of pool gaie-phi (Service gaie-phi-epp): pod gaie-phi-epp-0 restarted 1 time(s) during "
        "the run (healthy: backends of microsoft/Phi-3-mini-4k-instruct, BBR (Service body-based-router))",
    ])
    (summary,) = summaries(pytester)
    assert "likely the EPP of pool gaie-phi" in summary["diagnosis"]
