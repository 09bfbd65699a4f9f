"""The local cluster is a real control plane: scheduling, CRD validation and the pod proxy behave as on GKE."""
from __future__ import annotations


import pytest
from kubernetes import client

from llmd_conformance.kube import describe_pod, pod_proxy_get, pod_ready
from llmd_conformance.local.cluster import GPU_POOL, NODE_POOL_LABEL, LocalCluster
from llmd_conformance.local.instance import ETCD_PORTS
from llmd_conformance.local.podrunner import PodRunner
from llmd_conformance.waits import wait_for
from tests_unit.test_local_security import SECRET, assert_credentials_private, assert_etcd_refuses_strangers, environ_of

pytestmark = [pytest.mark.local, pytest.mark.serial]

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
    """A cluster with two GPU pods, gpu-a and gpu-b, Ready; tests do not depend on each other's order.
    HF_TOKEN is set while it runs, as in a user's shell: no child may get it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_TOKEN", SECRET)
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
def runner(stack):
    return stack[1]


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
    assert pod_ready(pod), f"pod {name} not Ready: {describe_pod(pod)}"
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


def test_credentials_are_private(cluster, runner):
    """State and PKI folders 0700; keys, tokens, the admin kubeconfig, and each pod's folder and
    ServiceAccount kubeconfig readable by root only."""
    assert_credentials_private(cluster.state_dir)
    assert runner.pods
    for pod in runner.pods.values():
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (pod.folder, pod.folder / "kubeconfig")}
        assert modes == {pod.folder.name: "0o700", "kubeconfig": "0o600"}, modes


def test_etcd_refuses_strangers_while_the_cluster_works(cluster, core):
    """Only the apiserver's client certificate opens etcd; the apiserver, holding it, serves."""
    assert_etcd_refuses_strangers(cluster.state_dir / "pki", ETCD_PORTS[0])
    assert NS in [n.metadata.name for n in core.list_namespace().items]


def test_no_child_gets_hf_token(cluster, runner):
    """The control plane and every pod process started while HF_TOKEN was set do not have it."""
    pids = {name: p.pid for name, p in cluster._procs.items()}
    pids |= {f"{pod.name}/{c.name}": c.process.pid for pod in runner.pods.values() for c in pod.containers}
    envs = {name: environ_of(pid) for name, pid in pids.items()}
    leaks = [name for name, env in envs.items() if "HF_TOKEN" in env or SECRET in "".join(env.values())]
    assert len(envs) >= 7 and not leaks, (sorted(envs), leaks)


def _cpu_pod(name: str, config_map: str | None = None) -> dict:
    pod = _gpu_pod(name)
    pod["metadata"]["labels"] = {"app": "cpu-test"}
    del pod["spec"]["nodeSelector"], pod["spec"]["containers"][0]["resources"]
    if config_map:
        pod["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": config_map}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "cfg", "mountPath": "/etc/cfg"}]
    return pod


def test_pod_missing_its_configmap_waits_alone(core, runner):
    """A pod whose ConfigMap volume is missing gets a FailedMount Event and stays not Ready; pods created
    after it still start; once the ConfigMap exists, it starts too."""
    core.create_namespaced_pod(NS, _cpu_pod("needs-cm", config_map="late-cm"))
    try:
        def failed_mount():
            events = core.list_namespaced_event(NS, field_selector="involvedObject.name=needs-cm").items
            messages = [e.message for e in events if e.reason == "FailedMount"]
            assert any(f'configmap "{NS}/late-cm" not found' in m for m in messages), [e.message for e in events]

        wait_for(failed_mount, timeout=30)
        core.create_namespaced_pod(NS, _cpu_pod("cpu-ok"))
        wait_for(lambda: _pod_ready(core, "cpu-ok"), timeout=60)
        runner.check()
        with pytest.raises(AssertionError, match="Ready"):
            _pod_ready(core, "needs-cm")
        core.create_namespaced_config_map(NS, {"metadata": {"name": "late-cm"}, "data": {"a": "1"}})
        wait_for(lambda: _pod_ready(core, "needs-cm"), timeout=60)
    finally:
        for name in ("needs-cm", "cpu-ok"):
            core.delete_namespaced_pod(name, NS)
