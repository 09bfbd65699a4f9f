"""The whole routing check below pytest: a generated mix, the driver, the sequential verdict, the
diagnosis and the summary, against fake gateways through httpx.MockTransport."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random

import pytest

from llmd_conformance.mixes import topology_mix
from llmd_conformance.topology import Topology, load_topology
from llmd_conformance.traffic import Outcome, TrafficDriver
from llmd_conformance.verdict import (Criteria, PodMap, RoutingRun, SequentialTest, diagnose, explain, format_run,
                                      measure_routing, routing_summary)
from tests_unit.test_routing_fakes import (FakeCoreApi, FakeGateway, FakePod, Pick, blind, by_model, catch_all,
                                           misrouting, topology_pods)
from llmd_conformance.fixtures.routing_plugin import cluster_pod_maps

BATCH = 10


def run_check(topology: Topology, gateway: FakeGateway, *, requests: int | None = None, mix_seed: int = 99,
              replay: bool = False) -> RoutingRun:
    """As suites/test_routing_accuracy.py runs it: the mix at every model's floor, per-model verdicts."""
    criteria = Criteria.from_expectation(topology.routing, requests=requests)
    mix = topology_mix(topology, criteria.requests, mix_seed)
    criteria = dataclasses.replace(criteria, requests=len(mix))

    async def run():
        async with TrafficDriver("http://gateway.test", concurrency=4, transport=gateway.transport()) as driver:
            return await measure_routing(driver, mix, SequentialTest(criteria, BATCH), batch_size=BATCH,
                                         per_model=topology.routing.per_model,
                                         seed_replay_models=[m.id for m in topology.models] if replay else (),
                                         seed_rng=random.Random(mix_seed), seed_retry_interval=0.0)
    return asyncio.run(run())


def diagnosis_of(topology: Topology, run: RoutingRun) -> str | None:
    pod_models, pool_pods = cluster_pod_maps(FakeCoreApi(topology_pods(topology)), topology)
    return diagnose(topology, run.results, pod_models, pool_pods)


def test_pattern2_routing_by_model_passes_after_every_planned_request():
    """BBR + one pool per model: all 300 requests correct, lower bound 0.987 >= 0.98, a pass."""
    topology = load_topology("pattern2")
    gateway = FakeGateway(topology_pods(topology), by_model)
    run = run_check(topology, gateway)
    assert run.decision.passed, run.decision.headline()
    assert (run.decision.tally.trials, gateway.requests, run.decision.stopped_early) == (300, 300, False)
    assert run.slices.by_outcome[Outcome.UNKNOWN_NO_ROUTE] == 15
    assert round(run.decision.lower_bound, 3) == 0.987


def test_single_pool_design_fails_within_ten_requests_naming_the_model_blind_pool():
    """The seed's single pool: the first batch already misroutes; the diagnosis names the pool."""
    topology = load_topology("pattern2-single-pool")
    gateway = FakeGateway(topology_pods(topology), blind, seed=5)
    run = run_check(topology, gateway)
    diagnosis = diagnosis_of(topology, run)
    message = explain(run.decision, run.results, run.slices, diagnosis)
    assert not run.decision.passed and run.decision.stopped_early
    assert gateway.requests == BATCH
    assert diagnosis.startswith("model-blind pool: InferencePool gaie-pattern2 selects pods of 2 models "
                                "(google/gemma-2b-it, microsoft/Phi-3-mini-4k-instruct)")
    assert "misrouted requests:" in message and "The model `" in message


@pytest.mark.parametrize("mix_seed", range(5))
def test_a_fifth_misrouted_fails_within_thirty_requests(mix_seed):
    """pattern2 with 20% of requests sent to the other model's pod fails by request 30 (each seed)."""
    topology = load_topology("pattern2")
    gateway = FakeGateway(topology_pods(topology), misrouting(0.2), seed=mix_seed)
    run = run_check(topology, gateway, mix_seed=mix_seed)
    assert not run.decision.passed and run.decision.tally.trials <= 30, run.decision.headline()


def test_backends_that_accept_any_model_name_are_caught():
    """A deployment answering 200 for names no backend serves fails with unknown_accepted."""
    topology = load_topology("pattern2-single-pool")
    gateway = FakeGateway(topology_pods(topology), catch_all, lenient=True)
    run = run_check(topology, gateway)
    assert not run.decision.passed
    assert run.slices.by_outcome[Outcome.UNKNOWN_ACCEPTED] >= 1
    assert "unknown_accepted" in explain(run.decision, run.results, run.slices, None)


def test_summary_is_json_and_carries_table_matrix_and_seed_figure():
    """The report summary is plain JSON data with the per-model table, the matrix and, when the
    seed loop is replayed, its figure beside the first-attempt accuracy."""
    topology = load_topology("pattern2-single-pool")
    run = run_check(topology, FakeGateway(topology_pods(topology), blind, seed=8), replay=True)
    diagnosis = diagnosis_of(topology, run)
    summary = routing_summary(run, topology=topology.name, mix_seed=99, diagnosis=diagnosis)
    json.dumps(summary, allow_nan=False)
    assert summary["passed"] is False and summary["requests_sent"] == BATCH
    assert set(summary["models"]) >= {"google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct"}
    assert "ms-gemma-decode-0" in summary["matrix"]["google/gemma-2b-it"]
    seed = summary["seed_protocol"]
    assert seed["requests"] == 50 and seed["successes"] >= 49 and seed["first_attempt_successes"] <= 40
    text = format_run(run, topology=topology.name, mix_seed=99, diagnosis=diagnosis)
    assert "replay with --mix-seed 99" in text and "routing matrix" in text
    assert "seed protocol (up to 10 attempts per request)" in text and "not part of the verdict" in text


def test_seed_replay_never_changes_the_verdict():
    """A passing run stays a pass and a failing one a failure with the seed loop replayed."""
    pattern2 = load_topology("pattern2")
    assert run_check(pattern2, FakeGateway(topology_pods(pattern2), by_model), replay=True).decision.passed
    single = load_topology("pattern2-single-pool")
    run = run_check(single, FakeGateway(topology_pods(single), blind, seed=2), replay=True)
    assert not run.decision.passed and run.seed_replay.successes >= 49


SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
QWEN = "Qwen/Qwen2.5-1.5B-Instruct"


def pool_also_selects(model: str, foreign: str) -> Pick:
    """By model, except that `model`'s pool also selects the pods of `foreign`: its EPP picks among both."""
    def pick(requested: str, pods, rng: random.Random) -> FakePod | None:
        if requested == model:
            return rng.choice([p for p in pods if p.model in (model, foreign)])
        return by_model(requested, pods, rng)
    return pick


@pytest.mark.parametrize("mix_seed", range(20))
def test_the_light_model_whose_pool_also_selects_another_models_pod_fails_alone(mix_seed):
    """pattern2-4-models, SmolLM (1%) behind a pool that also selects the Qwen pod: SmolLM fails early on
    its own requests, named with its slice of the matrix and the foreign pod; the three heavier models
    send every planned request and pass. Every one of 20 seeds (the fault's 20 runs, on fakes)."""
    topology = load_topology("pattern2-4-models")
    pods = topology_pods(topology)
    run = run_check(topology, FakeGateway(pods, pool_also_selects(SMOL, QWEN), seed=mix_seed), mix_seed=mix_seed)
    decision = run.decision
    verdicts = {v.model: v for v in decision.models}
    assert not decision.passed and [v.model for v in decision.failed_models] == [SMOL]
    assert verdicts[SMOL].stopped_early and verdicts[SMOL].tally.trials < 29
    assert all(v.passed and v.tally.trials == v.planned for m, v in verdicts.items() if m != SMOL)
    pod_models = {p.name: p.model for p in pods}
    pool_pods = {pool.name: {p.name for p in pods if topology.model(p.model).pool == pool.name} for pool in topology.pools}
    pool_pods["gaie-smollm"].add("ms-qwen-decode-0")
    diagnosis = diagnose(topology, run.results, pod_models, pool_pods)
    assert diagnosis.startswith(f"model-blind pool: InferencePool gaie-smollm selects pods of 2 models ({SMOL}, {QWEN})"
                                f": it also selects pod ms-qwen-decode-0 of {QWEN}")
    message = explain(decision, run.results, run.slices, diagnosis, PodMap.of(topology, pod_models))
    assert f"1 of 4 models failed on their own requests: {SMOL};" in message
    misrouted = verdicts[SMOL].tally.misroutes
    assert f"model {SMOL} FAIL early: {misrouted} misrouted answer(s) in" in message
    slice_line = next(line for line in message.splitlines() if line.startswith(f"model {SMOL} FAIL early"))
    assert f"; answered by (no pod header) {misrouted}" in slice_line and f"(no pod header) {misrouted})" in slice_line


def test_pattern2_sends_its_300_and_each_model_passes_on_its_own():
    """Per-model verdicts leave pattern2 as it was: 300 requests, no early stop, both models PASS."""
    topology = load_topology("pattern2")
    run = run_check(topology, FakeGateway(topology_pods(topology), by_model))
    assert run.decision.passed and run.decision.tally.trials == 300 and not run.decision.stopped_early
    assert [(v.model, v.label, v.planned) for v in run.decision.models] == [
        ("google/gemma-2b-it", "PASS", 143), ("microsoft/Phi-3-mini-4k-instruct", "PASS", 142)]
    assert "each of 2 models passed on its own requests" in run.decision.headline()


def test_sixteen_models_read_as_a_table_and_a_compact_matrix():
    """16 models: one table row per model with its verdict and bound; the compact matrix has one column
    ("own pods") on a healthy deployment, not one per pod; the summary keeps the full matrix."""
    topology = load_topology("pattern2-16-models")
    pods = topology_pods(topology)
    run = run_check(topology, FakeGateway(pods, by_model))
    pod_map = PodMap.of(topology, {p.name: p.model for p in pods})
    text = format_run(run, topology=topology.name, mix_seed=99, diagnosis=None, pods=pod_map)
    assert run.decision.passed and len(run.decision.models) == 16
    table = text.split("\n\n")[1].splitlines()
    assert table[0].split()[:4] == ["model", "verdict", "planned", "sent"] and len(table) == 18  # + unknown row
    assert all(" PASS " in row for row in table[1:17])
    matrix = text.split("\n\n")[2].splitlines()
    assert matrix[1].split()[-5:] == ["own", "pods", "(no", "pod", "header)"] and len(matrix) == 2 + 17
    assert max(len(line) for line in matrix[1:]) < 80
    summary = routing_summary(run, topology=topology.name, mix_seed=99, diagnosis=None, pods=pod_map,
                              per_model=topology.routing.per_model)
    assert len(summary["matrix"]) == 17 and summary["per_model_criterion"]["floor"] == 29


def test_pod_maps_follow_the_deployed_selectors_not_the_topologys():
    """A pool edited in the cluster selects what its deployed selector says; a missing pool selects nothing."""
    topology = load_topology("pattern2-4-models")
    pods = [FakePod(p.name, p.model, {**p.labels, "llm-d.ai/size": "small"} if p.model in (SMOL, QWEN) else p.labels)
            for p in topology_pods(topology)]
    selectors = {pool.name: pool.selector for pool in topology.pools}
    selectors["gaie-smollm"] = {"llm-d.ai/inferenceServing": "true", "llm-d.ai/size": "small"}
    selectors["gaie-phi"] = None
    pod_models, pool_pods = cluster_pod_maps(FakeCoreApi(pods), topology, selectors)
    assert pool_pods["gaie-smollm"] == {"ms-smollm-decode-0", "ms-qwen-decode-0"}
    assert pool_pods["gaie-qwen"] == {"ms-qwen-decode-0"} and pool_pods["gaie-phi"] == set()
    assert pod_models["ms-qwen-decode-0"] == QWEN
