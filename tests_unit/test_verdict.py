"""Confidence bounds, the sequential verdict, the diagnosis and the failure message.

Convention under test: `confidence` is the level of the two-sided interval whose end is returned
(FACTS.md's figures), `two_sided=False` gives the one-sided bound at that level.
"""
from __future__ import annotations

import math
import random
import re
from statistics import NormalDist

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llmd_conformance.mixes import COMPLETIONS, RequestSpec
from llmd_conformance.topology import load_topology, parse_topology
from llmd_conformance.traffic import Outcome, RequestResult, slices
from llmd_conformance.mixes import plan_mix
from llmd_conformance.verdict import (CLOPPER_PEARSON, WILSON, Criteria, ModelCriterion, PodMap, RoutingTest, SequentialTest,
                                      Tally, allowed_incorrect, binomial_cdf, binomial_tail, floor_requests,
                              clopper_pearson_lower, clopper_pearson_upper, diagnose, explain, format_models,
                              lower_bound, requests_needed, seed_protocol_pass_probability, unreachable,
                              upper_bound, wilson_lower, wilson_upper)

GEMMA = "google/gemma-2b-it"
PHI = "microsoft/Phi-3-mini-4k-instruct"


def exact_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_wilson_matches_the_reference_figures_two_sided():
    """Two-sided 95% Wilson lower ends: 50/50 -> 0.929, 300/300 -> 0.987 (FACTS.md)."""
    assert round(wilson_lower(50, 50, 0.95), 3) == 0.929
    assert round(wilson_lower(300, 300, 0.95), 3) == 0.987


def test_wilson_one_sided_is_the_less_conservative_convention():
    """One-sided 95% gives 0.949 and 0.991 for the same counts: z 1.645 instead of 1.960."""
    assert round(wilson_lower(50, 50, 0.95, two_sided=False), 3) == 0.949
    assert round(wilson_lower(300, 300, 0.95, two_sided=False), 3) == 0.991
    assert wilson_lower(50, 50, 0.975, two_sided=False) == pytest.approx(wilson_lower(50, 50, 0.95))


def test_wilson_matches_a_textbook_interval():
    """8/10 at 95%: Wilson (0.490, 0.943)."""
    assert (round(wilson_lower(8, 10, 0.95), 3), round(wilson_upper(8, 10, 0.95), 3)) == (0.490, 0.943)


def test_clopper_pearson_all_successes_has_the_closed_form():
    """For n/n the exact lower bound is alpha^(1/n): 0.05^(1/300) one-sided, 0.025^(1/300) two-sided."""
    assert clopper_pearson_lower(300, 300, 0.95, two_sided=False) == pytest.approx(0.05 ** (1 / 300), abs=1e-12)
    assert clopper_pearson_lower(300, 300, 0.95) == pytest.approx(0.025 ** (1 / 300), abs=1e-12)
    assert clopper_pearson_lower(50, 50, 0.95) == pytest.approx(0.025 ** (1 / 50), abs=1e-12)


def test_clopper_pearson_matches_a_textbook_interval():
    """8/10 at 95%: exact interval (0.444, 0.975)."""
    assert (round(clopper_pearson_lower(8, 10, 0.95), 3), round(clopper_pearson_upper(8, 10, 0.95), 3)) == \
        (0.444, 0.975)


@pytest.mark.parametrize(("k", "n", "p"), [(1, 1, 0.3), (3, 10, 0.2), (5, 50, 0.5), (290, 300, 0.97),
                                           (299, 300, 0.999), (0, 7, 0.4), (120, 200, 0.55)])
def test_binomial_tail_equals_the_exact_sum(k, n, p):
    """The incomplete-beta tail equals the direct binomial sum."""
    assert binomial_tail(k, n, p) == pytest.approx(exact_tail(k, n, p), rel=1e-9, abs=1e-15)


def test_clopper_pearson_bound_has_tail_probability_alpha():
    """At the CP lower bound the chance of >= k successes is exactly alpha."""
    bound = clopper_pearson_lower(270, 300, 0.9, two_sided=False)
    assert exact_tail(270, 300, bound) == pytest.approx(0.1, rel=1e-6)


@given(n=st.integers(1, 400), data=st.data(), confidence=st.floats(0.5, 0.999),
       method=st.sampled_from([WILSON, CLOPPER_PEARSON]))
def test_bounds_bracket_the_observed_accuracy_and_grow_with_successes(n, data, confidence, method):
    """lower <= k/n <= upper, and the lower bound never falls when a success is added."""
    k = data.draw(st.integers(0, n))
    low, high = lower_bound(method, k, n, confidence), upper_bound(method, k, n, confidence)
    assert 0 <= low <= k / n <= high <= 1
    if k < n:
        assert lower_bound(method, k + 1, n, confidence) >= low


@pytest.mark.parametrize(("call", "message"), [
    (lambda: wilson_lower(5, 4, 0.95), "successes <= trials"),
    (lambda: wilson_lower(0, 0, 0.95), "trials >= 1"),
    (lambda: clopper_pearson_lower(1, 2, 1.0), r"confidence must be in \(0, 1\)"),
    (lambda: lower_bound("bayes", 1, 2, 0.9), "unknown bound method 'bayes'"),
    (lambda: Criteria(0, 0, 1.2, 1.0, "x"), "requests must be >= 1, got 0; threshold must be in"),
])
def test_bad_inputs_raise_and_say_what_to_fix(call, message):
    """Impossible counts, levels and methods are refused with the rule they break."""
    with pytest.raises(ValueError, match=message):
        call()


def test_criteria_that_can_never_pass_are_refused_with_the_requests_needed():
    """50 requests cannot show 0.98 at 95% (50/50 -> 0.929): 189 can (Wilson), 183 (Clopper-Pearson)."""
    with pytest.raises(ValueError, match=re.escape(
            "50 requests can never pass: even 50/50 correct gives a wilson 95% lower bound of 0.9287 < 0.98; "
            "at least 189 requests are needed; send more or lower the threshold")):
        Criteria(50, 0, 0.98, 0.95)
    assert requests_needed(0.98, 0.95) == 189
    assert requests_needed(0.98, 0.95, CLOPPER_PEARSON) == 183
    assert wilson_lower(188, 188, 0.95) < 0.98 <= wilson_lower(189, 189, 0.95)


def test_too_few_requests_are_named_with_the_minimum_the_bound_needs():
    """All-correct Wilson bound n/(n + z^2) (z = 1.96): 5/5 gives 0.5655, so 0.98 needs
    n >= z^2 * 0.98 / 0.02 = 188.2, i.e. 189 requests; the reason says both."""
    z = NormalDist().inv_cdf(0.975)
    assert requests_needed(0.98, 0.95) == math.ceil(z * z * 0.98 / 0.02) == 189
    assert unreachable(5, 0.98, 0.95) == ("even 5/5 correct gives a wilson 95% lower bound of 0.5655 < 0.98; "
                                          "at least 189 requests are needed")
    assert unreachable(189, 0.98, 0.95) is None
    assert unreachable(300, 0.98, 0.999) == ("even 300/300 correct gives a wilson 99.9% lower bound of 0.9652 < "
                                             "0.98; at least 531 requests are needed")


def test_threshold_of_one_is_refused_before_any_request():
    """No number of requests makes a lower confidence bound reach 1: the threshold must be below 1."""
    with pytest.raises(ValueError, match=re.escape(
            "threshold must be in (0, 1), got 1.0 (a confidence lower bound stays below 1 however many requests "
            "are sent)")):
        Criteria(300, 0, 1.0, 0.95)
    assert wilson_lower(10**9, 10**9, 0.95) < 1


def test_seed_protocol_masking_figures():
    """(1 - (1-p)^10)^50: 0.952 at p=0.5, 0.881 at 0.45, 0.738 at 0.4 (FACTS.md)."""
    assert [round(seed_protocol_pass_probability(p), 3) for p in (0.5, 0.45, 0.4)] == [0.952, 0.881, 0.738]


CRITERIA = Criteria(requests=300, max_misroutes=0, threshold=0.98, confidence=0.95)


def simulate(test: SequentialTest, batch: int, outcome, rng: random.Random) -> tuple[int, str | None]:
    """Run the sequential test over simulated outcomes ('ok' / 'misroute' / 'error');
    returns (requests sent, early-failure reason)."""
    correct = misroutes = sent = 0
    while sent < test.criteria.requests:
        for _ in range(min(batch, test.criteria.requests - sent)):
            kind = outcome(rng)
            correct += kind == "ok"
            misroutes += kind == "misroute"
            sent += 1
        reason = test.early_failure(Tally(sent, correct, misroutes))
        if reason:
            return sent, reason
    return sent, None


def misroute_share(share: float):
    return lambda rng: "misroute" if rng.random() < share else "ok"


@pytest.mark.parametrize("method", [WILSON, CLOPPER_PEARSON])
def test_half_misrouting_fails_after_the_first_batch(method):
    """At 50% misrouting the first batch of 10 holds a misroute (p = 1 - 0.5^10) and ends the run."""
    test = SequentialTest(Criteria(300, 0, 0.98, 0.95, method), batch_size=10)
    stops = [simulate(test, 10, misroute_share(0.5), random.Random(seed))[0] for seed in range(300)]
    assert max(stops) <= 20 and sum(s == 10 for s in stops) >= 290, sorted(stops)[-10:]


def test_fifth_misrouting_fails_within_about_30_requests():
    """At 20% misrouting 95% of runs end within 30 requests (1 - 0.8^30 = 0.999)."""
    test = SequentialTest(CRITERIA, batch_size=10)
    stops = sorted(simulate(test, 10, misroute_share(0.2), random.Random(seed))[0] for seed in range(300))
    assert stops[int(0.95 * len(stops))] <= 30, stops[-20:]


@pytest.mark.parametrize(("share", "within"), [(0.5, 20), (0.2, 40)])
def test_without_a_misroute_budget_the_bounds_stop_bad_deployments_early(share, within):
    """With maxMisroutes = requests (only the accuracy bound applies), gateway errors at 50% / 20%
    still end 95% of runs within `within` requests, through the futility and upper-bound rules."""
    test = SequentialTest(Criteria(300, 300, 0.98, 0.95), batch_size=10)
    errors = lambda rng: "error" if rng.random() < share else "ok"  # noqa: E731
    runs = [simulate(test, 10, errors, random.Random(seed)) for seed in range(200)]
    stops = sorted(sent for sent, _ in runs)
    assert all(reason for _, reason in runs)
    assert stops[int(0.95 * len(stops))] <= within, stops[-10:]


def test_perfect_router_runs_10000_requests_and_passes():
    """A perfect router is never stopped early: 10,000 simulated requests, then a pass."""
    criteria = Criteria(requests=10_000, max_misroutes=0, threshold=0.98, confidence=0.95)
    test = SequentialTest(criteria, batch_size=10)
    sent, reason = simulate(test, 10, lambda rng: "ok", random.Random(0))
    decision = test.decide(Tally(sent, sent, 0))
    assert (sent, reason, decision.passed, decision.stopped_early) == (10_000, None, True, False)
    assert decision.lower_bound > 0.999


def test_early_failures_almost_never_fail_a_run_that_would_have_passed():
    """A 99.5%-accurate router (threshold 0.98, no misroute budget in play): among runs stopped
    early, those whose full 300 outcomes would have passed stay far below alpha = 5%, thanks to
    the futility rule being exact and the upper-bound rule corrected for 30 looks."""
    test = SequentialTest(Criteria(300, 300, 0.98, 0.95), batch_size=10)
    wrongly_stopped = 0
    for seed in range(300):
        rng = random.Random(seed)
        outcomes = ["error" if rng.random() < 0.005 else "ok" for _ in range(300)]
        replay = iter(outcomes)
        sent, reason = simulate(test, 10, lambda _, replay=replay: next(replay), rng)
        full = Tally(300, outcomes.count("ok"), 0)
        wrongly_stopped += bool(reason) and test.decide(full).passed
    assert wrongly_stopped / 300 <= 0.01, wrongly_stopped


def test_final_decision_at_the_planned_count():
    """300/300 passes; one gateway error (299/300, bound 0.981) passes; two fail on the bound;
    one misroute fails on maxMisroutes 0; a short run fails saying so."""
    test = SequentialTest(CRITERIA, batch_size=10)
    assert test.decide(Tally(300, 300, 0)).passed
    assert test.decide(Tally(300, 299, 0)).passed
    two = test.decide(Tally(300, 298, 0))
    assert not two.passed and two.reason == "lower bound 0.9760 < threshold 0.98"
    misroute = test.decide(Tally(300, 299, 1))
    assert not misroute.passed and "at most 0 allowed" in misroute.reason
    short = test.decide(Tally(100, 100, 0))
    assert not short.passed and "only 100 of 300" in short.reason
    assert "PASS" in test.decide(Tally(300, 300, 0)).headline()


def test_criteria_take_the_topologys_expectation_and_the_command_lines_overrides():
    """Defaults come from expectations.routing; --requests / --accuracy-threshold override them."""
    routing = load_topology("pattern2").routing
    assert Criteria.from_expectation(routing) == Criteria(300, 0, 0.98, 0.95, WILSON)
    assert Criteria.from_expectation(routing, requests=50, threshold=0.9, method=CLOPPER_PEARSON) == \
        Criteria(50, 0, 0.9, 0.95, CLOPPER_PEARSON)


def result(index: int, model: str, outcome: Outcome, *, pod: str | None = None, served: str | None = None,
           known: bool = True, status: int = 200) -> RequestResult:
    spec = RequestSpec(model, COMPLETIONS, False, "hi", 4, 0.0, known)
    message = f"The model `{model}` does not exist." if status == 404 else None
    return RequestResult(index, spec, outcome, status, served, "NotFoundError" if message else None, message,
                         pod, 0.01, None)


SINGLE_POOL_PODS = {"ms-gemma-decode-0": GEMMA, "ms-phi-decode-0": PHI}


def test_diagnosis_names_the_model_blind_pool_of_the_single_pool_design():
    """Misroutes of both models inside one pool that selects both models' pods -> model-blind pool."""
    topology = load_topology("pattern2-single-pool")
    results = [result(0, GEMMA, Outcome.OK, pod="ms-gemma-decode-0", served=GEMMA),
               result(1, GEMMA, Outcome.MISROUTED, status=404),
               result(2, PHI, Outcome.MISROUTED, status=404)]
    pool_pods = {"gaie-pattern2": set(SINGLE_POOL_PODS)}
    diagnosis = diagnose(topology, results, SINGLE_POOL_PODS, pool_pods)
    assert diagnosis.startswith("model-blind pool: InferencePool gaie-pattern2 selects pods of 2 models "
                                f"({GEMMA}, {PHI}); its EPP does not route by the model field")


def test_diagnosis_uses_the_pod_header_when_a_wrong_model_answered_200():
    """A 200 from a pod of another model in the same pool is also model-blindness."""
    topology = load_topology("pattern2-single-pool")
    results = [result(0, GEMMA, Outcome.MISROUTED, pod="ms-phi-decode-0", served=PHI)]
    assert diagnose(topology, results, SINGLE_POOL_PODS, {"gaie-pattern2": set(SINGLE_POOL_PODS)}) \
        .startswith("model-blind pool")


def test_diagnosis_of_a_pattern2_wrong_label_fault_names_the_pool_that_selects_two_models():
    """pattern2 with a Phi pod mislabelled into the gemma pool: gaie-gemma selects 2 models."""
    topology = load_topology("pattern2")
    results = [result(0, GEMMA, Outcome.MISROUTED, status=404)]
    pool_pods = {"gaie-gemma": {"ms-gemma-decode-0", "ms-phi-decode-0"}, "gaie-phi": {"ms-phi-decode-0"}}
    diagnosis = diagnose(topology, results, SINGLE_POOL_PODS, pool_pods)
    assert "InferencePool gaie-gemma selects pods of 2 models" in diagnosis


def test_diagnosis_of_misroutes_across_pools_points_at_the_route():
    """pattern2 pools each select one model; a 200 from the other pool's pod is a route problem."""
    topology = load_topology("pattern2")
    pool_pods = {"gaie-gemma": {"ms-gemma-decode-0"}, "gaie-phi": {"ms-phi-decode-0"}}
    crossed = [result(0, GEMMA, Outcome.MISROUTED, pod="ms-phi-decode-0", served=PHI)]
    diagnosis = diagnose(topology, crossed, SINGLE_POOL_PODS, pool_pods)
    assert diagnosis.startswith("cross-pool misroute: request for 'google/gemma-2b-it' reached pod "
                                "ms-phi-decode-0 serving 'microsoft/Phi-3-mini-4k-instruct' (pools selecting it: gaie-phi)")
    unattributed = diagnose(topology, [result(0, GEMMA, Outcome.MISROUTED, status=404)], SINGLE_POOL_PODS, pool_pods)
    assert "pool(s) gaie-gemma select only that model's pods; check the HTTPRoute rules" in unattributed


def test_no_misroutes_no_diagnosis():
    """Gateway errors alone get no routing diagnosis."""
    topology = load_topology("pattern2")
    assert diagnose(topology, [result(0, GEMMA, Outcome.GATEWAY_ERROR, status=503)], {}, {}) is None


def test_failure_message_shows_first_five_misroutes_other_failures_and_the_table():
    """The message: headline, diagnosis, class and status counts, first 5 misrouted requests,
    other failures, per-model table."""
    results = [result(0, "no/such", Outcome.UNKNOWN_ACCEPTED, served="no/such", known=False, pod="p"),
               result(1, GEMMA, Outcome.GATEWAY_ERROR, status=503)]
    results += [result(i, GEMMA if i % 2 else PHI, Outcome.MISROUTED, status=404) for i in range(2, 10)]
    test = SequentialTest(CRITERIA, batch_size=10)
    decision = test.decide(Tally.of(results))
    message = explain(decision, results, slices(results), "model-blind pool: X")
    lines = message.splitlines()
    assert lines[0].startswith("routing accuracy FAIL (stopped early after 10 of 300 requests)")
    assert lines[1] == "diagnosis: model-blind pool: X"
    assert "first 5 of 9 misrouted requests:" in message
    assert message.count("-> 404 misrouted") == 4
    assert "#0 'no/such' /v1/completions -> 200 unknown_accepted, served model 'no/such', pod p" in message
    assert "first 1 of 1 other failed requests:" in message and "-> 503 gateway_error" in message
    assert "per model:" in message and "(unknown model names)" in message


def test_tally_counts_unknown_accepted_as_a_misroute_and_refusals_as_correct():
    """An unknown model served with 200 is a misroute; refused (by backend or route) is correct."""
    tally = Tally.of([result(0, "x", Outcome.UNKNOWN_ACCEPTED, known=False),
                      result(1, "x", Outcome.OK_UNKNOWN, known=False, status=404),
                      result(2, "x", Outcome.UNKNOWN_NO_ROUTE, known=False, status=404),
                      result(3, GEMMA, Outcome.TIMEOUT)])
    assert (tally.trials, tally.correct, tally.misroutes) == (4, 2, 1)


# ---------------------------------------------------------------- per-model floors and verdicts

def test_the_default_floor_catches_ten_percent_with_95_percent_power_in_29_requests():
    """29 requests with none allowed: a model failing 10% passes with 0.9^29 = 0.047 <= 0.05; 28 would
    let it pass with 0.9^28 = 0.052. One allowed needs 46; 5% needs 59."""
    assert floor_requests(0.10, 0.95) == 29
    assert binomial_cdf(0, 29, 0.1) == pytest.approx(0.9 ** 29, rel=1e-12) and 0.9 ** 29 <= 0.05 < 0.9 ** 28
    assert floor_requests(0.10, 0.95, max_misroutes=1) == 46
    assert binomial_cdf(1, 46, 0.1) <= 0.05 < binomial_cdf(1, 45, 0.1)
    assert floor_requests(0.05, 0.95) == 59 and floor_requests(0.10, 0.99) == 44
    assert ModelCriterion(0.1, 0.95).floor == 29


@given(st.integers(1, 400), st.sampled_from([0.02, 0.05, 0.1, 0.3]), st.sampled_from([0.8, 0.95, 0.99]))
def test_allowed_incorrect_is_the_largest_count_that_keeps_the_power(n, rate, power):
    """P(X <= a | n, rate) <= 1 - power < P(X <= a + 1 | n, rate), with the exact binomial sums."""
    a = allowed_incorrect(n, rate, power)
    cdf = lambda k: 1 - exact_tail(k + 1, n, rate) if k >= 0 else 0.0  # noqa: E731
    assert cdf(a) <= 1 - power + 1e-12 and cdf(a + 1) > 1 - power - 1e-12


def test_a_light_model_misrouting_half_its_traffic_passed_one_run_in_eight_and_now_almost_never():
    """Weights 60/30/9/1 over 300 requests: by share alone the 1% model gets 3 requests and a pool that
    misroutes half of them passes with 0.5^3 = 1/8; at its floor of 29, with 0.5^29 (about 2e-9)."""
    weights = {"heavy": 60, "medium": 30, "small": 9, "light": 1}
    by_share = plan_mix(weights, 0.05, 300).counts["light"]
    at_floor = plan_mix(weights, 0.05, 300, floor=29).counts["light"]
    assert (by_share, at_floor) == (3, 29)
    assert binomial_cdf(0, by_share, 0.5) == pytest.approx(1 / 8)
    assert binomial_cdf(0, at_floor, 0.5) == pytest.approx(0.5 ** 29) and 0.5 ** 29 < 2e-9


def answer(index: int, model: str, outcome: Outcome) -> RequestResult:
    spec = RequestSpec(model, COMPLETIONS, False, "hi", 1, 0.0, known=True)
    ok = outcome is Outcome.OK
    return RequestResult(index, spec, outcome, 200 if ok else 404, model if ok else None, None, None,
                         f"pod-of-{model}" if ok else None, 0.01, None)


def routing_test(planned: dict[str, int], requests: int | None = None) -> RoutingTest:
    total = requests or sum(planned.values())
    return RoutingTest(SequentialTest(Criteria(total, 0, 0.98, 0.95), 10), planned, ModelCriterion(0.1, 0.95))


def test_a_model_fails_on_its_own_misroute_while_the_others_pass():
    """A misroute of the light model fails it (FAIL early: its other requests are not sent); the heavy
    models, all correct, pass on their own; the run fails and names the light model."""
    test = routing_test({"heavy": 250, "light": 29})
    results = [answer(i, "heavy", Outcome.OK) for i in range(250)]
    results += [answer(250, "light", Outcome.OK), answer(251, "light", Outcome.MISROUTED)]
    assert test.stop(results) is False  # heavy is still running: the pooled rules no longer stop the run
    assert test.skip(results[-1].spec) and "light" in test.stopped
    decision = test.decide(results)
    heavy, light = decision.models
    assert (heavy.model, heavy.passed, heavy.label) == ("heavy", True, "PASS")
    assert (light.model, light.passed, light.label) == ("light", False, "FAIL early")
    assert light.reason == "1 misrouted answer(s) in 2 of its 29 requests; at most 0 allowed"
    assert not decision.passed and decision.failed_models == (light,)
    assert "1 of 2 models failed on their own requests: light" in decision.headline()


def test_errors_count_per_model_against_what_its_planned_size_allows():
    """One timeout fails a model at its floor (29 requests allow none) but not a heavy one (142 allow 8:
    P(X <= 8 | 142, 0.1) = 0.046); the pooled bound still judges the heavy model's errors."""
    test = routing_test({"heavy": 142, "light": 29}, requests=300)
    results = [answer(i, "heavy", Outcome.TIMEOUT if i == 0 else Outcome.OK) for i in range(142)]
    results += [answer(142 + i, "light", Outcome.TIMEOUT if i == 0 else Outcome.OK) for i in range(29)]
    heavy, light = test.decide(results).models
    assert heavy.passed and heavy.allowed == 8 and binomial_cdf(8, 142, 0.1) <= 0.05 < binomial_cdf(9, 142, 0.1)
    assert not light.passed and light.allowed == 0 and "at most 0 allowed, so that a model failing 10%" in light.reason


def test_a_model_that_passes_has_its_failure_rate_bounded_below_the_rate():
    """29/29 correct: the exact one-sided 95% upper bound of its failure rate is 1 - 0.05^(1/29) = 0.098."""
    test = routing_test({"only": 29}, requests=189)
    verdict = test.model_verdict("only", [answer(i, "only", Outcome.OK) for i in range(29)], "")
    assert verdict.passed and verdict.bound == pytest.approx(1 - 0.05 ** (1 / 29), abs=1e-9) and verdict.bound < 0.1


def test_models_planned_below_their_floor_are_refused_before_any_request():
    with pytest.raises(ValueError, match=r"model\(s\) planned below their floor of 29 requests \(light: 3\)"):
        routing_test({"heavy": 280, "light": 3})


def test_without_a_failed_model_the_pooled_rules_still_stop_a_broken_run():
    """Only gateway errors (no model over its own limit yet): the pooled futility rule ends the run
    after the first batch, as before per-model verdicts."""
    test = routing_test({"a": 150, "b": 150})
    errors = [answer(i, "ab"[i % 2], Outcome.GATEWAY_ERROR) for i in range(10)]
    assert test.stop(errors) and not test.stopped


def test_a_broken_light_model_is_caught_within_tens_of_its_own_requests():
    """Light model misrouting half its traffic: the chance it is still running after k of its own
    requests is 0.5^k; over 2000 simulated runs the share caught within 5 is 1 - 0.5^5 = 0.969."""
    criterion = ModelCriterion(0.1, 0.95)
    caught_within = []
    for seed in range(2000):
        rng = random.Random(seed)
        test = RoutingTest(SequentialTest(Criteria(329, 0, 0.98, 0.95), 10), {"light": 29}, criterion)
        results = []
        while "light" not in test.stopped and len(results) < 29:
            results.append(answer(len(results), "light", Outcome.MISROUTED if rng.random() < 0.5 else Outcome.OK))
            test.stop(results)
        caught_within.append(len(results))
    assert max(caught_within) <= 29 and all(n <= 29 for n in caught_within)
    share = sum(n <= 5 for n in caught_within) / len(caught_within)
    assert share == pytest.approx(1 - 0.5 ** 5, abs=0.015)


def shed(index: int, model: str = GEMMA, reason: str = "rejected-saturated") -> RequestResult:
    spec = RequestSpec(model, COMPLETIONS, False, "hi", 4, 0.0, True)
    return RequestResult(index, spec, Outcome.SHED, 429, None, "FlowControl", f"shed by flow control: {reason}",
                         None, 0.01, None, reason)


def test_shed_requests_are_kept_out_of_accuracy_and_judged_by_the_budget():
    """Flow control's sheds are sent but not routing trials: the bound uses the routed ones; the share of
    sheds passes within the topology's flowControlBudget and fails above it, naming the reasons."""
    criteria = Criteria(300, 0, 0.98, 0.95, WILSON)
    ok = [result(i, GEMMA, Outcome.OK, pod="p", served=GEMMA) for i in range(294)]
    results = ok + [shed(294 + i) for i in range(5)] + [shed(299, reason="evicted")]
    tally = Tally.of(results)
    assert (tally.trials, tally.correct, tally.shed, tally.sent, tally.misroutes) == (294, 294, 6, 300, 0)
    within = RoutingTest(SequentialTest(criteria, 10), {GEMMA: 300}, None, flow_control_budget=0.02).decide(results)
    assert within.passed, within.reason
    over = RoutingTest(SequentialTest(criteria, 10), {GEMMA: 300}, None, flow_control_budget=0.01).decide(results)
    assert not over.passed and over.reason.startswith(
        "shed by flow control: 6 of 300 requests (2.0%), over the topology's flowControlBudget 1.0% "
        "(x-llm-d-request-dropped-reason: evicted 1, rejected-saturated 5)")
    assert over.tally.misroutes == 0 and "misrouted" not in over.reason


def test_the_model_table_shows_sheds_only_when_there_are_some():
    criteria = Criteria(300, 0, 0.98, 0.95, WILSON)
    results = [result(0, GEMMA, Outcome.OK, pod="p", served=GEMMA), shed(1)]
    decision = RoutingTest(SequentialTest(criteria, 2), {GEMMA: 300}, None, flow_control_budget=0.5).decide(results)
    header = format_models(decision, slices(results)).splitlines()[0].split()
    assert "shed" in header
    assert "shed" not in format_models(decision, slices(results[:1])).splitlines()[0].split()


def test_misroutes_of_a_rewritten_name_are_diagnosed_as_the_rewrites_fault():
    """Requests for a rewrite name refused for a model that is not its target name the rewrite, not a pool."""
    data = yaml.safe_load(load_topology("pattern2").source.read_text())
    data["rewrites"] = [{"name": "gemma-alias", "pool": "gaie-gemma", "model": "gemma-latest",
                         "targets": [{"model": GEMMA}]}]
    topology = parse_topology(yaml.safe_dump(data), load_topology("pattern2").source)
    spec = RequestSpec("gemma-latest", COMPLETIONS, False, "hi", 4, 0.0, True, accepts=(GEMMA, "gemma-latest"))
    refused = RequestResult(0, spec, Outcome.MISROUTED, 404, None, "NotFoundError",
                            f"The model `{PHI}` does not exist.", None, 0.01, None)
    diagnosis = diagnose(topology, [refused], {"ms-gemma-0": GEMMA}, {"gaie-gemma": {"ms-gemma-0"}})
    assert diagnosis == (f"rewrite fault: 1 request(s) for 'gemma-latest' were rewritten to '{PHI}', not to its "
                         f"target(s) '{GEMMA}' that InferenceModelRewrite gemma-alias (pool gaie-gemma) names")
    pods = PodMap.of(topology, {"ms-gemma-0": GEMMA})
    assert pods.column("gemma-latest", "ms-gemma-0") == "own pods" and pods.column(PHI, "ms-gemma-0") == "pool gaie-gemma"
