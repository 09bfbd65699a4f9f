"""The local target's setup as engine steps: --plan changes nothing; a signal or a kill -9 mid-setup
leaves nothing behind (the kill's leftovers are undone by the next run). Each test drives a real
`pytest suites` in a child process on its own local-cluster instance."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests_unit.conftest import read_until

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.local


def suite(instance: int, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "--report-dir", str(tmp_path / "reports"),
         *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "LLMD_INSTANCE": str(instance), **env})


def leftovers(instance: int) -> list[str]:
    """What a run of this instance may leave on the host: state folder, record, network, live lock holder."""
    suffix = "" if instance == 0 else f"-{instance}"
    tag = "llmd" if instance == 0 else f"llm{instance}"
    found = [str(p) for p in (Path(f"/run/llmd-conformance{suffix}"), Path(f"/run/llmd-conformance{suffix}.record.json"))
             if p.exists()]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [line.split(":")[1].strip() for line in links.splitlines() if f" {tag}" in line]
    found += [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
              if ns.startswith(f"{tag}-")]
    lock = Path(f"/run/llmd-conformance{suffix}.lock")
    if lock.exists() and lock.read_text().strip():
        found.append(f"{lock} names {lock.read_text().strip()}")
    return found


def test_plan_on_the_local_target_builds_starts_and_changes_nothing(tmp_path):
    """--plan lists the steps with what is there (nothing built yet here) and leaves the host as it was."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = suite(7, tmp_path, "-m", "pattern2", "--plan", LLMD_BIN_DIR=str(empty_bin))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "now: to build: etcd, kube-apiserver" in out, out
    assert "[change] start etcd (TLS, client certificates), kube-apiserver on 10.251.255.254:16450" in out, out
    assert "[undo  ] stop every process, delete llm7-br0" in out, out
    assert list(empty_bin.iterdir()) == [], "--plan built something"
    assert leftovers(7) == []


@pytest.mark.serial
@pytest.mark.parametrize(("signame", "instance"), [("SIGINT", 4), ("SIGTERM", 5), ("SIGHUP", 6)])
def test_a_signal_during_setup_undoes_every_step(tmp_path, signame, instance):
    """Interrupted once the cluster and gateway run (helmfile sync in progress): every step is undone."""
    proc = suite(instance, tmp_path, "-m", "smoke")
    output = read_until(proc, "$ TOPOLOGY=", timeout=180)
    os.killpg(proc.pid, getattr(signal, signame))
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output + rest
    assert leftovers(instance) == [], output + rest


@pytest.mark.serial
def test_a_killed_runs_record_is_undone_by_the_next_run(tmp_path):
    """kill -9 leaves the network, state and record behind; the next run inherits the record, passes, and
    leaves nothing."""
    proc = suite(8, tmp_path, "-m", "smoke")
    read_until(proc, "$ TOPOLOGY=", timeout=180)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert any("record.json" in item for item in leftovers(8)), leftovers(8)
    nxt = suite(8, tmp_path, "-m", "smoke")
    out, _ = nxt.communicate(timeout=300)
    assert nxt.returncode == 0, out
    assert "inherited from a previous run" in out, out
    assert leftovers(8) == []


def test_not_root_is_refused_before_any_build(tmp_path, monkeypatch):
    """The root check is the first step: a non-root run stops at once, not after a 40-minute build."""
    from llmd_conformance import build
    from llmd_conformance.local import cluster
    from llmd_conformance.local.target import LocalTarget
    from llmd_conformance.topology import load_topology

    built = []
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(build, "build_all", lambda **kwargs: built.append(kwargs))
    target = LocalTarget(load_topology("pattern2"), tmp_path, log=lambda line: None)
    assert [s.name for s in target.steps()][:3] == ["root", "build", "lock"]
    with pytest.raises(cluster.ClusterError, match="root"):
        target.setup()
    assert built == [] and not target.cluster.locked
