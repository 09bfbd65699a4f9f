"""The cluster run-lock (a coordination.k8s.io Lease) against a fake coordination API with a clock we move."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from fake_gcloud import FakeCoordination, State
from llmd_conformance.runlock import UNDO_ANNOTATION, RunLock, RunLockError, RunLockHeld

START = datetime(2025, 11, 27, 10, 0, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def api(tmp_path):
    state = State(tmp_path / "state.json")
    state.write({"leases": {}, "resource_version": 1})
    return FakeCoordination(state)


@pytest.fixture
def clock():
    return Clock()


def make(api, clock, holder, **kwargs):
    kwargs.setdefault("renew_every_s", 3600)  # no background renewal unless a test wants it
    return RunLock(api, holder=holder, duration_s=60, clock=clock, **kwargs)


def lease(api):
    return api.read_namespaced_lease("llmd-conformance-run-lock", "default")


def test_acquire_creates_a_lease_with_holder_times_and_duration(api, clock):
    lock = make(api, clock, "ci-run-1")
    assert lock.acquire() == {}
    spec = lease(api).spec
    assert (spec.holder_identity, spec.acquire_time, spec.renew_time, spec.lease_duration_seconds) == (
        "ci-run-1", START, START, 60)
    assert lock.held
    lock.release()


def test_live_lock_refuses_a_second_run_naming_holder_and_since(api, clock):
    first = make(api, clock, "ci-run-1")
    first.acquire()
    clock.advance(20)
    second = make(api, clock, "laptop-2")
    with pytest.raises(RunLockHeld) as refused:
        second.acquire()
    message = str(refused.value)
    assert "held by ci-run-1 since 2025-11-27T10:00:00+00:00" in message
    assert "renewed 20s ago, stale in 40s unless renewed" in message
    assert not second.held
    assert lease(api).spec.holder_identity == "ci-run-1"
    first.release()


def test_stale_lock_is_taken_over_with_its_undo_record(api, clock):
    dead = make(api, clock, "ci-run-dead")
    dead.acquire()
    dead.save_record({"pool_size_found": 0})
    clock.advance(61)  # never renewed: stale
    heir = make(api, clock, "ci-run-2")
    assert heir.acquire() == {"pool_size_found": 0}
    assert heir.previous_holder == "ci-run-dead"
    current = lease(api)
    assert current.spec.holder_identity == "ci-run-2"
    assert current.spec.acquire_time == clock.now
    assert current.spec.lease_transitions == 1
    assert not dead.confirm() and dead.lost
    heir.save_record({})
    heir.release()


def test_release_deletes_the_lease_when_nothing_is_left_to_undo(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.release()
    assert api.state.read()["leases"] == {}
    lock.release()  # idempotent


def test_release_with_pending_undo_keeps_an_unheld_lease_that_the_next_run_inherits(api, clock):
    lock = make(api, clock, "ci-run-1")
    lock.acquire()
    lock.save_record({"releases": [["ms-gemma", "llm-d"]]})
    lock.release()
    kept = lease(api)
    assert kept.spec.holder_identity is None
    assert UNDO_ANNOTATION in kept.metadata.annotations
    nxt = make(api, clock, "ci-run-2")
    assert nxt.acquire() == {"releases": [["ms-gemma", "llm-d"]]}  # not stale, but unheld: no wait
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
    taken = lease(api)
    taken.spec.holder_identity = "intruder"
    api.replace_namespaced_lease("llmd-conformance-run-lock", "default", taken)
    deadline = time.monotonic() + 5
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.lost and not lock.held
    lock.release()  # must not delete the intruder's Lease
    assert lease(api).spec.holder_identity == "intruder"


def test_two_runs_racing_for_a_free_lock_end_with_exactly_one_holder(api, clock):
    locks = [make(api, clock, f"racer-{i}") for i in range(4)]
    outcomes: dict[str, str] = {}

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
    api.replace_namespaced_lease("llmd-conformance-run-lock", "default", broken)
    lock._stop.set()
    with pytest.raises(RunLockError, match=r"annotation llmd-conformance/undo of the run-lock Lease is not JSON"):
        make(api, clock, "ci-run-2").acquire()


def test_default_holder_names_the_github_run(monkeypatch):
    from llmd_conformance.runlock import default_holder

    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/suite")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
    assert default_holder() == "github:org/suite/actions/runs/42/attempts/2"
