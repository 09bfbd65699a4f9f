"""Gateway profiles: the loader's strict schema and its messages, choosing a profile from the
GatewayClass, the three kinds of 404 each profile tells apart, the warm-up waiting through a
not-programmed gateway, GKE's BBR objects, and the checks judging by the profile (a Reconciled=False
HTTPRoute fails under gke with its message and passes under reference)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from llmd_conformance import profiles, timing
from llmd_conformance.convergence import await_serving
from llmd_conformance.kube import NOT_FALSE
from llmd_conformance.local.gateway import CONTROLLER_NAME as LOCAL_CONTROLLER
from llmd_conformance.mixes import COMPLETIONS, RequestSpec
from llmd_conformance.topology import load_topology
from llmd_conformance.profiles import (ProfileError, builtin_profiles, choose_profile, gcp_routing_extension_problems,
                                       load_profile, parse_profile)
from llmd_conformance.traffic import AnswerKind, Outcome, TrafficDriver, answer_kind
from tests_unit.conftest import dedent, resources
from tests_unit.fake_cluster import write_kubeconfig
from tests_unit.test_convergence import gateway as completions_gateway

NS, GATEWAY, ROUTE = "llm-d", "infra-pattern2-inference-gateway", "llm-d-pattern2"
GEMMA = "google/gemma-2b-it"
REFERENCE_TEXT = (profiles.PROFILE_DIR / "reference.yaml").read_text()


def reference_with(**changes) -> dict:
    data = yaml.safe_load(REFERENCE_TEXT)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def problems(data, tmp_path: Path) -> list[str]:
    path = tmp_path / "mine.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(ProfileError) as excinfo:
        parse_profile(path.read_text(), path)
    return [line.removeprefix(f"{path}: ") for line in str(excinfo.value).splitlines()]


# ---------------------------------------------------------------- the shipped profiles

def test_shipped_profiles_load_and_claim_distinct_controllers():
    """Every profile under manifests/gateways/ loads; each controllerName belongs to one profile."""
    shipped = {p.name: p for p in builtin_profiles()}
    assert sorted(shipped) == ["gke", "istio", "kgateway", "reference"]
    assert shipped["gke"].controller_names == ("networking.gke.io/gateway",)
    assert LOCAL_CONTROLLER in shipped["reference"].controller_names
    assert (shipped["gke"].seen_live, shipped["reference"].seen_live) == (False, True)


def test_gke_profile_is_what_facts_section_9_documents():
    """Reconciled must be True on HTTPRoutes (GKE's own); a healthy pool's ResolvedRefs need only not be False;
    minutes of programming; 404 'fault filter abort' while not programmed; BBR as a GCPRoutingExtension."""
    gke = load_profile("gke")
    assert [r.describe() for r in gke.implementation_rules("HTTPRoute")] == ["Reconciled=True"]
    assert gke.rule("InferencePool", "ResolvedRefs").status == NOT_FALSE
    assert (gke.condition_seconds(None), gke.warmup_seconds(None), gke.condition_seconds(15)) == (600, 900, 15)
    assert answer_kind(gke.answers, 404, b"fault filter abort") is AnswerKind.NOT_PROGRAMMED
    assert gke.bbr_attachment == profiles.GCP_ROUTING_EXTENSION


def test_reference_profile_is_the_strict_upstream_set_with_timings_defaults():
    reference = load_profile("reference")
    assert {kind: [r.describe() for r in rules] for kind, rules in reference.rules.items()} == {
        "Gateway": ["Accepted=True", "Programmed=True"], "HTTPRoute": ["Accepted=True", "ResolvedRefs=True"],
        "InferencePool": ["Accepted=True", "ResolvedRefs=True"]}
    assert (reference.condition_seconds(None), reference.warmup_seconds(None)) == (
        timing.DEFAULT.condition, timing.DEFAULT.gateway_warmup)


# ---------------------------------------------------------------- loader errors

@pytest.mark.parametrize(("changes", "expected"), [
    ({"seenLive": "yes"}, "seenLive: expected true or false, found a string ('yes')"),
    ({"colour": "blue"}, "colour: unknown key (allowed here: answers, bbr, conditions, controllerNames, description, "
                         "name, seenLive, timeouts)"),
    ({"bbr": None}, "bbr: required field is missing (add it as a mapping)"),
    ({"controllerNames": []}, "controllerNames: name at least one GatewayClass controllerName"),
    ({"controllerNames": ["a/b", "a/b"]}, "controllerNames[1]: 'a/b' is listed twice"),
    ({"conditions": {"Route": {}}}, "conditions.Route: unknown key (allowed here: Gateway, HTTPRoute, InferencePool)"),
    ({"conditions": {"HTTPRoute": {"mustBeTrue": ["Accepted"], "mustNotBeFalse": ["Accepted"]}}},
     "conditions.HTTPRoute: condition Accepted is listed more than once; keep one expectation"),
    ({"conditions": {"HTTPRoute": {"implementationOnly": {"mustBeTrue": ["not a type!"]}}}},
     "conditions.HTTPRoute.implementationOnly.mustBeTrue: 'not a type!' is not a condition type (CamelCase, "
     "optionally prefixed by a DNS subdomain and '/')"),
    ({"timeouts": {"condition": 0}}, "timeouts.condition: must be in (0, 86400], found 0 (seconds)"),
    ({"answers": {"noRoute": [], "notProgrammed": []}},
     "answers.noRoute: name the answer of a request no rule matches (Envoy: {status: 404, body: \"\"})"),
    ({"answers": {"noRoute": [{"status": 404, "body": 3}], "notProgrammed": []}},
     "answers.noRoute[0].body: expected the whole body as text (\"\" for none), found 3"),
    ({"answers": {"noRoute": [{"status": 404}], "notProgrammed": [{"status": 404, "text": "x"}]}},
     "answers.notProgrammed[0].text: unknown key (allowed here: body, status)"),
    ({"answers": {"noRoute": [{"status": 404, "body": ""}], "notProgrammed": [{"status": 404, "body": ""}]}},
     "answers: 404 with an empty body is both the no-route answer and the not-programmed one: they must be told apart"),
    ({"bbr": {"attachment": "EnvoyFilter"}}, "bbr.attachment: 'EnvoyFilter' is not one of extProc, GCPRoutingExtension"),
])
def test_schema_errors_name_the_field_and_the_fix(tmp_path, changes, expected):
    assert problems(reference_with(**changes), tmp_path) == [expected]


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(reference_with(seenLive=1, bbr={"attachment": "x"}, timeouts={"warmup": -1}), tmp_path)
    assert [line.split(":")[0] for line in found] == ["seenLive", "timeouts.warmup", "bbr.attachment"]


def test_invalid_yaml_and_duplicate_keys_say_where(tmp_path):
    assert problems("name: a\nname: b\n", tmp_path) == [
        "line 2, column 1: invalid YAML: duplicate key 'name' (first at line 1); keep only one"]
    assert problems("name: [\n", tmp_path)[0].startswith("line 2, column 1: invalid YAML:")


def test_unknown_name_missing_file_and_name_mismatch(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match=r"unknown gateway profile 'envoy' \(known: gke, istio, kgateway, reference\)"):
        load_profile("envoy")
    with pytest.raises(ProfileError, match=r"gateway profile file /nowhere/p.yaml does not exist"):
        load_profile("/nowhere/p.yaml")
    (tmp_path / "renamed.yaml").write_text(REFERENCE_TEXT)
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    with pytest.raises(ProfileError, match=r"renamed.yaml: name: 'reference' differs from the file name 'renamed'"):
        load_profile("renamed")


def test_a_controller_claimed_twice_is_refused(tmp_path, monkeypatch):
    (tmp_path / "reference.yaml").write_text(REFERENCE_TEXT)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(reference_with(name="other")))
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    with pytest.raises(ProfileError, match=f"controllerName {LOCAL_CONTROLLER} is claimed by gateway profiles other and "
                                           f"reference; keep it in one"):
        builtin_profiles()


# ---------------------------------------------------------------- choosing by the GatewayClass

class ClassKube:
    """The two reads choose_profile makes: the Gateway, then its GatewayClass."""

    def __init__(self, gateway_class: str | None, controller: str | None):
        self.gateway_class, self.controller = gateway_class, controller
        self.custom = self

    def get_gateway_object(self, namespace, plural, name):
        if self.gateway_class is None:
            raise client.ApiException(status=404, reason="Not Found")
        return {"spec": {"gatewayClassName": self.gateway_class}}

    def get_cluster_custom_object(self, group, version, plural, name):
        if self.controller is None:
            raise client.ApiException(status=404, reason="Not Found")
        return {"spec": {"controllerName": self.controller}}


@pytest.mark.parametrize(("controller", "profile"), [
    ("networking.gke.io/gateway", "gke"), ("istio.io/gateway-controller", "istio"), ("kgateway.dev/kgateway", "kgateway"),
    (LOCAL_CONTROLLER, "reference")])
def test_profile_is_chosen_by_the_controller_name(controller, profile):
    choice = choose_profile(ClassKube("some-class", controller), NS, GATEWAY)
    assert (choice.profile.name, choice.warning) == (profile, None)
    assert choice.as_property()["chosenBy"] == "GatewayClass some-class controllerName"
    assert choice.as_property().get("ownConditions") == (["HTTPRoute Reconciled=True"] if profile == "gke" else None)


def test_unknown_controller_gets_the_strict_profile_and_a_warning():
    choice = choose_profile(ClassKube("nginx", "gateway.nginx.org/nginx-gateway-controller"), NS, GATEWAY)
    assert choice.profile.name == "reference"
    assert choice.warning == ("no gateway profile names controllerName 'gateway.nginx.org/nginx-gateway-controller' "
                              "of GatewayClass nginx; judged by the strict reference profile (pass --gateway-profile "
                              "NAME|FILE to choose one)")
    assert choice.as_property()["controllerName"] == "gateway.nginx.org/nginx-gateway-controller"


def test_unreadable_gateway_or_class_gets_the_strict_profile_saying_why():
    assert choose_profile(ClassKube(None, None), NS, GATEWAY).warning.startswith(
        f"cannot read Gateway {NS}/{GATEWAY} (HTTP 404 Not Found); judged by the strict reference profile")
    assert choose_profile(ClassKube("gone", None), NS, GATEWAY).warning.startswith(
        f"cannot read GatewayClass gone of Gateway {NS}/{GATEWAY} (HTTP 404 Not Found)")


# ---------------------------------------------------------------- three kinds of 404

OPENAI_404 = json.dumps({"error": {"message": "The model `no/such` does not exist.", "type": "NotFoundError",
                                   "param": None, "code": 404}}).encode()


@pytest.mark.parametrize(("profile", "status", "body", "kind"), [
    ("reference", 404, b"", AnswerKind.NO_ROUTE),
    ("reference", 404, OPENAI_404, AnswerKind.BACKEND),
    ("reference", 404, b"fault filter abort", AnswerKind.UNRECOGNISED),
    ("reference", 503, b"no healthy upstream", None),
    ("gke", 404, b"fault filter abort\n", AnswerKind.NOT_PROGRAMMED),
    ("gke", 404, OPENAI_404, AnswerKind.BACKEND),
    ("gke", 404, b"response 404 (backend NotFound)", AnswerKind.NO_ROUTE),
    ("gke", 500, b"fault filter abort", None),  # a missing pool, not a wait
])
def test_each_kind_of_404_is_told_apart(profile, status, body, kind):
    assert answer_kind(load_profile(profile).answers, status, body) is kind


def drive(profile: str, status: int, body: bytes, model: str, known: bool):
    spec = RequestSpec(model=model, endpoint=COMPLETIONS, stream=False, prompt="hi", max_tokens=4, temperature=0.0,
                       known=known)

    async def run():
        transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
        async with TrafficDriver("http://gateway.test", answers=load_profile(profile).answers,
                                 transport=transport) as driver:
            return await driver.send(0, spec)
    return asyncio.run(run())


def test_not_programmed_after_warm_up_is_a_gateway_error_never_no_route_or_misroute():
    for known, model in ((False, "no/such"), (True, GEMMA)):
        result = drive("gke", 404, b"fault filter abort", model, known)
        assert (result.outcome, result.error_type) == (Outcome.GATEWAY_ERROR, "NotProgrammed"), result.describe()
        assert "the gke gateway's answer while not yet programmed (404 with 'fault filter abort')" in result.error_message


def test_no_route_answer_is_correct_only_for_an_unknown_model():
    unknown = drive("reference", 404, b"", "no/such", False)
    assert (unknown.outcome, unknown.error_type) == (Outcome.UNKNOWN_NO_ROUTE, "NoRoute")
    known = drive("reference", 404, b"", GEMMA, True)
    assert (known.outcome, known.error_type) == (Outcome.GATEWAY_ERROR, "NoRoute")
    assert "the reference gateway's no-route answer (404 with an empty body)" in known.error_message


def test_backend_404_counts_for_an_unknown_model_only_when_it_names_it():
    assert drive("reference", 404, OPENAI_404, "no/such", False).outcome is Outcome.OK_UNKNOWN
    assert drive("reference", 404, OPENAI_404, "other/model", False).outcome is Outcome.GATEWAY_ERROR
    assert drive("reference", 404, OPENAI_404.replace(b"no/such", GEMMA.encode()), GEMMA, True).outcome \
        is Outcome.MISROUTED


def test_unrecognised_404_for_an_unknown_model_is_a_gateway_error_saying_so():
    result = drive("reference", 404, b"fault filter abort", "no/such", False)
    assert result.outcome is Outcome.GATEWAY_ERROR
    assert result.error_message == ("not JSON: 'fault filter abort'; a 404 that is neither a backend's OpenAI-style "
                                    "error nor one of the reference gateway's own answers")


# ---------------------------------------------------------------- the warm-up waits through "not programmed"

def test_fault_filter_abort_makes_the_warm_up_wait():
    """GKE answers 404 `fault filter abort` while programming: the warm-up keeps waiting and settles after."""
    def answer(model, n):
        return (404, b"fault filter abort") if n <= 5 else (200, {"model": model})

    with completions_gateway(answer) as url:
        settled = await_serving(url, [GEMMA], timeout=10, interval=0.05, answers=load_profile("gke").answers)
    assert settled["converged"] and settled["not_programmed"] == [], settled


def test_a_gateway_still_not_programmed_is_reported_by_kind():
    with completions_gateway(lambda model, n: (404, b"fault filter abort")) as url:
        settled = await_serving(url, [GEMMA], timeout=0.2, interval=0.05, answers=load_profile("gke").answers)
    assert not settled["converged"] and settled["not_programmed"] == [GEMMA]
    assert settled["not_serving"][GEMMA] == ("404 not JSON: 'fault filter abort': the gke gateway's answer while not "
                                             "yet programmed (404 with 'fault filter abort')")


# ---------------------------------------------------------------- GKE's BBR objects

def extension(gateway: str = GATEWAY, service: str = "body-based-router", port: int = 9004) -> dict:
    """As GIE v1.5.0's body-based-routing chart renders it with provider.name=gke."""
    return {"metadata": {"name": "body-based-router"},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}],
                     "extensionChains": [{"name": "chain1", "extensions": [{"name": "ext1", "backendRef": {
                         "group": "", "kind": "Service", "name": service, "port": port}}]}]}}


POLICY = {"metadata": {"name": "bbr-healthcheck"},
          "spec": {"targetRef": {"group": "", "kind": "Service", "name": "body-based-router", "namespace": NS}}}


def test_routing_extension_and_health_check_as_the_chart_renders_them_pass():
    assert gcp_routing_extension_problems([extension()], [POLICY], NS, GATEWAY, "body-based-router", 9004) == []


def test_routing_extension_on_the_wrong_port_is_named_with_what_it_holds():
    assert gcp_routing_extension_problems([extension(port=9005)], [POLICY], NS, GATEWAY, "body-based-router", 9004) == [
        f"no GCPRoutingExtension in {NS} targets Gateway {GATEWAY} with an extension whose backendRef Service "
        f"body-based-router port 9004; GCPRoutingExtensions: body-based-router (targets Gateway {GATEWAY}; "
        f"backendRefs Service body-based-router port 9005)"]


def test_missing_routing_extension_and_health_check_are_both_named():
    assert gcp_routing_extension_problems([], [], NS, GATEWAY, "body-based-router", 9004) == [
        f"no GCPRoutingExtension in {NS} targets Gateway {GATEWAY} with an extension whose backendRef Service "
        f"body-based-router port 9004; GCPRoutingExtensions: none",
        f"no HealthCheckPolicy in {NS} targets Service body-based-router (the load balancer health-checks BBR "
        f"through it); HealthCheckPolicies: none"]


# ---------------------------------------------------------------- the checks judge by the profile

ROUTE_CHECKS = dedent("""
    from suites.test_httproute_binding import (test_httproute_implementation_conditions_hold,
                                               test_httproute_is_accepted_by_the_gateway,
                                               test_httproute_references_are_resolved)
""")
RECONCILE_FAILED = ("error cause: backend-error: Error GWCER-LOCAL: InferencePool llm-d/gaie-phi has no "
                    "ready endpoints")


def route_cluster(api_server, controller: str) -> None:
    """A cluster whose HTTPRoute is Accepted and ResolvedRefs but Reconciled=False, as GKE shows a pool without pods."""
    custom = "/apis/gateway.networking.k8s.io/v1"
    conditions = [{"type": "Accepted", "status": "True", "reason": "Accepted"},
                  {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
                  {"type": "Reconciled", "status": "False", "reason": "ReconciliationFailed",
                   "message": RECONCILE_FAILED}]
    api_server.routes.update({
        "/apis/inference.networking.k8s.io/v1": resources("inferencepools"),
        f"/api/v1/namespaces/{NS}": (200, {"kind": "Namespace", "metadata": {"name": NS}}),
        f"{custom}/namespaces/{NS}/gateways/{GATEWAY}": (200, {"spec": {"gatewayClassName": "the-class"}}),
        f"{custom}/gatewayclasses/the-class": (200, {"spec": {"controllerName": controller}}),
        f"{custom}/namespaces/{NS}/httproutes/{ROUTE}": (200, {
            "metadata": {"name": ROUTE, "generation": 1},
            "status": {"parents": [{"parentRef": {"name": GATEWAY}, "conditions": conditions}]}}),
    })


def run_route_checks(pytester, monkeypatch, api_server, controller: str):
    route_cluster(api_server, controller)
    monkeypatch.setenv("FAKE_KUBECONFIG", str(write_kubeconfig(pytester.path / "kubeconfig", api_server.url)))
    pytester.makepyfile(test_routes=ROUTE_CHECKS)
    return pytester.runpytest_subprocess("--target", "fake", "--condition-timeout", "1", "-p", "no:cacheprovider", "-rs")


def test_reconciled_false_fails_under_gke_naming_its_message(suite_pytester, monkeypatch, api_server):
    result = run_route_checks(suite_pytester, monkeypatch, api_server, "networking.gke.io/gateway")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        f"E*HTTPRoute {NS}/{ROUTE}: expected Reconciled=True for parent Gateway {GATEWAY}, found Reconciled=False "
        f"reason=ReconciliationFailed message='{RECONCILE_FAILED}'*"])


def test_reconciled_false_passes_under_reference_which_does_not_judge_it(suite_pytester, monkeypatch, api_server):
    result = run_route_checks(suite_pytester, monkeypatch, api_server, LOCAL_CONTROLLER)
    result.assert_outcomes(passed=3)


def test_a_cluster_without_the_gke_crds_says_bbr_cannot_be_attached():
    class NoGkeCrds:
        custom = None

        def list_namespaced_custom_object(self, group, version, namespace, plural):
            raise client.ApiException(status=404, reason="Not Found")

    kube = NoGkeCrds()
    kube.custom = kube
    assert profiles.bbr_attachment_problems(kube, load_topology("pattern2")) == [
        f"the cluster serves no gcproutingextensions (networking.gke.io/v1): the GCPRoutingExtension that attaches "
        f"BBR to Gateway {GATEWAY} cannot exist"]
