"""llmd_conformance.kube against a fake API server on loopback (discovery, pod proxy, versions, auth) and
against fake clients (pods, conditions, the ..._must_have_... helpers)."""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes import client

from llmd_conformance import timing
from llmd_conformance.kube import (
    POOL_APIS,
    KubeError,
    TimedApiClient,
    condition_mismatch,
    connect,
    describe_pod,
    detect_versions,
    discover_pool_api,
    find_condition,
    gateway_must_have_address,
    get_json,
    httproute_must_have_condition,
    inferencepool_must_have_condition,
    namespace_must_exist,
    node_gpus,
    parent_status,
    pod_gpus,
    pod_proxy_get,
    pod_ready,
    pods_matching,
    url_for,
    yaml_excerpt,
)
from tests_unit.conftest import FakeApiServer, resources

V1, V1ALPHA2 = POOL_APIS
GATEWAY = "infra-gw"
NS = "llm-d"


def test_discovery_prefers_v1(api_server):
    """When both InferencePool versions are served, v1 (status key 'parents') wins."""
    api_server.routes["/apis/inference.networking.k8s.io/v1"] = resources("inferencepools")
    api_server.routes["/apis/inference.networking.x-k8s.io/v1alpha2"] = resources("inferencepools")
    api = discover_pool_api(api_server.api_client())
    assert (api.api_version, api.status_key) == ("inference.networking.k8s.io/v1", "parents")


def test_discovery_falls_back_to_v1alpha2(api_server):
    """A cluster serving only v1alpha2 gets the 'parent' status key."""
    api_server.routes["/apis/inference.networking.x-k8s.io/v1alpha2"] = resources("inferencepools", "inferencemodels")
    api = discover_pool_api(api_server.api_client())
    assert (api.api_version, api.status_key) == ("inference.networking.x-k8s.io/v1alpha2", "parent")


def test_discovery_ignores_a_group_without_inferencepools(api_server):
    """GIE v1.x serves x-k8s.io v1alpha2 for other kinds only: that is not an InferencePool API."""
    api_server.routes["/apis/inference.networking.x-k8s.io/v1alpha2"] = resources("inferenceobjectives")
    with pytest.raises(KubeError) as excinfo:
        discover_pool_api(api_server.api_client())
    assert str(excinfo.value) == (
        "the cluster serves no InferencePool API (looked for inference.networking.k8s.io/v1 and "
        "inference.networking.x-k8s.io/v1alpha2); install the Gateway API Inference Extension CRDs")


def test_requests_carry_the_bearer_token(api_server):
    """Raw GETs authenticate like the generated API methods do."""
    get_json(api_server.api_client(), "/version")
    path, headers = api_server.requests[-1]
    assert path == "/version" and headers.get("authorization") == "Bearer secret-token"


def test_pod_proxy_get_parses_json(api_server):
    """The pod proxy path is /api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH; JSON comes back parsed."""
    listing = {"object": "list", "data": [{"id": "google/gemma-2b-it", "object": "model"}]}
    api_server.routes["/api/v1/namespaces/llm-d/pods/ms-gemma-0:8000/proxy/v1/models"] = (200, listing)
    assert pod_proxy_get(api_server.api_client(), NS, "ms-gemma-0", 8000, "/v1/models") == (200, listing)


def test_pod_proxy_get_returns_errors_instead_of_raising(api_server):
    """A backend that is down gives (status, text), so a check can quote it."""
    api_server.routes["/api/v1/namespaces/llm-d/pods/p:8000/proxy/v1/models"] = (503, b"connection refused")
    assert pod_proxy_get(api_server.api_client(), NS, "p", 8000, "v1/models") == (503, "connection refused")


def test_detect_versions_reads_the_crd_bundle_annotations(api_server):
    """Versions come from /version and the bundle-version annotations of the CRDs."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    api_server.routes["/version"] = (200, {"gitVersion": "v1.35.4"})
    api_server.routes[f"{crds}/gateways.gateway.networking.k8s.io"] = (200, {"metadata": {"annotations": {
        "gateway.networking.k8s.io/bundle-version": "v1.4.1", "gateway.networking.k8s.io/channel": "standard"}}})
    api_server.routes[f"{crds}/inferencepools.inference.networking.k8s.io"] = (200, {"metadata": {"annotations": {
        "inference.networking.k8s.io/bundle-version": "v1.5.0"}}})
    assert detect_versions(api_server.api_client(), V1) == {
        "kubernetes": "v1.35.4", "gatewayAPI": "v1.4.1", "gatewayAPIChannel": "standard",
        "inferenceExtension": "v1.5.0", "inferencePoolAPI": "inference.networking.k8s.io/v1"}


def test_detect_versions_says_unknown_when_unreadable(api_server):
    """Missing or forbidden CRDs give 'unknown', not an error."""
    versions = detect_versions(api_server.api_client(), V1ALPHA2)
    assert versions["gatewayAPI"] == "unknown" and versions["inferenceExtension"] == "unknown"


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "ctx-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "missing", "user": "u"}}],
    }))
    return path


def test_connect_uses_the_kubeconfig_context(api_server, tmp_path: Path):
    """connect() builds clients from a kubeconfig context and discovers the pool API through it."""
    api_server.routes["/apis/inference.networking.k8s.io/v1"] = resources("inferencepools")
    kube = connect(write_kubeconfig(tmp_path / "kubeconfig", api_server.url), "fake")
    assert kube.pool_api is V1
    assert api_server.requests[-1][1].get("authorization") == "Bearer ctx-token"


def test_context_missing_from_the_kubeconfig_names_the_contexts_and_the_flags(tmp_path: Path):
    """A --context the kubeconfig lacks: which contexts exist, and which flag to change."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "nope")
    assert str(excinfo.value) == (f"context 'nope' is not in kubeconfig {kubeconfig} (contexts: fake, other); pass "
                                  f"--context with one of them, or --kubeconfig with the file that has it")


def test_missing_kubeconfig_names_the_path_and_the_flag(tmp_path: Path, monkeypatch):
    """A kubeconfig that does not exist, given or from $KUBECONFIG, is named with --kubeconfig."""
    with pytest.raises(KubeError) as excinfo:
        connect(tmp_path / "nope", None)
    assert str(excinfo.value) == (f"kubeconfig {tmp_path}/nope does not exist; pass --kubeconfig with the file of "
                                  f"the cluster to check")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone"))
    with pytest.raises(KubeError) as excinfo:
        connect(None, "fake")
    assert str(excinfo.value) == (f"kubeconfig {tmp_path}/gone (the default kubeconfig) does not exist; pass "
                                  f"--kubeconfig with the file of the cluster to check")


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "is not a kubeconfig (YAML mapping); pass --kubeconfig with a valid file"),
    ("a: [", "cannot be read: while parsing"),
])
def test_kubeconfig_that_is_not_one(tmp_path: Path, text, message):
    """A list or broken YAML is named, not an AttributeError."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    with pytest.raises(KubeError, match=re.escape(f"kubeconfig {kubeconfig} {message}")):
        connect(kubeconfig, None)


def test_context_pointing_at_a_missing_cluster(tmp_path: Path):
    """The library's complaint is kept, with the context, the file and what to do."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    with pytest.raises(KubeError, match=f"^cannot load context other of kubeconfig {kubeconfig}: .*missing.*; fix it "
                                        f"there or pass --context with another one$"):
        connect(kubeconfig, None)


class HangingRoutes(dict):
    """FakeApiServer routes under which the paths in `hang` get no answer until the test ends (at
    most HANG_LIMIT seconds, so that a client without a timeout fails the test instead of hanging it)."""

    HANG_LIMIT = 8.0

    def __init__(self, routes: dict, hang: set[str], release: threading.Event):
        super().__init__(routes)
        self.hang, self.release = hang, release

    def get(self, path, default=None):
        if path in self.hang:
            self.release.wait(self.HANG_LIMIT)
        return super().get(path, default)


@pytest.fixture
def hanging_server(api_server) -> Iterator[Callable[[dict, set[str]], FakeApiServer]]:
    """The loopback fake API server, answering `routes` and never the paths in `hang`."""
    release = threading.Event()
    api_server.server.handle_error = lambda *args: None  # late answers to clients that gave up: broken pipes

    def hang(routes: dict, paths: set[str]) -> FakeApiServer:
        api_server.routes = HangingRoutes(routes, paths, release)
        return api_server
    yield hang
    release.set()


def calls(server: FakeApiServer, path: str) -> int:
    return sum(1 for seen, _ in server.requests if seen == path)


def test_hanging_api_server_fails_a_call_within_the_request_timeout(hanging_server, tmp_path: Path, monkeypatch):
    """An API server that accepts and never answers: connect()'s discovery call fails after timing's
    api_request, once (a timed-out call is not retried), naming the server and the call."""
    monkeypatch.setattr(timing, "DEFAULT", dataclasses.replace(timing.DEFAULT, api_request=0.5))
    server = hanging_server({}, {"/apis/inference.networking.k8s.io/v1"})
    started = time.monotonic()
    with pytest.raises(KubeError) as excinfo:
        connect(write_kubeconfig(tmp_path / "kubeconfig", server.url), "fake")
    assert time.monotonic() - started < 2.0
    assert str(excinfo.value) == (f"GET /apis/inference.networking.k8s.io/v1: the API server {server.url} did not "
                                  f"answer within 0.5s (api_request in llmd_conformance/timing.py); check that it "
                                  f"is up and reachable")
    assert calls(server, "/apis/inference.networking.k8s.io/v1") == 1


def test_generated_api_calls_get_the_default_timeout(hanging_server, tmp_path: Path, monkeypatch):
    """Typed calls (read_namespace) pass no _request_timeout of their own: they get timing's api_request."""
    monkeypatch.setattr(timing, "DEFAULT", dataclasses.replace(timing.DEFAULT, api_request=0.5))
    server = hanging_server({"/apis/inference.networking.k8s.io/v1": resources("inferencepools")},
                            {"/api/v1/namespaces/llm-d"})
    kube = connect(write_kubeconfig(tmp_path / "kubeconfig", server.url), "fake")
    assert isinstance(kube.api_client, TimedApiClient)
    started = time.monotonic()
    with pytest.raises(KubeError, match=f"^GET /api/v1/namespaces/llm-d: the API server {server.url} did not answer "
                                        f"within 0.5s"):
        namespace_must_exist(kube.core, NS, "deploy it")
    assert time.monotonic() - started < 2.0


def test_pool_api_reads_both_shapes():
    """Selector, ports, EPP reference and parents read the same from v1 and v1alpha2 objects."""
    v1 = {"spec": {"selector": {"matchLabels": {"a": "b"}}, "targetPorts": [{"number": 8000}, {"number": 8001}],
                   "endpointPickerRef": {"name": "epp", "port": {"number": 9002}}},
          "status": {"parents": [{"parentRef": {"name": GATEWAY}}]}}
    alpha = {"spec": {"selector": {"a": "b"}, "targetPortNumber": 8000, "extensionRef": {"name": "epp", "portNumber": 9002}},
             "status": {"parent": [{"parentRef": {"name": GATEWAY}}]}}
    assert (V1.selector(v1), V1.target_ports(v1), V1.endpoint_picker(v1)) == ({"a": "b"}, [8000, 8001], ("epp", 9002))
    assert (V1ALPHA2.selector(alpha), V1ALPHA2.target_ports(alpha), V1ALPHA2.endpoint_picker(alpha)) == (
        {"a": "b"}, [8000], ("epp", 9002))
    assert V1.parents(v1) == V1ALPHA2.parents(alpha) == [{"parentRef": {"name": GATEWAY}}]
    assert V1.endpoint_picker({"spec": {}}) is None and V1.parents({}) == []


def test_find_condition_reads_dicts_and_client_models():
    """Conditions of custom objects (dicts) and of pods (models) are found alike."""
    assert find_condition([{"type": "Accepted", "status": "True"}], "Accepted") == {"type": "Accepted", "status": "True"}
    pod_condition = client.V1PodCondition(type="Ready", status="False")
    assert find_condition([pod_condition], "Ready") is pod_condition
    assert find_condition(None, "Ready") is None


def test_condition_mismatch_explains():
    """A mismatch says what was found, including the reason and message."""
    found = {"type": "Accepted", "status": "False", "reason": "NotSupportedByParent", "message": "no"}
    assert condition_mismatch(found, "True", None) == \
        "found Accepted=False reason=NotSupportedByParent message='no'"
    assert condition_mismatch(None, "True", None) == "condition absent"
    assert condition_mismatch({"type": "Accepted", "status": "True", "reason": "Accepted"}, "True", "Accepted") is None
    assert condition_mismatch({"type": "Accepted", "status": "True", "reason": "Other"}, "True", "Accepted")


def test_condition_written_for_an_older_generation_is_stale():
    """A True condition observed for generation 1 of an object now at generation 2 does not count."""
    old = {"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": 1}
    assert condition_mismatch(old, "True", None, generation=2) == (
        "found Programmed=True reason=Programmed but stale: written for observedGeneration 1, "
        "the object is at generation 2 (no controller has acted on its current spec)")
    assert condition_mismatch(old, "True", None, generation=1) is None
    assert condition_mismatch(old, "True", None) is None  # generation unknown: nothing to compare
    assert condition_mismatch({"type": "Programmed", "status": "True"}, "True", None, generation=5) is None


def test_parent_status_matches_the_gateway_with_defaults():
    """A parentRef without group/kind/namespace means a Gateway in the object's namespace."""
    mine = {"parentRef": {"name": GATEWAY}}
    placeholder = {"parentRef": {"kind": "Status", "name": "default"}}
    elsewhere = {"parentRef": {"name": GATEWAY, "namespace": "other"}}
    assert parent_status([placeholder, elsewhere, mine], GATEWAY, NS) is mine
    assert parent_status([placeholder], GATEWAY, NS) is None


def test_yaml_excerpt_picks_dotted_keys():
    """Only the asked fields, absent ones marked."""
    obj = {"spec": {"selector": {"matchLabels": {"a": "b"}}, "other": 1}}
    assert yaml_excerpt(obj, ["spec.selector", "status.parents"]) == (
        "spec.selector:\n  matchLabels:\n    a: b\nstatus.parents: <absent>")
    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", labels={"x": "y"}))
    assert yaml_excerpt(pod, ["metadata.labels"]) == "metadata.labels:\n  x: y"


def pod(name, labels=None, deleting=False, gpus=None, phase="Running", ready=True, node="gpu-1"):
    limits = {"nvidia.com/gpu": str(gpus)} if gpus is not None else None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {},
                                     deletion_timestamp="2026-01-01T00:00:00Z" if deleting else None),
        spec=client.V1PodSpec(node_name=node, containers=[
            client.V1Container(name="vllm", resources=client.V1ResourceRequirements(limits=limits))]),
        status=client.V1PodStatus(phase=phase, conditions=[
            client.V1PodCondition(type="Ready", status="True" if ready else "False")]))


def test_pods_matching_builds_the_selector_and_skips_terminating_pods():
    """Label selector 'k=v,...' sorted; pods being deleted are left out unless asked for."""
    asked = []

    def list_namespaced_pod(namespace, label_selector):
        asked.append((namespace, label_selector))
        return SimpleNamespace(items=[pod("b"), pod("a"), pod("c", deleting=True)])

    core = SimpleNamespace(list_namespaced_pod=list_namespaced_pod)
    found = pods_matching(core, NS, {"llm-d.ai/model": "gemma", "llm-d.ai/inferenceServing": "true"})
    assert [p.metadata.name for p in found] == ["a", "b"]
    assert asked == [(NS, "llm-d.ai/inferenceServing=true,llm-d.ai/model=gemma")]
    assert len(pods_matching(core, NS, {"x": "y"}, include_terminating=True)) == 3


READY_CASES = {  # conditions, being deleted, Ready
    "ready": ([{"type": "Ready", "status": "True"}], False, True),
    "not ready": ([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}], False, False),
    "no conditions": ([], False, False),
    "terminating": ([{"type": "Ready", "status": "True"}], True, False),
}


@pytest.mark.parametrize("case", READY_CASES)
def test_pod_ready_reads_client_models_and_dicts_alike(case):
    """Ready=True and not being deleted, for a pod from a typed call or one read as a dict."""
    conditions, deleting, expected = READY_CASES[case]
    stamp = "2026-01-01T00:00:00Z" if deleting else None
    typed = client.V1Pod(metadata=client.V1ObjectMeta(name="p", deletion_timestamp=stamp),
                         status=client.V1PodStatus(conditions=[client.V1PodCondition(**c) for c in conditions] or None))
    plain = {"metadata": {"name": "p", **({"deletionTimestamp": stamp} if stamp else {})},
             "status": {"conditions": conditions} if conditions else {}}
    assert (pod_ready(typed), pod_ready(plain)) == (expected, expected)


def test_pod_without_status_is_not_ready():
    assert not pod_ready(client.V1Pod(metadata=client.V1ObjectMeta(name="p"))) and not pod_ready({"metadata": {}})


def test_gpu_counts_and_pod_description():
    """GPUs come from container limits (pods) and allocatable (nodes); the description shows state."""
    assert pod_gpus(pod("a", gpus=1)) == 1 and pod_gpus(pod("a")) == 0
    node = client.V1Node(status=client.V1NodeStatus(allocatable={"nvidia.com/gpu": "2", "cpu": "4"}))
    assert node_gpus(node) == 2 and node_gpus(client.V1Node(status=client.V1NodeStatus())) == 0
    text = describe_pod(pod("a", labels={"m": "x"}, phase="Pending", ready=False, node=None))
    assert text == "pod a (phase Pending, node (unscheduled), Ready=False; labels {'m': 'x'})"


class FakeKube:
    """Just enough of llmd_conformance.kube.Kube: objects served from lists of successive states."""

    pool_api = V1

    def __init__(self, pools=None, routes=None, gateways=None):
        self.states = {"pool": list(pools or []), "httproutes": list(routes or []), "gateways": list(gateways or [])}

    def _next(self, kind):
        states = self.states[kind]
        state = states.pop(0) if len(states) > 1 else states[0]
        if state is None:
            raise client.ApiException(status=404)
        return state

    def get_pool(self, namespace, name):
        return self._next("pool")

    def list_pools(self, namespace):
        return [{"metadata": {"name": "gaie-other"}}]

    def get_gateway_object(self, namespace, plural, name):
        return self._next(plural)

    def list_gateway_objects(self, namespace, plural):
        return []


def status(conditions, key="parents", parent=GATEWAY):
    return {"status": {key: [{"parentRef": {"name": parent}, "conditions": conditions}]}}


def test_pool_condition_is_waited_for():
    """The helper polls until the Gateway's entry has the condition, then returns the pool."""
    accepted = status([{"type": "Accepted", "status": "True"}])
    kube = FakeKube(pools=[None, status([{"type": "Accepted", "status": "Unknown"}]), accepted])
    assert inferencepool_must_have_condition(kube, NS, "gaie-gemma", GATEWAY, "Accepted", timeout=5,
                                             interval=0.01) is accepted


def test_pool_condition_timeout_reports_the_last_state():
    """On timeout the message shows the expected condition and every parent entry seen last."""
    kube = FakeKube(pools=[status([{"type": "Accepted", "status": "False", "reason": "NotSupportedByParent"}])])
    with pytest.raises(AssertionError) as excinfo:
        inferencepool_must_have_condition(kube, NS, "gaie-gemma", GATEWAY, "Accepted", timeout=0.05, interval=0.01)
    message = str(excinfo.value)
    assert message.startswith(
        f"InferencePool (inference.networking.k8s.io/v1) {NS}/gaie-gemma: expected Accepted=True for parent "
        f"Gateway {GATEWAY}, found Accepted=False reason=NotSupportedByParent; status parents:\n"
        f"  Gateway/{GATEWAY}: Accepted=False reason=NotSupportedByParent")
    assert "still failing after" in message


def test_missing_parent_entry_lists_the_parents_found():
    """A pool accepted by another parent (or the v1alpha2 placeholder) is not accepted by ours."""
    kube = FakeKube(pools=[{"status": {"parents": [{"parentRef": {"kind": "Status", "name": "default"},
                                                    "conditions": [{"type": "Accepted", "status": "Unknown"}]}]}}])
    with pytest.raises(AssertionError, match=r"no status entry for parent Gateway infra-gw .*\n  Status/default: "
                                             r"Accepted=Unknown"):
        inferencepool_must_have_condition(kube, NS, "gaie-gemma", GATEWAY, "Accepted", timeout=0, interval=0.01)


def test_missing_object_lists_what_exists():
    """A pool that does not exist is reported with the pools that do."""
    kube = FakeKube(pools=[None])
    with pytest.raises(AssertionError, match=r"InferencePool \(.*\) llm-d/gaie-x not found \(InferencePools in "
                                             r"llm-d: gaie-other\)"):
        inferencepool_must_have_condition(kube, NS, "gaie-x", GATEWAY, "Accepted", timeout=0)


def test_route_condition_with_reason():
    """Route conditions can require a reason, e.g. ResolvedRefs=False reason BackendNotFound."""
    kube = FakeKube(routes=[status([{"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound"}])])
    httproute_must_have_condition(kube, NS, "r", GATEWAY, "ResolvedRefs", "False", "BackendNotFound", timeout=0)
    with pytest.raises(AssertionError, match="expected ResolvedRefs=True for parent Gateway infra-gw, found "
                                             "ResolvedRefs=False reason=BackendNotFound"):
        httproute_must_have_condition(kube, NS, "r", GATEWAY, "ResolvedRefs", "True", timeout=0)


def test_gateway_address():
    """The first status address is returned; none is an assertion naming the conditions."""
    kube = FakeKube(gateways=[{"status": {"addresses": [{"type": "IPAddress", "value": "127.77.0.1"}]}}])
    assert gateway_must_have_address(kube, NS, GATEWAY, timeout=0) == "127.77.0.1"
    kube = FakeKube(gateways=[{"status": {"conditions": [{"type": "Programmed", "status": "False"}]}}])
    with pytest.raises(AssertionError, match="has no address in status.addresses; conditions: Programmed=False"):
        gateway_must_have_address(kube, NS, GATEWAY, timeout=0)
    assert url_for("127.77.0.1", 80) == "http://127.77.0.1:80" and url_for("fd00::1", 80) == "http://[fd00::1]:80"
