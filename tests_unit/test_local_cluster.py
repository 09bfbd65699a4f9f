"""The local cluster is a real control plane: scheduling, CRD validation and the pod proxy behave as on GKE."""
from __future__ import annotations


import pytest
from kubernetes import client

from llmd_conformance.kube import pod_proxy_get
from llmd_conformance.local.cluster import GPU_POOL, NODE_POOL_LABEL, LocalCluster
from llmd_conformance.local.podrunner import PodRunner
from llmd_conformance.waits import wait_for

pytestmark = pytest.mark.local

SIM_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"
NS = "cluster-test"


def _start(logs_dir):
    cluster = LocalCluster(logs_dir=logs_dir, gpu_nodes=2).start()
    runner = PodRunner(cluster, cluster.logs_dir).start()
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespace({"metadata": {"name": NS}})
    wait_for(lambda: _assert_sa(core), timeout=30)
    return cluster, runner, core


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A cluster with two GPU pods, gpu-a and gpu-b, Ready; tests do not depend on each other's order."""
    cluster, runner, core = _start(tmp_path_factory.mktemp("logs"))
    try:
        for name in ("gpu-a", "gpu-b"):
            core.create_namespaced_pod(NS, _gpu_pod(name))
        for name in ("gpu-a", "gpu-b"):
            wait_for(lambda n=name: _pod_ready(core, n), timeout=60)
        yield cluster, runner
    finally:
        runner.stop()
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(stack):
    return stack[0]


@pytest.fixture(scope="module")
def core(cluster):
    return client.CoreV1Api(cluster.api_client())


def _assert_sa(core):
    try:
        core.read_namespaced_service_account("default", NS)
    except client.ApiException as exc:
        raise AssertionError(f"ServiceAccount default/{NS} not there yet: {exc.status}") from None


def _gpu_pod(name: str, model: str = "google/gemma-2b-it") -> dict:
    return {
        "metadata": {"name": name, "labels": {"app": "gpu-test"}},
        "spec": {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "vllm", "image": SIM_IMAGE,
                "args": ["--model", model, "--port", "8000"],
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "readinessProbe": {"httpGet": {"path": "/v1/models", "port": 8000}, "periodSeconds": 1},
            }],
        },
    }


def _pod_ready(core, name):
    pod = core.read_namespaced_pod(name, NS)
    ready = [c.status for c in pod.status.conditions or [] if c.type == "Ready"]
    assert ready == ["True"], f"pod {name}: phase {pod.status.phase}, Ready {ready}, node {pod.spec.node_name}"
    return pod


def test_gpu_pods_land_on_distinct_t4_nodes(core):
    """Two pods each requesting nvidia.com/gpu: 1 are scheduled on two different T4 nodes and become Ready."""
    pods = [_pod_ready(core, n) for n in ("gpu-a", "gpu-b")]
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2, f"both GPU pods on {nodes}"
    for node in nodes:
        labels = core.read_node(node).metadata.labels
        assert labels[NODE_POOL_LABEL] == GPU_POOL, f"{node} is not in the T4 pool: {labels}"


def test_third_gpu_pod_pending_with_insufficient_gpu(core):
    """With both T4 nodes taken, a third GPU pod stays Pending with an 'Insufficient nvidia.com/gpu' event."""
    core.create_namespaced_pod(NS, _gpu_pod("gpu-c"))

    def pending_with_event():
        pod = core.read_namespaced_pod("gpu-c", NS)
        assert pod.status.phase == "Pending" and not pod.spec.node_name, f"gpu-c: {pod.status.phase} on {pod.spec.node_name}"
        events = core.list_namespaced_event(NS, field_selector="involvedObject.name=gpu-c").items
        messages = [e.message for e in events if e.reason == "FailedScheduling"]
        assert any("Insufficient nvidia.com/gpu" in m for m in messages), f"FailedScheduling events: {messages}"

    wait_for(pending_with_event, timeout=30)
    core.delete_namespaced_pod("gpu-c", NS)


def test_pod_process_answers_through_pod_proxy(cluster, core):
    """A pod's process answers HTTP on its pod IP, reached through the apiserver pod proxy."""
    status, models = pod_proxy_get(core.api_client, NS, "gpu-a", 8000, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["google/gemma-2b-it"], models


def _pool(name: str, **spec_overrides) -> dict:
    spec = {"selector": {"matchLabels": {"app": "gpu-test"}}, "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "epp", "port": {"number": 9002}}}
    spec.update(spec_overrides)
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": name}, "spec": spec}


def test_inferencepool_validated_by_real_crd(cluster):
    """A valid InferencePool is accepted by the GIE v1 CRD; one with targetPorts out of range is rejected."""
    custom = client.CustomObjectsApi(cluster.api_client())
    args = ("inference.networking.k8s.io", "v1", NS, "inferencepools")
    custom.create_namespaced_custom_object(*args, _pool("good"))
    with pytest.raises(client.ApiException) as rejected:
        custom.create_namespaced_custom_object(*args, _pool("bad", targetPorts=[{"number": 70000}]))
    assert rejected.value.status == 422 and "targetPorts" in rejected.value.body, rejected.value.body


def test_v1alpha2_inferencepool_served(cluster):
    """The v1alpha2 InferencePool CRD (flat selector, targetPortNumber) is served for version-skew tests."""
    custom = client.CustomObjectsApi(cluster.api_client())
    pool = {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
            "metadata": {"name": "old"},
            "spec": {"selector": {"app": "gpu-test"}, "targetPortNumber": 8000, "extensionRef": {"name": "epp"}}}
    created = custom.create_namespaced_custom_object("inference.networking.x-k8s.io", "v1alpha2", NS, "inferencepools", pool)
    assert created["spec"]["targetPortNumber"] == 8000


def test_resize_gpu_pool(cluster, core):
    """Resizing the T4 pool adds and removes GPU nodes, draining the removed ones."""
    cluster.resize_gpu_pool(3)
    assert len(cluster.gpu_pool_nodes()) == 3
    cluster.resize_gpu_pool(2)
    assert cluster.gpu_pool_nodes() == [f"gke-{GPU_POOL}-1", f"gke-{GPU_POOL}-2"]
