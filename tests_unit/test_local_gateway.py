"""The local gateway controller's planning and status logic, on plain dicts shaped like API objects."""
from __future__ import annotations

import pytest

from llmd_conformance.local import envoy as ev
from llmd_conformance.local.gateway import (
    ADDRESS_PREFIX, BBR_ANNOTATION, CONTROLLER_NAME, GATEWAY_CLASS_NAME, POOL_APIS, V1ALPHA2_PLACEHOLDER, AddressBook, Snapshot,
    gateway_status, intersect_hostnames, merge_pool_parents, merge_route_parents, plan, stamp,
)

NS = "llm-d"
GW = "infra-pattern2-inference-gateway"
ADDR = {(NS, GW): "127.77.0.1"}
V1 = "inference.networking.k8s.io"
X = "inference.networking.x-k8s.io"


# ------------------------------------------------------------- object builders (API-server shape)

def gateway_class(name=GATEWAY_CLASS_NAME, controller=CONTROLLER_NAME):
    return {"metadata": {"name": name, "generation": 1}, "spec": {"controllerName": controller}}


def gateway(name=GW, listeners=None, annotations=None, cls=GATEWAY_CLASS_NAME):
    return {"metadata": {"namespace": NS, "name": name, "generation": 2, "annotations": annotations or {}},
            "spec": {"gatewayClassName": cls,
                     "listeners": listeners or [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


def header_rule(model, pool, group=V1, kind="InferencePool"):
    return {"matches": [{"headers": [{"type": "Exact", "name": "X-Gateway-Base-Model-Name", "value": model}]}],
            "backendRefs": [{"group": group, "kind": kind, "name": pool}]}


def route(name="llm-d-pattern2", rules=None, parent=GW, ns=NS, created="2026-01-01T00:00:00Z", **parent_extra):
    return {"metadata": {"namespace": ns, "name": name, "generation": 3, "creationTimestamp": created},
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": parent, **parent_extra}],
                     "rules": rules if rules is not None else [header_rule("google/gemma-2b-it", "gaie-gemma"),
                                                               header_rule("microsoft/Phi-3-mini-4k-instruct", "gaie-phi")]}}


def pool_v1(name, model_label, failure_mode="FailClose", epp=None):
    return {"apiVersion": f"{V1}/v1", "kind": "InferencePool",
            "metadata": {"namespace": NS, "name": name, "generation": 4},
            "spec": {"selector": {"matchLabels": {"llm-d.ai/inferenceServing": "true", "llm-d.ai/model": model_label}},
                     "targetPorts": [{"number": 8000}],
                     "endpointPickerRef": {"name": epp or f"{name}-epp", "port": {"number": 9002}, "failureMode": failure_mode}}}


def pool_v1alpha2(name, model_label):
    return {"apiVersion": f"{X}/v1alpha2", "kind": "InferencePool",
            "metadata": {"namespace": NS, "name": name, "generation": 1},
            "spec": {"selector": {"llm-d.ai/inferenceServing": "true", "llm-d.ai/model": model_label},
                     "targetPortNumber": 8000, "extensionRef": {"name": f"{name}-epp"}},
            "status": {"parent": [V1ALPHA2_PLACEHOLDER]}}


def service(name, port, port_name="grpc"):
    return {"metadata": {"namespace": NS, "name": name}, "spec": {"type": "ClusterIP", "ports": [{"name": port_name, "port": port}]}}


def endpoint_slice(service_name, addresses, port, port_name="grpc", ready=True):
    return {"metadata": {"namespace": NS, "name": f"{service_name}-abc", "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses]}


def pod(name, ip, model_label, ready=True, serving="true"):
    return {"metadata": {"namespace": NS, "name": name,
                         "labels": {"llm-d.ai/inferenceServing": serving, "llm-d.ai/model": model_label}},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pattern2(**overrides) -> Snapshot:
    """One Gateway with BBR, one HTTPRoute with a header rule per model, one pool + EPP per model."""
    snap = Snapshot(
        gateway_classes=[gateway_class()],
        gateways=[gateway(annotations={BBR_ANNOTATION: "body-based-router:9004"})],
        routes=[route()],
        pools=[pool_v1("gaie-gemma", "gemma-2b-it"), pool_v1("gaie-phi", "phi-3-mini-4k-instruct")],
        services=[service("gaie-gemma-epp", 9002), service("gaie-phi-epp", 9002), service("body-based-router", 9004)],
        endpoint_slices=[endpoint_slice("gaie-gemma-epp", ["10.244.1.5"], 9002),
                         endpoint_slice("gaie-phi-epp", ["10.244.1.6"], 9002),
                         endpoint_slice("body-based-router", ["10.244.1.7"], 9004)],
        pods=[pod("gemma-0", "10.244.2.2", "gemma-2b-it"), pod("phi-0", "10.244.3.2", "phi-3-mini-4k-instruct")],
        namespaces=[{"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}}],
    )
    for k, v in overrides.items():
        setattr(snap, k, v)
    return snap


def cond(conditions, type_):
    found = [c for c in conditions if c["type"] == type_]
    assert len(found) == 1, f"expected one {type_} condition, found {conditions}"
    return found[0]


def routes_of(result) -> list[ev.Route]:
    assert len(result.listeners) == 1, f"expected one Envoy listener, found {[l.name for l in result.listeners]}"
    vhost = result.listeners[0].virtual_hosts[-1]
    assert vhost.domains == ("*",)
    return list(vhost.routes)


# ------------------------------------------------------------- Gateways and listeners

def test_gateway_of_another_class_is_ignored():
    """Only Gateways whose class names our controller are programmed."""
    snap = pattern2(gateway_classes=[gateway_class(), gateway_class("other", "example.net/other-gateway")],
                    gateways=[gateway(cls="other")])
    result = plan(snap, {})
    assert result.listeners == [] and result.gateways == []
    assert result.route_parents[(NS, "llm-d-pattern2")] == [], "no status may be written for a foreign Gateway's routes"


def test_pattern2_programs_one_listener_with_bbr_and_a_route_per_model():
    """BBR filter on the listener; each model's header rule goes to its own pool's EPP."""
    result = plan(pattern2(), ADDR)
    listener = result.listeners[0]
    assert (listener.name, listener.address, listener.port) == (f"{NS}/{GW}/80", "127.77.0.1", 80)
    assert listener.bbr == ev.GrpcService(f"bbr/{NS}/body-based-router/9004", (ev.Endpoint("10.244.1.7", 9004),))
    routes = routes_of(result)
    by_model = {r.match.headers[0].value: r.backend for r in routes}
    assert set(by_model) == {"google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct"}
    gemma = by_model["google/gemma-2b-it"]
    assert isinstance(gemma, ev.PoolBackend) and not gemma.fail_open
    assert gemma.epp == ev.GrpcService(f"epp/{NS}/gaie-gemma-epp/9002", (ev.Endpoint("10.244.1.5", 9002),))
    assert by_model["microsoft/Phi-3-mini-4k-instruct"].epp.endpoints == (ev.Endpoint("10.244.1.6", 9002),)
    assert result.notes == []


def test_pattern2_statuses_are_accepted_and_resolved():
    """Gateway Accepted/Programmed with its address; route and both pools Accepted + ResolvedRefs."""
    result = plan(pattern2(), ADDR)
    status = gateway_status(result.gateways[0], bind_errors={})
    assert status["addresses"] == [{"type": "IPAddress", "value": "127.77.0.1"}]
    assert cond(status["conditions"], "Accepted")["status"] == "True"
    assert cond(status["conditions"], "Programmed")["status"] == "True"
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    [listener] = status["listeners"]
    assert listener["attachedRoutes"] == 1 and listener["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    assert {c["type"]: c["status"] for c in listener["conditions"]} == \
        {"Accepted": "True", "Programmed": "True", "ResolvedRefs": "True", "Conflicted": "False"}

    [parent] = result.route_parents[(NS, "llm-d-pattern2")]
    assert parent["controllerName"] == CONTROLLER_NAME and parent["parentRef"]["name"] == GW
    assert [(c["type"], c["status"], c["reason"], c["observedGeneration"]) for c in parent["conditions"]] == \
        [("Accepted", "True", "Accepted", 3), ("ResolvedRefs", "True", "ResolvedRefs", 3)]

    for pool in ("gaie-gemma", "gaie-phi"):
        [entry] = result.pool_parents[(V1, NS, pool)]
        assert entry["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GW, "namespace": NS}
        assert entry["controllerName"] == CONTROLLER_NAME
        assert [(c["type"], c["status"], c["reason"]) for c in entry["conditions"]] == \
            [("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")]


def test_port_in_use_makes_the_gateway_not_programmed_and_names_the_holder():
    """A bind failure Envoy reports becomes listener PortUnavailable and Gateway Programmed=False."""
    result = plan(pattern2(), ADDR)
    error = "cannot bind '127.77.0.1:80': Address already in use (held by pid 42 (nginx))"
    status = gateway_status(result.gateways[0], {f"{NS}/{GW}/80": error})
    programmed = cond(status["conditions"], "Programmed")
    assert programmed["status"] == "False" and "pid 42 (nginx)" in programmed["message"]
    listener_accepted = cond(status["listeners"][0]["conditions"], "Accepted")
    assert (listener_accepted["status"], listener_accepted["reason"]) == ("False", "PortUnavailable")
    assert cond(status["conditions"], "Accepted")["reason"] == "ListenersNotValid"


def test_unsupported_protocol_and_conflicting_listeners_are_reported():
    """HTTPS is refused with UnsupportedProtocol; two listeners on one port and hostname conflict."""
    snap = pattern2(gateways=[gateway(listeners=[
        {"name": "tls", "port": 443, "protocol": "HTTPS"},
        {"name": "a", "port": 80, "protocol": "HTTP"},
        {"name": "b", "port": 80, "protocol": "HTTP"},
    ])])
    result = plan(snap, ADDR)
    assert result.listeners == [], "no listener may be programmed: HTTPS unsupported, a/b conflict"
    status = gateway_status(result.gateways[0], {})
    by_name = {l["name"]: {c["type"]: c for c in l["conditions"]} for l in status["listeners"]}
    assert by_name["tls"]["Accepted"]["reason"] == "UnsupportedProtocol"
    assert by_name["a"]["Conflicted"]["status"] == "True" and by_name["a"]["Conflicted"]["reason"] == "HostnameConflict"
    assert by_name["b"]["Programmed"]["status"] == "False"
    assert cond(status["conditions"], "Programmed")["status"] == "False"


def test_gateway_addresses_and_bad_bbr_annotation_are_rejected():
    """spec.addresses → UnsupportedAddress; a malformed BBR annotation → InvalidParameters; nothing programmed."""
    with_addresses = gateway()
    with_addresses["spec"]["addresses"] = [{"type": "IPAddress", "value": "10.0.0.1"}]
    bad_bbr = gateway(annotations={BBR_ANNOTATION: "body-based-router"})
    for gw, reason in ((with_addresses, "UnsupportedAddress"), (bad_bbr, "InvalidParameters")):
        result = plan(pattern2(gateways=[gw]), ADDR)
        assert result.listeners == []
        accepted = cond(gateway_status(result.gateways[0], {})["conditions"], "Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", reason), accepted
        [parent] = result.route_parents[(NS, "llm-d-pattern2")]
        assert cond(parent["conditions"], "Accepted")["status"] == "False"


def test_missing_bbr_service_still_filters_through_an_empty_cluster():
    """Without BBR endpoints the filter stays (requests fail) and the plan says why."""
    result = plan(pattern2(services=[s for s in pattern2().services if s["metadata"]["name"] != "body-based-router"]), ADDR)
    assert result.listeners[0].bbr == ev.GrpcService(f"bbr/{NS}/body-based-router/9004", ())
    assert any("body-based-router:9004" in n and "not found" in n for n in result.notes), result.notes


# ------------------------------------------------------------- HTTPRoute binding and backend references

def test_route_to_missing_pool_is_accepted_with_backend_not_found_and_answers_500():
    """GIE HTTPRouteInvalidInferencePoolRef: Accepted=True, ResolvedRefs=False BackendNotFound, 5xx."""
    snap = pattern2(routes=[route(rules=[header_rule("google/gemma-2b-it", "no-such-pool")])])
    result = plan(snap, ADDR)
    [parent] = result.route_parents[(NS, "llm-d-pattern2")]
    assert cond(parent["conditions"], "Accepted")["status"] == "True"
    resolved = cond(parent["conditions"], "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "no-such-pool" in resolved["message"]
    [r] = routes_of(result)
    assert isinstance(r.backend, ev.DirectResponse) and r.backend.status == 500


def test_route_to_pool_of_an_unserved_group_is_invalid_kind():
    """backendRef to inference.networking.x-k8s.io when only v1 pools are served → InvalidKind."""
    snap = pattern2(routes=[route(rules=[header_rule("google/gemma-2b-it", "gaie-gemma", group=X)])])
    [parent] = plan(snap, ADDR).route_parents[(NS, "llm-d-pattern2")]
    resolved = cond(parent["conditions"], "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidKind")
    assert V1 in resolved["message"], "the message must name the group that is served"


def test_cross_namespace_backend_is_ref_not_permitted():
    """ReferenceGrants are not read, so a backendRef into another namespace is refused."""
    rule = header_rule("google/gemma-2b-it", "gaie-gemma")
    rule["backendRefs"][0]["namespace"] = "other"
    [parent] = plan(pattern2(routes=[route(rules=[rule])]), ADDR).route_parents[(NS, "llm-d-pattern2")]
    assert cond(parent["conditions"], "ResolvedRefs")["reason"] == "RefNotPermitted"


def test_service_backend_resolves_to_ready_endpoint_slice_addresses():
    """A Service backendRef becomes a static cluster of its Ready endpoints on the target port."""
    rule = {"backendRefs": [{"kind": "Service", "name": "web", "port": 80}]}
    snap = pattern2(routes=[route(rules=[rule])],
                    services=[*pattern2().services, service("web", 80, port_name="http")],
                    endpoint_slices=[*pattern2().endpoint_slices,
                                     endpoint_slice("web", ["10.244.4.2"], 8080, port_name="http"),
                                     endpoint_slice("web", ["10.244.4.3"], 8080, port_name="http", ready=False)])
    [r] = routes_of(plan(snap, ADDR))
    assert r.backend == ev.ServiceBackend(f"service/{NS}/web/80", (ev.Endpoint("10.244.4.2", 8080),))


def test_weighted_backend_refs_become_a_split_over_both_pools():
    """Several backendRefs in a rule: a Split in ref order with their weights (default 1, weight 0 left
    out); both pools get parent status; an invalid ref keeps its share and makes ResolvedRefs False."""
    refs = [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma", "weight": 70},
            {"group": V1, "kind": "InferencePool", "name": "gaie-phi"},
            {"group": V1, "kind": "InferencePool", "name": "gaie-unused", "weight": 0}]
    result = plan(pattern2(routes=[route(rules=[{"backendRefs": refs}])]), ADDR)
    [r] = routes_of(result)
    assert isinstance(r.backend, ev.Split)
    assert [(w.backend.cluster, w.weight) for w in r.backend.backends] == [
        (f"pool-destination/{NS}/gaie-gemma", 70), (f"pool-destination/{NS}/gaie-phi", 1)]
    assert [w.backend.epp.cluster for w in r.backend.backends] == [f"epp/{NS}/gaie-gemma-epp/9002", f"epp/{NS}/gaie-phi-epp/9002"]
    [parent] = result.route_parents[(NS, "llm-d-pattern2")]
    assert cond(parent["conditions"], "Accepted")["status"] == "True"
    assert cond(parent["conditions"], "ResolvedRefs")["status"] == "False", "gaie-unused does not exist"
    assert {k[2] for k in result.pool_parents} == {"gaie-gemma", "gaie-phi"}

    refs[2]["weight"] = 10
    [r] = routes_of(plan(pattern2(routes=[route(rules=[{"backendRefs": refs}])]), ADDR))
    assert isinstance(r.backend.backends[2].backend, ev.DirectResponse) and r.backend.backends[2].weight == 10
    only_zero = [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma", "weight": 0}]
    [r] = routes_of(plan(pattern2(routes=[route(rules=[{"backendRefs": only_zero}])]), ADDR))
    assert r.backend.status == 500 and "weight 0" in r.backend.body


def test_rule_filters_make_the_route_not_accepted():
    """Features the local gateway lacks are refused with UnsupportedValue, never silently dropped."""
    rule = header_rule("google/gemma-2b-it", "gaie-gemma")
    rule["filters"] = [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}]
    result = plan(pattern2(routes=[route(rules=[rule])]), ADDR)
    [parent] = result.route_parents[(NS, "llm-d-pattern2")]
    accepted = cond(parent["conditions"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue") and "filters" in accepted["message"]
    assert routes_of(result) == []
    [entry] = result.pool_parents[(V1, NS, "gaie-gemma")]
    assert cond(entry["conditions"], "Accepted")["reason"] == "HTTPRouteNotAccepted"


def test_section_name_and_namespace_policy_decide_attachment():
    """Unknown sectionName → NoMatchingParent; route from another namespace under from: Same → NotAllowedByListeners."""
    wrong_section = route(sectionName="https")
    other_ns = route(name="elsewhere", ns="team-b")
    other_ns["spec"]["parentRefs"][0]["namespace"] = NS
    result = plan(pattern2(routes=[wrong_section, other_ns]), ADDR)
    assert cond(result.route_parents[(NS, "llm-d-pattern2")][0]["conditions"], "Accepted")["reason"] == "NoMatchingParent"
    assert cond(result.route_parents[("team-b", "elsewhere")][0]["conditions"], "Accepted")["reason"] == "NotAllowedByListeners"
    assert gateway_status(result.gateways[0], {})["listeners"][0]["attachedRoutes"] == 0


def test_namespace_selector_admits_labelled_namespaces():
    """allowedRoutes.namespaces.from: Selector matches the route's Namespace labels."""
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP",
                  "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "b"}}}}}]
    other_ns = route(name="elsewhere", ns="team-b")
    other_ns["spec"]["parentRefs"][0]["namespace"] = NS
    snap = pattern2(gateways=[gateway(listeners=listeners)], routes=[other_ns],
                    namespaces=[{"metadata": {"name": "team-b", "labels": {"team": "b"}}}])
    [parent] = plan(snap, ADDR).route_parents[("team-b", "elsewhere")]
    assert cond(parent["conditions"], "Accepted")["status"] == "True"


# ------------------------------------------------------------- InferencePool

def test_missing_epp_service_is_invalid_extension_ref_and_answers_500():
    """GIE InferencePoolInvalidEPPService: pool ResolvedRefs=False InvalidExtensionRef; requests get a 5xx."""
    snap = pattern2(services=[s for s in pattern2().services if s["metadata"]["name"] != "gaie-gemma-epp"])
    result = plan(snap, ADDR)
    [entry] = result.pool_parents[(V1, NS, "gaie-gemma")]
    resolved = cond(entry["conditions"], "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "InvalidExtensionRef")
    assert "gaie-gemma-epp" in resolved["message"]
    gemma = next(r for r in routes_of(result) if r.match.headers[0].value == "google/gemma-2b-it")
    assert isinstance(gemma.backend, ev.DirectResponse) and gemma.backend.status == 500


def test_fail_open_pool_falls_back_to_its_ready_matching_pods():
    """FailOpen: the fallback holds podIP:targetPort of Ready pods matching the selector, nothing else."""
    pods = [pod("gemma-0", "10.244.2.2", "gemma-2b-it"),
            pod("gemma-1", "10.244.2.3", "gemma-2b-it", ready=False),
            pod("gemma-2", "10.244.2.4", "gemma-2b-it", serving="false"),
            pod("phi-0", "10.244.3.2", "phi-3-mini-4k-instruct")]
    snap = pattern2(pools=[pool_v1("gaie-gemma", "gemma-2b-it", failure_mode="FailOpen"),
                           pool_v1("gaie-phi", "phi-3-mini-4k-instruct")], pods=pods)
    backends = {r.match.headers[0].value: r.backend for r in routes_of(plan(snap, ADDR))}
    gemma, phi = backends["google/gemma-2b-it"], backends["microsoft/Phi-3-mini-4k-instruct"]
    assert gemma.fail_open and gemma.fallback == (ev.Endpoint("10.244.2.2", 8000),)
    assert not phi.fail_open and phi.fallback == ()


def test_epp_endpoints_exclude_not_ready_addresses():
    """EPP Service endpoints come from EndpointSlices, skipping endpoints marked not ready."""
    slices = [endpoint_slice("gaie-gemma-epp", ["10.244.1.5"], 9002, ready=False),
              endpoint_slice("gaie-phi-epp", ["10.244.1.6"], 9002),
              endpoint_slice("body-based-router", ["10.244.1.7"], 9004)]
    backends = {r.match.headers[0].value: r.backend for r in routes_of(plan(pattern2(endpoint_slices=slices), ADDR))}
    assert backends["google/gemma-2b-it"].epp.endpoints == ()


def test_v1alpha2_pool_is_parsed_and_gets_parent_without_controller_name():
    """v1alpha2: flat selector, targetPortNumber, extensionRef port defaulting to 9002; status.parent[] entries."""
    snap = pattern2(pools=[pool_v1alpha2("gaie-gemma", "gemma-2b-it")], pool_apis=POOL_APIS,
                    routes=[route(rules=[header_rule("google/gemma-2b-it", "gaie-gemma", group=X)])])
    result = plan(snap, ADDR)
    [r] = routes_of(result)
    assert r.backend.epp.cluster == f"epp/{NS}/gaie-gemma-epp/9002"
    [entry] = result.pool_parents[(X, NS, "gaie-gemma")]
    assert "controllerName" not in entry
    merged = merge_pool_parents([V1ALPHA2_PLACEHOLDER], [entry], v1alpha2=True, managed={(NS, GW)}, now="T1")
    assert merged == [{**entry, "conditions": [{**c, "lastTransitionTime": "T1"} for c in entry["conditions"]]}], \
        "the placeholder parent must go once a Gateway takes the pool"
    assert merge_pool_parents(merged, [], v1alpha2=True, managed={(NS, GW)}, now="T2") == [V1ALPHA2_PLACEHOLDER], \
        "the placeholder must come back when no Gateway references the pool any more"


# ------------------------------------------------------------- status merging

def test_route_parent_merge_keeps_other_controllers_and_drops_our_stale_entries():
    """Entries of other controllers survive; our entries are replaced as a whole."""
    foreign = {"parentRef": {"name": "other-gw"}, "controllerName": "example.net/other-gateway", "conditions": []}
    stale = {"parentRef": {"name": "deleted-gw"}, "controllerName": CONTROLLER_NAME, "conditions": []}
    ours = {"parentRef": {"name": GW}, "controllerName": CONTROLLER_NAME,
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 1}]}
    merged = merge_route_parents([foreign, stale], [ours], now="T1")
    assert [p["parentRef"]["name"] for p in merged] == ["other-gw", GW]


def test_v1_pool_merge_keeps_entries_of_other_controllers():
    """status.parents[] entries with another controllerName are left alone."""
    foreign = {"parentRef": {"name": "other-gw", "namespace": NS, "kind": "Gateway"},
               "controllerName": "example.net/other-gateway", "conditions": []}
    assert merge_pool_parents([foreign], [], v1alpha2=False, managed={(NS, GW)}, now="T") == [foreign]


def test_last_transition_time_changes_only_with_status():
    """lastTransitionTime is kept while a condition's status stays the same, renewed when it flips."""
    old = [{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"},
           {"type": "Programmed", "status": "True", "lastTransitionTime": "T0"}]
    new = [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "False"}]
    assert [c["lastTransitionTime"] for c in stamp(new, old, "T1")] == ["T0", "T1"]


# ------------------------------------------------------------- precedence and hostnames

def test_route_precedence_follows_gateway_api_order():
    """Exact path before prefixes, longer prefix first, more header matches first, then older routes."""
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma"}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma"}]},
        {"matches": [{"path": {"type": "Exact", "value": "/v1/models"}}], "backendRefs": [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma"}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}, "headers": [{"name": "a", "value": "b"}]}],
         "backendRefs": [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma"}]},
    ]
    newer = route(name="newer", rules=[rules[1]], created="2026-02-01T00:00:00Z")
    snap = pattern2(routes=[newer, route(rules=rules)])
    names = [r.name for r in routes_of(plan(snap, ADDR))]
    assert names == [f"{NS}/llm-d-pattern2/rule2/match0", f"{NS}/llm-d-pattern2/rule3/match0",
                     f"{NS}/llm-d-pattern2/rule1/match0", f"{NS}/newer/rule0/match0", f"{NS}/llm-d-pattern2/rule0/match0"]


@pytest.mark.parametrize("listener_host, route_hosts, expected", [
    (None, [], []),
    (None, ["a.example.com"], ["a.example.com"]),
    ("a.example.com", [], ["a.example.com"]),
    ("*.example.com", ["a.example.com", "other.org"], ["a.example.com"]),
    ("a.example.com", ["*.example.com"], ["a.example.com"]),
    ("a.example.com", ["b.example.com"], None),
    ("*.example.com", ["example.com"], None),
])
def test_hostname_intersection(listener_host, route_hosts, expected):
    """Listener and route hostnames intersect as the Gateway API defines (None: no overlap)."""
    assert intersect_hostnames(listener_host, route_hosts) == expected


def test_route_hostnames_get_their_own_virtual_host():
    """A route with hostnames is served only under them; host-less routes also serve those hosts."""
    named = route(name="named", rules=[header_rule("google/gemma-2b-it", "gaie-gemma")])
    named["spec"]["hostnames"] = ["models.example.com"]
    anyhost = route(name="anyhost", rules=[header_rule("microsoft/Phi-3-mini-4k-instruct", "gaie-phi")])
    [listener] = plan(pattern2(routes=[named, anyhost]), ADDR).listeners
    vhosts = {v.domains: [r.name.split("/")[1] for r in v.routes] for v in listener.virtual_hosts}
    assert vhosts == {("models.example.com",): ["named", "anyhost"], ("*",): ["anyhost"]}


# ------------------------------------------------------------- addresses

def test_addresses_are_stable_and_remembered(tmp_path):
    """Each Gateway keeps its 127.77.<instance>.<n> across controller restarts (the file in the run dir)."""
    book = AddressBook(tmp_path / "addresses.json")
    a, b = book.address("ns", "a"), book.address("ns", "b")
    assert (a, b) == (f"{ADDRESS_PREFIX}1", f"{ADDRESS_PREFIX}2")
    again = AddressBook(tmp_path / "addresses.json")
    assert again.known("ns", "b") == b and again.address("ns", "a") == a and again.known("ns", "c") is None


# ------------------------------------------------------------- every kind of config the controller writes, as Envoy takes it

def _scenarios() -> dict[str, tuple[Snapshot, dict]]:
    """Snapshots covering each backend kind, failure mode, API version and Gateway shape plan() handles."""
    open_pools = [pool_v1("gaie-gemma", "gemma-2b-it", "FailOpen"), pool_v1("gaie-phi", "phi-3-mini-4k-instruct", "FailOpen")]
    h2c = pool_v1("gaie-gemma", "gemma-2b-it")
    h2c["spec"]["appProtocol"] = "kubernetes.io/h2c"
    split = [{"group": V1, "kind": "InferencePool", "name": "gaie-gemma", "weight": 70},
             {"group": V1, "kind": "InferencePool", "name": "gaie-phi", "weight": 20},
             {"kind": "Service", "name": "web", "port": 80, "weight": 5},
             {"group": V1, "kind": "InferencePool", "name": "missing", "weight": 5}]
    web = dict(services=[*pattern2().services, service("web", 80, port_name="http")],
               endpoint_slices=[*pattern2().endpoint_slices, endpoint_slice("web", ["10.244.4.2"], 8080, port_name="http")])
    secondary = gateway(name="secondary", listeners=[{"name": "http", "port": 80, "protocol": "HTTP",
                                                       "hostname": "secondary.example.com"}])
    return {
        "pattern2": (pattern2(), ADDR),
        "fail-open": (pattern2(pools=open_pools), ADDR),
        "split": (pattern2(pools=open_pools, routes=[route(rules=[{"backendRefs": split}])], **web), ADDR),
        "missing-epp-and-pool": (pattern2(services=[s for s in pattern2().services if s["metadata"]["name"] != "gaie-gemma-epp"],
                                          routes=[route(rules=[header_rule("a", "gaie-gemma"), header_rule("b", "missing")])]), ADDR),
        "v1alpha2": (pattern2(pools=[pool_v1alpha2("gaie-gemma", "gemma-2b-it")], pool_apis=POOL_APIS,
                              routes=[route(rules=[header_rule("google/gemma-2b-it", "gaie-gemma", group=X)])]), ADDR),
        "h2c": (pattern2(pools=[h2c, pool_v1("gaie-phi", "phi-3-mini-4k-instruct")]), ADDR),
        "two-gateways": (pattern2(gateways=[gateway(), secondary],
                                  routes=[route(), route(name="second", parent="secondary")]),
                         ADDR | {(NS, "secondary"): "127.77.0.2"}),
    }


@pytest.mark.parametrize("scenario", list(_scenarios()))
def test_every_kind_of_plan_passes_envoy_validate(tmp_path, scenario):
    """What plan() gives the controller for each scenario renders to a config the real Envoy accepts."""
    snap, addresses = _scenarios()[scenario]
    listeners = plan(snap, addresses).listeners
    assert listeners, "the scenario must program at least one listener"
    ev.validate(ev.render_static_config(listeners, tmp_path / "access.log"), tmp_path)
