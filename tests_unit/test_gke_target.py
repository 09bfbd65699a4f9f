"""`--target gke` through pytest: bad input refused before anything runs, --plan for each mode."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_gcloud import default_state, install, read_log
from llmd_conformance import gke
from llmd_conformance.targets import TargetOptions
from llmd_conformance.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
PLUGINS_CONFTEST = 'pytest_plugins = ["llmd_conformance.fixtures.plugin", "llmd_conformance.fixtures.gke_plugin"]\n'
CLUSTER = ["--gke-project", "test-project", "--gke-zone", "us-central1-a", "--gke-cluster", "test-cluster"]


@pytest.fixture
def run(pytester, monkeypatch, tmp_path):
    """Run pytest with the suite's plugins and the fake gcloud/helm/helmfile first on PATH."""
    env = install(tmp_path / "bin", tmp_path / "state.json", tmp_path / "calls.jsonl")
    for key, value in {**env, "PYTHONPATH": str(REPO)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    pytester.makeconftest(PLUGINS_CONFTEST)
    pytester.makepyfile(test_any="def test_any(topology):\n    pass\n")

    def run_pytest(*args: str) -> pytest.RunResult:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--target", "gke", *args)
        assert read_log(tmp_path / "calls.jsonl") == [], "a command ran although the input was bad or --plan was given"
        return result

    return run_pytest


def test_missing_project_zone_and_cluster_are_named(run):
    result = run("--plan")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--target gke needs --gke-project, --gke-cluster, --gke-zone (or --gke-region)*"])


def test_zone_and_region_together_are_refused(run):
    result = run("--plan", *CLUSTER, "--gke-region", "us-central1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*give --gke-zone (zonal cluster) or --gke-region (regional cluster), not both*"])


@pytest.mark.parametrize(("args", "message"), [
    (["--gke-wait-timeout", "soon"], "*cannot read the duration 'soon'*"),
    (["--teardown", "delete-everything"], "*unknown teardown policy 'delete-everything': use one of keep, releases, "
                                          "scale-to-zero, restore*"),
])
def test_malformed_options_are_usage_errors(run, args, message):
    result = run(*CLUSTER, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_read_only_plan_lists_only_reads(run):
    result = run("--plan", *CLUSTER)
    assert result.ret == 0
    out = result.stdout.str()
    assert "read-only" in out and "[tests ] run the checks (read-only: nothing is changed)" in out
    assert "[change]" not in out and "[lock" not in out


def test_regional_plan_sizes_the_pool_per_zone(run):
    result = run("--plan", "--provision", "--gke-project", "p", "--gke-region", "us-central1", "--gke-cluster", "c",
                 "--teardown", "scale-to-zero")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*[[]change] gcloud --quiet container clusters resize c --node-pool nvidia-t4-pool --num-nodes PER_ZONE "
        "--region us-central1 --project p   (only when FOUND < PER_ZONE, PER_ZONE = ceil(2 / zones of the pool))*",
        "*teardown scale-to-zero:*",
        "*[[]keep  ] helm uninstall RELEASE*(kept by --teardown scale-to-zero)*",
        "*[[]undo  ] gcloud --quiet container clusters resize c --node-pool nvidia-t4-pool --num-nodes 0 *"
        "(only when this run grew the pool;*the releases stay)*",
    ])


def test_plan_follows_the_order_of_the_real_run():
    """The plan's command lines come from the same builders as the real calls, in the order setup runs them."""
    target = gke.GkeTarget(load_topology("pattern2"), TargetOptions(provision=True, plan=True),
                           gke.GkeOptions(project="p", zone="z", cluster="c"), log=lambda line: None)
    steps = [line.split("] ", 1)[1] for line in target.plan() if "] " in line]
    order = ["gcloud auth print-access-token", "gcloud container node-pools describe", "gcloud container clusters get-credentials",
             "gcloud container clusters describe c", "kubectl get crd",
             "addonsConfig.httpLoadBalancing", "gcloud compute networks subnets list", "gpuDriverVersion",
             "kubectl get crd inferencepools.inference.networking.k8s.io", "kubectl get secret llm-d-hf-token",
             "kubectl create lease", "list --output json; helm list", "gcloud compute instance-groups managed describe",
             "gcloud --quiet container clusters resize c --node-pool nvidia-t4-pool --num-nodes 2",
             "kubectl get nodes", "kubectl create namespace", "kubectl create secret", "helmfile -f", "kubectl get pods",
             "run the checks", "helm uninstall RELEASE", "kubectl delete secret", "kubectl delete namespace",
             "gcloud --quiet container clusters resize c --node-pool nvidia-t4-pool --num-nodes FOUND",
             "kubectl delete lease"]
    position = -1
    for expected in order:
        position = next((i for i in range(position + 1, len(steps)) if expected in steps[i]), None)
        assert position is not None, f"{expected!r} missing or out of order in the plan:\n" + "\n".join(steps)


def test_rescue_command_checks_gcloud_before_touching_anything(tmp_path, monkeypatch):
    """`python -m llmd_conformance.gke teardown` (the CI clean-up step) refuses bad credentials with the fix."""
    env = install(tmp_path / "bin", tmp_path / "state.json", tmp_path / "calls.jsonl")
    state = default_state(load_topology("pattern2"))
    state["authenticated"] = False
    (tmp_path / "state.json").write_text(json.dumps(state))
    result = subprocess.run(
        [sys.executable, "-m", "llmd_conformance.gke", "teardown", *CLUSTER], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr
    assert "error: gcloud is not authenticated: run `gcloud auth login`" in result.stderr
    assert [c["argv"] for c in read_log(tmp_path / "calls.jsonl")] == [["auth", "print-access-token"]]


def test_credentials_go_to_a_private_kubeconfig_removed_at_teardown(tmp_path, monkeypatch):
    """No --kubeconfig: get-credentials writes a run-private file (KUBECONFIG set for that call only)."""
    env = install(tmp_path / "bin", tmp_path / "state.json", tmp_path / "calls.jsonl")
    (tmp_path / "state.json").write_text(json.dumps(default_state(load_topology("pattern2"))))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if not shutil.which("gke-gcloud-auth-plugin"):
        pytest.skip("gke-gcloud-auth-plugin is not installed here")
    target = gke.GkeTarget(load_topology("pattern2"), TargetOptions(), gke.GkeOptions(
        project="test-project", zone="us-central1-a", cluster="test-cluster"), log=lambda line: None)
    # The fake kubeconfig points at 127.0.0.1:1, where nothing listens: the first API read fails clearly.
    with pytest.raises(gke.GkeError, match=r"cannot read CRD gateways.gateway.networking.k8s.io"):
        target.setup()
    calls = read_log(tmp_path / "calls.jsonl")
    credentials = calls[-1]
    assert credentials["argv"] == ["container", "clusters", "get-credentials", "test-cluster", "--zone", "us-central1-a",
                                   "--project", "test-project"]
    assert credentials["env"]["KUBECONFIG"] == str(target.kubeconfig) and target.kubeconfig.is_file()
    assert target.context == "gke_test-project_us-central1-a_test-cluster"
    target.teardown()
    assert not target.kubeconfig.exists()
