"""The gateway-facing checks (smoke request per model, /v1/models through the gateway) run through
the plugin against a fake gateway on loopback: they pass on good answers and fail with evidence,
naming which kind of 404 they got (the gateway profile's no-route or not-programmed answer, or neither)."""
from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests_unit.conftest import dedent

GEMMA, PHI = "google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct"
SUITE_TESTS = dedent("""
    from suites.test_models_discovery import test_gateway_models_listing_matches_routing
    from suites.test_smoke import test_model_answers_through_the_gateway
    import pytest

    pytestmark = pytest.mark.pattern2
""")


class FakeGateway:
    """Completions answer with `answers[model]` (a model name, or (status, body)); GET /v1/models cycles
    through `listings` (status, type, body); by default Envoy's no-route 404, with an empty body."""

    def __init__(self):
        self.answers: dict[str, str | tuple[int, bytes]] = {}
        self.listings = itertools.cycle([(404, "text/plain", b"")])
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, ctype, body, pod="ms-0"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if pod is not None:
                    self.send_header("x-inference-pod", pod)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self._send(404, "text/plain", b"")
                self._send(*next(fake.listings))

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answered = fake.answers[request["model"]]
                if isinstance(answered, tuple):
                    return self._send(answered[0], "text/plain", answered[1], pod=None)
                body = json.dumps({"object": "text_completion", "model": answered, "choices": []}).encode()
                self._send(200, "application/json", body, pod=f"ms-{answered.split('/')[-1]}-0")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    threading.Thread(target=fake.server.serve_forever, daemon=True).start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def listing(*ids: str) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps({"object": "list", "data": [{"id": i} for i in ids]}).encode()


def run(pytester, gateway, topology: str, *args: str):
    """The run's result and report properties but the gateway profile's (no cluster: the strict fallback)."""
    pytester.makepyfile(test_gateway=SUITE_TESTS)
    # A short warm-up: fakes that never serve correctly would otherwise hold each run for 30 s.
    result = pytester.runpytest_subprocess("--target", "fake", "--topology", topology, "--gateway-url", gateway.url,
                                           "--warmup-timeout", "2", "-p", "no:cacheprovider", *args)
    report = pytester.path / "reports" / f"{topology}-fake-details.yaml"
    properties = yaml.safe_load(report.read_text())["properties"] if report.exists() else {}
    properties.pop("gatewayProfile", None)
    return result, properties


def test_healthy_gateway_passes(suite_pytester, gateway):
    """Each model answered by itself; no catch-all rule and /v1/models not routed (404): all pass."""
    gateway.answers = {GEMMA: GEMMA, PHI: PHI}
    result, properties = run(suite_pytester, gateway, "pattern2")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["WARNING: gateway profile: cannot read the class of Gateway "
                                 "llm-d/infra-pattern2-inference-gateway (*); judged by the strict reference profile*"])
    assert properties.pop("gatewayConvergence")["converged"] and properties == {"gatewayModelsListing": "not routed (every rule matches a model header)"}


def test_request_answered_by_another_model_fails_with_the_pod(suite_pytester, gateway):
    """The smoke request names the model that answered and the pod."""
    gateway.answers = {GEMMA: GEMMA, PHI: GEMMA}
    result, _ = run(suite_pytester, gateway, "pattern2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([f"E*POST {gateway.url}/v1/completions for model {PHI} was answered by model "
                                 f"'{GEMMA}' (pod ms-gemma-2b-it-0): it reached a backend of another model"])


def test_routed_models_listing_that_is_not_json_quotes_the_body(suite_pytester, gateway):
    """With a catch-all rule, an HTML answer on /v1/models fails quoting its first bytes."""
    gateway.answers = {GEMMA: GEMMA}
    gateway.listings = itertools.cycle([(200, "text/html", b"<html><body>Welcome to nginx!</body></html>")])
    result, _ = run(suite_pytester, gateway, "pattern1")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"E*expected every GET {gateway.url}/v1/models to answer a JSON model list naming only topology models*",
        "E*answer 1: HTTP 200 text/html, not JSON; first 200 bytes: b'<html><body>Welcome to nginx!</body></html>'"])


def test_listing_that_depends_on_the_pod_is_recorded(suite_pytester, gateway):
    """The seed's single pool: /v1/models alternates between the models; valid, and recorded as such."""
    gateway.answers = {GEMMA: GEMMA, PHI: PHI}
    gateway.listings = itertools.cycle([listing(GEMMA), listing(PHI)])
    result, properties = run(suite_pytester, gateway, "pattern2-single-pool")
    result.assert_outcomes(passed=3)
    assert properties.pop("gatewayConvergence")["converged"] and properties == {"gatewayModelsListing": f"depends on the answering pod: [{GEMMA}] x5, [{PHI}] x5"}


def test_aggregated_listing_is_recorded(suite_pytester, gateway):
    """Every answer listing every model reads 'aggregated'."""
    gateway.answers = {GEMMA: GEMMA}
    gateway.listings = itertools.cycle([listing(GEMMA)])
    result, properties = run(suite_pytester, gateway, "pattern1")
    result.assert_outcomes(passed=2)
    assert properties.pop("gatewayConvergence")["converged"] and properties == {"gatewayModelsListing": "aggregated"}


def test_listing_naming_a_foreign_model_fails(suite_pytester, gateway):
    """A routed listing may only name topology models."""
    gateway.answers = {GEMMA: GEMMA}
    gateway.listings = itertools.cycle([listing(GEMMA, "mistralai/Mistral-7B")])
    result, _ = run(suite_pytester, gateway, "pattern1")
    result.assert_outcomes(passed=1, failed=1)
    assert f"answer 1 (pod ms-0): lists [{GEMMA}, mistralai/Mistral-7B]" in result.stdout.str()


def test_routed_listing_without_catch_all_rule_fails(suite_pytester, gateway):
    """Rules that all name a model cannot route a request without one: a 200 there is a deviation."""
    gateway.answers = {GEMMA: GEMMA, PHI: PHI}
    gateway.listings = itertools.cycle([listing(GEMMA)])
    result, _ = run(suite_pytester, gateway, "pattern2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["E*no rule matches and the Gateway must give the reference gateway's no-route answer "
                                 "(404 with an empty body); 10 of 10 answers differ:*"])


def test_unrecognised_404_on_the_models_listing_is_named(suite_pytester, gateway):
    """A 404 whose body is neither Envoy's empty no-route answer nor a backend's is no "no route"."""
    gateway.answers = {GEMMA: GEMMA, PHI: PHI}
    gateway.listings = itertools.cycle([(404, "text/plain", b"no route")])
    result, _ = run(suite_pytester, gateway, "pattern2")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["E*answer 1: HTTP 404 (a 404 that is neither a backend's OpenAI-style error nor one of "
                                 "the reference gateway's own answers) text/plain from pod ms-0: b'no route'"])


def test_not_programmed_answer_is_named_and_never_no_route(suite_pytester, gateway):
    """Under the gke profile, 404 `fault filter abort` is the gateway not yet programmed: the smoke request and
    the unrouted /v1/models both fail naming it (after the warm-up waited, and reported it)."""
    gateway.answers = {GEMMA: (404, b"fault filter abort"), PHI: PHI}
    gateway.listings = itertools.cycle([(404, "text/plain", b"fault filter abort")])
    result, properties = run(suite_pytester, gateway, "pattern2", "--gateway-profile", "gke")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "E*answer 1: HTTP 404 (the gke gateway's answer while not yet programmed (404 with 'fault filter abort')) "
        "text/plain from pod ms-0: b'fault filter abort'",
        f"E*POST {gateway.url}/v1/completions for model {GEMMA}: HTTP 404 (the gke gateway's answer while not yet "
        f"programmed (404 with 'fault filter abort')), expected 200 (pod (no pod header)); body: 'fault filter abort'"])
    assert properties["gatewayConvergence"]["not_programmed"] == [GEMMA]
