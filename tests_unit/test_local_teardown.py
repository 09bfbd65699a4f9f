"""Teardown of the local cluster leaves nothing behind. Its own module: it starts its own cluster, and
module-scoped clusters of other modules are never alive at the same time in one process."""
from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest

from llmd_conformance.local import netns
from llmd_conformance.local.instance import LOCK_PATH
from tests_unit.test_local_cluster import NS, _gpu_pod, _pod_ready, _start
from llmd_conformance.waits import wait_for

pytestmark = [pytest.mark.local, pytest.mark.serial]


def test_teardown_leaves_nothing(tmp_path):
    """After stop, none of our processes, network namespaces, veths, routes or state files remain; the lock
    file does, released."""
    cluster, runner, core = _start(tmp_path)
    core.create_namespaced_pod(NS, _gpu_pod("gpu-t"))
    wait_for(lambda: _pod_ready(core, "gpu-t"), timeout=60)
    pod_pids = [c.process.pid for pod in runner.pods.values() for c in pod.containers if c.process]
    cluster_pids = [p.pid for p in cluster._procs.values()]
    lock_inode = os.stat(LOCK_PATH).st_ino
    runner.stop()
    cluster.stop()
    time.sleep(0.5)
    alive = [pid for pid in cluster_pids + pod_pids if os.path.exists(f"/proc/{pid}")]
    assert alive == [], f"processes still alive: {alive}"
    assert netns.list_namespaces() == [] and netns.list_links() == [], (netns.list_namespaces(), netns.list_links())
    assert not netns.guard_route_present()
    assert not cluster.state_dir.exists(), f"{cluster.state_dir} still there"
    ours = subprocess.run(["pgrep", "-f", f"{cluster.state_dir}/"], capture_output=True, text=True).stdout.split()
    assert ours == [], f"processes referring to {cluster.state_dir}: {ours}"
    # The lock file stays, released and empty: unlinking it would let a waiter holding the old inode
    # and the next run (a new inode) both own the cluster.
    fd = os.open(LOCK_PATH, os.O_RDWR)
    try:
        assert os.fstat(fd).st_ino == lock_inode, "the lock file was replaced"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert os.read(fd, 200) == b"", "the released lock still names a holder"
    finally:
        os.close(fd)
