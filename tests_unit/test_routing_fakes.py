"""Fake gateways in front of fake llm-d-inference-sim backends, for the routing-check tests, and
tests that the fakes behave as advertised (a fake that does not misroute would make every
"the check fails it" test meaningless).

A `FakeGateway` answers like the real parts do:
- a backend (pod) serving model M answers 200 with `"model": M` (JSON, or SSE chunks when
  `stream` is set) and the `x-inference-pod` header; asked for another model it answers 404
  `{"error": {"message": "The model `X` does not exist.", "type": "NotFoundError", ...}}` without
  the header (llm-d-inference-sim v0.10 `sendError`);
- the gateway picks the pod with a policy: by model (BBR + one pool per model), blind (one pool
  over every model: the seed's design), misrouting a share; "no route" is a 404 with no body.

It serves through `httpx.MockTransport` (`transport()`) or a real HTTP server on 127.0.0.1
(`serve()`), so the same fake drives the driver, the verdict and the suite module itself.
"""
from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from llmd_conformance.topology import Topology, load_topology


@dataclass(frozen=True)
class FakePod:
    name: str
    model: str
    labels: dict[str, str]


def topology_pods(topology: Topology) -> list[FakePod]:
    """One pod per replica of every model, labelled as the topology says its pods are."""
    return [FakePod(f"{m.release}-decode-{i}", m.id, topology.model_selector(m.id))
            for m in topology.models for i in range(m.replicas)]


Pick = Callable[[str, Sequence[FakePod], random.Random], "FakePod | None"]


def by_model(model: str, pods: Sequence[FakePod], rng: random.Random) -> FakePod | None:
    """BBR + one pool per model: a pod of the requested model, or no route."""
    serving = [p for p in pods if p.model == model]
    return rng.choice(serving) if serving else None


def blind(model: str, pods: Sequence[FakePod], rng: random.Random) -> FakePod | None:
    """One pool over every model, model-blind EPP: any pod."""
    return rng.choice(list(pods))


def catch_all(model: str, pods: Sequence[FakePod], rng: random.Random) -> FakePod | None:
    """By model when some pod serves it, else any pod (whose backend refuses the name)."""
    return by_model(model, pods, rng) or rng.choice(list(pods))


def misrouting(share: float) -> Pick:
    """By model, except that `share` of the requests for a served model go to another model's pod."""
    def pick(model: str, pods: Sequence[FakePod], rng: random.Random) -> FakePod | None:
        others = [p for p in pods if p.model != model]
        if others and any(p.model == model for p in pods) and rng.random() < share:
            return rng.choice(others)
        return by_model(model, pods, rng)
    return pick


def not_found_body(model: str) -> bytes:
    return json.dumps({"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                                 "param": None, "code": 404}}).encode()


def completion_body(path: str, model: str) -> dict:
    if path.endswith("/chat/completions"):
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                             "finish_reason": "stop"}]}
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": "Hello there", "logprobs": None, "finish_reason": "stop"}]}


def sse_body(path: str, model: str) -> bytes:
    chat = path.endswith("/chat/completions")
    chunks = []
    if chat:  # the first chat chunk carries the role only
        chunks.append({"object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    for word in ("Hello", " there"):
        choice = {"index": 0, "delta": {"content": word}} if chat else {"index": 0, "text": word}
        chunks.append({"object": "chat.completion.chunk" if chat else "text_completion", "model": model,
                       "choices": [choice]})
    events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(events).encode()


class FakeGateway:
    """Gateway + backends; `respond(path, body)` -> (status, headers, body). Thread-safe.

    lenient: backends answer 200 for any model name, naming the requested one (a server that
    "serves" whatever it is asked for).
    """

    def __init__(self, pods: Sequence[FakePod], pick: Pick, *, seed: int = 0, lenient: bool = False) -> None:
        self.pods = list(pods)
        self.pick = pick
        self.lenient = lenient
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.served_by = Counter()  # pod name (or "no route") -> requests

    def respond(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body)
        model = request["model"]
        with self.lock:
            self.requests += 1
            pod = self.pick(model, self.pods, self.rng)
            self.served_by[pod.name if pod else "no route"] += 1
        if pod is None:
            return 404, {}, b""
        if model != pod.model and not self.lenient:
            return 404, {"content-type": "application/json"}, not_found_body(model)
        answered = model if self.lenient else pod.model
        headers = {"x-inference-pod": pod.name}
        if request.get("stream"):
            return 200, {**headers, "content-type": "text/event-stream"}, sse_body(path, answered)
        return 200, {**headers, "content-type": "application/json"}, json.dumps(completion_body(path, answered)).encode()

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            status, headers, content = self.respond(request.url.path, request.content)
            return httpx.Response(status, headers=headers, content=content)
        return httpx.MockTransport(handle)

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on an ephemeral 127.0.0.1 port (HTTP/1.1 keep-alive); yields the base URL."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, headers, content = gateway.respond(self.path, body)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # clients closing keep-alive connections (wrk at its deadline) are not news

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


class FakeCoreApi:
    """The one CoreV1Api call the routing check makes, over fake pods."""

    def __init__(self, pods: Sequence[FakePod]) -> None:
        self.pods = list(pods)

    def list_namespaced_pod(self, namespace: str, label_selector: str = ""):
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        items = [_Obj(metadata=_Obj(name=p.name, labels=p.labels)) for p in self.pods
                 if all(p.labels.get(k) == v for k, v in wanted.items())]
        return _Obj(items=items)


class _Obj:
    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)


def _post(gateway: FakeGateway, model: str, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
    return gateway.respond("/v1/completions", json.dumps({"model": model, "stream": stream}).encode())


@pytest.fixture(scope="module")
def single_pool() -> Topology:
    return load_topology("pattern2-single-pool")


def test_blind_gateway_misroutes_about_half(single_pool):
    """The seed's design fake answers about half the requests with the model-not-found 404."""
    gateway = FakeGateway(topology_pods(single_pool), blind, seed=1)
    statuses = Counter(_post(gateway, "google/gemma-2b-it")[0] for _ in range(400))
    assert 160 <= statuses[404] <= 240 and statuses[200] + statuses[404] == 400, statuses


def test_by_model_gateway_never_misroutes_and_has_no_route_for_unknown_models():
    """The pattern2 fake serves each model from its own pod and has no route for an unknown name."""
    pods = topology_pods(load_topology("pattern2"))
    gateway = FakeGateway(pods, by_model)
    for pod in pods:
        status, headers, body = _post(gateway, pod.model)
        assert (status, headers["x-inference-pod"], json.loads(body)["model"]) == (200, pod.name, pod.model)
    assert _post(gateway, "no/such-model") == (404, {}, b"")


def test_misrouted_answer_is_the_simulators_not_found_error(single_pool):
    """A pod asked for another model answers 404 NotFoundError with no pod header, like the simulator."""
    gemma_pod = [p for p in topology_pods(single_pool) if p.model == "google/gemma-2b-it"]
    gateway = FakeGateway(gemma_pod, blind)
    status, headers, body = _post(gateway, "microsoft/Phi-3-mini-4k-instruct")
    assert status == 404 and "x-inference-pod" not in headers
    assert json.loads(body)["error"]["message"] == "The model `microsoft/Phi-3-mini-4k-instruct` does not exist."


def test_stream_answer_is_sse_ending_with_done(single_pool):
    """Streamed answers are server-sent events with the model in every chunk, closed by [DONE]."""
    gateway = FakeGateway(topology_pods(load_topology("pattern2")), by_model)
    status, headers, body = _post(gateway, "google/gemma-2b-it", stream=True)
    events = [e for e in body.decode().split("\n\n") if e]
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert events[-1] == "data: [DONE]"
    assert {json.loads(e.removeprefix("data: "))["model"] for e in events[:-1]} == {"google/gemma-2b-it"}


def test_served_gateway_answers_over_loopback_http():
    """serve() exposes the same fake on a 127.0.0.1 port."""
    gateway = FakeGateway(topology_pods(load_topology("pattern1")), by_model)
    with gateway.serve() as url:
        assert url.startswith("http://127.0.0.1:")
        response = httpx.post(f"{url}/v1/completions", json={"model": "google/gemma-2b-it"}, trust_env=False)
    assert response.status_code == 200 and response.json()["model"] == "google/gemma-2b-it"


def test_fake_core_api_selects_pods_by_labels(single_pool):
    """FakeCoreApi answers label selectors as the API server does (every term must match)."""
    core = FakeCoreApi(topology_pods(single_pool))
    both = core.list_namespaced_pod("llm-d", label_selector="llm-d.ai/inferenceServing=true")
    gemma = core.list_namespaced_pod("llm-d", label_selector="llm-d.ai/inferenceServing=true,llm-d.ai/model=gemma-2b-it")
    assert len(both.items) == 2
    assert [p.metadata.name for p in gemma.items] == ["ms-gemma-decode-0"]
