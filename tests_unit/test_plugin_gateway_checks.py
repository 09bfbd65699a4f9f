"""The gateway-facing checks (smoke request per model, /v1/models through the gateway) run through
the plugin against a fake gateway on loopback: they pass on good answers and fail with evidence."""
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
    """Completions answer with `answers[model]`; GET /v1/models cycles through `listings` (status, type, body)."""

    def __init__(self):
        self.answers: dict[str, str] = {}
        self.listings = itertools.cycle([(404, "text/plain", b"no route")])
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status, ctype, body, pod="ms-0"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
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
    pytester.makepyfile(test_gateway=SUITE_TESTS)
    # A short warm-up: fakes that never serve correctly would otherwise hold each run for 30 s.
    result = pytester.runpytest_subprocess("--target", "fake", "--topology", topology, "--gateway-url", gateway.url,
                                           "--warmup-timeout", "2", "-p", "no:cacheprovider", *args)
    report = pytester.path / "reports" / f"{topology}-fake-report.yaml"
    properties = yaml.safe_load(report.read_text())["properties"] if report.exists() else {}
    return result, properties


def test_healthy_gateway_passes(suite_pytester, gateway):
    """Each model answered by itself; no catch-all rule and /v1/models not routed (404): all pass."""
    gateway.answers = {GEMMA: GEMMA, PHI: PHI}
    result, properties = run(suite_pytester, gateway, "pattern2")
    result.assert_outcomes(passed=3)
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
    result.stdout.fnmatch_lines(["E*no rule matches and the Gateway must answer 404; 10 of 10 answers differ:*"])
