"""Check 6: smoke. One request per model through the gateway, and the status conditions of the
Gateway, the HTTPRoutes and the InferencePools in one look: seconds on a healthy deployment. The
conditions judged, and the gateway's own error answers, are the gateway profile's."""
from __future__ import annotations

import httpx
import pytest

from llmd_conformance import timing
from llmd_conformance.kube import (
    NOT_FALSE,
    condition_mismatch,
    find_condition,
    format_parents,
    generation_of,
    get_or_none,
    parent_status,
)
from llmd_conformance.traffic import whose_answer
from llmd_conformance.waits import wait_for

pytestmark = [pytest.mark.smoke, pytest.mark.pattern2, pytest.mark.pattern1]

POD_HEADER = "x-inference-pod"
EXCERPT = 300


def test_model_answers_through_the_gateway(gateway_url, topology_model, gateway_profile):
    """One completion request for the model through the gateway (no retry) gets 200 naming that model."""
    url = f"{gateway_url}/v1/completions"
    body = {"model": topology_model.id, "prompt": "Say hello.", "max_tokens": 8, "temperature": 0}
    with httpx.Client(timeout=timing.DEFAULT.smoke_request, trust_env=False) as http:
        try:
            response = http.post(url, json=body)
        except httpx.TransportError as exc:
            pytest.fail(f"POST {url} for model {topology_model.id}: no HTTP answer ({type(exc).__name__}: {exc})",
                        pytrace=False)
    pod = response.headers.get(POD_HEADER, "(no pod header)")
    status, expected = response.status_code, topology_model.id
    whose = whose_answer(gateway_profile.answers, status, response.content)
    assert status == 200, (f"POST {url} for model {expected}: HTTP {status}{whose}, expected 200 (pod {pod}); "
                           f"body: {response.text[:EXCERPT]!r}")
    try:
        answered = response.json().get("model")
    except (ValueError, AttributeError):
        pytest.fail(f"POST {url}: 200 but not a JSON object: {response.text[:EXCERPT]!r}", pytrace=False)
    assert answered == expected, (f"POST {url} for model {expected} was answered by model {answered!r} (pod {pod}): "
                                  f"it reached a backend of another model")


def _parent_problems(kind, namespace, name, obj, parents, gateway, rules) -> list[str]:
    if obj is None:
        return [f"{kind} {namespace}/{name} not found"]
    parent = parent_status(parents, gateway, namespace)
    if parent is None:
        if all(rule.status == NOT_FALSE for rule in rules):  # no entry, so no False
            return []
        return [f"{kind} {namespace}/{name}: no status entry for Gateway {gateway} (parents: {format_parents(parents)})"]
    problems = []
    for rule in rules:
        why = condition_mismatch(find_condition(parent.get("conditions"), rule.type), rule.status, None,
                                 generation_of(obj))
        if why:
            problems.append(f"{kind} {namespace}/{name}: expected {rule.describe()} for Gateway {gateway}, {why}")
    return problems


def test_status_conditions_are_true(kube, topology, gateway_profile, condition_timeout):
    """Every condition the gateway profile judges holds: the Gateway's, and each HTTPRoute's and
    InferencePool's for the Gateway (reference: Accepted+Programmed; Accepted+ResolvedRefs)."""
    namespace, gateway = topology.namespace, topology.gateway_name
    rules = gateway_profile.rules

    def check():
        problems = []
        gateway_obj = get_or_none(lambda: kube.get_gateway_object(namespace, "gateways", gateway))
        if gateway_obj is None:
            problems.append(f"Gateway {namespace}/{gateway} not found")
        else:
            conditions = (gateway_obj.get("status") or {}).get("conditions")
            for rule in rules["Gateway"]:
                why = condition_mismatch(find_condition(conditions, rule.type), rule.status, None,
                                         generation_of(gateway_obj))
                if why:
                    problems.append(f"Gateway {namespace}/{gateway}: expected {rule.describe()}, {why}")
        for route in topology.routes:
            obj = get_or_none(lambda name=route.name: kube.get_gateway_object(namespace, "httproutes", name))
            parents = ((obj or {}).get("status") or {}).get("parents") or []
            problems += _parent_problems("HTTPRoute", namespace, route.name, obj, parents, gateway, rules["HTTPRoute"])
        for pool in topology.pools:
            obj = get_or_none(lambda name=pool.name: kube.get_pool(namespace, name))
            parents = kube.pool_api.parents(obj or {})
            problems += _parent_problems(f"InferencePool ({kube.pool_api.api_version})", namespace, pool.name, obj,
                                         parents, gateway, rules["InferencePool"])
        assert not problems, (f"status conditions not as {gateway_profile.title()} expects them:\n"
                              + "\n".join(f"  {p}" for p in problems))
    # A broken deployment must not hold the quick subset, unless the gateway takes minutes by its profile.
    wait_for(check, min(condition_timeout, gateway_profile.condition_timeout or timing.DEFAULT.smoke_condition))
