"""The request driver, the response classifier, the traffic slices and the seed-protocol replay."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import socket
import threading

import httpx
import pytest

from llmd_conformance.mixes import CHAT_COMPLETIONS, COMPLETIONS, RequestSpec
from llmd_conformance.topology import load_topology
from llmd_conformance.traffic import (DROPPED_REASON_HEADER, MAX_BODY_BYTES, NO_POD, SHED_COLUMN, UNKNOWN_ROW, Outcome,
                                      TrafficDriver, drive_in_batches,
                                      percentile, replay_seed_protocol,
                                      run_seed_protocol, slices)
from tests_unit.test_routing_fakes import (FakeGateway, blind, by_model, not_found_body, sse_body,
                                           topology_pods)

GEMMA = "google/gemma-2b-it"
PHI = "microsoft/Phi-3-mini-4k-instruct"


def spec(model: str = GEMMA, *, endpoint: str = COMPLETIONS, stream: bool = False, known: bool = True) -> RequestSpec:
    return RequestSpec(model=model, endpoint=endpoint, stream=stream, prompt="hi", max_tokens=4, temperature=0.0,
                       known=known)


def send(handler, request_spec: RequestSpec, *, timeout: float = 5.0):
    """One request through a MockTransport built from `handler`."""
    async def run():
        async with TrafficDriver("http://gateway.test", timeout=timeout,
                                 transport=httpx.MockTransport(handler)) as driver:
            return await driver.send(0, request_spec)
    return asyncio.run(run())


def answer(status: int, content: bytes = b"", **headers: str):
    return lambda request: httpx.Response(status, headers=headers, content=content)


def completion(model: str) -> bytes:
    return json.dumps({"object": "text_completion", "model": model, "choices": [{"text": "hi"}]}).encode()


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("status", "content", "known", "expected"), [
    (200, completion(GEMMA), True, Outcome.OK),
    (200, completion(PHI), True, Outcome.MISROUTED),
    (404, not_found_body(GEMMA), True, Outcome.MISROUTED),
    (404, json.dumps({"object": "error", "message": f"The model `{GEMMA}` does not exist.",
                      "type": "NotFoundError", "param": None, "code": 404}).encode(), True, Outcome.MISROUTED),
    (404, b"", True, Outcome.GATEWAY_ERROR),
    (404, b"<html>not found</html>", True, Outcome.GATEWAY_ERROR),
    (404, json.dumps({"error": {"message": "no such endpoint", "type": "BadRequestError"}}).encode(), True,
     Outcome.GATEWAY_ERROR),
    (400, json.dumps({"error": {"message": "model not found in request body", "type": "BadRequestError"}}).encode(),
     True, Outcome.GATEWAY_ERROR),
    (429, b"", True, Outcome.GATEWAY_ERROR),
    (500, b"fault filter abort", True, Outcome.GATEWAY_ERROR),
    (503, b"no healthy upstream", True, Outcome.GATEWAY_ERROR),
    (503, json.dumps({"error": {"message": "server is shutting down", "type": "ServiceUnavailableError"}}).encode(),
     True, Outcome.GATEWAY_ERROR),
    (404, not_found_body("no/such"), False, Outcome.OK_UNKNOWN),
    (404, b"", False, Outcome.UNKNOWN_NO_ROUTE),
    (200, completion("no/such"), False, Outcome.UNKNOWN_ACCEPTED),
    (200, completion(GEMMA), False, Outcome.UNKNOWN_ACCEPTED),
    (503, b"", False, Outcome.GATEWAY_ERROR),
])
def test_classifier_maps_each_answer_to_its_class(status, content, known, expected):
    """Each kind of answer lands in the class the check counts it as."""
    result = send(answer(status, content, **JSON), spec(GEMMA if known else "no/such", known=known))
    assert (result.outcome, result.status) == (expected, status), result.describe()


def test_non_json_reply_is_a_gateway_error_quoting_its_first_200_bytes():
    """A 200 that is not JSON is a gateway error; the message quotes the body's first 200 bytes."""
    body = b"<html>" + b"x" * 500
    result = send(answer(200, body), spec())
    assert result.outcome is Outcome.GATEWAY_ERROR
    assert result.error_type == "UnparsableAnswer"
    assert repr(body[:200].decode()) in result.error_message
    assert "x" * 201 not in result.error_message


def test_json_answer_without_model_is_a_gateway_error():
    """A 200 JSON answer that names no model proves nothing about routing."""
    result = send(answer(200, b'{"choices": []}', **JSON), spec())
    assert result.outcome is Outcome.GATEWAY_ERROR and "no 'model'" in result.error_message


@pytest.mark.parametrize("endpoint", [COMPLETIONS, CHAT_COMPLETIONS])
def test_stream_is_ok_when_every_chunk_names_the_model_and_records_ttft(endpoint):
    """A streamed answer is ok when every SSE chunk names the requested model; TTFT is recorded."""
    result = send(answer(200, sse_body(endpoint, GEMMA), **{"content-type": "text/event-stream",
                                                             "x-inference-pod": "p1"}),
                  spec(endpoint=endpoint, stream=True))
    assert (result.outcome, result.response_model, result.pod) == (Outcome.OK, GEMMA, "p1")
    assert result.ttft is not None and 0 <= result.ttft <= result.latency


def test_stream_with_a_chunk_from_another_model_is_misrouted():
    """One chunk naming another model makes the whole stream a misroute, reporting that model."""
    events = sse_body(COMPLETIONS, GEMMA).replace(b'"model": "google/gemma-2b-it"', f'"model": "{PHI}"'.encode(), 1)
    result = send(answer(200, events, **{"content-type": "text/event-stream"}), spec(stream=True))
    assert (result.outcome, result.response_model) == (Outcome.MISROUTED, PHI)


def test_stream_reporting_model_not_found_mid_stream_is_misrouted():
    """An SSE error event "model does not exist" after a 200 is a misroute."""
    events = f"data: {not_found_body(GEMMA).decode()}\n\ndata: [DONE]\n\n".encode()
    result = send(answer(200, events, **{"content-type": "text/event-stream"}), spec(stream=True))
    assert result.outcome is Outcome.MISROUTED and result.error_type == "NotFoundError"


@pytest.mark.parametrize(("events", "why"), [
    (b"data: not json\n\ndata: [DONE]\n\n", "event data is not JSON"),
    (b"data: [DONE]\n\n", "without a completion chunk"),
    (b"", "without a completion chunk"),
    (b'data: {"choices": []}\n\n', "chunk without 'model'"),
])
def test_broken_event_streams_are_gateway_errors(events, why):
    """Unreadable or empty event streams are gateway errors that say what was wrong."""
    result = send(answer(200, events, **{"content-type": "text/event-stream"}), spec(stream=True))
    assert result.outcome is Outcome.GATEWAY_ERROR and why in result.error_message, result.describe()


DEEP = b"[" * 100_000 + b"]" * 100_000  # parses only past Python's recursion limit


@pytest.mark.parametrize(("status", "content", "why"), [
    (200, b'[{"model": "google/gemma-2b-it"}]', "not an object: '[{\"model\": \"google/gemma-2b-it\"}]'"),
    (404, b"[1, 2]", "JSON an array, not an object: '[1, 2]'"),
    (200, b'"google/gemma-2b-it"', "JSON a string, not an object"),
    (200, b"null", "JSON null, not an object: 'null'"),
    (200, DEEP, f"JSON nested too deeply to read: {'[' * 200!r}"),
])
def test_json_that_is_not_an_object_is_a_gateway_error_quoting_the_body(status, content, why):
    """An array, a bare value or JSON nested past the parser's recursion limit never raises out of
    the driver: it is a gateway error whose message quotes the first bytes."""
    result = send(answer(status, content, **JSON), spec())
    assert (result.outcome, result.status, result.error_type) == (Outcome.GATEWAY_ERROR, status, "UnparsableAnswer")
    assert why in result.error_message, result.error_message


@pytest.mark.parametrize(("events", "why"), [
    (b"data: [1, 2]\n\n", "event data is JSON an array, not an object: '[1, 2]'"),
    (b"data: " + DEEP + b"\n\n", "event data is JSON nested too deeply to read"),
])
def test_event_data_that_is_not_an_object_is_a_gateway_error(events, why):
    """The same for each event of a stream."""
    result = send(answer(200, events, **{"content-type": "text/event-stream"}), spec(stream=True))
    assert result.outcome is Outcome.GATEWAY_ERROR and why in result.error_message, result.describe()


def test_chunk_with_choices_that_are_not_a_list_does_not_crash():
    """'choices' of another type is ignored for the first-token time; the model still judges routing."""
    events = f'data: {{"model": "{GEMMA}", "choices": 5}}\n\ndata: [DONE]\n\n'.encode()
    result = send(answer(200, events, **{"content-type": "text/event-stream"}), spec(stream=True))
    assert (result.outcome, result.ttft) == (Outcome.OK, None)


def oversized_json() -> bytes:
    return json.dumps({"model": GEMMA, "choices": [{"text": "x" * MAX_BODY_BYTES}]}).encode()


@pytest.mark.parametrize(("content", "headers", "stream"), [
    (oversized_json(), JSON, False),
    (sse_body(COMPLETIONS, GEMMA) * (MAX_BODY_BYTES // len(sse_body(COMPLETIONS, GEMMA)) + 1),
     {"content-type": "text/event-stream"}, True),
    (b"data: " + b"x" * (MAX_BODY_BYTES + 1), {"content-type": "text/event-stream"}, True),
])
def test_answer_over_the_size_cap_is_a_gateway_error_saying_so(content, headers, stream):
    """A body over MAX_BODY_BYTES (1 MiB) is not read further: a gateway error 'AnswerTooLarge'
    with the status, the pod and the first bytes, whether one JSON document, many stream events
    or one endless line."""
    assert MAX_BODY_BYTES == 1 << 20 and len(content) > MAX_BODY_BYTES
    result = send(answer(200, content, **headers, **{"x-inference-pod": "p1"}), spec(stream=stream))
    assert (result.outcome, result.status, result.pod, result.error_type) == (
        Outcome.GATEWAY_ERROR, 200, "p1", "AnswerTooLarge")
    assert result.error_message == (f"answer larger than 1048576 bytes (MAX_BODY_BYTES); first 200 bytes: "
                                    f"{content[:200].decode()!r}")


def test_answer_just_under_the_cap_is_read():
    """The cap is on the body's size, not on normal answers."""
    padding = MAX_BODY_BYTES - len(completion(GEMMA)) - 20
    body = json.dumps({"model": GEMMA, "choices": [{"text": "x" * padding}]}).encode()
    assert len(body) <= MAX_BODY_BYTES
    assert send(answer(200, body, **JSON), spec()).outcome is Outcome.OK


def test_stream_request_answered_with_json_404_is_classified_from_the_json():
    """A stream request refused before streaming (JSON 404) is classified like a plain answer."""
    result = send(answer(404, not_found_body(GEMMA), **JSON), spec(stream=True))
    assert result.outcome is Outcome.MISROUTED


def test_slow_answer_is_a_timeout():
    """An answer slower than the per-request timeout is classified timeout."""
    async def slow(request):
        await asyncio.sleep(2)
        return httpx.Response(200, content=completion(GEMMA))
    result = send(slow, spec(), timeout=0.05)
    assert result.outcome is Outcome.TIMEOUT and result.status is None and result.latency < 1


def test_connection_failure_is_a_gateway_error_naming_the_exception():
    """A transport error is a gateway error carrying the exception class."""
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)
    result = send(refuse, spec())
    assert (result.outcome, result.error_type) == (Outcome.GATEWAY_ERROR, "ConnectError")


def test_request_body_is_the_specs_openai_body():
    """The driver posts the spec's body to the spec's endpoint."""
    seen = []

    def record(request):
        seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, content=completion(GEMMA))
    send(record, spec(endpoint=CHAT_COMPLETIONS))
    assert seen == [(CHAT_COMPLETIONS, spec(endpoint=CHAT_COMPLETIONS).body())]


def test_failed_requests_are_sent_once_and_never_retried():
    """Every request is sent exactly once, also when the answer is a 503 or a misroute."""
    calls = []

    def flaky(request):
        calls.append(1)
        return httpx.Response(503 if len(calls) % 2 else 404, content=not_found_body(GEMMA))

    async def run():
        async with TrafficDriver("http://gateway.test", concurrency=3, transport=httpx.MockTransport(flaky)) as d:
            return await d.send_all([spec()] * 20)
    results = asyncio.run(run())
    assert len(calls) == 20 and [r.index for r in results] == list(range(20))


def test_concurrency_is_bounded_by_the_semaphore():
    """No more than `concurrency` requests are in flight at once."""
    in_flight, peak = 0, 0

    async def handler(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, content=completion(GEMMA))

    async def run():
        async with TrafficDriver("http://gateway.test", concurrency=4, transport=httpx.MockTransport(handler)) as d:
            return await d.send_all([spec()] * 25)
    assert all(r.outcome is Outcome.OK for r in asyncio.run(run()))
    assert peak == 4


def test_real_http_connections_are_kept_alive_and_a_reset_is_not_retried():
    """Over real loopback HTTP the driver reuses at most `concurrency` connections, and a server
    that drops the connection sees the request once (no transport retry)."""
    gateway = FakeGateway(topology_pods(load_topology("pattern2")), by_model)
    connections = []
    with gateway.serve() as url:
        host, port = url.removeprefix("http://").split(":")
        # count connections by wrapping the server-side accept in a counting proxy
        proxy = socket.create_server(("127.0.0.1", 0))
        proxy_port = proxy.getsockname()[1]

        def relay(client):
            upstream = socket.create_connection((host, int(port)))
            pipes = [threading.Thread(target=_pipe, args=(a, b), daemon=True)
                     for a, b in ((client, upstream), (upstream, client))]
            for p in pipes:
                p.start()

        def accept():
            while True:
                try:
                    client, _ = proxy.accept()
                except OSError:
                    return
                connections.append(client)
                relay(client)
        threading.Thread(target=accept, daemon=True).start()

        async def run():
            async with TrafficDriver(f"http://127.0.0.1:{proxy_port}", concurrency=2) as d:
                return await d.send_all([spec(GEMMA), spec(PHI)] * 10)
        results = asyncio.run(run())
        proxy.close()
    assert all(r.outcome is Outcome.OK for r in results), [r.describe() for r in results if r.outcome != Outcome.OK]
    assert 1 <= len(connections) <= 2, f"expected keep-alive reuse of <= 2 connections, saw {len(connections)}"

    dropper = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def drop():
        try:
            conn, _ = dropper.accept()
        except OSError:
            return
        accepted.append(conn)
        conn.recv(65536)
        conn.close()
    threading.Thread(target=drop, daemon=True).start()

    async def once():
        async with TrafficDriver(f"http://127.0.0.1:{dropper.getsockname()[1]}", timeout=3) as d:
            return await d.send(0, spec())
    dropped = asyncio.run(once())
    dropper.close()
    assert dropped.outcome is Outcome.GATEWAY_ERROR and len(accepted) == 1, dropped.describe()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def test_drive_in_batches_stops_after_the_batch_where_stop_says_so():
    """Batches go out one after another; the run ends after the first batch `stop` accepts."""
    gateway = FakeGateway(topology_pods(load_topology("pattern2")), by_model)

    async def run():
        async with TrafficDriver("http://gateway.test", transport=gateway.transport()) as d:
            return await drive_in_batches(d, [spec()] * 100, 10, lambda so_far: len(so_far) >= 30)
    results = asyncio.run(run())
    assert len(results) == 30 and gateway.requests == 30
    assert [r.index for r in results] == list(range(30))


def test_slices_cut_traffic_by_class_status_model_pod_and_matrix():
    """Slices count by class, status, requested model (unknown names grouped), pod, and the matrix."""
    gateway = FakeGateway(topology_pods(load_topology("pattern2-single-pool")), blind, seed=3)
    specs = [spec(GEMMA), spec(PHI)] * 50 + [spec("no/such", known=False)] * 4 + [spec("other/x", known=False)]

    async def run():
        async with TrafficDriver("http://gateway.test", transport=gateway.transport()) as d:
            return await d.send_all(specs)
    results = asyncio.run(run())
    cut = slices(results)
    assert cut.total == 105
    assert sum(cut.by_outcome.values()) == 105 and set(cut.by_status) == {200, 404}
    assert set(cut.by_model) == {GEMMA, PHI, UNKNOWN_ROW} and cut.by_model[UNKNOWN_ROW].requests == 5
    ok = cut.by_outcome[Outcome.OK]
    misrouted = cut.by_outcome[Outcome.MISROUTED]
    assert ok + misrouted == 100 and 30 <= misrouted <= 70
    # 200s carry the pod header and come from the pod of the requested model; 404s carry none
    assert cut.matrix[GEMMA]["ms-gemma-decode-0"] == cut.by_model[GEMMA].outcomes[Outcome.OK]
    assert cut.matrix[GEMMA].get("ms-phi-decode-0", 0) == 0
    assert cut.matrix[GEMMA][NO_POD] == cut.by_model[GEMMA].outcomes[Outcome.MISROUTED]
    assert cut.error_rate == pytest.approx(misrouted / 105)
    assert cut.latency_p50 is not None and cut.latency_p50 <= cut.latency_p95


def test_percentile_interpolates_and_handles_tiny_samples():
    """p50/p95 by linear interpolation; one value is its own percentile; none gives None."""
    assert percentile([], 50) is None
    assert percentile([2.0], 95) == 2.0
    assert percentile(list(range(1, 101)), 50) == pytest.approx(50.5)
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


def test_seed_protocol_follows_the_seeds_loop_and_sleeps():
    """The loop retries until success, sleeping the retry interval between attempts and the
    request interval after every request, and counts first-attempt successes apart."""
    answers = iter([False, False, True, True, False, False, False])
    sleeps = []

    async def attempt(i, model):
        return next(answers)

    async def sleep(seconds):
        sleeps.append(seconds)

    replay = asyncio.run(run_seed_protocol(attempt, ["m"], random.Random(0), requests=3, attempts=3,
                                           retry_interval=2.0, request_interval=1.0, sleep=sleep))
    assert replay.attempts_used == (3, 1, 4)  # the third request never succeeded
    assert (replay.successes, replay.first_attempt_successes) == (2, 1)
    assert sleeps == [2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0]
    assert "2/3 succeeded" in replay.describe() and "first attempts 1/3" in replay.describe()


def test_seed_protocol_reports_50_of_50_about_95_percent_of_the_time_against_a_coin_flip():
    """With first attempts right half of the time, 10 retries make the seed's loop report 50/50 in
    about 95% of runs ((1 - 0.5^10)^50 = 0.952): the masking the suite exists to expose."""
    async def no_sleep(seconds):
        pass

    async def replays():
        flips = random.Random(2024)

        async def coin(i, model):
            return flips.random() < 0.5
        return [await run_seed_protocol(coin, ["a", "b"], random.Random(run), sleep=no_sleep) for run in range(400)]
    runs = asyncio.run(replays())
    perfect = sum(r.successes == 50 for r in runs) / len(runs)
    first = sum(r.first_attempt_successes for r in runs) / (50 * len(runs))
    assert 0.92 <= perfect <= 0.98, perfect
    assert 0.47 <= first <= 0.53, first


def test_seed_protocol_replay_through_a_model_blind_fake_shows_both_figures():
    """Through the driver and a model-blind fake: the seed figure is (nearly) 50/50 while the
    first attempts succeed about half of the time."""
    gateway = FakeGateway(topology_pods(load_topology("pattern2-single-pool")), blind, seed=11)

    async def run():
        async with TrafficDriver("http://gateway.test", transport=gateway.transport()) as d:
            return await replay_seed_protocol(d, [GEMMA, PHI], random.Random(5), retry_interval=0.0)
    replay = asyncio.run(run())
    assert replay.successes >= 49
    assert 15 <= replay.first_attempt_successes <= 35
    assert gateway.requests == sum(min(a, 10) for a in replay.attempts_used)


def test_driver_refuses_bad_settings_and_use_outside_its_context():
    """Bad concurrency / timeout and sending before `async with` raise with what to fix."""
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        TrafficDriver("http://x", concurrency=0)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        TrafficDriver("http://x", timeout=0)
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(TrafficDriver("http://x").send(0, spec()))


FLOW_CONTROL_BODY = b"inference error: ResourceExhausted - system saturated"


@pytest.mark.parametrize("status", [429, 503])
def test_flow_control_answer_is_shed_with_its_reason_never_a_misroute(status):
    """429/503 with x-llm-d-request-dropped-reason (llm-d's EPP) is its own outcome, carrying the reason."""
    result = send(answer(status, FLOW_CONTROL_BODY, **{DROPPED_REASON_HEADER: "rejected-saturated"}), spec())
    assert (result.outcome, result.dropped_reason, result.error_type) == (Outcome.SHED, "rejected-saturated",
                                                                          "FlowControl")
    assert result.error_message == f"shed by flow control: {status} {DROPPED_REASON_HEADER}: rejected-saturated"


@pytest.mark.parametrize(("status", "headers"), [
    (429, {}),                                           # no reason: a gateway error as before
    (404, {DROPPED_REASON_HEADER: "rejected-saturated"}),  # the header on another status is not flow control
])
def test_without_both_status_and_header_it_is_not_shed(status, headers):
    result = send(answer(status, FLOW_CONTROL_BODY, **headers), spec())
    assert result.outcome is Outcome.GATEWAY_ERROR and result.dropped_reason is None


def test_shed_requests_have_their_own_matrix_column():
    shed = send(answer(429, FLOW_CONTROL_BODY, **{DROPPED_REASON_HEADER: "evicted"}), spec())
    assert slices([shed]).matrix == {GEMMA: {SHED_COLUMN: 1}}


def test_an_answer_for_a_rewrite_target_is_correct_only_for_the_rewritten_name():
    """'gemma-latest' rewritten to gemma: gemma's answer is ok_rewritten for it (its own name, written back by the
    EPP, is ok), another model's a misroute; gemma's answer is a misroute for any other name."""
    rewritten = dataclasses.replace(spec("gemma-latest"), accepts=(GEMMA, "gemma-latest"))
    assert send(answer(200, completion(GEMMA), **JSON), rewritten).outcome is Outcome.OK_REWRITTEN
    assert send(answer(200, completion("gemma-latest"), **JSON), rewritten).outcome is Outcome.OK
    assert send(answer(200, completion(PHI), **JSON), rewritten).outcome is Outcome.MISROUTED
    assert send(answer(200, completion(GEMMA), **JSON), spec("other-name")).outcome is Outcome.MISROUTED
    assert send(answer(200, completion("food-review-1"), **JSON), spec("food-review-1")).outcome is Outcome.OK
