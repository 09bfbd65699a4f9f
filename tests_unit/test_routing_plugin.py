"""The routing plugin's options, their validation, the routing_options fixture and the terminal
section, and suites/test_routing_accuracy.py itself run against fake gateways served on loopback.

Each case runs pytest in-process (pytester, in a temporary folder) with only the routing plugin and
a conftest of fake session fixtures (topology, gateway_url, kube, conformance_report), so the suite module runs
unchanged, over real HTTP, without a cluster.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmd_conformance.topology import load_topology
from tests_unit.test_routing_fakes import FakeGateway, blind, by_model, catch_all, topology_pods

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "test_routing_accuracy.py"

FAKE_FIXTURES = '''
import json, types
import pytest
from llmd_conformance.kube import POOL_APIS
from kubernetes.client import ApiException
from llmd_conformance.profiles import load_profile
from llmd_conformance.topology import load_topology
from tests_unit.test_routing_fakes import FakeCoreApi, topology_pods

pytest_plugins = ["llmd_conformance.fixtures.routing_plugin"]


def pytest_addoption(parser):
    parser.getgroup("llm-d conformance").addoption("--target", default="cluster")


@pytest.fixture(scope="session")
def topology():
    return load_topology({topology!r})


@pytest.fixture(scope="session")
def gateway_url():
    return {url!r}


@pytest.fixture(scope="session")
def gateway_profile():
    return load_profile("reference")


@pytest.fixture(scope="session")
def kube(topology):
    pools = {{p.name: {{"spec": {{"selector": {{"matchLabels": p.selector}}}}}} for p in topology.pools}}
    return types.SimpleNamespace(core=FakeCoreApi(topology_pods(topology)), pool_api=POOL_APIS[0],
                                 get_pool=lambda namespace, name: pools[name], custom=NoRewriteApi())


class NoRewriteApi:
    """A cluster without the InferenceModelRewrite API."""

    def list_namespaced_custom_object(self, group, version, namespace, plural):
        raise ApiException(status=404)


class Recorder:
    def record_routing(self, summary):
        with open("routing.jsonl", "a") as out:
            out.write(json.dumps(summary, allow_nan=False) + "\\n")


@pytest.fixture(scope="session")
def conformance_report():
    return Recorder()


@pytest.fixture
def show_routing_options(routing_options):
    print("OPTIONS", routing_options)
'''


def run_suite(pytester, topology: str, url: str, *args: str):
    pytester.makeconftest(FAKE_FIXTURES.format(topology=topology, url=url))
    pytester.makepyfile(test_routing_accuracy=SUITE.read_text())
    return pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning",
                                         "--mix-seed", "7", "--concurrency", "4", *args)


def summaries(pytester) -> list[dict]:
    return [json.loads(line) for line in (pytester.path / "routing.jsonl").read_text().splitlines()]


def test_pattern2_deployment_passes_both_checks_and_reports(pytester):
    """A BBR-routed pattern2 fake passes accuracy and the unknown-model check (no-route 404)."""
    topology = load_topology("pattern2")
    with FakeGateway(topology_pods(topology), by_model).serve() as url:
        result = run_suite(pytester, "pattern2", url)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*llm-d routing accuracy*", "*routing accuracy PASS: each of 2 models passed on its "
                                 "own requests; first-attempt accuracy 300/300 = 100.00%*",
                                 "requests: 300 requested, 300 to send: every model's share is at least its floor of 29",
                                 "*routing matrix, compact*"])
    (summary,) = summaries(pytester)
    assert (summary["passed"], summary["requests_sent"], summary["mix_seed"]) == (True, 300, 7)


def test_single_pool_deployment_fails_accuracy_with_the_diagnosis(pytester):
    """The seed's single pool fails accuracy early, naming the model-blind pool; its catch-all
    rule makes backends refuse unknown names with the OpenAI 404, which passes."""
    topology = load_topology("pattern2-single-pool")
    with FakeGateway(topology_pods(topology), blind, seed=3).serve() as url:
        result = run_suite(pytester, "pattern2-single-pool", url, "--replay-seed-protocol",
                           "--seed-retry-interval", "0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*routing accuracy FAIL (stopped early after 10 of 300 requests)*",
        "*diagnosis: model-blind pool: InferencePool gaie-pattern2 selects pods of 2 models*",
        "*first * misrouted requests:*",
        "*seed protocol (up to 10 attempts per request): *50 succeeded*",
    ])
    (summary,) = summaries(pytester)
    assert summary["seed_protocol"]["requests"] == 50 and summary["diagnosis"].startswith("model-blind pool")


def test_unknown_model_answered_200_fails_both_checks(pytester):
    """Backends that serve any name: unknown_accepted fails accuracy and the unknown-model check."""
    topology = load_topology("pattern2-single-pool")
    with FakeGateway(topology_pods(topology), catch_all, lenient=True).serve() as url:
        result = run_suite(pytester, "pattern2-single-pool", url, "--requests", "200")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*expected ok_unknown for every unknown model*4 of 4 differ*",
                                 "*-> 200 unknown_accepted*"])


def test_wrong_unknown_model_answer_form_is_named(pytester):
    """pattern2 (rules name every model) whose gateway hands unknown names to a backend: the check
    says the gateway should have had no route."""
    topology = load_topology("pattern2")
    with FakeGateway(topology_pods(topology), catch_all).serve() as url:
        result = run_suite(pytester, "pattern2", url, "-k", "unknown")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected unknown_no_route for every unknown model (every HTTPRoute rule "
                                 "matches a served model*", "*-> 404 ok_unknown*"])


@pytest.mark.parametrize(("args", "message"), [
    (["--accuracy-threshold", "1.5"], "--accuracy-threshold must be in (0, 1), e.g. 0.98; got 1.5"),
    (["--accuracy-threshold", "0"], "--accuracy-threshold must be in (0, 1)*got 0.0"),
    (["--accuracy-threshold", "1.0"], "--accuracy-threshold must be in (0, 1), e.g. 0.98; got 1.0 (a confidence "
                                      "lower bound stays below 1 however many requests are sent)"),
    (["--accuracy-threshold", "nan"], "--accuracy-threshold must be in (0, 1), e.g. 0.98; got nan"),
    (["--requests", "0"], "--requests must be >= 1, got 0"),
    (["--concurrency", "0"], "--concurrency must be >= 1, got 0"),
    (["--request-timeout", "-1"], "--request-timeout must be a finite number of seconds > 0, got -1.0"),
    (["--request-timeout", "nan"], "--request-timeout must be a finite number of seconds > 0, got nan"),
    (["--request-timeout", "inf"], "--request-timeout must be a finite number of seconds > 0, got inf"),
    (["--seed-retry-interval", "-0.5"], "--seed-retry-interval must be a finite number of seconds >= 0, got -0.5"),
    (["--seed-retry-interval", "nan"], "--seed-retry-interval must be a finite number of seconds >= 0, got nan"),
])
def test_bad_options_are_usage_errors_saying_what_to_fix(pytester, args, message):
    """Out-of-range options stop the run before any test with pytest's usage error (exit 4)."""
    result = pytester.runpytest("-p", "llmd_conformance.fixtures.routing_plugin", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


TOPOLOGY_OPTION = """
def pytest_addoption(parser):
    parser.getgroup("llm-d conformance").addoption("--topology", default="pattern2")
"""


@pytest.mark.parametrize(("args", "message"), [
    (["--requests", "5"], "the routing check can never pass with --requests 5 and topology pattern2's "
                          "accuracyLowerBound 0.98: even 5/5 correct gives a wilson 95% lower bound of 0.5655 < 0.98; "
                          "at least 189 requests are needed; raise --requests or lower --accuracy-threshold"),
    (["--requests", "188"], "*even 188/188 correct gives a wilson 95% lower bound of 0.97998 < 0.98; at least 189*"),
    (["--accuracy-threshold", "0.999"], "the routing check can never pass with topology pattern2's 300 requests and "
                                        "--accuracy-threshold 0.999: even 300/300 correct gives a wilson 95% lower "
                                        "bound of 0.9874 < 0.999; at least 3838 requests are needed; *"),
    (["--topology", "pattern1", "--requests", "100", "--accuracy-threshold", "0.97"],
     "*with --requests 100 and --accuracy-threshold 0.97: even 100/100*at least 125 requests are needed*"),
])
def test_requests_too_few_for_the_threshold_are_refused_before_the_target(pytester, args, message):
    """Requests that could not reach the threshold even with no misroute are a usage error at
    configure time, naming the minimum the bound needs (not a failure after the target is up)."""
    pytester.makeconftest(TOPOLOGY_OPTION)
    result = pytester.runpytest("-p", "llmd_conformance.fixtures.routing_plugin", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


@pytest.mark.parametrize("args", [["--requests", "189"], ["--requests", "183", "--accuracy-bound", "clopper-pearson"],
                                  ["--topology", "no-such-topology", "--requests", "5"]])
def test_enough_requests_for_the_chosen_bound_pass(pytester, args):
    """The minimum follows --accuracy-bound (Clopper-Pearson needs 183 for 0.98); a bad topology is
    left to llmd_conformance/fixtures/plugin.py to report."""
    pytester.makeconftest(TOPOLOGY_OPTION)
    pytester.makepyfile("def test_x():\n    pass\n")
    pytester.runpytest("-p", "llmd_conformance.fixtures.routing_plugin", *args).assert_outcomes(passed=1)


def test_options_are_listed_in_the_llm_d_conformance_group(pytester):
    """--help shows the routing options under "llm-d conformance"."""
    result = pytester.runpytest("-p", "llmd_conformance.fixtures.routing_plugin", "--help")
    text = result.stdout.str()
    group = text[text.index("llm-d conformance"):]
    for option in ("--requests=N", "--accuracy-threshold=X", "--accuracy-bound", "--concurrency=N",
                   "--request-timeout=S", "--mix-seed=N", "--replay-seed-protocol", "--seed-retry-interval=S"):
        assert option in group, option


@pytest.mark.parametrize(("args", "expected"), [
    ([], "seed_retry_interval=2.0"),
    (["--target", "local"], "seed_retry_interval=0.05"),
    (["--target", "local", "--seed-retry-interval", "1"], "seed_retry_interval=1.0"),
    (["--concurrency", "32"], "concurrency=32"),
])
def test_routing_options_defaults_follow_the_target(pytester, args, expected):
    """The seed loop pauses 2 s by default, 0.05 s on the local target, or as given."""
    pytester.makeconftest(FAKE_FIXTURES.format(topology="pattern1", url="http://127.0.0.1:9"))
    pytester.makepyfile("def test_show(show_routing_options):\n    pass\n")
    result = pytester.runpytest("-s", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*OPTIONS RoutingOptions(*{expected}*"])


def test_batch_size_is_at_least_ten_and_a_full_round_of_concurrency():
    """Looks happen every max(10, concurrency) requests."""
    from llmd_conformance.fixtures.routing_plugin import RoutingOptions
    base = dict(requests=None, threshold=None, bound="wilson", request_timeout=1.0, mix_seed=1,
                replay_seed_protocol=False, seed_retry_interval=0.0)
    assert RoutingOptions(concurrency=4, **base).batch_size == 10
    assert RoutingOptions(concurrency=32, **base).batch_size == 32
