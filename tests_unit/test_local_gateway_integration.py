"""The local gateway controller against a real local cluster, real EPPs and a real BBR.

Two model servers (llm-d-inference-sim) on the two T4 nodes, one InferencePool + EPP per model
installed with GIE's own inferencepool chart (pool a FailClose, pool b FailOpen), BBR from GIE's
body-based-routing chart, and a Gateway of class llmd-local whose HTTPRoute matches the header BBR
sets. Checks the status the controller writes and the traffic Envoy carries. Traffic goes only
to 127.77.<instance>.0/24 (the gateway) on this machine.
"""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from llmd_conformance.build import binary
from llmd_conformance.charts import prepare_charts
from llmd_conformance.kube import pod_ready
from llmd_conformance.local.cluster import LocalCluster
from llmd_conformance.local.gateway import ADDRESS_PREFIX, CONTROLLER_NAME, GATEWAY_CLASS_NAME, GatewayController
from llmd_conformance.local.podrunner import PodRunner
from llmd_conformance.waits import wait_for

pytestmark = pytest.mark.local

NS = "gateway-it"
GW = "it-gateway"
ROUTE = "models"
SIM_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"
GIE_GROUP = "inference.networking.k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MODEL_HEADER = "X-Gateway-Model-Name"  # set by BBR's default body-field-to-header plugin
MODELS = {"model-a": "gaie-a", "model-b": "gaie-b"}
STATUS_TIMEOUT = 30
READY_TIMEOUT = 120
VALUES = Path(__file__).resolve().parents[1] / "manifests" / "values"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def sim_pod(model: str) -> dict:
    return {
        "metadata": {"name": f"sim-{model}", "labels": {"app": "sim", "model": model}},
        "spec": {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "vllm", "image": SIM_IMAGE,
                "args": ["--model", model, "--port", "8000"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "readinessProbe": {"httpGet": {"path": "/v1/models", "port": 8000}, "periodSeconds": 1},
            }],
        },
    }


def helm(kubeconfig, *args: str) -> None:
    result = subprocess.run([str(binary("helm")), "--kubeconfig", str(kubeconfig), "-n", NS, *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"helm {' '.join(args[:3])} failed:\n{result.stderr[-2000:]}"


def header_rule(model: str, pool: str, group: str = GIE_GROUP) -> dict:
    return {"matches": [{"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": model}]}],
            "backendRefs": [{"group": group, "kind": "InferencePool", "name": pool}]}


def http_route(name: str, rules: list[dict]) -> dict:
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": GW}], "rules": rules}}


def gateway(name: str, port: int, bbr: bool = True) -> dict:
    annotations = {"llmd.local/body-based-routing": "body-based-router:9004"} if bbr else {}
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "Gateway",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"gatewayClassName": GATEWAY_CLASS_NAME,
                     "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    logs = tmp_path_factory.mktemp("gateway-it")
    cluster = LocalCluster(logs_dir=logs, gpu_nodes=2).start()
    runner = controller = None
    try:
        runner = PodRunner(cluster, logs).start()
        controller = GatewayController(cluster.api_client(), logs / "run")
        controller.start()
        yield cluster, controller
    finally:
        if controller is not None:
            controller.stop()
        if runner is not None:
            runner.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def api(stack):
    return stack[0].api_client()


@pytest.fixture(scope="module")
def custom(api):
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def port():
    return free_port(f"{ADDRESS_PREFIX}1")


@pytest.fixture(scope="module")
def deployed(stack, api, custom, port):
    """Model pods, both pools with their EPPs, BBR, the Gateway and the HTTPRoute; waits for pods Ready."""
    cluster, _ = stack
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NS}})
    wait_for(lambda: _has_default_service_account(core), timeout=30)
    for model in MODELS:
        core.create_namespaced_pod(NS, sim_pod(model))
    # The charts with the local target's values (resources that fit a node, provider none), as the suite installs them.
    charts = prepare_charts()
    for model, pool in MODELS.items():
        helm(cluster.kubeconfig, "install", pool, str(charts / "inferencepool"),
             "-f", str(VALUES / "gaie.yaml"), "-f", str(VALUES / "local" / "gaie.yaml"),
             "--set", f"inferencePool.modelServers.matchLabels.model={model}",
             "--set", f"inferenceExtension.failureMode={'FailClose' if pool == 'gaie-a' else 'FailOpen'}")
    helm(cluster.kubeconfig, "install", "bbr", str(charts / "body-based-routing"), "-f", str(VALUES / "local" / "bbr.yaml"))
    custom.create_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "gateways", gateway(GW, port))
    custom.create_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes",
                                           http_route(ROUTE, [header_rule(m, p) for m, p in MODELS.items()]))

    def all_ready():
        pods = core.list_namespaced_pod(NS).items
        not_ready = [p.metadata.name for p in pods if not pod_ready(p)]
        assert len(pods) >= 5 and not not_ready, f"pods not Ready: {not_ready} of {[p.metadata.name for p in pods]}"
    wait_for(all_ready, timeout=READY_TIMEOUT, interval=1)
    return core


def _has_default_service_account(core):
    names = [sa.metadata.name for sa in core.list_namespaced_service_account(NS).items]
    assert "default" in names, f"ServiceAccount {NS}/default not created yet (found {names})"


@pytest.fixture(scope="module")
def url(stack, deployed, port):
    address = wait_for(lambda: _gateway_address(stack[1]), timeout=STATUS_TIMEOUT)
    return f"http://{address}:{port}"


def _gateway_address(controller):
    address = controller.gateway_address(NS, GW)
    assert address, f"the controller has not assigned an address to Gateway {NS}/{GW} yet"
    return address


@pytest.fixture
def http():
    with httpx.Client(trust_env=False, timeout=30) as c:
        yield c


def conditions_of(entries: list[dict], what: str) -> dict[str, dict]:
    ours = [e for e in entries if e.get("controllerName", CONTROLLER_NAME) == CONTROLLER_NAME
            and (e.get("parentRef") or {}).get("name") in (GW, None)]
    assert len(ours) == 1, f"{what}: expected one status entry for Gateway {GW}, found {entries}"
    return {c["type"]: c for c in ours[0]["conditions"]}


def must_have(conds: dict[str, dict], what: str, **expected: tuple[str, str]) -> None:
    found = {t: (conds.get(t, {}).get("status"), conds.get(t, {}).get("reason")) for t in expected}
    assert found == expected, f"{what}: expected conditions {expected}, found {found} ({conds})"


def complete(http, url: str, model: str) -> httpx.Response:
    return http.post(f"{url}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 3})


# ------------------------------------------------------------- status

def test_gateway_class_is_created_and_accepted(custom, stack):
    """The controller creates GatewayClass llmd-local for itself and marks it Accepted."""
    def accepted():
        gc = custom.get_cluster_custom_object(GATEWAY_GROUP, "v1", "gatewayclasses", GATEWAY_CLASS_NAME)
        assert gc["spec"]["controllerName"] == CONTROLLER_NAME
        conds = {c["type"]: c for c in (gc.get("status") or {}).get("conditions") or []}
        must_have(conds, f"GatewayClass {GATEWAY_CLASS_NAME}", Accepted=("True", "Accepted"))
    wait_for(accepted, timeout=STATUS_TIMEOUT)


def test_gateway_is_programmed_with_its_loopback_address(custom, deployed, url, port):
    """Gateway Accepted and Programmed; status.addresses holds the 127.77.<instance>.<n> Envoy listens on."""
    def programmed():
        gw = custom.get_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "gateways", GW)
        status = gw.get("status") or {}
        must_have({c["type"]: c for c in status.get("conditions") or []}, f"Gateway {GW}",
                  Accepted=("True", "Accepted"), Programmed=("True", "Programmed"))
        address = url.split("//")[1].rsplit(":", 1)[0]
        assert address.startswith(ADDRESS_PREFIX) and status["addresses"] == [{"type": "IPAddress", "value": address}], status
        [listener] = status["listeners"]
        assert listener["attachedRoutes"] == 1, listener
    wait_for(programmed, timeout=STATUS_TIMEOUT)


def test_route_and_pools_are_accepted_with_resolved_refs(custom, deployed, url):
    """HTTPRoute parent and both InferencePools' parents: Accepted=True, ResolvedRefs=True."""
    def resolved():
        route = custom.get_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", ROUTE)
        must_have(conditions_of((route.get("status") or {}).get("parents") or [], f"HTTPRoute {ROUTE}"),
                  f"HTTPRoute {ROUTE}", Accepted=("True", "Accepted"), ResolvedRefs=("True", "ResolvedRefs"))
        for pool in MODELS.values():
            obj = custom.get_namespaced_custom_object(GIE_GROUP, "v1", NS, "inferencepools", pool)
            must_have(conditions_of((obj.get("status") or {}).get("parents") or [], f"InferencePool {pool}"),
                      f"InferencePool {pool}", Accepted=("True", "Accepted"), ResolvedRefs=("True", "ResolvedRefs"))
    wait_for(resolved, timeout=STATUS_TIMEOUT)


# ------------------------------------------------------------- traffic

def test_each_model_is_served_by_its_own_pool(http, url):
    """BBR + header rules + one EPP per pool: every request lands on the pod serving its model."""
    def served():
        wrong = []
        for i in range(20):
            model = list(MODELS)[i % 2]
            r = complete(http, url, model)
            if r.status_code != 200 or r.json().get("model") != model or r.headers.get("x-inference-pod") != f"sim-{model}":
                wrong.append((model, r.status_code, r.headers.get("x-inference-pod"), r.text[:120]))
        assert not wrong, f"{len(wrong)}/20 requests not served by their model's pod, first: {wrong[:3]}"
    wait_for(served, timeout=STATUS_TIMEOUT, interval=2)


def test_route_to_missing_pool_is_backend_not_found_and_answers_500(custom, http, url):
    """GIE HTTPRouteInvalidInferencePoolRef: Accepted=True, ResolvedRefs=False BackendNotFound, and a 5xx."""
    custom.create_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes",
                                           http_route("broken", [header_rule("model-x", "no-such-pool")]))
    try:
        def reported():
            route = custom.get_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", "broken")
            must_have(conditions_of((route.get("status") or {}).get("parents") or [], "HTTPRoute broken"),
                      "HTTPRoute broken", Accepted=("True", "Accepted"), ResolvedRefs=("False", "BackendNotFound"))
            r = complete(http, url, "model-x")
            assert r.status_code == 500, f"model-x: expected 500 from the gateway, got {r.status_code} {r.text[:200]}"
        wait_for(reported, timeout=STATUS_TIMEOUT)
    finally:
        custom.delete_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", "broken")


def test_route_change_reaches_envoy_within_seconds(custom, http, url):
    """Pointing model-a's rule at pool b shows in traffic within seconds (b's server does not know model-a), and back."""
    def point_model_a_at(pool: str):
        custom.patch_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", ROUTE, {"spec": {"rules": [
            header_rule("model-a", pool), header_rule("model-b", "gaie-b")]}})

    def answered_by_pool_b():
        r = complete(http, url, "model-a")
        assert r.status_code == 404 and "model-a" in r.json()["error"]["message"], \
            f"model-a routed to pool b: expected the model server's 404 for an unknown model, got {r.status_code}: {r.text[:200]}"

    def answered_by_pool_a():
        r = complete(http, url, "model-a")
        assert r.status_code == 200 and r.headers.get("x-inference-pod") == "sim-model-a", \
            f"model-a back on pool a: got {r.status_code} from {r.headers.get('x-inference-pod')}: {r.text[:200]}"

    point_model_a_at("gaie-b")
    try:
        wait_for(answered_by_pool_b, timeout=10, interval=0.5)
    finally:
        point_model_a_at("gaie-a")
    wait_for(answered_by_pool_a, timeout=10, interval=0.5)


def test_epp_down_fails_closed_or_open_as_the_pool_says(api, deployed, http, url):
    """EPP scaled to 0: pool a (FailClose) refuses with a 5xx; pool b (FailOpen) still reaches its pod."""
    apps = client.AppsV1Api(api)

    def scale(n: int):
        for pool in MODELS.values():
            apps.patch_namespaced_deployment_scale(f"{pool}-epp", NS, {"spec": {"replicas": n}},
                                                   _content_type="application/merge-patch+json")

    def epps_gone():
        left = [p.metadata.name for p in deployed.list_namespaced_pod(NS).items if "-epp-" in p.metadata.name]
        assert not left, f"EPP pods still present: {left}"

    scale(0)
    try:
        wait_for(epps_gone, timeout=60)

        def failure_modes():
            a, b = complete(http, url, "model-a"), complete(http, url, "model-b")
            assert a.status_code >= 500, f"FailClose pool with its EPP down answered {a.status_code}: {a.text[:200]}"
            assert b.status_code == 200 and b.headers.get("x-inference-pod") == "sim-model-b", \
                f"FailOpen pool with its EPP down: {b.status_code} from {b.headers.get('x-inference-pod')}: {b.text[:200]}"
        wait_for(failure_modes, timeout=STATUS_TIMEOUT)
    finally:
        scale(1)
    # Leave the deployment as found: both EPPs back and routing again.
    wait_for(lambda: _all_served(http, url), timeout=READY_TIMEOUT, interval=2)


def _all_served(http, url):
    for model in MODELS:
        r = complete(http, url, model)
        assert r.status_code == 200 and r.headers.get("x-inference-pod") == f"sim-{model}", \
            f"{model}: {r.status_code} from {r.headers.get('x-inference-pod')}: {r.text[:120]}"


def test_v1alpha2_pool_gets_a_singular_parent_status(api, custom, deployed, url):
    """A v1alpha2 pool referenced by a route gets status.parent[] (no placeholder left)."""
    custom.create_namespaced_custom_object("inference.networking.x-k8s.io", "v1alpha2", NS, "inferencepools", {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
        "metadata": {"name": "legacy"},
        "spec": {"selector": {"model": "model-a"}, "targetPortNumber": 8000, "extensionRef": {"name": "gaie-a-epp"}}})
    custom.create_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", http_route(
        "legacy", [header_rule("model-legacy", "legacy", group="inference.networking.x-k8s.io")]))
    try:
        def parent():
            pool = custom.get_namespaced_custom_object("inference.networking.x-k8s.io", "v1alpha2", NS, "inferencepools", "legacy")
            entries = (pool.get("status") or {}).get("parent") or []
            assert all(e["parentRef"].get("kind") != "Status" for e in entries), f"placeholder parent still there: {entries}"
            must_have(conditions_of(entries, "InferencePool legacy"), "InferencePool legacy (v1alpha2)",
                      Accepted=("True", "Accepted"), ResolvedRefs=("True", "ResolvedRefs"))
        wait_for(parent, timeout=STATUS_TIMEOUT)
    finally:
        custom.delete_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "httproutes", "legacy")
        custom.delete_namespaced_custom_object("inference.networking.x-k8s.io", "v1alpha2", NS, "inferencepools", "legacy")


def test_port_in_use_makes_the_gateway_not_programmed_until_freed(custom, deployed, url):
    """A Gateway whose port another process holds: Programmed=False naming the holder; Programmed once freed."""
    squatter = socket.socket()
    squatter.bind(("0.0.0.0", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    custom.create_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "gateways", gateway("squatted", taken, bbr=False))
    try:
        def programmed(expected: str):
            gw = custom.get_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "gateways", "squatted")
            conds = {c["type"]: c for c in (gw.get("status") or {}).get("conditions") or []}
            status = conds.get("Programmed", {}).get("status")
            assert status == expected, f"Gateway squatted: Programmed {status}, expected {expected}: {conds.get('Programmed')}"
            return conds["Programmed"]
        refused = wait_for(lambda: programmed("False"), timeout=STATUS_TIMEOUT)
        assert f"pid {os.getpid()}" in refused["message"] and str(taken) in refused["message"], refused
        squatter.close()
        wait_for(lambda: programmed("True"), timeout=STATUS_TIMEOUT)
    finally:
        squatter.close()
        custom.delete_namespaced_custom_object(GATEWAY_GROUP, "v1", NS, "gateways", "squatted")
