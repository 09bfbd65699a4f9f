"""Check 2: InferencePool selection. Each pool selects exactly the pods of its models, on the
topology's ports, names a ready endpoint picker, and is accepted by the Gateway (its status
conditions as the gateway profile expects them, llmd_conformance/profiles.py).

A model's pods here are the pods carrying its podLabels (which alone identify the model), so a pod
that lost a selector label shows up as "missing" with its labels instead of vanishing."""
from __future__ import annotations

import re

import pytest
from kubernetes.client import ApiException

from llmd_conformance.fixtures.gateway_profile_plugin import judged_status
from llmd_conformance.components import implementation_problem
from llmd_conformance.kube import (
    inferencepool_must_have_condition,
    label_selector,
    pods_matching,
    service_must_have_ready_endpoints,
    yaml_excerpt,
)

pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]


def _deployed_pool(kube, topology, pool) -> dict:
    try:
        return kube.get_pool(topology.namespace, pool.name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    present = [p["metadata"]["name"] for p in kube.list_pools(topology.namespace)]
    pytest.fail(f"InferencePool {topology.namespace}/{pool.name} ({kube.pool_api.api_version}) not found; "
                f"InferencePools in {topology.namespace}: {', '.join(present) or 'none'}", pytrace=False)


def _model_pods_of_pool(kube, topology, pool) -> dict[str, object]:
    pods = {}
    for model in topology.models_of_pool(pool.name):
        for pod in pods_matching(kube.core, topology.namespace, model.pod_labels):
            pods[pod.metadata.name] = pod
    return pods


def _normalized(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def test_pool_selector_matches_topology(kube, topology, topology_pool):
    """The InferencePool's selector is the topology's selector."""
    deployed = _deployed_pool(kube, topology, topology_pool)
    found, expected = kube.pool_api.selector(deployed), topology_pool.selector
    assert found == expected, (
        f"InferencePool {topology.namespace}/{topology_pool.name}: selector {found} differs from the topology's "
        f"{expected}\n{yaml_excerpt(deployed, ['spec.selector'])}")


def test_pool_selects_exactly_its_model_pods(kube, topology, topology_pool):
    """The deployed selector selects exactly the pods of the models the topology assigns to the pool."""
    deployed = _deployed_pool(kube, topology, topology_pool)
    selector = kube.pool_api.selector(deployed)
    assert selector, f"InferencePool {topology.namespace}/{topology_pool.name} has an empty selector (selects every pod)"
    models = [m.id for m in topology.models_of_pool(topology_pool.name)]
    expected = _model_pods_of_pool(kube, topology, topology_pool)
    assert len(expected) > 0, f"no pods of the models of pool {topology_pool.name} ({', '.join(models)}) exist to be selected"
    selected = {p.metadata.name: p for p in pods_matching(kube.core, topology.namespace, selector)}
    extra, missing = sorted(selected.keys() - expected.keys()), sorted(expected.keys() - selected.keys())
    lines = [f"  extra (selected, not a pod of {', '.join(models)}): {n} labels {selected[n].metadata.labels}"
             for n in extra[:5]]
    lines += [f"  missing (a pod of {', '.join(models)}, not selected): {n} labels {expected[n].metadata.labels}"
              for n in missing[:5]]
    assert not lines, (f"InferencePool {topology.namespace}/{topology_pool.name} selector {label_selector(selector)} "
                       f"selects {len(selected)} pod(s), expected exactly the {len(expected)} pod(s) of its models:\n"
                       + "\n".join(lines))


def test_pool_selector_keys_are_on_the_model_pods(kube, topology, topology_pool):
    """Every selector key of the deployed pool is a label of its models' pods (e.g. inferenceServing vs inference-serving)."""
    deployed = _deployed_pool(kube, topology, topology_pool)
    selector = kube.pool_api.selector(deployed)
    pods = _model_pods_of_pool(kube, topology, topology_pool)
    assert len(pods) > 0, f"no pods of the models of pool {topology_pool.name} exist"
    problems = []
    for key in selector:
        lacking = [p for p in pods.values() if key not in (p.metadata.labels or {})]
        if not lacking:
            continue
        variants = sorted({k for p in lacking for k in (p.metadata.labels or {}) if _normalized(k) == _normalized(key)})
        hint = f"; they carry {', '.join(variants)} instead" if variants else ""
        problems.append(f"  selector key {key} is missing on {len(lacking)} of {len(pods)} pod(s) "
                        f"({', '.join(p.metadata.name for p in lacking[:5])}){hint}")
    assert not problems, (f"InferencePool {topology.namespace}/{topology_pool.name}: selector keys the model pods "
                          f"do not carry:\n" + "\n".join(problems))


def test_pool_target_ports_match_topology(kube, topology, topology_pool):
    """The pool's target ports (v1 targetPorts, v1alpha2 targetPortNumber) are the topology's."""
    deployed = _deployed_pool(kube, topology, topology_pool)
    found, expected = sorted(kube.pool_api.target_ports(deployed)), sorted(topology_pool.target_ports)
    assert found == expected, (
        f"InferencePool {topology.namespace}/{topology_pool.name} ({kube.pool_api.api_version}): target ports "
        f"{found}, expected {expected}\n"
        f"{yaml_excerpt(deployed, ['spec.targetPorts' if kube.pool_api.is_v1 else 'spec.targetPortNumber'])}")


def test_pool_endpoint_picker_ref_matches_topology(kube, topology, topology_pool):
    """The pool names the topology's endpoint picker Service and port."""
    deployed = _deployed_pool(kube, topology, topology_pool)
    found = kube.pool_api.endpoint_picker(deployed)
    expected = (topology_pool.epp_service, topology_pool.epp_port)
    field = "spec.endpointPickerRef" if kube.pool_api.is_v1 else "spec.extensionRef"
    assert found == expected, (f"InferencePool {topology.namespace}/{topology_pool.name}: endpoint picker "
                               f"{found or 'none'}, expected Service {expected[0]} port {expected[1]}\n"
                               f"{yaml_excerpt(deployed, [field])}")


def test_pool_endpoint_picker_service_has_ready_endpoints(kube, topology, topology_pool, condition_timeout):
    """The EPP Service exists, exposes the EPP port, and its EndpointSlices hold a ready endpoint for it."""
    service_must_have_ready_endpoints(kube, topology.namespace, topology_pool.epp_service, topology_pool.epp_port,
                                      "EPP", timeout=condition_timeout)


def test_pool_is_accepted_by_the_gateway(kube, topology, topology_pool, gateway_profile, condition_timeout):
    """The pool's status entry for the Gateway has Accepted as the gateway profile expects (True)."""
    inferencepool_must_have_condition(kube, topology.namespace, topology_pool.name, topology.gateway_name, "Accepted",
                                      judged_status(gateway_profile, "InferencePool", "Accepted"),
                                      timeout=condition_timeout)


def test_pool_references_are_resolved(kube, topology, topology_pool, gateway_profile, condition_timeout):
    """The pool's status entry for the Gateway has ResolvedRefs as the profile expects (True; on GKE only not False)."""
    inferencepool_must_have_condition(kube, topology.namespace, topology_pool.name, topology.gateway_name,
                                      "ResolvedRefs", judged_status(gateway_profile, "InferencePool", "ResolvedRefs"),
                                      timeout=condition_timeout)


def test_pool_endpoint_picker_is_the_topology_implementation(kube, topology, topology_pool):
    """The pods behind the EPP Service run the endpoint picker the topology names (epp.implementation: GIE's
    reference EPP or llm-d's scheduler), known by their image."""
    problem = implementation_problem(kube.core, topology.namespace, topology_pool.epp_service, "endpointPicker",
                                     topology_pool.epp_implementation)
    assert problem is None, f"InferencePool {topology.namespace}/{topology_pool.name}: endpoint picker: {problem}"
