"""Check 3: /v1/models discovery. Each backend pod lists exactly its model (asked through the API
server's pod proxy); together the backends serve exactly the topology's models; through the gateway
the listing is either routed (a catch-all rule) or not (rules that all name a model: the gateway's
own no-route answer, as its gateway profile describes it), and whether a routed listing is
aggregated or depends on which pod answered is recorded in the report."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from llmd_conformance import timing
from llmd_conformance.kube import label_selector, pod_proxy_get, pods_matching
from llmd_conformance.traffic import AnswerKind, answer_kind, whose_answer

pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]

MODELS_PATH = "v1/models"
GATEWAY_PROBES = 10
EXCERPT = 200
POD_HEADER = "x-inference-pod"


@dataclass(frozen=True)
class Listing:
    """One /v1/models answer: the model ids, or why there are none."""

    ids: frozenset[str] | None
    problem: str | None


def parse_listing(status: int, body: object) -> Listing:
    if status != 200:
        return Listing(None, f"HTTP {status}: {str(body)[:EXCERPT]!r}")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return Listing(None, f"not an OpenAI model list (no 'data' list): {str(body)[:EXCERPT]!r}")
    ids = [entry.get("id") for entry in data if isinstance(entry, dict)]
    if len(ids) != len(data) or not all(isinstance(i, str) for i in ids):
        return Listing(None, f"a 'data' entry has no string 'id': {str(body)[:EXCERPT]!r}")
    return Listing(frozenset(ids), None)


def _pod_listing(kube, namespace, pod, port) -> Listing:
    status, body = pod_proxy_get(kube.api_client, namespace, pod, port, MODELS_PATH)
    return parse_listing(status, body)


def _fmt(ids) -> str:
    return "[" + ", ".join(sorted(ids)) + "]"


def test_backend_pods_serve_only_their_model(kube, topology, topology_model):
    """Every pod of the model lists exactly the model's id and its LoRA adapters on /v1/models, on every
    target port of its pool."""
    pool = topology.pool(topology_model.pool)
    selector = topology_model.pod_labels  # the model's pods, also those its pool fails to select
    pods = pods_matching(kube.core, topology.namespace, selector)
    assert len(pods) > 0, f"model {topology_model.id}: no pod matches {label_selector(selector)} in {topology.namespace}"
    wrong = []
    for pod in pods:
        for port in pool.target_ports:
            listing = _pod_listing(kube, topology.namespace, pod.metadata.name, port)
            if listing.problem:
                wrong.append(f"  pod {pod.metadata.name} port {port}: {listing.problem}")
            elif listing.ids != {topology_model.id, *topology_model.adapters}:
                wrong.append(f"  pod {pod.metadata.name} port {port}: lists {_fmt(listing.ids)}")
    expected = _fmt({topology_model.id, *topology_model.adapters})
    assert not wrong, (f"model {topology_model.id}: expected every pod to list exactly {expected} "
                       f"on /{MODELS_PATH}:\n" + "\n".join(wrong[:5]))


def test_backends_serve_exactly_the_topology_models(kube, topology):
    """The models listed by all pods the pools select are the topology's models and adapters: none missing,
    none extra."""
    expected = {name for m in topology.models for name in (m.id, *m.adapters)}
    served: dict[str, list[str]] = {}
    problems = []
    seen = set()
    for pool in topology.pools:
        for pod in pods_matching(kube.core, topology.namespace, pool.selector):
            for port in pool.target_ports:
                if (pod.metadata.name, port) in seen:
                    continue
                seen.add((pod.metadata.name, port))
                listing = _pod_listing(kube, topology.namespace, pod.metadata.name, port)
                if listing.problem:
                    problems.append(f"  pod {pod.metadata.name} port {port}: {listing.problem}")
                for model in listing.ids or ():
                    served.setdefault(model, []).append(pod.metadata.name)
    missing = sorted(expected - served.keys())
    extra = [f"{model} (pods {', '.join(served[model])})" for model in sorted(served.keys() - expected)]
    assert not missing and not extra, (
        f"expected the backends of the pools to serve exactly {_fmt(expected)}; "
        + (f"missing: {', '.join(missing)}; " if missing else "")
        + (f"extra: {'; '.join(extra)}; " if extra else "")
        + f"{len(seen)} backend endpoint(s) asked" + ("\nunanswered:\n" + "\n".join(problems[:5]) if problems else ""))


def _gateway_answers(gateway_url: str) -> list[tuple[int, str, bytes, str]]:
    """(status, content type, body, answering pod) of GATEWAY_PROBES GETs of /v1/models, no retries."""
    answers = []
    with httpx.Client(timeout=timing.DEFAULT.models_request, trust_env=False) as http:
        for _ in range(GATEWAY_PROBES):
            response = http.get(f"{gateway_url}/{MODELS_PATH}")
            answers.append((response.status_code, response.headers.get("content-type", "?"), response.content,
                            response.headers.get(POD_HEADER, "?")))
    return answers


def describe_listing_mode(listings: list[frozenset[str]], models: set[str]) -> str:
    """'aggregated' when every answer lists every model, else which model sets came back how often."""
    if listings and all(ids == models for ids in listings):
        return "aggregated"
    counts = Counter(_fmt(ids) for ids in listings)
    return "depends on the answering pod: " + ", ".join(f"{ids} x{n}" for ids, n in sorted(counts.items()))


def test_gateway_models_listing_matches_routing(gateway_url, topology, conformance_report, gateway_profile):
    """GET /v1/models through the gateway lists only topology models when a catch-all rule routes it, else
    gets the gateway's no-route answer (reference: 404 with an empty body); other answers are named by kind."""
    url = f"{gateway_url}/{MODELS_PATH}"
    answers = _gateway_answers(gateway_url)
    models = {name for m in topology.models for name in (m.id, *m.adapters)}
    known = gateway_profile.answers
    if not topology.has_catch_all_rule:
        conformance_report.add_property("gatewayModelsListing", "not routed (every rule matches a model header)")
        wrong = [f"  answer {i + 1}: HTTP {status}{whose_answer(known, status, body)} {ctype} from pod {pod}: "
                 f"{body[:EXCERPT]!r}"
                 for i, (status, ctype, body, pod) in enumerate(answers)
                 if answer_kind(known, status, body) is not AnswerKind.NO_ROUTE]
        assert not wrong, (f"every HTTPRoute rule of topology {topology.name} matches the model header and GET {url} "
                           f"carries no model, so no rule matches and the Gateway must give "
                           f"{known.describe(AnswerKind.NO_ROUTE)}; {len(wrong)} of {len(answers)} answers differ:\n"
                           + "\n".join(wrong[:5]))
        return
    listings, wrong = [], []
    for i, (status, ctype, body, pod) in enumerate(answers):
        try:
            parsed = json.loads(body)
        except ValueError:
            wrong.append(f"  answer {i + 1}: HTTP {status}{whose_answer(known, status, body)} {ctype}, not JSON; "
                         f"first {EXCERPT} bytes: {body[:EXCERPT]!r}")
            continue
        listing = parse_listing(status, parsed)
        if listing.problem:
            wrong.append(f"  answer {i + 1} (pod {pod}){whose_answer(known, status, body)}: {listing.problem}")
        elif not listing.ids or not listing.ids <= models:
            wrong.append(f"  answer {i + 1} (pod {pod}): lists {_fmt(listing.ids)}")
        else:
            listings.append(listing.ids)
    conformance_report.add_property("gatewayModelsListing", describe_listing_mode(listings, models))
    assert not wrong, (f"expected every GET {url} to answer a JSON model list naming only topology models "
                       f"{_fmt(models)}; {len(wrong)} of {len(answers)} do not:\n" + "\n".join(wrong[:5]))
