"""Bad input for the local cluster is refused with a message that says what to fix, before anything starts."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_conformance import build
from llmd_conformance.local import cluster as local_cluster
from llmd_conformance.local.cluster import ClusterError, LocalCluster


def test_not_root_is_refused(monkeypatch):
    """Network namespaces need root: the error says so."""
    monkeypatch.setattr(local_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(ClusterError, match="needs root: pods run in network namespaces"):
        LocalCluster().preflight()


def test_missing_binary_names_the_build_command(monkeypatch, tmp_path):
    """A binary that was never built is named with the command that builds it."""
    monkeypatch.setenv("LLMD_BIN_DIR", str(tmp_path))
    with pytest.raises(build.BuildError, match=r"binary 'etcd' is missing .* run 'python -m llmd_conformance.build'"):
        LocalCluster().preflight()


def _fake_go(tmp_path, version: str):
    go = tmp_path / "go"
    go.write_text(f"#!/bin/sh\necho {version}\n")
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def test_old_go_is_refused(monkeypatch, tmp_path):
    """Go older than the pinned modules need is refused with the version found and the one needed."""
    monkeypatch.setenv("PATH", str(_fake_go(tmp_path, "go1.20.3")))
    with pytest.raises(build.BuildError, match=r"Go go1.20.3 is too old: the local cluster needs Go >= 1.26"):
        build.check_go()


def test_missing_go_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match="'go' is not on PATH"):
        build.check_go()


def test_unknown_component_is_refused():
    with pytest.raises(build.BuildError, match=r"unknown component\(s\) \['kubelet'\]; known: \["):
        build.build_all(["kubelet"])


@pytest.mark.local
def test_port_in_use_is_refused(tmp_path):
    """A port the cluster needs that something else holds is named; nothing is started."""
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # binds despite TIME_WAIT of an earlier etcd
        squatter.bind(("127.0.0.1", local_cluster.ETCD_PORTS[0]))
        squatter.listen()
        cluster = LocalCluster(state_dir=tmp_path / "state")
        with pytest.raises(ClusterError, match=rf"port 127.0.0.1:{local_cluster.ETCD_PORTS[0]} \(etcd\) is already in use"):
            cluster.start()
    assert not cluster.running and not (tmp_path / "state").exists()


def _instance_of(**env: str) -> subprocess.CompletedProcess:
    """Import instance.py in a fresh process with this environment (it reads it at import)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("LLMD_INSTANCE", "PYTEST_XDIST_WORKER")}
    return subprocess.run([sys.executable, "-c", "from llmd_conformance.local import instance; print(instance.INDEX)"],
                          env={**clean, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env},
                          capture_output=True, text=True)


def test_xdist_worker_without_an_instance_is_refused_with_the_fix():
    """Workers gw0-gw8 get instances 1-9; gw9 and above are told how many workers fit and how to share one."""
    assert _instance_of(PYTEST_XDIST_WORKER="gw8").stdout.strip() == "9"
    refused = _instance_of(PYTEST_XDIST_WORKER="gw10")
    assert refused.returncode != 0
    assert ("pytest-xdist worker gw10 would drive local cluster instance 11, but there are only instances 0-9: "
            "run tests that use the local cluster with -n 9 or fewer") in refused.stderr, refused.stderr
    assert _instance_of(PYTEST_XDIST_WORKER="gw10", LLMD_INSTANCE="3").stdout.strip() == "3"
