"""wait_for: polls an assertion, returns its value, and on timeout re-raises the last AssertionError."""
from __future__ import annotations

import pytest

from llmd_conformance.waits import wait_for


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_value_once_the_assertion_passes():
    """The assertion's return value comes back after it stops failing."""
    clock, calls = FakeClock(), []

    def check():
        calls.append(clock.now)
        assert len(calls) >= 3, f"only {len(calls)} calls"
        return "ready"

    assert wait_for(check, timeout=10, interval=2, clock=clock, sleep=clock.sleep) == "ready"
    assert calls == [0.0, 2.0, 4.0]


def test_timeout_reraises_the_last_assertion_with_the_time_waited():
    """On timeout the last AssertionError propagates, its message extended with how long it waited."""
    clock, seen = FakeClock(), []

    def check():
        seen.append(clock.now)
        raise AssertionError(f"state at {clock.now:.0f}s")

    with pytest.raises(AssertionError) as excinfo:
        wait_for(check, timeout=5, interval=2, clock=clock, sleep=clock.sleep)
    assert str(excinfo.value) == "state at 5s\n(still failing after 5s, 4 attempts)"
    # The last sleep is cut short so that one attempt happens exactly at the deadline.
    assert clock.sleeps == [2, 2, 1]


def test_plain_assert_messages_are_kept():
    """A bare `assert x, msg` keeps pytest's rewritten message, with the waiting time appended."""
    clock = FakeClock()

    def check():
        value = 1
        assert value == 2, "value never became 2"

    with pytest.raises(AssertionError, match=r"value never became 2(.|\n)*after 1s, 2 attempts"):
        wait_for(check, timeout=1, interval=1, clock=clock, sleep=clock.sleep)


def test_zero_timeout_tries_exactly_once():
    """timeout=0 checks once and fails at once."""
    clock, calls = FakeClock(), []

    def check():
        calls.append(1)
        raise AssertionError("no")

    with pytest.raises(AssertionError, match="after 0s, 1 attempt\\)"):
        wait_for(check, timeout=0, clock=clock, sleep=clock.sleep)
    assert calls == [1] and clock.sleeps == []


def test_other_errors_propagate_at_once():
    """An error that is not an AssertionError (an API call failing) is not retried."""
    clock, calls = FakeClock(), []

    def check():
        calls.append(1)
        raise ConnectionError("API server down")

    with pytest.raises(ConnectionError, match="API server down"):
        wait_for(check, timeout=10, clock=clock, sleep=clock.sleep)
    assert calls == [1]


@pytest.mark.parametrize("timeout,interval,message", [
    (-1, 1, "timeout must be >= 0 seconds, got -1"),
    (1, 0, "interval must be > 0 seconds, got 0"),
])
def test_bad_arguments_are_refused(timeout, interval, message):
    """Negative timeouts and non-positive intervals are errors, not endless loops."""
    with pytest.raises(ValueError, match=message):
        wait_for(lambda: None, timeout=timeout, interval=interval)


def test_real_clock_waits_about_the_timeout():
    """With the real clock the wait ends near the deadline."""
    def never():
        raise AssertionError("never")

    with pytest.raises(AssertionError, match=r"after 0s"):
        wait_for(never, timeout=0.2, interval=0.05)
