"""The GKE preflight against the recording gcloud stand-in: what GKE's Gateway and the T4 pool need is read
before anything changes; each missing piece stops the run naming the command that fixes it, and the cloud
(pool, releases, namespace, Lease, CRDs) is exactly as it was."""
from __future__ import annotations

import pytest

from fake_gcloud import FakeCloud
from llmd_conformance import gke
from llmd_conformance.targets import TargetOptions
from llmd_conformance.topology import load_topology
from tests_unit.test_gke_provision import (CLUSTER_DESCRIBE, HELMFILE, POOL_READS, PREFLIGHT, RESIZE, SIZE, SURVEY,
                                           UNINSTALL_ALL, assert_untouched_at_start)

POOL_CRD = "inferencepools.inference.networking.k8s.io"
SUBNET_FIX = ("gcloud compute networks subnets create proxy-only-subnet --purpose=REGIONAL_MANAGED_PROXY --role=ACTIVE "
              "--region=us-central1 --network=default --range=RANGE --project test-project")
DRIVER_FIX = ("gcloud container node-pools update nvidia-t4-pool --cluster test-cluster --accelerator "
              "type=nvidia-tesla-t4,count=1,gpu-driver-version=default --zone us-central1-a --project test-project")


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    cloud = FakeCloud(tmp_path / "cloud", load_topology("pattern2"))
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LLMD_BIN_DIR", str(tmp_path / "no-cached-binaries"))
    return cloud


def no_proxy_subnet(state):
    state["subnets"] = [s for s in state["subnets"] if s["purpose"] != "REGIONAL_MANAGED_PROXY"]


def proxy_subnet_in_another_region(state):
    for subnet in state["subnets"]:
        subnet["region"] = "us-east1"


def proxy_subnet_backup_only(state):
    state["subnets"][1]["role"] = "BACKUP"


def no_pool_crd(state):
    state["crds"] = {}


def no_pool_crd_on_old_gke(state):
    state["crds"], state["master_version"] = {}, "1.33.5-gke.1000000"


def pool_crd_without_v1(state):
    state["crds"][POOL_CRD]["versions"] = ["v1alpha1"]


@pytest.mark.parametrize(("breaks", "message", "reads"), [
    (lambda s: s.update(http_load_balancing=False),
     r"the HttpLoadBalancing add-on is disabled on cluster test-cluster: GKE's Gateway controller needs it.*"
     r"\(nothing was changed\): gcloud container clusters update test-cluster --update-addons=HttpLoadBalancing=ENABLED "
     r"--zone us-central1-a --project test-project$", [*POOL_READS, CLUSTER_DESCRIBE]),
    (no_proxy_subnet,
     r"network default \(project test-project\) has no ACTIVE proxy-only subnet in region us-central1 \(purpose "
     r"REGIONAL_MANAGED_PROXY\): the Gateway class gke-l7-regional-external-managed is a regional.*" + SUBNET_FIX,
     PREFLIGHT),
    (proxy_subnet_in_another_region, r"has no ACTIVE proxy-only subnet in region us-central1 .*" + SUBNET_FIX, PREFLIGHT),
    (proxy_subnet_backup_only,
     r"\(proxy-only-subnet has role BACKUP\).*gcloud compute networks subnets update proxy-only-subnet "
     r"--region=us-central1 --role=ACTIVE --project test-project", PREFLIGHT),
    (lambda s: s.update(gpu_driver="INSTALLATION_DISABLED"),
     r"GKE node pool nvidia-t4-pool .* has GPU driver installation INSTALLATION_DISABLED and the cluster has no "
     r"DaemonSet kube-system/nvidia-driver-installer: no NVIDIA driver gets installed.*" + DRIVER_FIX, PREFLIGHT),
    (lambda s: s.update(gpu_driver=None),
     r"has GPU driver installation GPU_DRIVER_VERSION_UNSPECIFIED .*" + DRIVER_FIX, PREFLIGHT),
    (no_pool_crd,
     r"the cluster has no CRD inferencepools.inference.networking.k8s.io \(v1 InferencePool\). Cluster test-cluster "
     r"runs GKE 1.34.1-gke.1829001, which installs and manages it \(from 1.34.0-gke.1626000\): do not install it by "
     r"hand over GKE's; check that the Gateway API is enabled \(gcloud container clusters update test-cluster "
     r"--gateway-api=standard --zone us-central1-a --project test-project\)", PREFLIGHT),
    (no_pool_crd_on_old_gke,
     r"runs GKE 1.33.5-gke.1000000, older than 1.34.0-gke.1626000 .*install GIE v1.5.0's CRDs \(kubectl apply -k "
     r"\"https://github.com/kubernetes-sigs/gateway-api-inference-extension/config/crd\?ref=v1.5.0\"\) or upgrade the "
     r"control plane \(gcloud container clusters upgrade test-cluster --master --cluster-version 1.34 ", PREFLIGHT),
    (pool_crd_without_v1, r"CRD inferencepools.inference.networking.k8s.io serves v1alpha1, not v1", PREFLIGHT),
], ids=["http-load-balancing-off", "no-proxy-subnet", "proxy-subnet-in-another-region", "proxy-subnet-backup-only",
        "gpu-driver-disabled", "gpu-driver-unspecified", "no-pool-crd", "no-pool-crd-old-gke", "pool-crd-without-v1"])
def test_each_missing_piece_stops_the_run_before_any_change(cloud, breaks, message, reads):
    with cloud.edit() as state:
        breaks(state)
    crds_before = cloud.state.read()["crds"]
    lines: list[str] = []
    with pytest.raises(gke.GkeError, match=message):
        cloud.provisioner(progress=lines.append).setup()
    assert cloud.commands() == reads, "the preflight ran more than reads"
    assert_untouched_at_start(cloud)
    assert cloud.state.read()["crds"] == crds_before


def test_all_present_provisioning_proceeds_and_a_gke_managed_crd_is_only_read(cloud):
    lines: list[str] = []
    p = cloud.provisioner(progress=lines.append)
    crds_before = cloud.state.read()["crds"]
    p.setup()
    p.teardown()
    assert cloud.commands() == [*PREFLIGHT, *SURVEY, *SIZE, RESIZE.format(2), f"{HELMFILE} sync", *UNINSTALL_ALL,
                                RESIZE.format(0)]
    for expected in ["cluster test-cluster: HttpLoadBalancing add-on enabled",
                     "proxy-only subnet proxy-only-subnet (10.129.0.0/23) in us-central1, network default: ACTIVE",
                     "node pool nvidia-t4-pool: GKE installs the GPU driver (DEFAULT)",
                     "CRD inferencepools.inference.networking.k8s.io: managed by GKE (addonmanager.kubernetes.io/mode="
                     "Reconcile, components.gke.io/component-name=fake-inference-crds): only read, never applied over"]:
        assert expected in lines, "\n".join(lines)
    assert cloud.state.read()["crds"] == crds_before
    assert_untouched_at_start(cloud)


@pytest.mark.parametrize(("setup", "line"), [
    (lambda s: s.update(gpu_driver="INSTALLATION_DISABLED", daemonsets=["kube-system/nvidia-driver-installer"]),
     "node pool nvidia-t4-pool: GPU driver installation INSTALLATION_DISABLED; DaemonSet "
     "kube-system/nvidia-driver-installer installs it"),
    (lambda s: s["crds"][POOL_CRD].update(labels={}, annotations={"inference.networking.k8s.io/bundle-version": "v1.5.0"}),
     "CRD inferencepools.inference.networking.k8s.io: installed by hand (GIE bundle v1.5.0), serves v1"),
], ids=["driver-installed-by-hand", "crd-installed-by-hand"])
def test_pieces_installed_by_hand_are_accepted(cloud, setup, line):
    with cloud.edit() as state:
        setup(state)
    lines: list[str] = []
    p = cloud.provisioner(progress=lines.append)
    p.setup()
    p.teardown()
    assert line in lines, "\n".join(lines)
    assert_untouched_at_start(cloud)


def test_shared_vpc_subnets_are_read_in_the_host_project(cloud):
    """networkConfig.network names the host project of a Shared VPC: the proxy-only subnet is looked up there."""
    with cloud.edit() as state:
        state["network_project"], state["network"] = "host-project", "shared-net"
        for subnet in state["subnets"]:
            subnet["network"] = "shared-net"
    p = cloud.provisioner(progress=lambda line: None)
    p.setup()
    p.teardown()
    assert ("gcloud compute networks subnets list --network shared-net --regions us-central1 "
            "--filter=purpose=REGIONAL_MANAGED_PROXY --project host-project --format=json") in cloud.commands()


def test_plan_lists_the_preflight_before_the_lock():
    target = gke.GkeTarget(load_topology("pattern2"), TargetOptions(provision=True, plan=True),
                           gke.GkeOptions(project="p", zone="us-central1-a", cluster="c"), log=lambda line: None)
    lines = target.plan()
    checks = [line for line in lines if "[check ]" in line]
    expected = [
        "addonsConfig.httpLoadBalancing of the clusters describe above   (not disabled: GKE's Gateway controller needs the HttpLoadBalancing add-on)",
        "gcloud compute networks subnets list --network NETWORK --regions us-central1 "
        "--filter=purpose=REGIONAL_MANAGED_PROXY --project NETWORK_PROJECT --format=json   (one with role ACTIVE: the "
        "Gateway class gke-l7-regional-external-managed needs it; NETWORK and its project from the clusters describe)",
        "config.accelerators[].gpuDriverInstallationConfig.gpuDriverVersion of the node-pools describe above   "
        "(DEFAULT or LATEST (GKE installs the driver); else kubectl get daemonset nvidia-driver-installer -n "
        "kube-system must exist (installed by hand))",
        "kubectl get crd inferencepools.inference.networking.k8s.io   (must serve v1; one GKE manages "
        "(addonmanager.kubernetes.io/mode label or components.gke.io/component-name annotation) is only read, never "
        "applied over)",
    ]
    for text in expected:
        assert any(line.endswith(text) for line in checks), f"{text!r} not in the plan:\n" + "\n".join(lines)
    lock = next(i for i, line in enumerate(lines) if "[lock  ]" in line)
    assert all(lines.index(line) < lock for line in checks), "a preflight check comes after the lock"


def test_the_targets_provisioner_runs_the_preflight_first():
    """--target gke --provision builds its provisioner with the preflight (the real run, not only the plan)."""
    from kubernetes.client import ApiClient

    target = gke.GkeTarget(load_topology("pattern2"), TargetOptions(provision=True),
                           gke.GkeOptions(project="p", zone="us-central1-a", cluster="c"), log=lambda line: None)
    target.pool, target.helmfile = target._make_pool(), target._make_helmfile()
    names = [s.name for s in target._make_provisioner(ApiClient(), gke.TeardownPolicy.RESTORE).steps()]
    assert names[:4] == ["http-load-balancing", "proxy-only-subnet", "gpu-driver", "inferencepool-crd"], names
