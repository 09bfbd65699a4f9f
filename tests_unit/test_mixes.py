"""Request mixes: shares by weight, unknown names, request shapes, reproducibility, profiles."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llmd_conformance.mixes import (CHAT_COMPLETIONS, COMPLETIONS, MAX_PROMPT_CHARS, MAX_TOKENS, PROMPT_TOKEN_BUDGET,
                            RequestSpec, apportion, draw_mix, estimated_tokens, plan_mix, prompts, requested_names,
                            topology_mix, topology_plan, unknown_model_names)
from llmd_conformance.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[1]
SERVED = ("google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct")


@pytest.fixture(scope="module")
def mix() -> list[RequestSpec]:
    return topology_mix(load_topology("pattern2"), 300, 1234)


def test_completions_body_carries_prompt_and_sampling_fields():
    """/v1/completions: model, prompt, max_tokens, temperature, stream."""
    spec = RequestSpec("m", COMPLETIONS, True, "héllo", 7, 0.5, True)
    assert spec.body() == {"model": "m", "prompt": "héllo", "max_tokens": 7, "temperature": 0.5, "stream": True}


def test_chat_body_carries_the_prompt_as_one_user_message():
    """/v1/chat/completions: the prompt is the single user message."""
    spec = RequestSpec("m", CHAT_COMPLETIONS, False, "hi", 3, 0.0, True)
    assert spec.body() == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                           "temperature": 0.0, "stream": False}


def test_mix_has_the_topologys_model_shares_and_unknown_share(mix):
    """300 requests, 5% unknown: 15 unknown names, the rest split 1:1 by weight."""
    known = Counter(s.model for s in mix if s.known)
    assert len(mix) == 300
    assert sum(1 for s in mix if not s.known) == 15
    assert known == {SERVED[0]: 143, SERVED[1]: 142}


def test_unknown_requests_name_no_served_model_and_known_ones_do(mix):
    """`known` is True exactly when the name is a served model id."""
    assert all((s.model in SERVED) == s.known for s in mix)


def test_mix_order_is_shuffled(mix):
    """Models are interleaved, not in blocks: the first 20 requests already name both models."""
    assert {s.model for s in mix[:20] if s.known} == set(SERVED)


def test_mix_covers_endpoints_streaming_prompt_lengths_and_non_ascii(mix):
    """Both endpoints, stream on and off, short and long prompts, non-ASCII text, bounded fields."""
    assert {(s.endpoint, s.stream) for s in mix} == {(e, b) for e in (COMPLETIONS, CHAT_COMPLETIONS)
                                                     for b in (True, False)}
    lengths = [len(s.prompt) for s in mix]
    assert min(lengths) >= 1 and max(lengths) <= MAX_PROMPT_CHARS and max(lengths) >= 1000
    assert sum(1 for s in mix if not s.prompt.isascii()) >= 10
    assert all(1 <= s.max_tokens <= MAX_TOKENS and 0 <= s.temperature <= 2 for s in mix)
    assert all(estimated_tokens(s.prompt) <= PROMPT_TOKEN_BUDGET for s in mix)


def test_same_seed_same_mix_other_seed_other_mix():
    """A mix is reproducible from its seed (the summary prints it for replay)."""
    topology = load_topology("pattern2")
    first = topology_mix(topology, 60, 1234)
    assert topology_mix(topology, 60, 1234) == first
    assert topology_mix(topology, 60, 1235) != first


def test_weights_and_an_unknown_free_single_model_topology():
    """Weights 3:1 give 3:1 counts; pattern1 with share 0 for unknowns names only its model."""
    counts = Counter(s.model for s in draw_mix({"a/x": 3, "b/y": 1}, 0.0, 40, 7))
    assert counts == {"a/x": 30, "b/y": 10}
    assert {s.model for s in draw_mix({"google/gemma-2b-it": 1}, 0.0, 12, 7)} == {"google/gemma-2b-it"}


@pytest.mark.parametrize(("args", "message"), [
    (({"a": 1}, 0.05, 0, 1), "at least 1 request"),
    (({}, 0.05, 10, 1), "at least one model"),
    (({"a": 0}, 0.05, 10, 1), "weight > 0"),
    (({"a": 1}, 1.0, 10, 1), r"unknown_share must be in \[0, 1\)"),
])
def test_bad_mix_requests_say_what_to_fix(args, message):
    with pytest.raises(ValueError, match=message):
        draw_mix(*args)


@given(total=st.integers(0, 10_000), weights=st.dictionaries(st.text(min_size=1, max_size=5),
                                                             st.floats(0.01, 100), min_size=1, max_size=6))
def test_apportion_sums_to_total_and_stays_within_one_of_each_share(total, weights):
    counts = apportion(total, weights)
    assert sum(counts.values()) == total
    weight_sum = sum(weights.values())
    assert all(abs(counts[k] - total * w / weight_sum) < 1 + 1e-9 for k, w in weights.items())


@given(prompts())
def test_prompts_are_non_empty_bounded_and_fit_the_token_budget(prompt):
    assert 1 <= len(prompt) <= MAX_PROMPT_CHARS
    assert estimated_tokens(prompt) <= PROMPT_TOKEN_BUDGET


@given(unknown_model_names(SERVED))
def test_unknown_names_are_never_served_names(name):
    assert name not in SERVED


def _profile_in_subprocess(env_ci: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "TF_BUILD", "BUILDKITE",
                                                            "CIRCLECI", "CIRRUS_CI", "CODEBUILD_BUILD_ID",
                                                            "GITLAB_CI", "HEROKU_TEST_RUN_ID", "TEAMCITY_VERSION")}
    if env_ci is not None:
        env["CI"] = env_ci
    code = ("import tests_unit.conftest; from hypothesis import settings; s = settings.default; "
            "print(settings.get_current_profile_name(), s.max_examples, s.derandomize, s.database, s.deadline)")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_with_ci_set_our_ci_profile_replaces_the_built_in_one_and_keeps_its_settings():
    """CI=true: hypothesis loads "ci" at import; ours re-registers it, so it is active at once with
    our max_examples and the built-in's derandomize / no database / no deadline."""
    assert _profile_in_subprocess("true") == "ci 200 True None None"


def test_without_ci_the_default_profile_stays():
    """No CI variable: hypothesis's default profile; "dev" only with --hypothesis-profile=dev."""
    assert _profile_in_subprocess(None).startswith("default 100 False")


def test_every_model_gets_at_least_its_floor_and_the_mix_grows():
    """pattern2-4-models (60/30/9/1) over 300 requested: by share Qwen gets 26 and SmolLM 3; both are
    raised to 29, the others keep theirs, the unknown share stays 15 of the 300: 329 to send."""
    topology = load_topology("pattern2-4-models")
    plan = topology_plan(topology, 300)
    assert plan.counts == {"google/gemma-2b-it": 171, "microsoft/Phi-3-mini-4k-instruct": 85,
                           "Qwen/Qwen2.5-1.5B-Instruct": 29, "HuggingFaceTB/SmolLM2-135M-Instruct": 29}
    assert (plan.unknown, plan.total) == (15, 329)
    assert plan.describe() == ("300 requested, 329 to send: 2 model(s) raised to their floor of 29 "
                               "(Qwen/Qwen2.5-1.5B-Instruct, HuggingFaceTB/SmolLM2-135M-Instruct)")
    mix = topology_mix(topology, 300, 5)
    assert len(mix) == 329 and Counter(s.model for s in mix if s.known) == plan.counts


def test_pattern2_is_not_raised():
    """Two equal models over 300: 142 and 143 each, far above 29; the mix stays 300."""
    plan = topology_plan(load_topology("pattern2"), 300)
    assert plan.total == 300 and not plan.raised
    assert plan.describe() == "300 requested, 300 to send: every model's share is at least its floor of 29"


@given(n=st.integers(1, 2000), floor=st.integers(0, 60),
       weights=st.dictionaries(st.text(min_size=1, max_size=5), st.floats(0.01, 100), min_size=1, max_size=16))
def test_plan_raises_exactly_the_models_below_the_floor(n, floor, weights):
    plan = plan_mix(weights, 0.05, n, floor)
    shares = apportion(n - plan.unknown, weights)
    assert all(plan.counts[m] == max(shares[m], floor) for m in weights)
    assert set(plan.raised) == {m for m in weights if shares[m] < floor}
    assert plan.total >= n and plan.total == sum(plan.counts.values()) + plan.unknown


def test_adapters_and_rewrite_names_share_their_models_weight_and_carry_the_rewrite_targets():
    """Each model's weight is shared by its id, adapters and rewrite names; a rewrite name's requests accept
    its targets (the topology's over the cluster's), other names only themselves."""
    data = yaml.safe_load(load_topology("pattern2").source.read_text())
    data["models"][0]["adapters"] = ["food-review-1"]
    data["rewrites"] = [{"name": "gemma-alias", "pool": "gaie-gemma", "model": "gemma-latest",
                         "targets": [{"model": "google/gemma-2b-it"}]}]
    topology = parse_topology(yaml.safe_dump(data), load_topology("pattern2").source)
    weights = requested_names(topology)
    assert weights == pytest.approx({"google/gemma-2b-it": 1 / 3, "food-review-1": 1 / 3, "gemma-latest": 1 / 3,
                                     "microsoft/Phi-3-mini-4k-instruct": 1.0})
    mix = topology_mix(topology, 300, 7, cluster_rewrites={"gemma-latest": ("elsewhere",), "canary": ("x",)})
    by_name = {s.model: s.accepts for s in mix if s.known}
    assert by_name["gemma-latest"] == ("google/gemma-2b-it", "gemma-latest") and by_name["food-review-1"] == ()
    assert {s.model for s in mix if s.known} == set(weights)
