"""A pattern2 deployment as the Kubernetes API shows it (plain JSON objects), and a fake of the
client calls that read it, for the tests of llmd_conformance/health.py and diagnostics.py.

`FakeCluster` answers the CoreV1Api / DiscoveryV1Api list calls with real client models (as the
kubernetes client returns them), so the code under test reads them exactly as it reads a cluster.
"""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from llmd_conformance.kube import POOL_APIS
from llmd_conformance.topology import Topology

NS = "llm-d"
EPP_LABEL = "inferencepool"
BBR_LABELS = {"app": "body-based-router"}


def pod(name: str, labels: dict, ip: str, *, ready: bool = True, restarts: int = 0, annotations: dict | None = None,
        containers: tuple[str, ...] = ("main",), env: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels,
                     "annotations": annotations or {}, "managedFields": [{"manager": "kubectl"}]},
        "spec": {"containers": [{"name": c, "image": "img", "env": [{"name": k, "value": v}
                                                                     for k, v in (env or {}).items()]}
                                for c in containers]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": c, "ready": ready, "restartCount": restarts, "image": "img",
                                          "imageID": "img", "state": {"running": {}}} for c in containers]},
    }


def service(name: str, selector: dict, port: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
            "spec": {"selector": selector, "ports": [{"name": "grpc", "port": port}]}}


def endpoint_slice(service_name: str, endpoints: dict[str, bool]) -> dict:
    """endpoints: pod IP -> ready."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service_name}-abcde", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "ports": [{"name": "grpc", "port": 9002}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints.items()]}


def deployment(topology: Topology) -> dict:
    state = {"pods": [], "services": [], "slices": [], "pools": []}
    ip = iter(f"10.244.1.{n}" for n in range(10, 250))
    for model in topology.models:
        for i in range(model.replicas):
            state["pods"].append(pod(f"{model.release}-decode-{i}", topology.model_selector(model.id), next(ip),
                                     containers=("vllm",), env={"HF_TOKEN": "hf_" + "Q" * 30}))
    for pool in topology.pools:
        state["pools"].append({"apiVersion": POOL_APIS[0].api_version, "kind": "InferencePool",
                               "metadata": {"name": pool.name, "namespace": NS},
                               "spec": {"selector": {"matchLabels": pool.selector}}})
        address = next(ip)
        state["pods"].append(pod(f"{pool.epp_service}-0", {EPP_LABEL: pool.epp_service}, address, containers=("epp",)))
        state["services"].append(service(pool.epp_service, {EPP_LABEL: pool.epp_service}, pool.epp_port))
        state["slices"].append(endpoint_slice(pool.epp_service, {address: True}))
    if topology.bbr_service:
        address = next(ip)
        state["pods"].append(pod(f"{topology.bbr_service}-0", BBR_LABELS, address, containers=("bbr",)))
        state["services"].append(service(topology.bbr_service, BBR_LABELS, topology.bbr_port or 9004))
        state["slices"].append(endpoint_slice(topology.bbr_service, {address: True}))
    return state


def find(state: dict, name: str) -> dict:
    return next(o for kind in state.values() for o in kind if o["metadata"]["name"].startswith(name))


def restart(state: dict, pod_name: str, *, annotation: bool) -> dict:
    """A copy of the state where one pod restarted once: counted as the local target's pod runner
    does (annotation) or as a kubelet does (restartCount)."""
    changed = copy.deepcopy(state)
    target = find(changed, pod_name)
    if annotation:
        annotations = target["metadata"]["annotations"]
        annotations["llmd.local/restarts"] = str(int(annotations.get("llmd.local/restarts", 0)) + 1)
    else:
        for status in target["status"]["containerStatuses"]:
            status["restartCount"] += 1
    return changed


def model(data: dict, kind: str):
    return client.ApiClient().deserialize(json.dumps(data), kind, None)


def _selected(obj: dict, label_selector: str) -> bool:
    wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
    labels = obj["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


class FakeCluster:
    """`core`, `discovery` and `custom` list calls and `get_pool` over a sequence of states: each read of the Services (the
    start of one look at the cluster) moves to the next state, the last one staying."""

    def __init__(self, *states: dict):
        self.states = list(states)
        self.looks = 0
        self.core = SimpleNamespace(list_namespaced_pod=self.list_pods, list_namespaced_service=self.list_services)
        self.discovery = SimpleNamespace(list_namespaced_endpoint_slice=self.list_slices)
        self.custom = SimpleNamespace(list_namespaced_custom_object=self.list_custom)
        self.pool_api = POOL_APIS[0]

    @property
    def state(self) -> dict:
        return self.states[min(max(self.looks - 1, 0), len(self.states) - 1)]

    def list_services(self, namespace: str):
        self.looks += 1
        return model({"items": self.state["services"]}, "V1ServiceList")

    def list_pods(self, namespace: str, label_selector: str = ""):
        return model({"items": [p for p in self.state["pods"] if _selected(p, label_selector)]}, "V1PodList")

    def list_slices(self, namespace: str):
        return model({"items": self.state["slices"]}, "V1EndpointSliceList")

    def get_pool(self, namespace: str, name: str) -> dict:
        for pool in self.state["pools"]:
            if pool["metadata"]["name"] == name:
                return pool
        raise ApiException(status=404)

    def list_custom(self, group, version, namespace, plural):
        raise ApiException(status=404)  # no custom APIs (e.g. InferenceModelRewrite) installed


TOKEN = "hf_" + "Z" * 34  # a token-shaped string in a log: the bundle must mask it
LOG_TAIL = "container=%s&previous=%s&tailLines=5000"


def api_routes(topology: Topology, state: dict) -> dict[str, tuple[int, object]]:
    """GET path -> (status, body) of the API server holding `state` and the topology's Gateway,
    HTTPRoute and InferencePools, for tests_unit.conftest.FakeApiServer; every container has a
    log line, and a restarted one its previous container's."""
    ns = f"/namespaces/{topology.namespace}"
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": topology.gateway_name, "namespace": NS},
               "spec": {"gatewayClassName": "llmd-local", "listeners": [{"name": "http", "port": 80}]},
               "status": {"addresses": [{"type": "IPAddress", "value": "127.77.0.4"}],
                          "conditions": [{"type": "Programmed", "status": "True", "reason": "Programmed"}]}}
    routes = {
        "/apis/inference.networking.k8s.io/v1": (200, {"kind": "APIResourceList",
                                                       "resources": [{"name": "inferencepools"}]}),
        f"/apis/gateway.networking.k8s.io/v1{ns}/gateways": (200, {"items": [gateway]}),
        f"/apis/gateway.networking.k8s.io/v1{ns}/httproutes": (200, {"items": [
            {"kind": "HTTPRoute", "metadata": {"name": r.name, "namespace": NS}} for r in topology.routes]}),
        f"/apis/inference.networking.k8s.io/v1{ns}/inferencepools": (200, {"items": [
            {"kind": "InferencePool", "metadata": {"name": p.name, "namespace": NS}} for p in topology.pools]}),
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/llmd-local": (
            200, {"kind": "GatewayClass", "spec": {"controllerName": "llm-d.ai/local-gateway"}}),
        f"/apis/apps/v1{ns}/deployments": (200, {"items": [
            {"metadata": {"name": m.release, "namespace": NS},
             "spec": {"selector": {"matchLabels": m.pod_labels}, "template": {"spec": {"containers": [
                 {"name": "vllm", "image": "img", "env": [{"name": "HF_TOKEN", "value": "plain-secret-value"}]}]}}}}
            for m in topology.models]}),
        f"/api/v1{ns}/pods": (200, {"items": state["pods"]}),
        f"/api/v1{ns}/services": (200, {"items": state["services"]}),
        f"/apis/discovery.k8s.io/v1{ns}/endpointslices": (200, {"items": state["slices"]}),
        f"/api/v1{ns}/events": (200, {"items": [
            {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "gaie-phi-epp-0"},
             "reason": "BackOff", "type": "Warning", "count": 2, "message": "Back-off restarting failed container",
             "lastTimestamp": "2026-11-27T10:00:00Z"}]}),
    }
    for p in state["pods"]:
        name = p["metadata"]["name"]
        for container in p["status"]["containerStatuses"]:
            log = f"/api/v1{ns}/pods/{name}/log?" + LOG_TAIL
            routes[log % (container["name"], "false")] = (200, f"{name} {container['name']} up; token {TOKEN}\n".encode())
            if container["restartCount"]:
                routes[log % (container["name"], "true")] = (200, f"{name} exited: signal killed\n".encode())
    return routes


def write_kubeconfig(path, server: str):
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake-context",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "fake-context", "context": {"cluster": "fake", "user": "fake"}}]}))
    return path


def _accepted(*types: str, generation: int = 1) -> list[dict]:
    return [{"type": t, "status": "True", "reason": t, "observedGeneration": generation} for t in types]


def serving_routes(topology: Topology, controller: str = "llmd.local/gateway-controller") -> dict[str, tuple[int, object]]:
    """GET path -> (status, body) of an API server whose Gateway, HTTPRoutes and InferencePools of
    `topology` are accepted and programmed (the `reference` profile's conditions), for the smoke
    checks against a fake API server and a FakeGateway."""
    ns = topology.namespace
    gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": topology.gateway_name,
                   "namespace": ns}
    gateways = f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}"
    pools = f"/apis/inference.networking.k8s.io/v1/namespaces/{ns}/inferencepools"
    routes: dict[str, tuple[int, object]] = {
        "/version": (200, {"major": "1", "minor": "35", "gitVersion": "v1.35.4"}),
        f"/api/v1/namespaces/{ns}": (200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        "/apis/inference.networking.k8s.io/v1": (200, {"kind": "APIResourceList",
                                                       "resources": [{"name": "inferencepools"}]}),
        f"{gateways}/gateways/{topology.gateway_name}": (200, {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": topology.gateway_name, "namespace": ns, "generation": 1},
            "spec": {"gatewayClassName": "fake-class"},
            "status": {"conditions": _accepted("Accepted", "Programmed")}}),
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses/fake-class": (200, {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": "fake-class"},
            "spec": {"controllerName": controller}}),
    }
    for route in topology.routes:
        routes[f"{gateways}/httproutes/{route.name}"] = (200, {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": route.name, "namespace": ns, "generation": 1},
            "status": {"parents": [{"parentRef": gateway_ref, "controllerName": controller,
                                    "conditions": _accepted("Accepted", "ResolvedRefs")}]}})
    for pool in topology.pools:
        routes[f"{pools}/{pool.name}"] = (200, {
            "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": pool.name, "namespace": ns, "generation": 1},
            "status": {"parents": [{"parentRef": gateway_ref, "conditions": _accepted("Accepted", "ResolvedRefs")}]}})
    return routes
