"""The step engine: every change the suite makes to a cluster is a Step, planned, applied and undone here.

A target's setup is a list of steps (data). `plan()` renders the same list that `apply()` runs, so
`--plan` cannot drift from what happens. For each step:

- `observe()` looks at what is there now without changing anything; its text joins the plan line.
- `needed()` says whether to act at all (a namespace that exists is not created).
- `undo()` names, before the change, what will put it back: a JSON-able `Undo` entry. The engine
  writes it to the run's record (the run-lock Lease on a cluster, a file for the local target)
  *before* `apply()` runs, so a crash mid-change cannot lose it; a failed `apply()` drops its entry
  unless the step may have half-happened (`partial`), whose undo then checks ownership itself.
- `apply()` makes the change; the engine refuses to call it without holding the run's lock.

Undo entries are undone in reverse by `teardown(policy)`; an entry names the run that made it
(`owner`, also the value of the ownership label put on what it creates), so an undoer deletes only
what still carries that label. A record left by a crashed run is inherited by the next run that
takes the lock; entries kept on purpose (`--teardown keep`) stay kept until a run asks for them to
be undone (`undo_kept`).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

# Put on everything the suite creates; its value is the creating run's id.
OWNER_LABEL = "conformance.llm-d.ai/run"
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class StepError(RuntimeError):
    """A step could not be planned, applied or undone; the message says what and why."""


class LockNotHeld(StepError):
    """The engine was asked to change something without holding the run's lock."""


class HandedOver(LockNotHeld):
    """Another run took the lock over, and with it this run's record: undoing is its job now."""


def new_run_id() -> str:
    """A label-safe id (≤ 63 chars, [a-z0-9-]) naming one run's changes."""
    return f"run-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Undo:
    """One recorded change and how to put it back: `kind` selects the undoer, `params` its arguments."""

    kind: str
    params: dict
    owner: str  # run id: the ownership label value of what the change created
    group: str  # teardown-policy group: "releases", "pool", "objects", "local"
    describe: str  # "uninstall release llm-d/ms-gemma"
    kept: bool = False  # left in place by a `keep` teardown; undone only when a run asks for it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Undo:
        try:
            return cls(kind=data["kind"], params=dict(data["params"]), owner=data["owner"], group=data["group"],
                       describe=data["describe"], kept=bool(data.get("kept", False)))
        except (KeyError, TypeError) as exc:
            raise StepError(f"undo record entry {json.dumps(data)[:200]} is malformed ({exc})") from None


@dataclass
class Step:
    """One change (or read, or wait) of a target's setup."""

    name: str
    tag: str  # plan tag: check, read, lock, change, wait, build
    plan: str  # the exact command or API call, every value filled in
    apply: Callable[[], None]
    when: str = ""  # the condition in words, for the plan: "only when FOUND < 2"
    observe: Callable[[], str] | None = None  # read-only look at what is there; None: cannot look offline
    needed: Callable[[], bool] | None = None  # None: always act
    # Called before apply(): the entries that put the change back (one, several, or none needed).
    undo: Callable[[], Undo | list[Undo] | None] | None = None  # None: nothing to undo (reads, waits)
    undo_plan: str = ""  # the undo in words, for the plan's teardown part
    undo_group: str = ""
    partial: bool = False  # apply() can fail half-way: keep its entry (its undoer checks ownership)
    owner_label: bool = False  # what it creates carries OWNER_LABEL (shown in the plan)

    @property
    def changes(self) -> bool:
        return self.undo is not None


class Record(Protocol):
    """Where a run's undo entries live while it holds its lock: a Lease, a file."""

    run_id: str
    where: str

    def acquire(self) -> list[dict]: ...  # take the lock; the entries a previous run left
    def require(self) -> None: ...  # raise if the lock is not held (lost, released, never taken)
    def save(self, entries: list[dict]) -> None: ...  # write-through, raises when not held
    def release(self) -> None: ...


class TeardownPolicy:
    """Which groups of undo entries a teardown undoes; the rest stay recorded (kept)."""

    GROUPS = {
        "keep": (),
        "releases": ("releases", "objects"),
        "scale-to-zero": ("pool",),  # the pool's undoer scales to zero instead of restoring
        "restore": ("releases", "objects", "pool", "local"),
    }

    def __init__(self, name: str):
        if name not in self.GROUPS:
            raise StepError(f"unknown teardown policy {name!r}: use one of {', '.join(self.GROUPS)}")
        self.name = name

    def undoes(self, entry: Undo) -> bool:
        return entry.group in self.GROUPS[self.name]

    def __str__(self) -> str:
        return self.name


# An undoer puts one entry back; it returns None when the entry is done with, or the entry that
# stays recorded (e.g. a pool scaled to zero that a later restore brings back to its size found).
Undoer = Callable[[Undo, "TeardownPolicy"], "Undo | None"]


@dataclass
class Engine:
    """Plans, applies and undoes steps against one Record, refusing to change anything without its lock."""

    record: Record
    undoers: dict[str, Undoer]
    log: Callable[[str], None] = print
    entries: list[Undo] = field(default_factory=list)
    inherited: list[Undo] = field(default_factory=list)
    _locked: bool = False
    _torn_down: bool = False
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    # -- plan -----------------------------------------------------------------------------------

    @staticmethod
    def plan(steps: Sequence[Step], policy: TeardownPolicy, *, observe: bool = False,
             middle: Sequence[str] = (), end: Sequence[str] = ()) -> list[str]:
        """The numbered plan: every step, `middle` (e.g. the checks), then the undo of each change
        in reverse (or why the policy keeps it), then `end`. Lines starting with '[' are numbered."""
        lines = []
        for step in steps:
            line = f"[{step.tag:<6}] {step.plan}"
            notes = [step.when] if step.when else []
            if step.owner_label:
                notes.append(f"labelled {OWNER_LABEL}=<this run>")
            if observe and step.observe is not None:
                try:
                    notes.append(f"now: {step.observe()}")
                except Exception as exc:  # a plan must print even when a look fails
                    notes.append(f"now: cannot tell ({_first_line(exc)})")
            lines.append(line + (f"   ({'; '.join(notes)})" if notes else ""))
        lines += [*middle, f"teardown {policy}:"]
        undone = [s for s in reversed(steps) if s.changes and s.undo_plan]
        for step in undone:
            probe = Undo("", {}, "", step.undo_group, "")
            if policy.undoes(probe):
                lines.append(f"[undo  ] {step.undo_plan}")
            else:
                lines.append(f"[keep  ] {step.undo_plan}   (kept by --teardown {policy})")
        lines += end
        return [f"{n:2d}. {line}" if line.startswith("[") else line
                for n, line in _numbered(lines)]

    # -- apply ----------------------------------------------------------------------------------

    def lock(self) -> list[Undo]:
        """Take the record's lock; returns what a previous run left to undo (also kept in `inherited`)."""
        raw = self.record.acquire()
        self._locked = True
        self.inherited = [Undo.from_dict(entry) for entry in raw]
        if self.inherited:
            self.log(f"inherited from a previous run ({self.record.where}): "
                     + "; ".join(e.describe + (" [kept]" if e.kept else "") for e in self.inherited))
        self._save()
        return self.inherited

    def apply(self, steps: Sequence[Step]) -> None:
        """Run the steps in order; on any error (or signal) the caller tears down."""
        for step in steps:
            self.run_step(step)

    def run_step(self, step: Step) -> None:
        if step.needed is not None and not step.needed():
            self.log(f"{step.name}: nothing to do")
            return
        recorded: list[Undo] = []
        if step.changes:
            self._require()
            undo = step.undo()
            recorded = [undo] if isinstance(undo, Undo) else list(undo or [])
            if recorded:
                with self._mutex:
                    self.entries.extend(recorded)
                self._save()
        try:
            step.apply()
        except BaseException:
            if recorded and not step.partial:
                with self._mutex:
                    for entry in recorded:
                        self.entries.remove(entry)
                self._save_quietly()
            raise

    def forget(self, entry: Undo) -> None:
        """Drop an entry whose change is gone by other means (e.g. a release found uninstalled)."""
        with self._mutex:
            for pool in (self.entries, self.inherited):
                if entry in pool:
                    pool.remove(entry)
        self._save()

    # -- teardown -------------------------------------------------------------------------------

    def teardown(self, policy: TeardownPolicy, *, undo_kept: bool = False) -> list[str]:
        """Undo, in reverse, the entries the policy undoes (this run's, then inherited ones); the rest
        are marked kept and stay on the record. Returns what could not be undone (empty: all done)."""
        with self._mutex:
            if self._torn_down:
                return []
        failures: list[str] = []
        if self._locked:
            try:
                self._require()
            except HandedOver as exc:
                self._torn_down = True
                self.log(f"teardown skipped: {exc}")
                return []
            except LockNotHeld as exc:  # e.g. the Lease could not be read: a later call may still undo
                self.log(f"teardown impossible now: {exc}")
                return [str(exc)]
        with self._mutex:
            if self._torn_down:
                return []
            self._torn_down = True
        with signals_deferred(self.log):
            for pool in (self.entries, self.inherited):
                for entry in list(reversed(pool)):
                    if entry.kept and not undo_kept or not policy.undoes(entry):
                        self._replace(pool, entry, Undo(**{**entry.to_dict(), "kept": True}))
                        continue
                    try:
                        self._require()
                        if entry.kind not in self.undoers:
                            raise StepError(f"no undoer for {entry.kind!r} here (recorded by another target?)")
                        remains = self.undoers[entry.kind](entry, policy)
                    except Exception as exc:
                        failures.append(f"{entry.describe}: {_first_line(exc)}")
                        self.log(f"teardown: {entry.describe} failed: {_first_line(exc)}")
                        continue
                    if remains is None:
                        with self._mutex:
                            pool.remove(entry)
                    else:
                        self._replace(pool, entry, remains)
                    self._save_quietly()
            left = self.entries + self.inherited
            if left:
                self.log(f"left in place ({self.record.where}): " + "; ".join(e.describe for e in left))
            if self._locked:
                try:
                    self._save()
                    self.record.release()
                except Exception as exc:
                    failures.append(f"release {self.record.where}: {_first_line(exc)}")
        return failures

    # -- internals ------------------------------------------------------------------------------

    def _require(self) -> None:
        if not self._locked:
            raise LockNotHeld(f"refusing to change anything: {self.record.where} was not taken")
        try:
            self.record.require()
        except StepError:
            raise
        except Exception as exc:
            raise LockNotHeld(f"refusing to change anything: {_first_line(exc)}") from exc

    def _replace(self, pool: list[Undo], old: Undo, new: Undo) -> None:
        with self._mutex:
            pool[pool.index(old)] = new

    def _save(self) -> None:
        if not self._locked:
            return
        with self._mutex:
            data = [e.to_dict() for e in self.inherited + self.entries]
        self.record.save(data)

    def _save_quietly(self) -> None:
        try:
            self._save()
        except Exception as exc:  # the change itself is done; the next save (or run) catches up
            self.log(f"could not update {self.record.where}: {_first_line(exc)}")


# -- signals ---------------------------------------------------------------------------------------


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP behave like Ctrl-C while setting up, so the caller's finally tears down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in SIGNALS[1:]:
        signum = getattr(signal, name)
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.SIG_IGN, None):
            previous[signum] = signal.signal(signum, _raise_interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred(log: Callable[[str], None]) -> Iterator[None]:
    """During teardown a second Ctrl-C (or a SIGTERM/SIGHUP) must not abandon it: note it and go on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum, frame) -> None:
        log(f"{signal.Signals(signum).name} during teardown: finishing the teardown first "
            f"(kill -9 {os.getpid()} abandons it; the next run undoes what is left)")

    previous = {getattr(signal, name): signal.signal(getattr(signal, name), note) for name in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- a record on the run-lock Lease (clusters) ------------------------------------------------------


class LeaseRecord:
    """Undo entries on the run-lock Lease (llmd_conformance.runlock.RunLock), under the key "entries"."""

    def __init__(self, lock, run_id: str | None = None, log: Callable[[str], None] = print):
        self.lock = lock
        self.run_id = run_id or new_run_id()
        self.log = log
        self.where = lock.where

    def acquire(self) -> list[dict]:
        inherited = self.lock.acquire()
        unknown = sorted(set(inherited) - {"entries"})
        if unknown:  # written by an older version of the suite: never undone blindly
            self.log(f"{self.where} carries an undo record of an older format ({', '.join(unknown)}): left as it "
                     f"is; undo it by hand: {json.dumps({k: inherited[k] for k in unknown})}")
        return list(inherited.get("entries") or [])

    def require(self) -> None:
        """Read the Lease before each change: the renewal thread may be stalled and not know yet."""
        self.lock.confirm()
        if self.lock.lost and self.lock.lost_to == "":
            # Deleted (by hand, or a namespace clean-up): nobody took our changes over, so take it again.
            self.log(f"{self.where} was deleted while this run held it: taking it again")
            self.lock.reacquire()
        elif self.lock.lost:  # a take-over keeps the Lease's annotations: the taker inherited our record
            raise HandedOver(f"{self.where} is held by {self.lock.lost_to} now, which inherited this run's record "
                             "and undoes it")
        self.lock.require()

    def save(self, entries: list[dict]) -> None:
        self.lock.save_record({"entries": entries} if entries else {})

    def release(self) -> None:
        self.lock.release()


# -- a record in a file (the local target) ---------------------------------------------------------


class FileRecord:
    """Undo entries in a JSON file, guarded by a lock the caller holds (`is_held`)."""

    def __init__(self, path: Path, is_held: Callable[[], bool], run_id: str | None = None):
        self.path = Path(path)
        self.is_held = is_held
        self.run_id = run_id or new_run_id()
        self.where = f"record {self.path}"

    def acquire(self) -> list[dict]:
        self.require()
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StepError(f"{self.where} is unreadable ({exc}): remove it once nothing of it is left") from None
        if not isinstance(data, list):
            raise StepError(f"{self.where} is not a JSON list: remove it once nothing of it is left")
        return data

    def require(self) -> None:
        if not self.is_held():
            raise LockNotHeld(f"refusing to change anything: the lock guarding {self.where} is not held")

    def save(self, entries: list[dict]) -> None:
        self.require()
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(entries, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def release(self) -> None:
        """The lock belongs to the caller (it outlives the record's use); nothing to give back here."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _numbered(lines: list[str]) -> Iterator[tuple[int, str]]:
    n = 0
    for line in lines:
        if line.startswith("["):
            n += 1
        yield n, line
