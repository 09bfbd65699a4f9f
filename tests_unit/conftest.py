"""Fixtures for the harness's own tests: pytester runs that load the suite's plugin."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]

# A target that records what happens to it (with the pid of the process doing it) in events.log
# next to the conftest, so a test can count setups and teardowns across xdist processes.
FAKE_TARGET_CONFTEST = '''
import os
from pathlib import Path

from fixtures.targets import register_target

pytest_plugins = ["fixtures.plugin"]
EVENTS = Path(__file__).parent / "events.log"


def record(event):
    with EVENTS.open("a") as log:
        log.write(f"{event} {os.getpid()}\\n")


class FakeTarget:
    name = "fake"

    def __init__(self, config, topology):
        self.kubeconfig = None
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
    """A pytester folder whose conftest loads fixtures.plugin and registers the target 'fake'.

    Run it with runpytest_subprocess: the target registry is process-wide, and xdist needs a
    process of its own anyway.
    """
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.delenv("FAKE_SETUP_ERROR", raising=False)
    monkeypatch.delenv("FAKE_GATEWAY_URL", raising=False)
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
