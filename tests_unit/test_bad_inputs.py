"""Bad input across the harness: a gateway dripping its answer one byte at a time (slow loris) is
given up on within each probe's total deadline, and options that could only fail late are usage
errors at start."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmd_conformance.fixtures.plugin import check_gateway_reachable, read_options
from llmd_conformance import convergence, timing
from llmd_conformance.mixes import COMPLETIONS, RequestSpec
from llmd_conformance.traffic import Outcome, TrafficDriver

INTERVAL = 0.2  # well inside every per-read timeout below
DEADLINE = 1.0
SLACK = 1.0  # scheduling on a busy 2-core machine


@contextmanager
def slow_loris(limit: float = 8.0) -> Iterator[str]:
    """A loopback server that reads a request, then sends a valid 200 answer one byte every
    INTERVAL seconds, status line first, and hangs up after `limit` seconds (so that a client
    without a total deadline fails its test instead of hanging it)."""
    body = b'{"model": "a", "choices": [{"text": "x"}]}'
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(65536)
                ends = time.monotonic() + limit
                for byte in answer:
                    if stop.wait(INTERVAL) or time.monotonic() > ends:
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_slow_loris_gateway_fails_the_reachability_probe_within_its_deadline():
    """--gateway-url probe: headers dripping in never trip a per-read timeout; the total one does."""
    with slow_loris() as url:
        started = time.monotonic()
        with pytest.raises(pytest.UsageError) as excinfo:
            check_gateway_reachable(url, timeout=DEADLINE)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + SLACK, elapsed
    assert str(excinfo.value) == f"cannot connect to {url}: no answer within 1s; check --gateway-url"


def test_slow_loris_gateway_is_given_up_on_by_the_warm_up(monkeypatch):
    """Each warm-up probe has timing's warmup_probe in all; the model is reported as not serving, with why."""
    monkeypatch.setattr(timing, "DEFAULT", dataclasses.replace(timing.DEFAULT, warmup_probe=DEADLINE))
    with slow_loris() as url:
        started = time.monotonic()
        settled = convergence.await_serving(url, ["a"], timeout=0)
        elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + SLACK, elapsed
    assert settled["not_serving"] == {"a": "no complete answer within 1 s (warmup_probe in llmd_conformance/timing.py)"}


def test_slow_loris_gateway_is_a_timeout_for_the_traffic_driver():
    """The driver's --request-timeout is a total deadline per request, not per read."""
    spec = RequestSpec(model="a", endpoint=COMPLETIONS, stream=False, prompt="hi", max_tokens=1, temperature=0.0,
                       known=True)

    async def run(url: str):
        async with TrafficDriver(url, timeout=DEADLINE) as driver:
            return await driver.send(0, spec)
    with slow_loris() as url:
        result = asyncio.run(run(url))
    assert (result.outcome, result.error_message) == (Outcome.TIMEOUT, "no complete answer within 1 s")
    assert result.latency < DEADLINE + SLACK, result.latency


OPTIONS = {
    "target": "local", "topology": "pattern2", "namespace": None, "kubeconfig": None, "context": None,
    "gateway_url": None, "condition_timeout": None, "warmup_timeout": None, "gateway_profile": None,
    "report_dir": "reports", "provision": False, "teardown": None, "plan": False,
}


@pytest.mark.parametrize(("option", "message"), [
    ("condition_timeout", "--condition-timeout must be > 0 seconds, got nan"),
    ("warmup_timeout", "--warmup-timeout must be >= 0 seconds, got nan"),
])
def test_nan_timeouts_are_usage_errors(option, message):
    """nan passes every '<= 0' test and would make a wait never end: refused at start."""
    values = OPTIONS | {option: float("nan")}
    with pytest.raises(pytest.UsageError) as excinfo:
        read_options(values.__getitem__, Path("/somewhere"))
    assert str(excinfo.value) == message


def test_requests_too_few_for_the_topology_stop_the_run_at_start(suite_pytester):
    """With the real plugins, --requests 5 against pattern2 (0.98 at 95%) is a usage error naming
    189, before any target is made."""
    suite_pytester.makepyfile("def test_x(): pass")
    result = suite_pytester.runpytest_subprocess("-p", "llmd_conformance.fixtures.routing_plugin", "--target", "fake",
                                                 "--requests", "5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: the routing check can never pass with --requests 5 and topology pattern2's accuracyLowerBound 0.98: "
        "even 5/5 correct gives a wilson 95% lower bound of 0.5655 < 0.98; at least 189 requests are needed; "
        "raise --requests or lower --accuracy-threshold"])
    assert not (suite_pytester.path / "events.log").exists()
