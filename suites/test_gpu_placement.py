"""Check 1: GPU node placement. Every model's pods run Ready on GPU nodes of the topology's
accelerator, reserve their GPUs, and (when the topology says so) models do not share a GPU node.

A model's pods here are the pods carrying its podLabels (which alone identify the model), so a pod
that lost its pool's selector label is still placed and counted; the InferencePool checks report
the label."""
from __future__ import annotations

from collections import defaultdict

import pytest

from llmd_conformance.kube import (
    GPU_RESOURCE,
    describe_pod,
    events_for,
    format_events,
    label_selector,
    node_gpus,
    node_ready,
    pod_gpus,
    pod_ready,
    pods_matching,
)
from llmd_conformance.waits import wait_for

pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]

INSUFFICIENT_GPU = f"Insufficient {GPU_RESOURCE}"


def _model_pods(kube, topology, model):
    return pods_matching(kube.core, topology.namespace, model.pod_labels)


def _explain_not_ready(kube, namespace, pod) -> str:
    """The pod's state; for a Pending pod also why the scheduler left it there."""
    line = describe_pod(pod)
    if pod.status is None or pod.status.phase != "Pending":
        return line
    events = events_for(kube.core, namespace, "Pod", pod.metadata.name)
    scheduling = [e for e in events if e.reason == "FailedScheduling"]
    gpu_short = [e for e in scheduling if INSUFFICIENT_GPU in (e.message or "")]
    if gpu_short:
        return f"{line}\n    not enough GPUs: FailedScheduling: {gpu_short[-1].message!r}"
    if scheduling:
        return f"{line}\n    FailedScheduling: {scheduling[-1].message!r}"
    return f"{line}\n    events: {format_events(events, limit=3)}"


def test_gpu_nodes_are_available(kube, topology):
    """At least `gpuNodes` Ready nodes carry the accelerator label and allocatable GPUs."""
    selector = {topology.accelerator_label: topology.accelerator_value}
    nodes = kube.core.list_node(label_selector=label_selector(selector)).items
    usable = sum(1 for n in nodes if node_ready(n) and node_gpus(n) >= 1)
    expected = topology.gpu_nodes
    listing = "\n".join(f"  {n.metadata.name}: Ready={node_ready(n)}, allocatable {GPU_RESOURCE} {node_gpus(n)}"
                        for n in nodes) or "  none"
    assert usable >= expected, (
        f"expected at least {expected} Ready node(s) labelled {label_selector(selector)} with "
        f"allocatable {GPU_RESOURCE}, found {usable}; nodes with the label:\n{listing}")


def test_model_has_expected_replica_count(kube, topology, topology_model, condition_timeout):
    """The model runs exactly `replicas` pods (pods being deleted are not counted)."""
    selector = label_selector(topology_model.pod_labels)
    expected = topology_model.replicas

    def check():
        names = [p.metadata.name for p in _model_pods(kube, topology, topology_model)]
        found = len(names)
        assert found == expected, (f"model {topology_model.id}: expected {expected} pod(s) matching {selector} in "
                                   f"{topology.namespace}, found {found}: {', '.join(names) or 'none'}")
    wait_for(check, condition_timeout)


def test_model_pods_are_running_and_ready(kube, topology, topology_model, condition_timeout):
    """Every pod of the model is Running and Ready; a pod Pending for want of GPUs is reported as such."""
    selector = label_selector(topology_model.pod_labels)

    def check():
        pods = _model_pods(kube, topology, topology_model)
        assert pods, f"model {topology_model.id}: no pod matches {selector} in {topology.namespace}"
        bad = [p for p in pods if not (p.status and p.status.phase == "Running" and pod_ready(p))]
        explained = [f"  {_explain_not_ready(kube, topology.namespace, p)}" for p in bad[:5]]
        assert not explained, (f"model {topology_model.id}: {len(bad)} of {len(pods)} pod(s) not Running and Ready:\n"
                               + "\n".join(explained))
    wait_for(check, condition_timeout)


def test_model_pods_reserve_their_gpus(kube, topology, topology_model):
    """Every pod of the model has `gpusPerPod` nvidia.com/gpu in its limits, so the scheduler reserves them."""
    pods = _model_pods(kube, topology, topology_model)
    assert len(pods) > 0, f"model {topology_model.id}: no pod matches {label_selector(topology_model.pod_labels)}"
    wrong = [f"  pod {p.metadata.name}: limits {GPU_RESOURCE} {pod_gpus(p)}" for p in pods
             if pod_gpus(p) != topology_model.gpus_per_pod]
    assert not wrong, (f"model {topology_model.id}: expected {topology_model.gpus_per_pod} {GPU_RESOURCE} per pod "
                       f"in the container limits:\n" + "\n".join(wrong[:5]))


def test_model_pods_run_on_accelerator_nodes(kube, topology, topology_model):
    """Every pod of the model is on a node with the topology's accelerator label and enough allocatable GPUs."""
    pods = _model_pods(kube, topology, topology_model)
    assert len(pods) > 0, f"model {topology_model.id}: no pod matches {label_selector(topology_model.pod_labels)}"
    expected = f"{topology.accelerator_label}={topology.accelerator_value}"
    problems = []
    for pod in pods:
        if not pod.spec.node_name:
            problems.append(f"  pod {pod.metadata.name}: not scheduled to any node")
            continue
        node = kube.core.read_node(pod.spec.node_name)
        found = (node.metadata.labels or {}).get(topology.accelerator_label)
        if found != topology.accelerator_value:
            problems.append(f"  pod {pod.metadata.name} on node {node.metadata.name}: "
                            f"{topology.accelerator_label}={found or '(absent)'}")
        if node_gpus(node) < topology_model.gpus_per_pod:
            problems.append(f"  pod {pod.metadata.name} on node {node.metadata.name}: allocatable {GPU_RESOURCE} "
                            f"{node_gpus(node)}, the model needs {topology_model.gpus_per_pod} per pod")
    assert not problems, (f"model {topology_model.id}: expected its pods on nodes labelled {expected} with "
                          f"allocatable {GPU_RESOURCE}:\n" + "\n".join(problems[:5]))


def test_models_run_on_distinct_gpu_nodes(kube, topology):
    """Pods of different models never share a GPU node (when the topology expects distinct nodes)."""
    if not topology.distinct_gpu_nodes_per_model:
        pytest.skip(f"topology {topology.name} allows models to share GPU nodes (distinctGpuNodesPerModel: false)")
    by_node: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for model in topology.models:
        for pod in _model_pods(kube, topology, model):
            if pod.spec.node_name:
                by_node[pod.spec.node_name][model.id].append(pod.metadata.name)
    shared = [f"  node {node}: " + "; ".join(f"{model} (pods {', '.join(pods)})" for model, pods in models.items())
              for node, models in sorted(by_node.items()) if len(models) > 1]
    assert not shared, "expected every GPU node to host pods of one model at most; shared nodes:\n" + "\n".join(shared)
