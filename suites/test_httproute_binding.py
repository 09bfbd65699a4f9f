"""Check 4: HTTPRoute binding. Each route of the topology exists with the topology's rules, points
at InferencePools of the API group the cluster serves, is accepted by the Gateway with its
references resolved, the Gateway is programmed with an address on the topology's port, and the
body-based router that sets the header the rules match is ready and attached to the Gateway.

Which status conditions must be True, and which must only not be False, is the gateway profile's
(llmd_conformance/profiles.py): what the implementation under test really writes."""
from __future__ import annotations

from collections import Counter

import pytest
import yaml
from kubernetes.client import ApiException

from llmd_conformance.fixtures.gateway_profile_plugin import judged_status
from llmd_conformance.components import implementation_problem
from llmd_conformance.kube import (
    POOL_APIS,
    condition_mismatch,
    find_condition,
    format_condition,
    generation_of,
    get_or_none,
    gateway_must_have_condition,
    httproute_must_have_condition,
    service_must_have_ready_endpoints,
    yaml_excerpt,
)
from llmd_conformance.profiles import GCP_ROUTING_EXTENSION, bbr_attachment_problems
from llmd_conformance.waits import wait_for

pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]

DEFAULT_PATH = {"type": "PathPrefix", "value": "/"}


def _deployed_route(kube, topology, route) -> dict:
    try:
        return kube.get_gateway_object(topology.namespace, "httproutes", route.name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    present = [r["metadata"]["name"] for r in kube.list_gateway_objects(topology.namespace, "httproutes")]
    pytest.fail(f"HTTPRoute {topology.namespace}/{route.name} not found; HTTPRoutes in {topology.namespace}: "
                f"{', '.join(present) or 'none'}", pytrace=False)


def _deployed_gateway(kube, topology) -> dict:
    try:
        return kube.get_gateway_object(topology.namespace, "gateways", topology.gateway_name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    pytest.fail(f"Gateway {topology.namespace}/{topology.gateway_name} not found", pytrace=False)


def describe_match(match: dict) -> str:
    """A rule match as text; the API server's default (PathPrefix /, nothing else) reads 'every request'."""
    parts = [f"header {h['name']}{'' if h.get('type', 'Exact') == 'Exact' else ' ' + h['type']}={h['value']}"
             for h in sorted(match.get("headers") or [], key=lambda h: h["name"].lower())]
    path = match.get("path") or DEFAULT_PATH
    if path != DEFAULT_PATH:
        parts.append(f"path {path.get('type', 'PathPrefix')} {path.get('value')}")
    parts += [f"{key} {match[key]}" for key in ("method", "queryParams") if match.get(key)]
    return " and ".join(parts) or "every request"


def describe_rule(rule: dict) -> str:
    matches = rule.get("matches") or [{}]
    # Header names are case-insensitive; normalise them so X-Foo and x-foo compare equal.
    normalised = [{**m, "headers": [{**h, "name": h["name"].lower()} for h in m.get("headers") or []]} for m in matches]
    backends = ", ".join(sorted(f"{b.get('kind', 'Service')} {b.get('name')}" for b in rule.get("backendRefs") or []))
    return f"{' or '.join(sorted({describe_match(m) for m in normalised}))} -> {backends or 'no backend'}"


def expected_rule(topology, rule) -> str:
    match = {"headers": [{"name": topology.bbr_header.lower(), "value": rule.model}]} if rule.model else {}
    return f"{describe_match(match)} -> InferencePool {rule.pool}"


def test_httproute_rules_match_topology(kube, topology, topology_route):
    """The route's rules are the topology's: the BBR header carrying the model (or no match) to the model's pool."""
    deployed = _deployed_route(kube, topology, topology_route)
    found = Counter(describe_rule(r) for r in deployed.get("spec", {}).get("rules") or [])
    expected = Counter(expected_rule(topology, r) for r in topology_route.rules)
    missing, extra = expected - found, found - expected
    assert not missing and not extra, (
        f"HTTPRoute {topology.namespace}/{topology_route.name}: rules differ from the topology\n"
        + "".join(f"  missing: {rule}\n" for rule in missing.elements())
        + "".join(f"  unexpected: {rule}\n" for rule in extra.elements())
        + yaml_excerpt(deployed, ["spec.rules"]))


def test_httproute_backend_refs_are_inferencepools_of_the_served_group(kube, topology, topology_route):
    """Every backendRef is kind InferencePool in the API group the cluster serves InferencePool in."""
    deployed = _deployed_route(kube, topology, topology_route)
    group = kube.pool_api.group
    other_groups = {api.group for api in POOL_APIS} - {group}
    wrong = []
    for i, rule in enumerate(deployed.get("spec", {}).get("rules") or []):
        for j, ref in enumerate(rule.get("backendRefs") or []):
            found_group, found_kind = ref.get("group", ""), ref.get("kind", "Service")
            if (found_group, found_kind) != (group, "InferencePool"):
                hint = " (the group of the other InferencePool API version)" if found_group in other_groups else ""
                wrong.append(f"  rules[{i}].backendRefs[{j}] {ref.get('name')}: group {found_group or '(core)'}"
                             f"{hint}, kind {found_kind}")
    assert not wrong, (f"HTTPRoute {topology.namespace}/{topology_route.name}: expected backendRefs of kind "
                       f"InferencePool in group {group} (served by this cluster):\n" + "\n".join(wrong[:5]))


def test_httproute_is_accepted_by_the_gateway(kube, topology, topology_route, gateway_profile, condition_timeout):
    """The route's status entry for the Gateway has Accepted as the gateway profile expects (True)."""
    httproute_must_have_condition(kube, topology.namespace, topology_route.name, topology.gateway_name, "Accepted",
                                  judged_status(gateway_profile, "HTTPRoute", "Accepted"), timeout=condition_timeout)


def test_httproute_references_are_resolved(kube, topology, topology_route, gateway_profile, condition_timeout):
    """The route's status entry for the Gateway has ResolvedRefs as the profile expects (True: every backend pool exists)."""
    httproute_must_have_condition(kube, topology.namespace, topology_route.name, topology.gateway_name, "ResolvedRefs",
                                  judged_status(gateway_profile, "HTTPRoute", "ResolvedRefs"), timeout=condition_timeout)


def test_httproute_implementation_conditions_hold(kube, topology, topology_route, gateway_profile, condition_timeout):
    """The route conditions only this implementation writes hold for the Gateway, as its gateway profile names
    them (GKE: Reconciled=True; False when a backend pool has no pods while Accepted and ResolvedRefs stay True).
    The strict profiles name none. (Those of Gateways and pools: test_smoke.py's test_status_conditions_are_true.)"""
    for rule in gateway_profile.implementation_rules("HTTPRoute"):
        httproute_must_have_condition(kube, topology.namespace, topology_route.name, topology.gateway_name, rule.type,
                                      rule.status, timeout=condition_timeout)


def test_gateway_is_accepted(kube, topology, gateway_profile, condition_timeout):
    """The Gateway has Accepted as the gateway profile expects (True)."""
    gateway_must_have_condition(kube, topology.namespace, topology.gateway_name, "Accepted",
                                judged_status(gateway_profile, "Gateway", "Accepted"), timeout=condition_timeout)


def test_gateway_is_programmed_with_an_address(kube, topology, gateway_profile, condition_timeout):
    """The Gateway has an address in status.addresses and Programmed as the profile expects (True); both
    reported when missing."""
    namespace, name = topology.namespace, topology.gateway_name
    programmed = gateway_profile.rule("Gateway", "Programmed")

    def check():
        gateway = get_or_none(lambda: kube.get_gateway_object(namespace, "gateways", name))
        assert gateway is not None, f"Gateway {namespace}/{name} not found"
        status = gateway.get("status") or {}
        conditions = status.get("conditions") or []
        problems = []
        if not any(a.get("value") for a in status.get("addresses") or []):
            problems.append("no address in status.addresses")
        why = programmed and condition_mismatch(find_condition(conditions, "Programmed"), programmed.status, None,
                                                generation_of(gateway))
        if why:
            problems.append(f"expected {programmed.describe()}, {why}")
        assert not problems, (f"Gateway {namespace}/{name} (class {gateway.get('spec', {}).get('gatewayClassName')}): "
                              + "; ".join(problems) + "; conditions: "
                              + ("; ".join(format_condition(c) for c in conditions) or "none"))
    wait_for(check, condition_timeout)


def test_gateway_listens_on_the_topology_port(kube, topology):
    """The Gateway has a listener on the topology's port."""
    deployed = _deployed_gateway(kube, topology)
    listeners = deployed.get("spec", {}).get("listeners") or []
    assert any(listener.get("port") == topology.listener_port for listener in listeners), (
        f"Gateway {topology.namespace}/{topology.gateway_name}: no listener on port {topology.listener_port}\n"
        + yaml_excerpt(deployed, ["spec.listeners"]))


def test_body_based_router_has_ready_endpoints(kube, topology, condition_timeout):
    """The body-based router that sets the header the rules match has a ready endpoint (topologies with bbr)."""
    if topology.bbr_header is None:
        pytest.skip(f"topology {topology.name} routes without body-based routing (no bbr)")
    service_must_have_ready_endpoints(kube, topology.namespace, topology.bbr_service, topology.bbr_port,
                                      f"body-based router (sets {topology.bbr_header})", timeout=condition_timeout)


def test_body_based_router_is_attached_to_the_gateway(kube, topology, gateway_profile, condition_timeout):
    """The body-based router is attached to the Gateway the way the gateway profile says: on GKE a
    GCPRoutingExtension targeting the Gateway with the BBR Service and port, and a HealthCheckPolicy for
    that Service; an ext_proc filter inside the proxy shows only as its Service's ready endpoints (topologies
    with bbr)."""
    if topology.bbr_header is None:
        pytest.skip(f"topology {topology.name} routes without body-based routing (no bbr)")
    if gateway_profile.bbr_attachment != GCP_ROUTING_EXTENSION:
        service_must_have_ready_endpoints(kube, topology.namespace, topology.bbr_service, topology.bbr_port,
                                          f"body-based router (ext_proc filter of {gateway_profile.title()})",
                                          timeout=condition_timeout)
        return

    def check():
        problems = bbr_attachment_problems(kube, topology)
        assert not problems, (f"body-based router (Service {topology.namespace}/{topology.bbr_service} port "
                              f"{topology.bbr_port}) is not attached to Gateway {topology.gateway_name}:\n"
                              + "\n".join(f"  {p}" for p in problems))
    wait_for(check, condition_timeout)


def test_body_based_router_is_the_topology_implementation(kube, topology):
    """The pods behind the router's Service run the router the topology names (bbr.implementation: GIE's BBR
    or llm-d's payload processor, whose base-model ConfigMaps carry different labels), known by their image."""
    if topology.bbr_header is None:
        pytest.skip(f"topology {topology.name} routes without body-based routing (no bbr)")
    problem = implementation_problem(kube.core, topology.namespace, topology.bbr_service, "bodyBasedRouter",
                                     topology.bbr_implementation)
    assert problem is None, f"body-based router (sets {topology.bbr_header}): {problem}"


ROUTER_CONFIGMAP_LABELS = {"gie-bbr": "inference.networking.k8s.io/bbr-managed",
                           "payload-processor": "inference.llm-d.ai/ipp-managed"}


def test_body_based_router_maps_every_name_to_its_base_model(kube, topology):
    """With X-Gateway-Base-Model-Name the router looks each requested name up in the ConfigMaps labelled for
    it (GIE's BBR: inference.networking.k8s.io/bbr-managed; llm-d's payload processor:
    inference.llm-d.ai/ipp-managed): every model id is a data.baseModel there and every adapter is in its
    model's data.adapters. ConfigMaps with the other router's label are named: that router never reads them."""
    if topology.bbr_header != "X-Gateway-Base-Model-Name":
        pytest.skip(f"topology {topology.name} does not route on the base model (bbr.header {topology.bbr_header})")
    wanted = ROUTER_CONFIGMAP_LABELS[topology.bbr_implementation]
    mapped: dict[str, str] = {}
    other: list[str] = []
    for cm in kube.core.list_namespaced_config_map(topology.namespace).items:
        labels, data = cm.metadata.labels or {}, cm.data or {}
        if labels.get(wanted) == "true" and data.get("baseModel"):
            mapped[data["baseModel"]] = data["baseModel"]
            for adapter in yaml.safe_load(data.get("adapters") or "[]") or []:
                mapped[str(adapter)] = data["baseModel"]
        elif any(labels.get(label) == "true" for label in ROUTER_CONFIGMAP_LABELS.values()):
            other.append(f"{cm.metadata.name} ({', '.join(k for k in ROUTER_CONFIGMAP_LABELS.values() if k in labels)})")
    wrong = [f"{name} -> {mapped.get(name, 'nothing')} (expected {model.id})"
             for model in topology.models for name in (model.id, *model.adapters) if mapped.get(name) != model.id]
    assert not wrong, (f"{topology.bbr_implementation} (sets {topology.bbr_header} from ConfigMaps labelled {wanted}=true "
                       f"in {topology.namespace}) maps: {'; '.join(wrong)}"
                       + (f"; ConfigMaps labelled for the other router, which it never reads: {', '.join(other)}"
                          if other else ""))
