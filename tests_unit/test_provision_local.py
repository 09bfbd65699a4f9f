"""The GKE provisioning flow, run for real on the local cluster: only gcloud is replaced (by the local resize)."""
from __future__ import annotations

import pytest
from kubernetes import client

from fake_gcloud import fake_clock
from llmd_conformance import build
from llmd_conformance.commands import CommandRunner
from llmd_conformance.gke import KubeApis, Provisioner, TeardownPolicy
from llmd_conformance.helmfile import HelmfileRunner
from llmd_conformance.local.cluster import LocalCluster
from llmd_conformance.local.podrunner import PodRunner
from llmd_conformance.local.pool import LocalPool
from llmd_conformance.runlock import RunLock, RunLockHeld
from llmd_conformance.topology import load_topology

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalCluster(logs_dir=tmp_path_factory.mktemp("logs"), gpu_nodes=0).start()
    runner = PodRunner(cluster, cluster.logs_dir).start()
    yield cluster
    runner.stop()
    cluster.stop()


def _provisioner(cluster, lines, policy=TeardownPolicy.RESTORE, holder="test-run"):
    topology = load_topology("pattern2")
    api = cluster.api_client()
    commands = CommandRunner(progress=lines.append)
    helmfile = HelmfileRunner.for_topology(topology, "local", commands, kubeconfig=cluster.kubeconfig,
                                           helmfile=str(build.binary("helmfile")), helm=str(build.binary("helm")))
    return Provisioner(LocalPool(cluster), helmfile, KubeApis.from_api_client(api), topology, policy,
                       lock=RunLock(client.CoordinationV1Api(api), holder=holder, **fake_clock()), wait_timeout_s=120,
                       poll_s=1,
                       progress=lines.append)


def _releases(cluster):
    core = client.CoreV1Api(cluster.api_client())
    secrets = core.list_namespaced_secret("llm-d", label_selector="owner=helm").items if _ns(core) else []
    return sorted({s.metadata.labels["name"] for s in secrets})


def _ns(core):
    return any(n.metadata.name == "llm-d" for n in core.list_namespace().items)


def test_provision_then_restore_on_local_cluster(cluster):
    """Setup resizes the pool 0 → 2, installs every release and waits for Ready pods; restore undoes both."""
    lines: list[str] = []
    provisioner = _provisioner(cluster, lines)
    provisioner.setup()
    try:
        assert len(cluster.gpu_pool_nodes()) == 2, lines
        assert _releases(cluster) == ["bbr", "gaie-gemma", "gaie-phi", "infra-pattern2", "ms-gemma", "ms-phi"], lines
        pods = client.CoreV1Api(cluster.api_client()).list_namespaced_pod("llm-d").items
        assert pods and all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
                            for p in pods), [p.metadata.name for p in pods]
    finally:
        provisioner.teardown()
    assert cluster.gpu_pool_nodes() == [], "\n".join(lines)
    assert _releases(cluster) == [], "\n".join(lines)


def test_second_run_is_refused_by_the_run_lock(cluster):
    """While one run holds the Lease, a second run is refused with the holder's name and changes nothing."""
    first = RunLock(client.CoordinationV1Api(cluster.api_client()), holder="ci-run-1", renew_every_s=0.2)
    first.acquire()
    try:
        second = _provisioner(cluster, [], holder="ci-run-2")
        with pytest.raises(RunLockHeld, match="ci-run-1"):
            second.setup()
        assert cluster.gpu_pool_nodes() == [] and _releases(cluster) == []
    finally:
        first.release()


def test_failed_helmfile_restores_the_pool(cluster, tmp_path):
    """A helmfile that fails after the resize leaves the pool as found and no release behind."""
    lines: list[str] = []
    provisioner = _provisioner(cluster, lines)
    broken = tmp_path / "helmfile"
    broken.write_text("#!/bin/sh\necho 'helmfile: simulated failure' >&2\nexit 1\n")
    broken.chmod(0o755)
    real = provisioner.helmfile.command
    provisioner.helmfile.command = lambda *args, **kwargs: (
        [str(broken), *real(*args, **kwargs)[1:]] if args == ("sync",) else real(*args, **kwargs))
    with pytest.raises(Exception, match="simulated failure|helmfile sync"):
        provisioner.setup()
    assert cluster.gpu_pool_nodes() == [], "\n".join(lines)
    assert _releases(cluster) == [], "\n".join(lines)


def _state(cluster) -> dict:
    core = client.CoreV1Api(cluster.api_client())
    leases = client.CoordinationV1Api(cluster.api_client()).list_namespaced_lease("default").items
    return {"pool": sorted(cluster.gpu_pool_nodes()), "releases": _releases(cluster),
            "namespaces": sorted(n.metadata.name for n in core.list_namespace().items),
            "leases": sorted(lease.metadata.name for lease in leases)}


def test_sigint_at_each_step_leaves_exactly_the_starting_state(cluster):
    """The GKE provisioning flow on the local pool, interrupted by SIGINT as each step starts: every time,
    the pool size, releases, namespaces and the run-lock are back to what they were."""
    import os
    import signal

    from llmd_conformance.waits import wait_for

    def no_namespace_terminating():  # an earlier test's teardown may still be deleting llm-d
        core = client.CoreV1Api(cluster.api_client())
        assert not [n.metadata.name for n in core.list_namespace().items if n.metadata.deletion_timestamp]
    wait_for(no_namespace_terminating, timeout=60)
    before = _state(cluster)
    names = [s.name for s in _provisioner(cluster, []).steps()]
    for name in names:
        lines: list[str] = []
        p = _provisioner(cluster, lines)
        planned = p.steps

        def with_signal(planned=planned, name=name):
            out = planned()
            for step in out:
                if step.name == name:
                    apply = step.apply
                    step.apply = lambda apply=apply: (os.kill(os.getpid(), signal.SIGINT), apply())
            return out
        p.steps = with_signal
        with pytest.raises(KeyboardInterrupt):
            p.setup()
        # A deleted namespace takes a moment to go (its finalizer runs after the delete call returns).
        def restored(name=name, lines=lines):
            now = _state(cluster)
            assert now == before, f"SIGINT at {name!r}: {now} != {before}\n" + "\n".join(lines[-15:])
        wait_for(restored, timeout=60)
