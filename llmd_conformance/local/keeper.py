"""A kept local target (`--keep-target`): the target runs in a keeper process of its own that
outlives the pytest run, so the next run reuses it instead of starting a cluster again.

The local target's children die with the process that started them (processes.die_with_parent), so
a target that must outlive pytest cannot be started by pytest: `--keep-target` starts this module's
`main` as a detached process, which sets the target up itself (its children die with *it*), holds
the instance lock and the undo record, and writes what it runs to a status file beside the lock.
It tears the target down when it gets SIGTERM, SIGINT or SIGHUP: from the next run whose topology,
manifests, binaries or local-target code differ (`fingerprint`), from a run without
--keep-target once that run is over, or from `python -m llmd_conformance.local down`. Killed with
-9, its children die with it, the lock is free again and the record it leaves is undone by the
next run, as for any killed run.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from llmd_conformance import build, paths, steps, timing
from llmd_conformance.local.instance import INDEX, LOCK_PATH

STATUS_PATH = LOCK_PATH.with_suffix(".kept.json")
STARTING, READY, FAILED = "starting", "ready", "failed"


def fingerprint(topology) -> str:
    """What the target is made of: the topology, the manifests helmfile installs, the binaries
    (size and time of each), Envoy's version and the local target's own code."""
    from llmd_conformance.local.target import envoy_version

    digest = hashlib.sha256()
    files = [Path(topology.source), *sorted(p for p in paths.MANIFESTS.rglob("*") if p.is_file()),
             *sorted(Path(__file__).parent.glob("*.py"))]
    for path in files:
        digest.update(f"{path.name}\0".encode() + path.read_bytes())
    digest.update(topology.local_environment.encode())
    for component in build.COMPONENTS:
        if component.name in build.TEST_TOOLS:
            continue
        try:
            stat = build.binary(component.name).stat()
            digest.update(f"{component.name} {component.version} {stat.st_size} {stat.st_mtime_ns}\0".encode())
        except build.BuildError:
            digest.update(f"{component.name} missing\0".encode())
    digest.update(envoy_version().encode())
    return digest.hexdigest()[:16]


@dataclass
class Kept:
    """What the status file says about the keeper of this instance."""

    pid: int
    state: str
    fingerprint: str
    topology: str
    since: str
    logs_dir: str
    error: str | None = None

    @classmethod
    def read(cls) -> Kept | None:
        try:
            return cls(**json.loads(STATUS_PATH.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self) -> None:
        tmp = STATUS_PATH.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(self), out)
        os.replace(tmp, STATUS_PATH)

    @property
    def alive(self) -> bool:
        """The keeper is running (not a reused pid: its command line names this module)."""
        try:
            argv = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return __name__.encode() in argv

    def describe(self) -> str:
        return f"kept local target of instance {INDEX} (keeper pid {self.pid} since {self.since}, topology {self.topology})"

    def stop(self, log: Callable[[str], None], grace: float = timing.DEFAULT.keeper_stop) -> None:
        """SIGTERM the keeper and wait for its teardown; SIGKILL after `grace` (its children die with it)."""
        if not self.alive:
            return
        log(f"local target: stopping the {self.describe()}")
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive:
            log(f"local target: keeper pid {self.pid} still running after {grace:.0f}s: killing it")
            os.kill(self.pid, signal.SIGKILL)
            while self.alive:
                time.sleep(0.1)


def find() -> Kept | None:
    """The live keeper of this instance, if any."""
    kept = Kept.read()
    return kept if kept is not None and kept.alive else None


def forget_dead() -> None:
    """Remove the status file of a keeper that is gone (killed): call it under the instance lock,
    which a live keeper holds, so a new keeper's file is never the one removed."""
    kept = Kept.read()
    if STATUS_PATH.exists() and (kept is None or not kept.alive):
        STATUS_PATH.unlink(missing_ok=True)


def start(topology, report_dir: Path, log: Callable[[str], None],
          timeout: float = timing.DEFAULT.keeper_ready) -> Kept:
    """Start a keeper for `topology` and wait until its target is up, forwarding its progress lines."""
    report_dir.mkdir(parents=True, exist_ok=True)
    log_path = report_dir / "keeper.log"
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}  # our own code; the children get less
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.PACKAGE.parent), env.get("PYTHONPATH")]))
    STATUS_PATH.unlink(missing_ok=True)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(Path(topology.source).resolve()),
                                 str(report_dir.resolve())], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    log(f"local target: keeper pid {proc.pid} sets it up (log {log_path})")
    deadline, shown = time.monotonic() + timeout, 0
    try:
        while True:
            lines = log_path.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                log(f"  keeper: {line}")
            shown = len(lines)
            kept = Kept.read()
            if kept is not None and kept.pid == proc.pid and kept.state == READY:
                return kept
            if proc.poll() is not None or (kept is not None and kept.state == FAILED):
                proc.wait()
                why = kept.error if kept is not None and kept.error else f"it exited with code {proc.returncode}"
                raise RuntimeError(f"the kept local target did not come up: {why} (log {log_path})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kept local target was not up after {timeout:.0f}s (log {log_path})")
            time.sleep(0.2)
    except BaseException:
        if proc.poll() is None:  # Ctrl-C or an error while starting: nothing half-started stays behind
            Kept(proc.pid, STARTING, "", topology.name, "", "").stop(log)
        raise


def main(argv: list[str]) -> int:
    """The keeper: set the local target up, say so in the status file, tear it down on a signal."""
    from llmd_conformance.local.target import LocalTarget
    from llmd_conformance.topology import load_topology

    topology_file, report_dir = argv
    topology = load_topology(Path(topology_file))
    target = LocalTarget(topology, Path(report_dir), log=lambda line: print(line, flush=True))
    status = Kept(os.getpid(), STARTING, fingerprint(topology), topology.name, time.strftime("%Y-%m-%d %H:%M:%S"),
                  str(target.logs_dir))
    with steps.signals_interrupt():
        try:
            target.setup()
            status.state = READY
            status.write()
            print("ready", flush=True)
            while True:
                signal.pause()
        except KeyboardInterrupt:
            print("stopping: tearing the target down", flush=True)
            return 0
        except Exception as exc:
            status.state, status.error = FAILED, str(exc) or type(exc).__name__
            status.write()
            raise
        finally:
            target.teardown()
            if status.state != FAILED:
                STATUS_PATH.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
