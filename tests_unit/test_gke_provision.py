"""The GKE provisioning flow against a recording stand-in for gcloud/helmfile/helm (no cloud).

Each test asserts the exact command sequence the fake cloud recorded, and the state it ends in:
pool size, installed releases, namespace, Secret, run-lock Lease.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fake_gcloud import FakeCloud
from tests_unit.conftest import read_until
from llmd_conformance import gke
from llmd_conformance.commands import CommandError
from llmd_conformance.targets import TargetError
from llmd_conformance.runlock import RunLockHeld
from llmd_conformance.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_" + "Q" * 34  # Hugging Face token shape, planted to prove it never leaks

RESIZE = ("gcloud --quiet container clusters resize test-cluster --node-pool nvidia-t4-pool --num-nodes {} "
          "--zone us-central1-a --project test-project")
POOL_READS = [
    "gcloud auth print-access-token",
    "gcloud container node-pools describe nvidia-t4-pool --cluster test-cluster --zone us-central1-a "
    "--project test-project --format=json",
]
CLUSTER_DESCRIBE = "gcloud container clusters describe test-cluster --zone us-central1-a --project test-project --format=json"
SUBNETS = ("gcloud compute networks subnets list --network default --regions us-central1 "
           "--filter=purpose=REGIONAL_MANAGED_PROXY --project test-project --format=json")
# The pool's reads, then the GKE preflight's (add-on, proxy-only subnet; driver and CRD read no more gcloud).
PREFLIGHT = [*POOL_READS, CLUSTER_DESCRIBE, SUBNETS]
HELMFILE = "helmfile -f manifests/helmfile.yaml.gotmpl -e gke"
SURVEY = [f"{HELMFILE} list --output json", "helm list -n llm-d -a -o json"]
# The pool's size, read from its own instance group in the named cluster (never from a kubeconfig's Nodes).
SIZE = [PREFLIGHT[1], "gcloud compute instance-groups managed describe gke-nvidia-t4-pool-grp --zone us-central1-a "
                      "--project test-project --format=value(targetSize)"]
POOL = "projects/test-project/locations/us-central1-a/clusters/test-cluster/nodePools/nvidia-t4-pool"
UNINSTALL = "helm uninstall {} -n llm-d --ignore-not-found --wait --timeout 10m"
INSTALL_ORDER = ["ms-gemma", "ms-phi", "gaie-gemma", "gaie-phi"]  # the helmfile's order (fake_gcloud.default_state)
UNINSTALL_ALL = [UNINSTALL.format(name) for name in reversed(INSTALL_ORDER)]


@pytest.fixture
def topology():
    return load_topology("pattern2")


@pytest.fixture
def cloud(tmp_path, topology, monkeypatch):
    cloud = FakeCloud(tmp_path / "cloud", topology)
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LLMD_BIN_DIR", str(tmp_path / "no-cached-binaries"))
    return cloud


@pytest.fixture
def lines():
    return []


def provisioner(cloud, lines, policy="restore", **kwargs):
    return cloud.provisioner(policy, progress=lines.append, **kwargs)


def recorded(cloud) -> list[dict]:
    """The undo entries on the run-lock Lease."""
    lease = cloud.state.read()["leases"]["default/llmd-conformance-run-lock"]
    return json.loads(lease["metadata"]["annotations"]["llmd-conformance/undo"])["entries"]


def assert_untouched_at_start(cloud):
    state = cloud.state.read()
    assert state["pools"]["nvidia-t4-pool"]["size"] == 0
    assert state["releases"] == {}
    assert "llm-d" not in state["namespaces"]
    assert state["leases"] == {}, f"the run-lock was left behind: {state['leases']}"


def refused_after_preflight(cloud, lines, message: str) -> None:
    """Setup refuses with `message` having run only the pool's reads; the cloud is as it was."""
    with pytest.raises(TargetError, match=message):
        provisioner(cloud, lines).setup()
    assert cloud.commands() == POOL_READS
    assert_untouched_at_start(cloud)


def test_provision_then_restore_runs_the_exact_command_sequence(cloud, lines):
    """Record size 0 → resize to 2 → sync → teardown: uninstall in reverse order, resize back to 0."""
    p = provisioner(cloud, lines)
    p.setup()
    state = cloud.state.read()
    assert state["pools"]["nvidia-t4-pool"]["size"] == 2
    assert sorted(state["releases"]) == sorted(f"llm-d/{n}" for n in INSTALL_ORDER)
    lease = state["leases"]["default/llmd-conformance-run-lock"]
    assert lease["spec"]["holderIdentity"] == "run-1"
    entries = recorded(cloud)
    assert [(e["kind"], e["group"]) for e in entries] == [
        ("pool-size", "pool"), ("namespace", "objects"), *[("release", "releases")] * 4]
    assert entries[0]["params"] == {"found": 0, "pool": POOL}
    run = p.run_id
    assert all(e["owner"] == run for e in entries)
    assert state["namespace_labels"]["llm-d"] == {"conformance.llm-d.ai/run": run}
    assert all(state["secret_labels"][f"llm-d/sh.helm.release.v1.{n}.v1"] == {"conformance.llm-d.ai/run": run}
               for n in INSTALL_ORDER)
    p.teardown()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), f"{HELMFILE} sync", *UNINSTALL_ALL,
                                RESIZE.format(0)]
    assert_untouched_at_start(cloud)
    assert "teardown done" in lines


def test_helmfile_gets_topology_postfix_and_charts_but_never_the_token(cloud, lines, monkeypatch):
    """helmfile runs with TOPOLOGY, RELEASE_NAME_POSTFIX, LLMD_GIE_CHARTS; no tool gets HF_TOKEN or any other
    variable of ours it was not given (children get an explicit environment)."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "R" * 36)
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    from fake_gcloud import read_log

    calls = read_log(cloud.log)
    sync = next(c for c in calls if c["tool"] == "helmfile" and c["argv"][-1] == "sync")
    assert sync["env"] == {"TOPOLOGY": "pattern2", "RELEASE_NAME_POSTFIX": "pattern2",
                           "LLMD_GIE_CHARTS": "/charts/gie-v1.5.0"}
    leaked = [c for c in calls if "HF_TOKEN" in c["env"] or "GITHUB_TOKEN" in c["env"]]
    assert not leaked, f"HF_TOKEN reached: {[c['tool'] + ' ' + ' '.join(c['argv']) for c in leaked]}"


def test_failing_helmfile_removes_what_it_half_installed_and_restores_the_pool(cloud, lines):
    """helmfile sync exits 1 after installing 2 releases: setup raises, every release it recorded is removed."""
    with cloud.edit() as state:
        state["helmfile_fail"], state["helmfile_fail_after"] = True, 2
    p = provisioner(cloud, lines)
    with pytest.raises(CommandError, match=r"helmfile sync failed \(exit 1\)") as failure:
        p.setup()
    assert "UPGRADE FAILED" in str(failure.value)
    installed = INSTALL_ORDER[:2]  # the releases of a half-done sync are labelled, so their undo removes them
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), f"{HELMFILE} sync",
                                *(UNINSTALL.format(n) for n in reversed(installed)), RESIZE.format(0)]
    assert_untouched_at_start(cloud)
    calls = len(cloud.commands())
    p.teardown()  # the suite's own teardown call after a failed setup changes nothing more
    assert len(cloud.commands()) == calls


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_pod_wait_restores_pool_and_removes_releases(cloud, topology, signum):
    """A provisioner in its own process, stopped while it waits for pods, undoes everything before it exits."""
    with cloud.edit() as state:
        state["pods_ready"] = False
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import fake_gcloud; fake_gcloud.drive({str(cloud.root)!r}, 'pattern2', 'restore')"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO / 'tests_unit'}{os.pathsep}{REPO}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = read_until(proc, "waiting for pods Ready [", timeout=60)
    assert cloud.state.read()["pools"]["nvidia-t4-pool"]["size"] == 2
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=60)
    output += rest
    assert proc.returncode != 0, output
    assert "KeyboardInterrupt" in output and "teardown done" in output, output
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), f"{HELMFILE} sync", *UNINSTALL_ALL, RESIZE.format(0)]
    assert_untouched_at_start(cloud)


def test_second_concurrent_run_is_refused_by_the_run_lock(cloud, lines):
    """While one run provisions (another process), a second one is refused naming the holder; it changes nothing."""
    with cloud.edit() as state:
        state["pods_ready"] = False
    proc = subprocess.Popen(
        [sys.executable, "-c", f"import fake_gcloud; fake_gcloud.drive({str(cloud.root)!r}, 'pattern2', 'restore')"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO / 'tests_unit'}{os.pathsep}{REPO}"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        read_until(proc, "waiting for pods Ready", timeout=60)
        calls_of_first = len(cloud.commands())
        second = provisioner(cloud, lines, holder="run-2")
        with pytest.raises(RunLockHeld, match=r"held by run-1") as refused:
            second.setup()
        assert "another conformance run" in str(refused.value)
        # The second run only read: its own preflight calls, nothing else.
        assert cloud.commands()[calls_of_first:] == PREFLIGHT
        assert "renewed it while we watched" in str(refused.value)
        assert cloud.state.read()["leases"]["default/llmd-conformance-run-lock"]["spec"]["holderIdentity"] == "run-1"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert_untouched_at_start(cloud)


def test_rerun_reuses_a_healthy_deployment_and_removes_nothing(cloud, lines):
    """Releases present and deployed, pool big enough: no resize, no install; teardown has nothing to undo."""
    with cloud.edit() as state:
        state["pools"]["nvidia-t4-pool"]["size"] = 2
        state["releases"] = {f"llm-d/{n}": "deployed" for n in INSTALL_ORDER}
        state["namespaces"].append("llm-d")
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE]
    state = cloud.state.read()
    assert state["pools"]["nvidia-t4-pool"]["size"] == 2
    assert len(state["releases"]) == 4 and "llm-d" in state["namespaces"]
    assert any("reusing the existing deployment" in line for line in lines)


def test_partly_present_deployment_installs_and_removes_only_the_absent_releases(cloud, lines):
    """ms-gemma exists (someone else's): sync selects the other three by name; teardown removes only those."""
    with cloud.edit() as state:
        state["releases"] = {"llm-d/ms-gemma": "deployed"}
        state["namespaces"].append("llm-d")
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    ours = ["ms-phi", "gaie-gemma", "gaie-phi"]
    sync = f"{HELMFILE} -l name=ms-phi -l name=gaie-gemma -l name=gaie-phi sync"
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), sync,
                                *(UNINSTALL.format(n) for n in reversed(ours)), RESIZE.format(0)]
    state = cloud.state.read()
    assert state["releases"] == {"llm-d/ms-gemma": "deployed"}
    assert "llm-d" in state["namespaces"], "the namespace existed before the run and must stay"


def test_broken_foreign_release_is_refused_before_anything_changes(cloud, lines):
    """A release in status failed that this run did not create: error naming it, no resize, no install."""
    with cloud.edit() as state:
        state["releases"] = {"llm-d/gaie-phi": "failed"}
    p = provisioner(cloud, lines)
    with pytest.raises(gke.GkeError, match=r"llm-d/gaie-phi \(failed\) exist but are not deployed: this run did not create"):
        p.setup()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY]
    assert cloud.state.read()["releases"] == {"llm-d/gaie-phi": "failed"}
    assert cloud.state.read()["leases"] == {}


def test_autoscaling_pool_is_refused_without_resize(cloud, lines):
    with cloud.edit() as state:
        state["pools"]["nvidia-t4-pool"]["autoscaling"] = True
    with pytest.raises(gke.GkeError, match=r"has autoscaling enabled \(min 0, max 3 per zone\).*does not resize it"):
        provisioner(cloud, lines).setup()
    assert cloud.commands() == POOL_READS
    assert_untouched_at_start(cloud)


def test_missing_node_pool_is_named_with_the_pools_that_exist(cloud, lines):
    with cloud.edit() as state:
        pool = state["pools"].pop("nvidia-t4-pool")
        state["pools"] = {"default-pool": pool, "cpu-pool": pool}
    with pytest.raises(gke.GkeError, match=r"node pool 'nvidia-t4-pool' does not exist in cluster test-cluster "
                                           r"\(us-central1-a, project test-project\); its pools: cpu-pool, default-pool"):
        provisioner(cloud, lines).setup()
    assert cloud.commands() == [*POOL_READS, "gcloud container node-pools list --cluster test-cluster --zone us-central1-a "
                                            "--project test-project --format=value(name)"]


def test_unauthenticated_gcloud_says_how_to_log_in(cloud, lines):
    with cloud.edit() as state:
        state["authenticated"] = False
    with pytest.raises(gke.GkeError, match=r"gcloud is not authenticated: run `gcloud auth login`.*Workload Identity"):
        provisioner(cloud, lines).setup()
    assert cloud.commands() == POOL_READS[:1]


def test_gcloud_not_installed_is_refused(cloud, lines):
    (cloud.root / "bin" / "gcloud").unlink()
    os.environ["PATH"] = str(cloud.root / "bin")  # monkeypatch restores PATH after the test
    with pytest.raises(gke.GkeError, match=r"gcloud is not installed \(not on PATH\): install the Google Cloud CLI"):
        provisioner(cloud, lines).setup()
    assert cloud.commands() == []


def test_helmfile_missing_is_refused_before_anything_changes(cloud, lines):
    (cloud.root / "bin" / "helmfile").unlink()
    os.environ["PATH"] = f"{cloud.root / 'bin'}{os.pathsep}/usr/bin:/bin"
    refused_after_preflight(cloud, lines, r"helmfile is not installed: install helmfile v1.1 .*"
                                          r"`python -m llmd_conformance.build --only helm helmfile`")


def test_missing_hf_token_is_refused_before_anything_changes(cloud, lines):
    with pytest.raises(gke.GkeError, match=r"no Hugging Face token: Secret llm-d/llm-d-hf-token does not exist and "
                                           r"HF_TOKEN is not set"):
        provisioner(cloud, lines, hf_token=gke.HfToken("llm-d-hf-token", None)).setup()
    assert cloud.commands() == PREFLIGHT
    assert_untouched_at_start(cloud)


def test_hf_secret_is_created_from_the_env_value_removed_at_teardown_and_never_printed(cloud, lines):
    p = provisioner(cloud, lines, hf_token=gke.HfToken("llm-d-hf-token", TOKEN))
    p.setup()
    assert cloud.state.read()["secrets"] == {"llm-d/llm-d-hf-token": ["HF_TOKEN"]}
    p.teardown()
    assert cloud.state.read()["secrets"] == {}
    assert any("kubectl create secret generic llm-d-hf-token -n llm-d --from-literal=HF_TOKEN=***" in line for line in lines)
    everything = "\n".join(lines) + cloud.log.read_text() + cloud.state.path.read_text()
    assert TOKEN not in everything
    assert TOKEN not in repr(p.hf_token)


def test_multi_zone_pool_is_resized_per_zone(cloud, lines):
    """gcloud's --num-nodes is per zone: 2 GPU nodes over 2 zones is --num-nodes 1."""
    with cloud.edit() as state:
        state["zones"] = ["us-central1-a", "us-central1-b"]
    p = provisioner(cloud, lines)
    p.setup()
    assert cloud.state.read()["pools"]["nvidia-t4-pool"]["size"] == 1
    assert any("resizing to 1 per zone x 2 zones" in line for line in lines), lines
    p.teardown()
    assert RESIZE.format(1) in cloud.commands() and cloud.commands()[-1] == RESIZE.format(0)
    assert sum("instance-groups managed describe" in c for c in cloud.commands()) == 2, "one size read per zone"


@pytest.mark.parametrize(
    ("policy", "teardown_commands", "size_after", "releases_after"),
    [
        ("keep", [], 2, 4),
        ("releases", UNINSTALL_ALL, 2, 0),
        ("scale-to-zero", [RESIZE.format(0)], 0, 4),
        ("restore", [*UNINSTALL_ALL, RESIZE.format(0)], 0, 0),
    ],
)
def test_teardown_policy_undoes_what_it_names(cloud, lines, policy, teardown_commands, size_after, releases_after):
    p = provisioner(cloud, lines, policy=policy)
    p.setup()
    before = len(cloud.commands())
    p.teardown()
    assert cloud.commands()[before:] == teardown_commands
    state = cloud.state.read()
    assert state["pools"]["nvidia-t4-pool"]["size"] == size_after
    assert len(state["releases"]) == releases_after


def test_teardown_is_idempotent(cloud, lines):
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    calls = cloud.commands()
    p.teardown()
    assert cloud.commands() == calls


def test_a_kept_deployment_stays_until_a_run_asks_for_its_undo(cloud, lines):
    """keep leaves its entries (marked kept) on the unheld Lease; a default run reuses the deployment and keeps
    them; only a run given --teardown explicitly (undo_kept) removes the releases and restores size 0."""
    first = provisioner(cloud, lines, policy="keep")
    first.setup()
    first.teardown()
    lease = cloud.state.read()["leases"]["default/llmd-conformance-run-lock"]
    assert lease["spec"].get("holderIdentity") is None
    assert all(e["kept"] for e in recorded(cloud)) and recorded(cloud)[0]["params"]["found"] == 0
    before = len(cloud.commands())
    second = provisioner(cloud, lines, holder="run-2")
    second.setup()
    second.teardown()
    assert cloud.commands()[before:] == [*PREFLIGHT, *SURVEY, *SIZE], "a default run removed a kept deployment"
    assert len(cloud.state.read()["releases"]) == 4 and len(recorded(cloud)) == 6
    before = len(cloud.commands())
    third = provisioner(cloud, lines, holder="run-3", undo_kept=True)
    third.setup()
    third.teardown()
    assert cloud.commands()[before:] == [*PREFLIGHT, *SURVEY, *SIZE, *UNINSTALL_ALL, RESIZE.format(0)]
    assert_untouched_at_start(cloud)


def test_a_dead_runs_stale_lock_is_taken_over_and_its_changes_undone(cloud, lines):
    """A run killed after resizing (no teardown): its Lease goes stale; the next run inherits and restores."""
    dead = provisioner(cloud, lines, holder="run-dead")
    dead.setup()
    dead.lock._stop.set()  # the process hangs: nobody renews the Lease any more
    dead.lock._thread.join()
    with cloud.edit() as state:
        spec = state["leases"]["default/llmd-conformance-run-lock"]["spec"]
        spec["renewTime"] = (datetime.now(timezone.utc) - timedelta(seconds=spec["leaseDurationSeconds"] + 5)).isoformat()
    before = len(cloud.commands())
    heir = provisioner(cloud, lines, holder="run-2")
    heir.setup()
    assert any("inherited from a previous run" in line for line in lines), lines
    during = len(cloud.commands())
    dead.teardown()  # if the hung run wakes up, its changes are the heir's now: it must not touch them
    assert len(cloud.commands()) == during
    assert any("teardown skipped: Lease default/llmd-conformance-run-lock is held by run-2 now" in line
               for line in lines), lines
    heir.teardown()
    assert cloud.commands()[before:] == [*PREFLIGHT, *SURVEY, *SIZE, *UNINSTALL_ALL, RESIZE.format(0)]
    assert_untouched_at_start(cloud)


def test_wait_timeout_reports_the_last_state_and_tears_down(cloud, lines):
    with cloud.edit() as state:
        state["gpu_ready"] = False
    p = provisioner(cloud, lines, wait_timeout_s=0.5)
    with pytest.raises(gke.ProvisionTimeout, match=r"waiting for GPU nodes: 0/2 GPU nodes Ready with allocatable "
                                                   r"nvidia.com/gpu \(gke-test-cluster-nvidia-t4-pool-us-central1-a-0: "
                                                   r"no allocatable nvidia.com/gpu yet"):
        p.setup()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), RESIZE.format(0)]
    assert any(line.startswith("waiting for GPU nodes [") for line in lines), "no progress line while waiting"
    assert_untouched_at_start(cloud)


def test_teardown_failure_is_reported_and_kept_on_the_lease(cloud, lines):
    """A resize that fails at teardown: GkeError says what is left; the Lease keeps it for the next run."""
    p = provisioner(cloud, lines)
    p.setup()
    with cloud.edit() as state:
        state["authenticated"] = False  # gcloud now refuses everything
    with pytest.raises(gke.GkeError, match=r"teardown incomplete: resize GKE node pool nvidia-t4-pool .* back to 0: "
                                           r"resizing .* failed.*stays recorded on Lease default/llmd-conformance"):
        p.teardown()
    assert [(e["kind"], e["params"]["found"]) for e in recorded(cloud)] == [("pool-size", 0)]
    assert cloud.state.read()["releases"] == {}


def test_duration_option_parsing():
    assert [gke.parse_duration(t) for t in ("45m", "1h30m", "90s", "600", 12)] == [2700, 5400, 90, 600, 12]
    with pytest.raises(gke.GkeError, match=r"cannot read the duration 'soon'"):
        gke.parse_duration("soon")


def test_hf_secret_without_the_token_key_is_refused_before_anything_changes(cloud, lines):
    with cloud.edit() as state:
        state["namespaces"].append("llm-d")
        state["secrets"] = {"llm-d/llm-d-hf-token": ["token"]}
    with pytest.raises(gke.GkeError, match=r"Secret llm-d/llm-d-hf-token has no key HF_TOKEN \(keys: token\)"):
        provisioner(cloud, lines, hf_token=gke.HfToken("llm-d-hf-token", TOKEN)).setup()
    assert cloud.commands() == PREFLIGHT


def test_a_release_a_dead_run_of_ours_left_half_installed_is_installed_again(cloud, lines):
    """The inherited undo record names gaie-phi, found 'pending-install': uninstalled, then synced with the rest."""
    with cloud.edit() as state:
        state["releases"] = {"llm-d/gaie-phi": "pending-install"}
        state["pools"]["nvidia-t4-pool"]["size"] = 2
        state["leases"]["default/llmd-conformance-run-lock"] = {
            "metadata": {"name": "llmd-conformance-run-lock", "namespace": "default", "resourceVersion": "1",
                         "annotations": {"llmd-conformance/undo": json.dumps({"entries": [
                             {"kind": "pool-size", "params": {"found": 0, "pool": POOL}, "owner": "run-dead",
                              "group": "pool", "describe": "resize back to 0"},
                             {"kind": "release", "params": {"name": "gaie-phi", "namespace": "llm-d"},
                              "owner": "run-dead", "group": "releases", "describe": "uninstall gaie-phi"}]})}},
            "spec": {"leaseDurationSeconds": 90},  # released: no holder
        }
        state["secret_labels"]["llm-d/sh.helm.release.v1.gaie-phi.v1"] = {"conformance.llm-d.ai/run": "run-dead"}
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, UNINSTALL.format("gaie-phi"), *SIZE, f"{HELMFILE} sync",
                                *UNINSTALL_ALL, RESIZE.format(0)]
    assert_untouched_at_start(cloud)


# -- findings of the review: pool identity, ownership, failed creates -------------------------------


def test_kubeconfig_of_another_cluster_is_refused_before_any_change(cloud, tmp_path, monkeypatch):
    """--gke-cluster names one cluster, the kubeconfig reaches another: nothing is resized, nothing installed."""
    from llmd_conformance.targets import TargetOptions

    kubeconfig = tmp_path / "other-cluster.yaml"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "other", "cluster": {"server": "https://127.0.0.2:443"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
        "users": [{"name": "other", "user": {}}]}))
    target = gke.GkeTarget(load_topology("pattern2"), TargetOptions(kubeconfig=kubeconfig, provision=True),
                           gke.GkeOptions(project="test-project", zone="us-central1-a", cluster="test-cluster"),
                           log=lambda line: None)
    with pytest.raises(gke.GkeError, match=r"the kubeconfig's API server https://127.0.0.2:443 is not cluster "
                                           r"test-cluster \(its endpoint is 127.0.0.1\)"):
        target.setup()
    assert cloud.commands() == [*POOL_READS, CLUSTER_DESCRIBE]
    assert_untouched_at_start(cloud)


def test_pool_without_the_topologys_accelerator_is_refused_before_the_resize(cloud, lines):
    with cloud.edit() as state:
        state["accelerator"] = ["cloud.google.com/gke-accelerator", "nvidia-l4"]
    refused_after_preflight(cloud, lines, r"has accelerators \['nvidia-l4'\], not nvidia-tesla-t4 as the topology "
                                          r"needs.*Pass --gke-node-pool")


def test_scale_to_zero_leaves_a_pool_this_run_did_not_grow(cloud, lines):
    with cloud.edit() as state:
        state["pools"]["nvidia-t4-pool"]["size"] = 2
    p = provisioner(cloud, lines, policy="scale-to-zero")
    p.setup()
    p.teardown()
    assert not any("resize" in c for c in cloud.commands())
    assert cloud.state.read()["pools"]["nvidia-t4-pool"]["size"] == 2


def test_a_namespace_someone_else_creates_during_our_create_is_never_deleted(cloud, lines):
    """Our create fails (409: another actor made it between our check and our create): its entry is dropped."""
    p = provisioner(cloud, lines)
    create = p.kube.core.create_namespace

    def raced(body):
        from kubernetes.client import V1Namespace, V1ObjectMeta

        create(V1Namespace(metadata=V1ObjectMeta(name=body.metadata.name, labels={"team": "a"})))
        return create(body)  # 409 AlreadyExists
    p.kube.core.create_namespace = raced
    with pytest.raises(Exception, match="AlreadyExists"):
        p.setup()
    state = cloud.state.read()
    assert "llm-d" in state["namespaces"] and state["namespace_labels"]["llm-d"] == {"team": "a"}
    assert state["leases"] == {}, "an entry of the failed create outlived it"


def test_an_inherited_entry_never_deletes_an_object_without_its_runs_label(cloud, lines):
    """A dead run's record names namespace llm-d; the namespace there now is someone else's: it stays."""
    with cloud.edit() as state:
        state["namespaces"].append("llm-d")
        state["namespace_labels"]["llm-d"] = {"conformance.llm-d.ai/run": "run-someone-else"}
        state["leases"]["default/llmd-conformance-run-lock"] = {
            "metadata": {"name": "llmd-conformance-run-lock", "namespace": "default", "resourceVersion": "1",
                         "annotations": {"llmd-conformance/undo": json.dumps({"entries": [
                             {"kind": "namespace", "params": {"name": "llm-d", "namespace": "llm-d"},
                              "owner": "run-dead", "group": "objects", "describe": "delete namespace llm-d"}]})}},
            "spec": {"leaseDurationSeconds": 90},
        }
    p = provisioner(cloud, lines)
    p.setup()
    p.teardown()
    assert "llm-d" in cloud.state.read()["namespaces"]
    assert any("does not carry conformance.llm-d.ai/run=run-dead" in line for line in lines), lines


def starting_state(cloud) -> dict:
    """The cloud as a user sees it: pools, releases, namespaces, Secrets, labels, Leases."""
    state = cloud.state.read()
    return {k: v for k, v in state.items() if k != "resource_version"}


def test_sigint_at_each_step_leaves_exactly_the_starting_state(cloud, topology):
    """For every step of the setup, a SIGINT arriving as the step starts: setup undoes what the steps before
    it did and the cloud is exactly as it was (pool size, releases, namespace, Secret, labels, Lease)."""
    step_names = [s.name for s in provisioner(cloud, [], hf_token=gke.HfToken("llm-d-hf-token", TOKEN)).steps()]
    before = starting_state(cloud)
    interrupted = []
    for name in step_names:
        lines: list[str] = []
        p = provisioner(cloud, lines, hf_token=gke.HfToken("llm-d-hf-token", TOKEN))
        planned = p.steps
        p.steps = lambda planned=planned, name=name: [_signal_at_start(s) if s.name == name else s for s in planned()]
        with pytest.raises(KeyboardInterrupt):
            p.setup()
        assert starting_state(cloud) == before, f"SIGINT at step {name!r} left a change:\n" + "\n".join(lines)
        interrupted.append(name)
    assert interrupted == step_names and len(interrupted) >= 9


def _signal_at_start(step):
    apply = step.apply

    def interrupted():
        os.kill(os.getpid(), signal.SIGINT)
        apply()
    step.apply = interrupted
    return step


def test_rescue_of_a_killed_run_follows_its_policy_and_leaves_kept_changes(cloud, lines):
    """The CI rescue step (`python -m llmd_conformance.gke teardown --teardown releases`) after a killed run
    removes that run's releases and keeps the pool it grew; an earlier run's kept entries stay kept."""
    kept = provisioner(cloud, lines, policy="keep", holder="run-keep")
    kept.setup()
    kept.teardown()
    with cloud.edit() as state:  # a second deployment of the same releases is not possible: drop the kept ones
        state["releases"] = {}
        for name in INSTALL_ORDER:
            state["secret_labels"].pop(f"llm-d/sh.helm.release.v1.{name}.v1", None)
    dead = provisioner(cloud, lines, policy="releases", holder="job-1")
    dead.setup()
    dead.lock._stop.set()  # killed: nobody renews or tears down
    dead.lock._thread.join()
    rescue = provisioner(cloud, lines, policy="releases", holder="job-1")  # same job: same identity
    rescue.rescue()
    state = cloud.state.read()
    assert state["releases"] == {}, "the killed run's releases were left"
    assert state["pools"]["nvidia-t4-pool"]["size"] == 2, "the pool was resized although the policy keeps it"
    assert any(e["kept"] for e in recorded(cloud)), "the kept run's entries were dropped"


def test_a_lease_deleted_during_the_run_is_taken_again_and_the_teardown_runs(cloud, lines):
    """Someone deletes the run-lock while the checks run: teardown is not skipped; the run re-creates the
    Lease with its record and undoes everything."""
    p = provisioner(cloud, lines)
    p.setup()
    with cloud.edit() as state:
        state["leases"].clear()
    p.teardown()
    assert any("was deleted while this run held it: taking it again" in line for line in lines), lines
    assert_untouched_at_start(cloud)


def test_a_change_after_the_lock_was_taken_over_is_refused(cloud, lines):
    """Between two steps another run takes the Lease: the next change is refused, nothing more is done."""
    p = provisioner(cloud, lines)
    planned = p.steps

    def steal_before_resize():
        out = planned()
        resize = next(s for s in out if s.name == "resize")
        needed = resize.needed

        def stolen():
            with cloud.edit() as state:
                state["leases"]["default/llmd-conformance-run-lock"]["spec"]["holderIdentity"] = "run-thief"
            return needed()
        resize.needed = stolen
        return out
    p.steps = steal_before_resize
    with pytest.raises(gke.steps.HandedOver, match="held by run-thief now"):
        p.setup()
    assert not any("resize" in c for c in cloud.commands())
