"""The cluster run-lock (a coordination.k8s.io Lease) against a fake coordination API.

Two clocks: `Clock` is a machine's wall clock (what it stamps on the Lease), `Ticker` our monotonic
clock and sleep, which moves at once when the lock waits and runs hooks: what other machines do
to the Lease meanwhile.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes.client import ApiException

from fake_gcloud import FakeCoordination, State
from llmd_conformance.runlock import (
    UNDO_ANNOTATION,
    RunLock,
    RunLockError,
    RunLockHeld,
    RunLockLost,
    default_holder,
)

START = datetime(2025, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
NAME, NAMESPACE = "llmd-conformance-run-lock", "default"


class Clock:
    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Ticker:
    """Our monotonic clock; sleep() moves it at once, then runs the hooks with the new time."""

    def __init__(self):
        self.t = 0.0
        self.hooks: list = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        for hook in self.hooks:
            hook(self.t)


class Flaky:
    """The fake API, whose methods named in `failures` first raise the listed HTTP statuses (a hiccup)."""

    def __init__(self, api: FakeCoordination):
        self.api = api
        self.failures: dict[str, list[int]] = {}

    def __getattr__(self, method: str):
        call = getattr(self.api, method)

        def maybe_fail(*args, **kwargs):
            if self.failures.get(method):
                raise ApiException(status=self.failures[method].pop(0), reason="Service Unavailable")
            return call(*args, **kwargs)

        return maybe_fail


@pytest.fixture
def api(tmp_path):
    state = State(tmp_path / "state.json")
    state.write({"leases": {}, "resource_version": 1})
    return FakeCoordination(state)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ticker():
    return Ticker()


def make(api, clock, holder, ticker=None, **kwargs):
    kwargs.setdefault("renew_every_s", 3600)  # no background renewal unless a test wants it
    ticker = ticker or Ticker()
    return RunLock(api, holder=holder, duration_s=60, clock=clock, sleep=ticker.sleep, monotonic=ticker.monotonic,
                   **kwargs)


def lease(api):
    return api.read_namespaced_lease(NAME, NAMESPACE)


def renew(api, renew_time: datetime) -> None:
    """What the holder's renewal thread does, on its machine with its clock."""
    current = lease(api)
    current.spec.renew_time = renew_time
    try:
        api.replace_namespaced_lease(NAME, NAMESPACE, current)
    except ApiException as exc:
        if exc.status != 409:  # 409: renewed by someone else meanwhile, changed all the same
            raise


def renews_at(api, seconds: float, renew_time: datetime):
    """A Ticker hook: the holder renews once, `seconds` into our wait."""
    done = []

    def hook(t):
        if t >= seconds and not done:
            done.append(t)
            renew(api, renew_time)

    return hook


def take_as(api, holder: str | None) -> None:
    current = lease(api)
    current.spec.holder_identity = holder
    api.replace_namespaced_lease(NAME, NAMESPACE, current)


def test_acquire_creates_a_lease_with_holder_times_and_duration(api, clock):
    lock = make(api, clock, "ci-run-1")
    assert lock.acquire() == {}
    spec = lease(api).spec
    assert (spec.holder_identity, spec.acquire_time, spec.renew_time, spec.lease_duration_seconds) == (
        "ci-run-1", START, START, 60)
    assert lock.held and lock.lost_to is None
    lock.require()
    lock.release()


def test_live_lock_refuses_a_second_run_naming_holder_and_since(api, clock, ticker):
    first = make(api, clock, "ci-run-1")
    first.acquire()
    ticker.hooks.append(renews_at(api, 20, START + timedelta(seconds=20)))
    second = make(api, clock, "laptop-2", ticker)
    with pytest.raises(RunLockHeld) as refused:
        second.acquire()
    message = str(refused.value)
    assert "held by ci-run-1 since 2025-11-27T10:00:00+00:00, which renewed it while we watched (within 20s)" in message
    assert "another conformance run" in message
    assert ticker.t == 20  # refused as soon as the renewal was seen
    assert not second.held
    assert lease(api).spec.holder_identity == "ci-run-1"
    first.release()


def test_stale_lock_is_taken_over_with_its_undo_record_after_watching_it_unchanged(api, clock, ticker, caplog):
    dead = make(api, clock, "ci-run-dead")
    dead.acquire()
    dead.save_record({"pool_size_found": 0})
    heir = make(api, clock, "ci-run-2", ticker)
    assert heir.acquire() == {"pool_size_found": 0}
    assert ticker.t == 60  # the Lease's whole duration, by our clock
    assert "waiting up to 60 s to see whether ci-run-dead renews it" in caplog.text
    assert heir.previous_holder == "ci-run-dead"
    current = lease(api)
    assert current.spec.holder_identity == "ci-run-2"
    assert current.spec.lease_transitions == 1
    assert not dead.confirm() and dead.lost and dead.lost_to == "ci-run-2"
    heir.save_record({})
    heir.release()


def test_a_live_holder_whose_renew_time_is_far_in_our_past_is_not_taken_over(api, clock, ticker):
    """Its machine's clock is a day behind ours: its renewTime looks stale, but it renews while we watch."""
    behind = Clock(START - timedelta(days=1))
    holder = make(api, behind, "ci-run-1")
    holder.acquire()
    ticker.hooks.append(renews_at(api, 30, behind.now + timedelta(seconds=30)))
    with pytest.raises(RunLockHeld, match="held by ci-run-1 since 2025-11-26T10:00:00"):
        make(api, clock, "ci-run-2", ticker).acquire()
    assert lease(api).spec.holder_identity == "ci-run-1"
    assert holder.confirm()
    holder.release()


def test_a_dead_holder_whose_renew_time_is_in_our_future_is_taken_over_after_the_duration(api, clock, ticker, caplog):
    """Its machine's clock is an hour ahead: its renewTime looks fresh, but nothing changes while we watch."""
    dead = make(api, Clock(START + timedelta(hours=1)), "ci-run-1")
    dead.acquire()
    heir = make(api, clock, "ci-run-2", ticker)
    assert heir.acquire() == {}
    assert ticker.t == 60
    assert "waiting up to 60 s to see whether ci-run-1 renews it" in caplog.text
    assert lease(api).spec.holder_identity == "ci-run-2" and heir.previous_holder == "ci-run-1"
    heir.release()


def test_a_lease_released_while_watched_is_taken_at_once_with_its_record(api, clock, ticker):
    holder = make(api, clock, "ci-run-1")
    holder.acquire()
    holder.save_record({"pool_size_found": 1})
    ticker.hooks.append(lambda t: holder.release() if t >= 10 else None)
    heir = make(api, clock, "ci-run-2", ticker)
    assert heir.acquire() == {"pool_size_found": 1}
    assert ticker.t == 10
    assert lease(api).spec.holder_identity == "ci-run-2"
    heir.save_record({})
    heir.release()


def test_a_read_failing_while_watching_does_not_end_the_watch(api, clock, ticker, caplog):
    make(api, clock, "ci-run-dead").acquire()
    flaky = Flaky(api)
    ticker.hooks.append(lambda t: flaky.failures.setdefault("read_namespaced_lease", [503]))
    heir = make(flaky, clock, "ci-run-2", ticker)
    heir.acquire()
    assert ticker.t == 60
    assert "reading Lease default/llmd-conformance-run-lock failed" in caplog.text
    heir.release()


def test_release_deletes_the_lease_when_nothing_is_left_to_undo(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.release()
    assert api.state.read()["leases"] == {}
    lock.release()  # idempotent


def test_release_with_pending_undo_keeps_an_unheld_lease_that_the_next_run_inherits(api, clock, ticker):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.save_record({"releases": [["ms-gemma", "llm-d"]]})
    lock.release()
    kept = lease(api)
    assert kept.spec.holder_identity is None
    assert UNDO_ANNOTATION in kept.metadata.annotations
    nxt = make(api, clock, "ci-run-2", ticker)
    assert nxt.acquire() == {"releases": [["ms-gemma", "llm-d"]]}
    assert ticker.t == 0  # unheld: no wait
    nxt.save_record({})
    nxt.release()


def test_renewal_thread_moves_renew_time_forward(api, clock):
    lock = make(api, clock, "ci-run-1", renew_every_s=0.05)
    lock.acquire()
    clock.advance(30)
    deadline = time.monotonic() + 5
    while lease(api).spec.renew_time != clock.now and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lease(api).spec.renew_time == clock.now
    assert lease(api).spec.acquire_time == START
    lock.release()


def test_a_lock_taken_by_someone_else_is_reported_lost(api, clock):
    lock = make(api, clock, "ci-run-1", renew_every_s=0.05)
    lock.acquire()
    take_as(api, "intruder")
    deadline = time.monotonic() + 5
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.lost and not lock.held and lock.lost_to == "intruder"
    lock.release()  # must not delete the intruder's Lease
    assert lease(api).spec.holder_identity == "intruder"


def test_two_runs_racing_for_a_free_lock_end_with_exactly_one_holder(api, clock):
    outcomes: dict[str, str] = {}
    locks = []
    for i in range(4):
        ticker = Ticker()  # the winner renews while the others watch
        ticker.hooks.append(lambda t: renew(api, START + timedelta(seconds=t)))
        locks.append(make(api, clock, f"racer-{i}", ticker))

    def race(lock):
        try:
            lock.acquire()
            outcomes[lock.holder] = "won"
        except RunLockHeld:
            outcomes[lock.holder] = "refused"

    threads = [threading.Thread(target=race, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [holder for holder, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert lease(api).spec.holder_identity == winners[0]
    for lock in locks:
        lock.release()


def test_undo_annotation_that_is_not_json_is_a_clear_error(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    broken = lease(api)
    broken.metadata.annotations = {UNDO_ANNOTATION: "{not json"}
    broken.spec.holder_identity = None
    api.replace_namespaced_lease(NAME, NAMESPACE, broken)
    lock._stop.set()
    with pytest.raises(RunLockError, match=r"annotation llmd-conformance/undo of the run-lock Lease is not JSON"):
        make(api, clock, "ci-run-2").acquire()


# -- losing the lock is enforced --------------------------------------------------------------------


def test_save_record_and_require_refuse_a_lock_never_acquired_or_released(api, clock):
    lock = make(api, clock, "ci-run-1")
    with pytest.raises(RunLockLost, match=r"this run \(ci-run-1\) does not hold .*: the Lease does not exist"):
        lock.save_record({"pool_size_found": 0})
    assert api.state.read()["leases"] == {}
    lock.acquire()
    lock.release()
    with pytest.raises(RunLockLost, match="does not hold"):
        lock.require()
    with pytest.raises(RunLockLost):
        lock.save_record({"pool_size_found": 0})
    assert api.state.read()["leases"] == {}


def test_require_names_who_holds_the_lease_now(api, clock):
    other = make(api, clock, "ci-run-other")
    other.acquire()
    with pytest.raises(RunLockLost, match=r"it is held by ci-run-other since 2025-11-27T10:00:00\+00:00; refusing"):
        make(api, clock, "ci-run-1").require()
    other.release()


def test_save_record_on_a_lock_taken_over_raises_naming_the_new_holder_and_writes_nothing(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    take_as(api, "ci-run-2")  # the renewal thread has not noticed yet
    with pytest.raises(RunLockLost, match=r"this run \(ci-run-1\) lost the cluster run-lock .*held by ci-run-2"):
        lock.save_record({"pool_size_found": 0})
    assert lock.lost and not lock.held and lock.lost_to == "ci-run-2"
    assert UNDO_ANNOTATION not in (lease(api).metadata.annotations or {})
    with pytest.raises(RunLockLost, match="held by ci-run-2"):
        lock.require()
    lock.release()
    assert lease(api).spec.holder_identity == "ci-run-2"


def test_save_record_writes_through_retrying_a_transient_failure(api, clock, ticker):
    flaky = Flaky(api)
    lock = make(flaky, clock, "ci-run-1", ticker)
    lock.acquire()
    flaky.failures["replace_namespaced_lease"] = [503, 500]
    lock.save_record({"pool_size_found": 0})
    assert lease(api).metadata.annotations[UNDO_ANNOTATION] == '{"pool_size_found": 0}'
    assert ticker.t == 2  # a pause before each retry
    lock.save_record({})
    lock.release()


def test_save_record_that_cannot_write_raises_instead_of_passing_silently(api, clock, ticker):
    flaky = Flaky(api)
    lock = make(flaky, clock, "ci-run-1", ticker)
    lock.acquire()
    flaky.failures["replace_namespaced_lease"] = [500] * 5
    with pytest.raises(RunLockError, match=r"cannot write Lease default/llmd-conformance-run-lock: 500 .*\(attempts: 5\)") as failed:
        lock.save_record({"pool_size_found": 0})
    assert not isinstance(failed.value, RunLockLost)
    assert UNDO_ANNOTATION not in (lease(api).metadata.annotations or {})
    assert lock.held  # a write that failed is not a loss: the caller decides
    lock.release()


# -- a deleted Lease ---------------------------------------------------------------------------------


def delete(api) -> None:
    api.delete_namespaced_lease(NAME, NAMESPACE)


def test_a_deleted_lease_is_lost_to_nobody_and_reacquire_recreates_it_with_our_record(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.save_record({"pool_size_found": 0})
    delete(api)
    assert not lock.confirm()
    assert lock.lost and not lock.held and lock.lost_to == ""
    with pytest.raises(RunLockLost, match="lost the cluster run-lock .*: the Lease was deleted"):
        lock.require()
    assert lock.reacquire() == {}
    assert lock.held and not lock.lost and lock.lost_to is None
    recreated = lease(api)
    assert recreated.spec.holder_identity == "ci-run-1"
    assert recreated.metadata.annotations[UNDO_ANNOTATION] == '{"pool_size_found": 0}'
    lock.save_record({})  # teardown undid it
    lock.release()
    assert api.state.read()["leases"] == {}


def test_a_deletion_seen_by_save_record_is_lost_to_nobody(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    delete(api)
    with pytest.raises(RunLockLost, match="the Lease was deleted"):
        lock.save_record({"pool_size_found": 0})
    assert lock.lost_to == ""


def test_reacquire_is_refused_when_a_live_run_recreated_the_lease(api, clock, ticker):
    lock = make(api, clock, "ci-run-1", ticker)
    lock.acquire()
    delete(api)
    other = make(api, clock, "ci-run-2")
    other.acquire()
    assert not lock.confirm() and lock.lost_to == "ci-run-2"
    ticker.hooks.append(renews_at(api, 5, START + timedelta(seconds=5)))
    with pytest.raises(RunLockHeld, match="held by ci-run-2"):
        lock.reacquire()
    assert lease(api).spec.holder_identity == "ci-run-2" and lock.lost
    other.release()


def test_reacquire_returns_the_record_a_dead_run_left_on_the_recreated_lease(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.save_record({"releases": [["ms-gemma", "llm-d"]]})
    delete(api)
    other = make(api, clock, "ci-run-2")
    other.acquire()
    other.save_record({"pool_size_found": 1})
    other.release()  # unheld, with its record
    assert not lock.confirm() and lock.lost_to == ""
    assert lock.reacquire() == {"pool_size_found": 1}
    assert lease(api).metadata.annotations[UNDO_ANNOTATION] == '{"pool_size_found": 1}'  # kept until we merge
    lock.save_record({})
    lock.release()


def test_reacquire_is_only_for_a_lost_lock(api, clock):
    lock = make(api, clock, "ci-run-1")
    with pytest.raises(RunLockError, match="reacquire"):
        lock.reacquire()
    lock.acquire()
    with pytest.raises(RunLockError, match="is not lost"):
        lock.reacquire()
    lock.release()


# -- holder identity ---------------------------------------------------------------------------------


@pytest.fixture
def github(monkeypatch):
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/suite")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    monkeypatch.setenv("GITHUB_JOB", "provision")
    monkeypatch.delenv("RUNNER_NAME", raising=False)
    return monkeypatch


def test_default_holder_names_the_github_job(github):
    assert default_holder() == "github:org/suite/actions/runs/42/attempts/2/jobs/provision"
    github.setenv("RUNNER_NAME", "gpu-runner-3")
    assert default_holder() == "github:org/suite/actions/runs/42/attempts/2/jobs/provision/runners/gpu-runner-3"


def test_default_holder_differs_between_jobs_and_matrix_legs_but_not_between_steps_of_a_job(github):
    github.setenv("RUNNER_NAME", "runner-a")
    step = default_holder()
    assert default_holder() == step  # a later step of the same job
    github.setenv("RUNNER_NAME", "runner-b")
    assert default_holder() != step  # another leg of the same matrix job
    github.setenv("RUNNER_NAME", "runner-a")
    github.setenv("GITHUB_JOB", "benchmarks")
    assert default_holder() != step  # another job of the same run


def test_a_rescue_step_of_the_job_takes_its_lock_back_at_once_another_job_is_refused(github, api, clock):
    crashed = make(api, clock, default_holder())
    crashed.acquire()
    crashed.save_record({"pool_size_found": 0})  # then the step is killed: no release
    github.setenv("GITHUB_JOB", "benchmarks")
    watcher = Ticker()
    watcher.hooks.append(renews_at(api, 5, START + timedelta(seconds=5)))  # the crashed step still renews
    with pytest.raises(RunLockHeld, match="held by github:org/suite/actions/runs/42/attempts/2/jobs/provision since"):
        make(api, clock, default_holder(), watcher).acquire()
    github.setenv("GITHUB_JOB", "provision")
    rescue_ticker = Ticker()
    rescue = make(api, clock, default_holder(), rescue_ticker)
    assert rescue.acquire() == {"pool_size_found": 0}
    assert rescue_ticker.t == 0 and rescue.previous_holder is None
    rescue.save_record({})
    rescue.release()
