"""The warm local loop: `--keep-target` leaves the local target up in a keeper process, the next run
reuses it while its fingerprint matches and replaces it when not, a run without the flag stops it at
its end, and `python -m llmd_conformance.local down` removes it, also after the keeper was killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from llmd_conformance.local import keeper
from llmd_conformance.local.instance import LOCK_PATH, STATE_DIR
from llmd_conformance.topology import load_topology
from tests_unit.conftest import REPO


def test_the_fingerprint_follows_the_topology_and_is_stable():
    pattern2, single = load_topology("pattern2"), load_topology("pattern2-single-pool")
    assert keeper.fingerprint(pattern2) == keeper.fingerprint(pattern2)
    assert keeper.fingerprint(pattern2) != keeper.fingerprint(single)


def test_a_status_naming_a_process_that_is_not_a_keeper_is_not_alive():
    """A reused pid (here: this test process) is not mistaken for the keeper."""
    assert not keeper.Kept(os.getpid(), keeper.READY, "f", "pattern2", "now", "logs").alive
    assert not keeper.Kept(2**22 + 1, keeper.READY, "f", "pattern2", "now", "logs").alive


def test_the_command_line_names_its_commands():
    result = subprocess.run([sys.executable, "-m", "llmd_conformance.local", "up"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "usage: python -m llmd_conformance.local {down|status}" in result.stderr


def _suite(*args: str, report_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "suites", "-m", "smoke", "-p", "no:cacheprovider",
                           "--report-dir", str(report_dir), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def _keeper() -> keeper.Kept | None:
    return keeper.find()


@pytest.mark.serial
@pytest.mark.skipif(os.geteuid() != 0, reason="the local target runs as root")
def test_kept_target_is_reused_replaced_stopped_and_removed(tmp_path):
    subprocess.run([sys.executable, "-m", "llmd_conformance.local", "down"], cwd=REPO, check=True, capture_output=True)

    first = _suite("--keep-target", report_dir=tmp_path / "r1")
    assert first.returncode == 0, first.stdout + first.stderr
    kept = _keeper()
    assert kept is not None and kept.topology == "pattern2"
    assert "left up (--keep-target)" in first.stdout

    again = _suite("--keep-target", report_dir=tmp_path / "r2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"reusing the kept local target of instance {keeper.INDEX} (keeper pid {kept.pid}" in again.stdout
    assert _keeper().pid == kept.pid

    other = _suite("--keep-target", "--topology", "pattern2-single-pool", "-k", "status", report_dir=tmp_path / "r3")
    assert other.returncode == 0, other.stdout + other.stderr
    assert "is not what this run needs" in other.stdout
    replaced = _keeper()
    assert replaced.pid != kept.pid and replaced.topology == "pattern2-single-pool" and not kept.alive

    last = _suite("--topology", "pattern2-single-pool", "-k", "status", report_dir=tmp_path / "r4")
    assert last.returncode == 0, last.stdout + last.stderr
    assert "reusing the kept local target" in last.stdout and "stopping the kept local target" in last.stdout
    assert _keeper() is None and not replaced.alive and not STATE_DIR.exists()
    assert not LOCK_PATH.with_suffix(".record.json").exists()


@pytest.mark.serial
@pytest.mark.skipif(os.geteuid() != 0, reason="the local target runs as root")
def test_down_removes_what_a_killed_keeper_left(tmp_path):
    subprocess.run([sys.executable, "-m", "llmd_conformance.local", "down"], cwd=REPO, check=True, capture_output=True)
    first = _suite("--keep-target", "-k", "status", report_dir=tmp_path / "r1")
    assert first.returncode == 0, first.stdout + first.stderr
    kept = _keeper()
    os.kill(kept.pid, signal.SIGKILL)
    while kept.alive:
        time.sleep(0.1)
    assert keeper.STATUS_PATH.exists() and LOCK_PATH.with_suffix(".record.json").exists() and STATE_DIR.exists()

    down = subprocess.run([sys.executable, "-m", "llmd_conformance.local", "down"], cwd=REPO, capture_output=True,
                          text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "inherited from a previous run" in down.stdout
    assert not keeper.STATUS_PATH.exists() and not LOCK_PATH.with_suffix(".record.json").exists()
    assert not STATE_DIR.exists()
