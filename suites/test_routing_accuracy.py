"""Check 5: every request reaches a backend that serves the model its `model` field names, on the
first attempt, with a confidence bound that meets the topology's threshold.

Requests go out concurrently, never retried; hypothesis generates the mix (see llmd_conformance/mixes.py);
the sequential test fails a badly broken deployment within tens of requests (llmd_conformance/verdict.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from llmd_conformance.mixes import (CHAT_COMPLETIONS, COMPLETIONS, UNKNOWN_PREFIX, RequestSpec, topology_mix,
                                    topology_plan)
from llmd_conformance.fixtures.routing_plugin import add_terminal_summary, cluster_pod_maps, deployed_selectors
from llmd_conformance.components import cluster_rewrites
from llmd_conformance.health import ERRORS, diagnose_errors, read_health
from llmd_conformance.traffic import AnswerKind, Outcome, TrafficDriver
from llmd_conformance.verdict import (Criteria, PodMap, SequentialTest, diagnose, explain, format_run,
                                      measure_routing, routing_summary)

pytestmark = [pytest.mark.pattern2, pytest.mark.pattern1]


def test_first_attempt_routing_accuracy_meets_threshold(topology, gateway_url, kube, conformance_report,
                                                        routing_options, gateway_profile, pytestconfig):
    """First-attempt accuracy, with its lower confidence bound, reaches the topology's threshold, and
    every model passes on its own requests (each gets at least its floor)."""
    opts = routing_options
    criteria = Criteria.from_expectation(topology.routing, requests=opts.requests, threshold=opts.threshold,
                                         method=opts.bound)
    plan = topology_plan(topology, criteria.requests)
    mix = topology_mix(topology, criteria.requests, opts.mix_seed,
                       cluster_rewrites(kube.custom, topology.namespace))
    criteria = dataclasses.replace(criteria, requests=len(mix))
    per_model = topology.routing.per_model
    test = SequentialTest(criteria, opts.batch_size)

    async def run():
        async with TrafficDriver(gateway_url, concurrency=opts.concurrency, timeout=opts.request_timeout,
                                 answers=gateway_profile.answers) as driver:
            return await measure_routing(
                driver, mix, test, batch_size=opts.batch_size, per_model=per_model,
                seed_replay_models=[m.id for m in topology.models] if opts.replay_seed_protocol else (),
                seed_rng=random.Random(opts.mix_seed), seed_retry_interval=opts.seed_retry_interval,
                flow_control_budget=topology.flow_control_budget)

    before = read_health(kube, topology)  # to date restarts and replaced pods if the answers hold errors
    outcome = asyncio.run(run())
    parts = []
    # who answered, for the matrix and the diagnosis: pools as deployed
    pod_models, pool_pods = cluster_pod_maps(kube.core, topology, deployed_selectors(kube, topology))
    pods = PodMap.of(topology, pod_models)
    if not outcome.decision.passed:
        parts.append(diagnose(topology, outcome.results, pod_models, pool_pods))
    if any(r.outcome in ERRORS for r in outcome.results):  # also on a pass: a run that met errors says where
        parts.append(diagnose_errors(topology, outcome.results, before, read_health(kube, topology)))
    diagnosis = "; also ".join(p for p in parts if p) or None
    conformance_report.record_routing(
        routing_summary(outcome, topology=topology.name, mix_seed=opts.mix_seed, diagnosis=diagnosis,
                        plan=plan.describe(), per_model=per_model, pods=pods))
    add_terminal_summary(pytestconfig, format_run(outcome, topology=topology.name, mix_seed=opts.mix_seed,
                                                  diagnosis=diagnosis, plan=plan.describe(), pods=pods))
    if not outcome.decision.passed:  # the explanation is the evidence; pytest's assert rewriting only adds noise
        pytest.fail(explain(outcome.decision, outcome.results, outcome.slices, diagnosis, pods), pytrace=False)


def test_unknown_model_is_refused_with_404(topology, gateway_url, routing_options, gateway_profile):
    """A model no backend serves gets 404: from a backend with an OpenAI-style error body naming the
    model when a catch-all rule sends it to a pool, else the gateway's no-route answer (its profile's).
    A not-yet-programmed answer or a 404 of no known kind is neither."""
    served = [m.id for m in topology.models]
    names = [f"{UNKNOWN_PREFIX}no-such-model", served[0].upper(), f"{served[0]}-nonexistent",
             f"{UNKNOWN_PREFIX}another-missing-model"]
    specs = [RequestSpec(model=name, endpoint=endpoint, stream=stream, prompt="Say hello.", max_tokens=8,
                         temperature=0.0, known=False)
             for name, (endpoint, stream) in zip(names, [(COMPLETIONS, False), (CHAT_COMPLETIONS, False),
                                                         (COMPLETIONS, True), (CHAT_COMPLETIONS, True)])]
    expected = Outcome.OK_UNKNOWN if topology.has_catch_all_rule else Outcome.UNKNOWN_NO_ROUTE
    answers = gateway_profile.answers
    why = ("a catch-all HTTPRoute rule sends it to a pool, whose backend must answer 404 with an OpenAI error body "
           "naming the model" if expected is Outcome.OK_UNKNOWN else
           f"every HTTPRoute rule matches a served model, so the gateway must give "
           f"{answers.describe(AnswerKind.NO_ROUTE)}")

    async def run():
        async with TrafficDriver(gateway_url, concurrency=len(specs), timeout=routing_options.request_timeout,
                                 answers=answers) as driver:
            return await driver.send_all(specs)

    results = asyncio.run(run())
    wrong = [r for r in results if r.outcome is not expected]
    assert not wrong, (
        f"expected {expected.value} for every unknown model ({why}); {len(wrong)} of {len(results)} differ:\n"
        + "\n".join(f"  {r.describe()}" for r in wrong))
