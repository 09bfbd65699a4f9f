"""The step engine: plan from the same steps that run, record before change, undo in reverse, ownership."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmd_conformance import steps
from llmd_conformance.steps import Engine, FileRecord, Step, TeardownPolicy, Undo

REPO = Path(__file__).resolve().parents[1]


class MemoryRecord:
    """A Record whose lock can be taken away, keeping every save for inspection."""

    def __init__(self, inherited=None):
        self.run_id, self.where = "run-test", "memory record"
        self.saved: list[list[dict]] = []
        self.inherited = inherited or []
        self.held = False

    def acquire(self):
        self.held = True
        return self.inherited

    def require(self):
        if not self.held:
            raise steps.LockNotHeld("memory lock not held")

    def save(self, entries):
        self.require()
        self.saved.append(entries)

    def release(self):
        self.held = False


class World:
    """Things the steps create, and a log of what happened in order."""

    def __init__(self):
        self.things: dict[str, str] = {}  # name -> owner
        self.log: list[str] = []

    def create(self, name: str, owner: str = "run-test"):
        def apply():
            if name in self.things:
                raise RuntimeError(f"{name} exists")
            self.things[name] = owner
            self.log.append(f"create {name}")
        return apply

    def undoer(self, entry: Undo, policy: TeardownPolicy):
        name = entry.params["name"]
        if self.things.get(name) == entry.owner:  # ownership: only what carries our label
            del self.things[name]
            self.log.append(f"delete {name}")
        return None


def create_step(world: World, name: str, group: str = "objects", **kwargs) -> Step:
    return Step(name, "change", f"create {name}", world.create(name),
                undo=lambda: Undo("thing", {"name": name}, "run-test", group, f"delete {name}"),
                undo_plan=f"delete {name}", undo_group=group, **kwargs)


def engine(world: World, record=None) -> Engine:
    return Engine(record or MemoryRecord(), {"thing": world.undoer}, log=world.log.append)


def test_plan_lists_the_steps_that_apply_runs_and_their_undo_in_reverse():
    world = World()
    plan = [create_step(world, "a"), Step("wait", "wait", "wait for a", lambda: None), create_step(world, "b")]
    lines = Engine.plan(plan, TeardownPolicy("restore"), middle=["[tests ] run the checks"])
    assert lines == [" 1. [change] create a", " 2. [wait  ] wait for a", " 3. [change] create b",
                     " 4. [tests ] run the checks", "teardown restore:", " 5. [undo  ] delete b", " 6. [undo  ] delete a"]
    assert world.log == [], "planning ran a step"


def test_plan_shows_what_observe_finds_and_what_the_policy_keeps():
    world = World()
    plan = [create_step(world, "a", observe=lambda: "absent"), create_step(world, "p", group="pool")]
    lines = Engine.plan(plan, TeardownPolicy("releases"), observe=True)
    assert lines[0] == " 1. [change] create a   (now: absent)"
    assert " 3. [keep  ] delete p   (kept by --teardown releases)" in lines


def test_the_undo_is_recorded_before_the_change_and_dropped_when_the_change_fails():
    world, record = World(), MemoryRecord()
    e = engine(world, record)
    e.lock()
    seen_at_apply = []
    step = create_step(world, "a")
    original = step.apply
    step.apply = lambda: (seen_at_apply.append(list(record.saved[-1])), original())
    e.run_step(step)
    assert [x["params"]["name"] for x in seen_at_apply[0]] == ["a"], "the change ran before its undo was recorded"
    world.things["b"] = "someone-else"  # the create fails: b exists and is not ours
    with pytest.raises(RuntimeError, match="b exists"):
        e.run_step(create_step(world, "b"))
    assert [x["params"]["name"] for x in record.saved[-1]] == ["a"], "a failed create left its undo recorded"
    assert e.teardown(TeardownPolicy("restore")) == []
    assert world.things == {"b": "someone-else"}


def test_a_partial_step_keeps_its_entry_after_a_failure():
    world = World()
    e = engine(world)
    e.lock()

    def half_done():
        world.things["half"] = "run-test"
        raise RuntimeError("failed half-way")
    step = create_step(world, "half", partial=True)
    step.apply = half_done
    with pytest.raises(RuntimeError):
        e.run_step(step)
    e.teardown(TeardownPolicy("restore"))
    assert world.things == {}, "the half-made change was not undone"


def test_nothing_changes_without_the_lock():
    world = World()
    e = engine(world)
    with pytest.raises(steps.LockNotHeld, match="was not taken"):
        e.run_step(create_step(world, "a"))
    record = MemoryRecord()
    e = engine(world, record)
    e.lock()
    record.held = False  # lost
    with pytest.raises(steps.LockNotHeld, match="memory lock not held"):
        e.run_step(create_step(world, "a"))
    assert world.things == {}


def test_steps_not_needed_are_skipped_and_record_nothing():
    world, record = World(), MemoryRecord()
    e = engine(world, record)
    e.lock()
    e.run_step(create_step(world, "a", needed=lambda: False))
    assert world.things == {} and record.saved == [[]]


def test_teardown_undoes_in_reverse_once():
    world = World()
    e = engine(world)
    e.lock()
    e.apply([create_step(world, name) for name in "abc"])
    assert e.teardown(TeardownPolicy("restore")) == []
    assert e.teardown(TeardownPolicy("restore")) == []
    assert world.log[-3:] == ["delete c", "delete b", "delete a"]
    assert sum(line.startswith("delete") for line in world.log) == 3


def test_kept_entries_stay_until_a_run_asks_for_them():
    world, first = World(), MemoryRecord()
    e = engine(world, first)
    e.lock()
    e.run_step(create_step(world, "a"))
    e.teardown(TeardownPolicy("keep"))
    left = first.saved[-1]
    assert [x["kept"] for x in left] == [True]
    second = engine(world, MemoryRecord(inherited=left))
    second.lock()
    second.teardown(TeardownPolicy("restore"))
    assert world.things == {"a": "run-test"}, "a default run undid a kept change"
    third = engine(world, MemoryRecord(inherited=left))
    third.lock()
    third.teardown(TeardownPolicy("restore"), undo_kept=True)
    assert world.things == {}


def test_an_inherited_entry_only_undoes_what_still_carries_its_owner():
    world = World()
    world.things["ns"] = "run-other"  # recreated by someone else after the dead run's record was written
    dead_runs = [Undo("thing", {"name": "ns"}, "run-dead", "objects", "delete ns").to_dict()]
    e = engine(world, MemoryRecord(inherited=dead_runs))
    assert [u.describe for u in e.lock()] == ["delete ns"]
    assert e.teardown(TeardownPolicy("restore")) == []
    assert world.things == {"ns": "run-other"}


def test_a_failed_undo_is_reported_and_stays_recorded():
    world, record = World(), MemoryRecord()
    e = Engine(record, {"thing": lambda entry, policy: (_ for _ in ()).throw(RuntimeError("API down"))},
               log=world.log.append)
    e.lock()
    e.run_step(create_step(world, "a"))
    assert e.teardown(TeardownPolicy("restore")) == ["delete a: API down"]
    assert [x["params"]["name"] for x in record.saved[-1]] == ["a"]


def test_malformed_record_entries_are_refused_with_the_entry():
    e = engine(World(), MemoryRecord(inherited=[{"kind": "thing"}]))
    with pytest.raises(steps.StepError, match=r'undo record entry \{"kind": "thing"\} is malformed'):
        e.lock()


def test_unknown_policy_names_the_known_ones():
    with pytest.raises(steps.StepError, match="use one of keep, releases, scale-to-zero, restore"):
        TeardownPolicy("later")


def test_file_record_is_private_and_refuses_without_its_lock(tmp_path):
    held = [True]
    record = FileRecord(tmp_path / "state" / "record.json", lambda: held[0])
    record.save([{"kind": "x"}])
    assert stat.S_IMODE(os.stat(record.path).st_mode) == 0o600
    assert FileRecord(record.path, lambda: True).acquire() == [{"kind": "x"}]
    held[0] = False
    with pytest.raises(steps.LockNotHeld):
        record.save([])
    held[0] = True
    record.save([])
    assert not record.path.exists()


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_applying_undoes_everything_before_exit(tmp_path, signame):
    """A process applying steps is signalled mid-way: its finally undoes what it changed, then it exits."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests_unit')!r})
        from test_steps import World, create_step, engine
        from llmd_conformance import steps
        world = World()
        e = engine(world)
        e.lock()
        with steps.signals_interrupt():
            try:
                e.apply([create_step(world, "a"), steps.Step("wait", "wait", "wait", lambda: (print("waiting", flush=True), time.sleep(30)))])
            finally:
                e.teardown(steps.TeardownPolicy("restore"))
                print("left", sorted(world.things), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(getattr(signal, signame))
    out, _ = proc.communicate(timeout=30)
    assert "left []" in out, out
    assert proc.returncode != 0


def test_a_lock_check_that_fails_does_not_mark_the_teardown_done():
    """The lock could not be confirmed (API down): nothing is undone blindly, and a later call still undoes."""
    world, record = World(), MemoryRecord()
    e = engine(world, record)
    e.lock()
    e.run_step(create_step(world, "a"))
    real_require = record.require
    record.require = lambda: (_ for _ in ()).throw(ConnectionError("API server unreachable"))
    assert e.teardown(TeardownPolicy("restore")) == ["refusing to change anything: API server unreachable"]
    assert world.things == {"a": "run-test"}
    record.require = real_require
    assert e.teardown(TeardownPolicy("restore")) == []
    assert world.things == {}
