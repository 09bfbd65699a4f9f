"""Fixtures for the harness's own tests: pytester runs that load the suite's plugin."""
from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# pytester's in-process runs drop the modules first imported inside them. httpx imports httpcore
# lazily and caches its exception map: were httpcore first imported in such a run, a later re-import
# would raise exceptions httpx no longer maps (a pod runner's probe thread died of one).
import httpcore  # noqa: F401
import pytest
from hypothesis import settings
from kubernetes import client

pytest_plugins = ["pytester"]

# hypothesis profiles for the harness's own property tests, registered here and not by the package:
# an installed suite must leave other projects' profiles alone.
# Hypothesis registers a built-in "ci" profile and loads it at import when CI (or another CI
# variable) is set. Ours is registered under the same name on top of the built-in one, so it keeps
# its derandomize / no database / print_blob and, because re-registering the active profile takes
# effect at once, `CI=true pytest` runs with ours without a --hypothesis-profile flag. "dev" is
# loaded with `--hypothesis-profile=dev`. The traffic mixes do not depend on either: `draw_mix`
# pins its own settings and seed.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", settings.get_profile("ci"), max_examples=200, deadline=None)

REPO = Path(__file__).resolve().parents[1]
# The entry point of an installed copy (pip install -e .) would load the plugin into every nested
# run; each nested run here loads exactly the plugins its own conftest or -p names.
NO_ENTRY_POINT = "-p no:llmd_conformance"


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # After pytester's own set-up, which clears PYTEST_ADDOPTS.
    monkeypatch.setenv("PYTEST_ADDOPTS", NO_ENTRY_POINT)
    return pytester

# A target that records what happens to it (with the pid of the process doing it) in events.log
# next to the conftest, so a test can count setups and teardowns across xdist processes.
FAKE_TARGET_CONFTEST = '''
import os
from pathlib import Path

from llmd_conformance.targets import register_target

pytest_plugins = ["llmd_conformance.fixtures.plugin"]
EVENTS = Path(__file__).parent / "events.log"


def record(event):
    with EVENTS.open("a") as log:
        log.write(f"{event} {os.getpid()}\\n")


class FakeTarget:
    name = "fake"

    def __init__(self, config, topology):
        self.kubeconfig = os.environ.get("FAKE_KUBECONFIG")
        self.context = "fake-context"
        self.plan = config.getoption("plan")

    def setup(self):
        record("plan" if self.plan else "setup")
        if os.environ.get("FAKE_SETUP_ERROR"):
            raise RuntimeError(os.environ["FAKE_SETUP_ERROR"])

    def teardown(self):
        record("teardown")

    def gateway_url(self):
        return os.environ.get("FAKE_GATEWAY_URL")

    def versions(self):
        return {"fake": "1.0"}

    def describe(self):
        return "a fake target for the harness tests"


register_target("fake", FakeTarget)
'''


@pytest.fixture
def suite_pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder whose conftest loads llmd_conformance.fixtures.plugin and registers the target 'fake'.

    Run it with runpytest_subprocess: the target registry is process-wide, and xdist needs a
    process of its own anyway.
    """
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("FAKE_SETUP_ERROR", raising=False)
    monkeypatch.delenv("FAKE_GATEWAY_URL", raising=False)
    monkeypatch.delenv("FAKE_KUBECONFIG", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)  # in CI, the job's page is for the real run
    pytester.makeconftest(FAKE_TARGET_CONFTEST)
    return pytester


def events(pytester: pytest.Pytester) -> list[tuple[str, int]]:
    """(event, pid) lines the fake target recorded."""
    log = pytester.path / "events.log"
    if not log.exists():
        return []
    return [(event, int(pid)) for event, pid in (line.split() for line in log.read_text().splitlines())]


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


class FakeApiServer:
    """Answers GET paths from a dict {path: (status, body)}; records requests and their headers."""

    def __init__(self, routes: dict[str, tuple[int, object]]):
        self.routes = routes
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append((self.path, dict(self.headers)))
                status, body = fake.routes.get(self.path, (404, {"kind": "Status", "code": 404}))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"authorization": "Bearer secret-token"}
        return client.ApiClient(configuration)


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer({})
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def resources(*names: str) -> tuple[int, dict]:
    return 200, {"kind": "APIResourceList", "resources": [{"name": n} for n in names]}


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Lines of `proc` until one contains `marker` (the process keeps running); killed if it never comes."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"{marker!r} not seen within {timeout}s; output:\n{''.join(seen)}")
