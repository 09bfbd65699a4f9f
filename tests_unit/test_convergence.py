"""The warm-up waits until every model is served once, and reports (never judges) a gateway that does not settle."""
from __future__ import annotations

import http.server
import json
import threading
from contextlib import contextmanager

import pytest

from llmd_conformance.convergence import await_serving
from llmd_conformance.traffic import MAX_BODY_BYTES


@contextmanager
def gateway(answer):
    """A loopback HTTP server answering POST /v1/completions with answer(model, nth_request) -> (status, body)."""
    seen = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            model = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["model"]
            seen["n"] += 1
            status, body = answer(model, seen["n"])
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_settles_once_every_model_has_answered_itself():
    """500s while 'discovering', then correct answers: converged, with the time it took."""
    def answer(model, n):
        return (500, {"error": "no healthy upstream"}) if n <= 4 else (200, {"model": model})

    with gateway(answer) as url:
        settled = await_serving(url, ["a", "b"], timeout=10, interval=0.05)
    assert settled["converged"] and settled["not_serving"] == {}, settled


def test_never_settling_gateway_is_reported_not_failed():
    """A model always answered by the other backend is named with the last answer seen."""
    with gateway(lambda model, n: (404, {"error": {"message": f"The model `{model}` does not exist."}})) as url:
        settled = await_serving(url, ["a"], timeout=0.3, interval=0.05)
    assert not settled["converged"] and "404" in settled["not_serving"]["a"], settled
    assert "does not exist" in settled["not_serving"]["a"]


@pytest.mark.parametrize(("body", "seen"), [
    ([{"model": "a"}], "200 JSON an array, not an object: '[{\"model\": \"a\"}]'"),
    (b"[" * 100_000 + b"]" * 100_000, "200 JSON nested too deeply to read: '[[[["),
    (b'{"model": "a", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}',
     "200 answer larger than 1048576 bytes (MAX_BODY_BYTES); first 200 bytes: '{\"model\": \"a\", \"pad\": \"xxx"),
])
def test_answers_that_are_not_a_json_object_are_reported_not_raised(body, seen):
    """A JSON array, JSON nested past the parser's recursion limit or a body over the size cap
    is what the warm-up reports about the model, with the first bytes; it never raises."""
    with gateway(lambda model, n: (200, body)) as url:
        settled = await_serving(url, ["a"], timeout=0)
    assert not settled["converged"] and settled["not_serving"]["a"].startswith(seen), settled
