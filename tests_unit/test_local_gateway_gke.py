"""The local gateway's GKE mode (llmd_conformance/local/gke_mode.py): GKE's conditions, the programming
delay answered by 404 `fault filter abort`, BBR from a GCPRoutingExtension, and the Envoy config of all
of it as the real Envoy takes it. Planning runs on plain dicts shaped like API objects."""
from __future__ import annotations

import pytest

from llmd_conformance import timing
from llmd_conformance.local import envoy as ev
from llmd_conformance.local import gke_mode as gke
from llmd_conformance.local.gateway import BBR_ANNOTATION, GATEWAY_CLASSES, gateway_status, plan
from tests_unit.test_envoy_config import backend, client, envoy, listener_with  # noqa: F401 - fixtures
from tests_unit.test_local_gateway import (
    ADDR, GW, NS, cond, endpoint_slice, gateway, gateway_class, pattern2, pod, routes_of, service,
)

ROUTE = (NS, "llm-d-pattern2")


def routing_extension(port=9004, target=GW, service_name="body-based-router"):
    """What GIE's body-based-routing chart renders with provider.name=gke."""
    return {"metadata": {"namespace": NS, "name": "body-based-router", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": target}],
                     "extensionChains": [{"name": "chain1", "extensions": [{
                         "name": "ext1", "authority": "myext.com", "timeout": "1s",
                         "supportedEvents": ["RequestHeaders", "RequestBody", "RequestTrailers"],
                         "requestBodySendMode": "FullDuplexStreamed",
                         "backendRef": {"group": "", "kind": "Service", "name": service_name, "port": port}}]}]}}


def bbr_health_check():
    return {"metadata": {"namespace": NS, "name": "bbr-healthcheck"},
            "spec": {"targetRef": {"group": "", "kind": "Service", "name": "body-based-router", "namespace": NS},
                     "default": {"config": {"type": "GRPC", "grpcHealthCheck": {"port": 9005}}}}}


def bbr_service(app_protocol="HTTP2"):
    svc = service("body-based-router", 9004, port_name="")
    svc["spec"]["ports"][0]["appProtocol"] = app_protocol
    return svc


def gke_pattern2(**overrides):
    """pattern2 as -e gke-local installs it: class llmd-local-gke, BBR by GCPRoutingExtension + HealthCheckPolicy."""
    snap = pattern2(gateway_classes=[gateway_class(gke.GATEWAY_CLASS_NAME, gke.CONTROLLER_NAME)],
                    gateways=[gateway(cls=gke.GATEWAY_CLASS_NAME)], routing_extensions=[routing_extension()],
                    health_check_policies=[bbr_health_check()])
    snap.services = [s for s in snap.services if s["metadata"]["name"] != "body-based-router"] + [bbr_service()]
    snap.endpoint_slices = [e for e in snap.endpoint_slices if e["metadata"]["name"] != "body-based-router-abc"] + [
        endpoint_slice("body-based-router", ["10.244.1.7"], 9004, port_name="")]
    for k, v in overrides.items():
        setattr(snap, k, v)
    return snap


def route_conditions(result) -> dict[str, dict]:
    [parent] = result.route_parents[ROUTE]
    assert parent["controllerName"] == gke.CONTROLLER_NAME
    return {c["type"]: c for c in parent["conditions"]}


def gateway_conditions(result) -> dict[str, dict]:
    [gw] = result.gateways
    return {c["type"]: c for c in gateway_status(gw, {})["conditions"]}


def backend_of(result, model: str) -> ev.Backend:
    return next(r.backend for r in routes_of(result) if r.match.headers and r.match.headers[0].value == model)


def test_the_gke_mode_class_names_gkes_controller_and_fits_the_api():
    """Part of the class list the controller creates; the Gateway API caps spec.description at 64 bytes."""
    assert (gke.GATEWAY_CLASS_NAME, gke.CONTROLLER_NAME) in [(name, controller) for name, controller, _ in GATEWAY_CLASSES]
    assert all(len(description.encode()) <= 64 for _, _, description in GATEWAY_CLASSES)


# ------------------------------------------------------------- HTTPRoute and InferencePool status

def test_healthy_route_has_gkes_three_conditions_all_true():
    """Accepted, ResolvedRefs and GKE's Reconciled (ReconciliationSucceeded), written as networking.gke.io/gateway."""
    conds = route_conditions(plan(gke_pattern2(), ADDR))
    assert list(conds) == ["Accepted", "ResolvedRefs", "Reconciled"]
    assert {t: c["status"] for t, c in conds.items()} == {"Accepted": "True", "ResolvedRefs": "True", "Reconciled": "True"}
    assert conds["Reconciled"]["reason"] == "ReconciliationSucceeded"
    assert conds["Reconciled"]["observedGeneration"] == 3


def test_pool_without_ready_pods_fails_reconciled_only():
    """GIE #806/#846: no ready endpoint in a pool → Reconciled=False ReconciliationFailed; Accepted and ResolvedRefs stay True."""
    snap = gke_pattern2(pods=[pod("gemma-0", "10.244.2.2", "gemma-2b-it"),
                              pod("phi-0", "10.244.3.2", "phi-3-mini-4k-instruct", ready=False)])
    conds = route_conditions(plan(snap, ADDR))
    assert (conds["Accepted"]["status"], conds["ResolvedRefs"]["status"]) == ("True", "True")
    reconciled = conds["Reconciled"]
    assert (reconciled["status"], reconciled["reason"]) == ("False", "ReconciliationFailed")
    assert reconciled["message"] == ('Error GWCER-LOCAL: HTTPRoute "llm-d/llm-d-pattern2" is misconfigured, err: '
                                     "InferencePool llm-d/gaie-phi has no ready endpoints (no Ready Pod matches its selector)")


def test_missing_epp_service_is_backend_not_found_with_gwcer104():
    """GIE PR #1131's gke-l7 status: ResolvedRefs=False BackendNotFound, GWCER104; Reconciled fails on the missing Service."""
    snap = gke_pattern2()
    snap.services = [s for s in snap.services if s["metadata"]["name"] != "gaie-phi-epp"]
    result = plan(snap, ADDR)
    conds = route_conditions(result)
    assert conds["Accepted"]["status"] == "True"
    assert (conds["ResolvedRefs"]["status"], conds["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    assert conds["ResolvedRefs"]["message"] == (
        'error cause: reference-not-found: Error GWCER104: HTTPRoute "llm-d/llm-d-pattern2" is misconfigured, err: '
        "failed to validate inference pool extension ref: InferencePool extension service gaie-phi-epp not found.")
    assert conds["Reconciled"]["status"] == "False" and "missing Service llm-d/gaie-phi-epp" in conds["Reconciled"]["message"]
    assert backend_of(result, "microsoft/Phi-3-mini-4k-instruct") == ev.DirectResponse(500, gke.FAULT_FILTER_ABORT), \
        "GIE's troubleshooting guide: a backend the gateway cannot resolve answers 500 fault filter abort"


def test_route_to_missing_pool_keeps_the_gateway_api_reason():
    snap = gke_pattern2(pools=[p for p in gke_pattern2().pools if p["metadata"]["name"] != "gaie-phi"])
    conds = route_conditions(plan(snap, ADDR))
    assert (conds["ResolvedRefs"]["status"], conds["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    assert "InferencePool llm-d/gaie-phi" in conds["ResolvedRefs"]["message"]
    assert conds["Reconciled"]["status"] == "False"


def test_pool_parent_writes_resolved_refs_only_when_false():
    """No source shows GKE writing ResolvedRefs=True on a healthy pool: the mode writes the least it may."""
    snap = gke_pattern2()
    snap.services = [s for s in snap.services if s["metadata"]["name"] != "gaie-phi-epp"]
    parents = plan(snap, ADDR).pool_parents
    [healthy] = parents[("inference.networking.k8s.io", NS, "gaie-gemma")]
    [broken] = parents[("inference.networking.k8s.io", NS, "gaie-phi")]
    assert healthy["controllerName"] == gke.CONTROLLER_NAME
    assert [c["type"] for c in healthy["conditions"]] == ["Accepted"]
    assert cond(broken["conditions"], "ResolvedRefs")["status"] == "False"


# ------------------------------------------------------------- programming delay

def test_unprogrammed_gateway_answers_404_fault_filter_abort_while_status_says_programmed():
    """As while GKE's load balancer propagates: address and Programmed=True, every request 404 `fault filter abort`."""
    result = plan(gke_pattern2(), ADDR, frozenset({(NS, GW)}))
    [listener] = result.listeners
    assert listener.bbr is None
    assert [(r.match, r.backend) for h in listener.virtual_hosts for r in h.routes] == [
        (ev.Match(), ev.DirectResponse(404, "fault filter abort"))]
    assert gateway_conditions(result)["Programmed"]["status"] == "True"
    assert route_conditions(result)["Reconciled"]["status"] == "True"


def test_programming_clock_counts_from_when_the_gateway_was_taken():
    now = [100.0]
    clock = gke.ProgrammingClock(lambda: now[0])
    slow = gateway(annotations={gke.DELAY_ANNOTATION: "60"}, cls=gke.GATEWAY_CLASS_NAME)
    slow["metadata"]["uid"] = "u1"
    assert clock.update([slow]) == (frozenset({(NS, GW)}), [])
    now[0] = 159.0
    assert clock.update([slow]) == (frozenset({(NS, GW)}), [])
    now[0] = 160.0
    assert clock.update([slow]) == (frozenset(), [(NS, GW)])
    assert clock.update([]) == (frozenset(), []), "a Gateway no longer in GKE mode is forgotten"
    assert clock.update([slow]) == (frozenset({(NS, GW)}), []), "taken again: it waits again"


def test_default_delay_and_a_bad_annotation():
    assert gke.programming_delay(gateway()) == (timing.DEFAULT.gke_local_programming_delay, None)
    assert gke.programming_delay(gateway(annotations={gke.DELAY_ANNOTATION: "0"})) == (0.0, None)
    snap = gke_pattern2(gateways=[gateway(annotations={gke.DELAY_ANNOTATION: "soon"}, cls=gke.GATEWAY_CLASS_NAME)])
    accepted = gateway_conditions(plan(snap, ADDR))["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidParameters")
    assert "llmd.local/gke-programming-delay must be seconds >= 0, found 'soon'" in accepted["message"]


# ------------------------------------------------------------- BBR from a GCPRoutingExtension

def test_bbr_comes_from_the_routing_extension():
    result = plan(gke_pattern2(), ADDR)
    assert result.listeners[0].bbr == ev.GrpcService("bbr/llm-d/body-based-router/9004", (ev.Endpoint("10.244.1.7", 9004),))
    assert gateway_conditions(result)["Programmed"]["status"] == "True"


def test_the_local_bbr_annotation_means_nothing_to_gke():
    snap = gke_pattern2(gateways=[gateway(annotations={BBR_ANNOTATION: "body-based-router:9004"}, cls=gke.GATEWAY_CLASS_NAME)],
                        routing_extensions=[])
    result = plan(snap, ADDR)
    assert result.listeners[0].bbr is None
    assert any("no GCPRoutingExtension targets it" in n for n in result.notes)
    assert gateway_conditions(result)["Programmed"]["status"] == "True", "GKE does not know BBR should be there"


def test_extension_targeting_another_gateway_is_not_this_ones():
    result = plan(gke_pattern2(routing_extensions=[routing_extension(target="other-gateway")]), ADDR)
    assert result.listeners[0].bbr is None


@pytest.mark.parametrize("port, app_protocol", [(9005, "HTTP2"), (9004, None)], ids=["wrong-port", "no-app-protocol"])
def test_extension_without_that_http2_port_makes_the_gateway_not_programmed(port, app_protocol):
    """The seed's GKE message: 'does not have port 9004 with protocol HTTP2'."""
    snap = gke_pattern2(routing_extensions=[routing_extension(port=port)])
    snap.services = [s for s in snap.services if s["metadata"]["name"] != "body-based-router"] + [bbr_service(app_protocol)]
    result = plan(snap, ADDR)
    programmed = gateway_conditions(result)["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    assert programmed["message"] == (f"GCPRoutingExtension llm-d/body-based-router: Service llm-d/body-based-router "
                                     f"does not have port {port} with protocol HTTP2")
    assert result.listeners[0].bbr is None


def test_extension_to_a_missing_service():
    snap = gke_pattern2(routing_extensions=[routing_extension(service_name="bbr-v2")])
    assert gateway_conditions(plan(snap, ADDR))["Programmed"]["message"] == \
        "GCPRoutingExtension llm-d/body-based-router: Service llm-d/bbr-v2 not found"


def test_without_a_health_check_policy_bbr_has_no_healthy_endpoint():
    result = plan(gke_pattern2(health_check_policies=[]), ADDR)
    assert result.listeners[0].bbr == ev.GrpcService("bbr/llm-d/body-based-router/9004", ())
    assert any("no HealthCheckPolicy targets Service llm-d/body-based-router" in n for n in result.notes)


# ------------------------------------------------------------- the Envoy config, as Envoy takes it

def test_gke_mode_config_passes_envoy_validate(tmp_path):
    """Not yet programmed, programmed with BBR, and a 500 fault filter abort route: all valid for the real Envoy."""
    snap = gke_pattern2()
    snap.services = [s for s in snap.services if s["metadata"]["name"] != "gaie-phi-epp"]
    other = ADDR | {(NS, "second"): "127.77.0.2"}
    snap.gateways = [*snap.gateways, gateway(name="second", cls=gke.GATEWAY_CLASS_NAME)]
    listeners = plan(snap, other, frozenset({(NS, "second")})).listeners
    assert sorted(l.bbr is not None for l in listeners) == [False, True]
    ev.validate(ev.render_static_config(listeners, tmp_path / "access.log"), tmp_path)


def test_envoy_answers_fault_filter_abort_until_programmed(envoy, backend, client):  # noqa: F811 - fixtures
    """The real Envoy: 404 text/plain `fault filter abort` before, the backend's answer after programming."""
    waiting = listener_with([route for h in gke.not_programmed_hosts() for route in h.routes], address="127.77.0.247")
    envoy.apply([waiting])
    url = f"http://{waiting.address}:{waiting.port}/v1/completions"
    answer = client.post(url, json={"model": "m"})
    assert (answer.status_code, answer.text, answer.headers["content-type"]) == (404, "fault filter abort", "text/plain")
    programmed = ev.Listener(waiting.name, waiting.address, waiting.port, (ev.VirtualHost("*", ("*",), (
        ev.Route("svc", ev.Match(), ev.ServiceBackend("service/test/b/80", (backend,))),)),))
    envoy.apply([programmed])
    assert client.post(url, json={"model": "m"}).status_code == 200
