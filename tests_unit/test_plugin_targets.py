"""Target registry, the read-only cluster target, and the snapshot workers see."""
from __future__ import annotations

import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from llmd_conformance import targets
from llmd_conformance.targets import (
    AttachedTarget,
    ClusterTarget,
    TargetError,
    TargetSnapshot,
    make_target,
    register_target,
    resolve_factory,
)
from llmd_conformance.kube import check_kubeconfig
from llmd_conformance.topology import load_topology
from tests_unit.conftest import resources

TOPOLOGY = load_topology("pattern2")


class FakeConfig:
    """The parts of pytest.Config a target factory reads."""

    def __init__(self, tmp_path: Path, **options):
        self.options = {"kubeconfig": None, "context": None, "gateway_url": None, "provision": False, "plan": False,
                        "teardown": None, "report_dir": "reports"} | options
        self.invocation_params = SimpleNamespace(dir=tmp_path)
        self.pluginmanager = SimpleNamespace(get_plugin=lambda name: None)
        self.logged: list[str] = []

    def getoption(self, name, default=None):
        value = self.options.get(name)
        return default if value is None else value


@pytest.fixture
def registry(monkeypatch):
    """An isolated copy of the registry, so tests can register freely."""
    monkeypatch.setattr(targets, "_REGISTRY", dict(targets._REGISTRY))
    return targets._REGISTRY


def write_kubeconfig(path: Path, server: str, current: str | None = "fake") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "c", "user": "u"}},
                     {"name": "prod", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def test_unknown_target_lists_the_known_ones(registry, tmp_path):
    """make_target with an unknown name says which exist and which option to change."""
    with pytest.raises(TargetError) as excinfo:
        make_target("minikube", FakeConfig(tmp_path), TOPOLOGY)
    assert str(excinfo.value) == "unknown target 'minikube' (known: cluster, gke, local); pass --target with one of these"


def test_local_target_is_registered_by_reference(registry):
    """The core refers to llmd_conformance.local by name and does not import it until chosen."""
    assert registry["local"] == "llmd_conformance.local.target:LocalTarget.from_config"
    assert registry["cluster"] is ClusterTarget


def test_reference_is_imported_on_first_use(registry, tmp_path, monkeypatch):
    """A 'module:attr' reference (attr may be dotted) is imported when the target is made."""
    module = SimpleNamespace(Maker=SimpleNamespace(build=lambda config, topology: ("made", topology.name)))
    monkeypatch.setitem(sys.modules, "fake_targets_module", module)
    register_target("lazy", "fake_targets_module:Maker.build")
    assert make_target("lazy", FakeConfig(tmp_path), TOPOLOGY) == ("made", "pattern2")


def test_reference_that_cannot_be_imported(registry):
    """An import failure names the target and the module."""
    register_target("broken", "no_such_module_anywhere:Target")
    with pytest.raises(TargetError, match="target 'broken' lives in module no_such_module_anywhere, which cannot be "
                                          "imported: No module named 'no_such_module_anywhere'"):
        resolve_factory("broken")


def test_registering_a_name_twice(registry):
    """The same factory again is fine; another factory under a taken name is an error."""
    def factory(config, topology):
        raise AssertionError("not called")

    def other(config, topology):
        raise AssertionError("not called")

    register_target("twice", factory)
    register_target("twice", factory)
    with pytest.raises(TargetError, match=r"target 'twice' is already registered \(.*factory\); pick another name"):
        register_target("twice", other)


@pytest.mark.parametrize("name,factory,message", [
    ("", "a:b", "target name '' must be letters, digits and dashes"),
    ("x y", "a:b", "target name 'x y' must be letters"),
    ("ok", "module_without_attr", "reference 'module_without_attr' must look like 'package.module:attribute'"),
])
def test_bad_registrations(registry, name, factory, message):
    """Names and references are checked when registered."""
    with pytest.raises(TargetError, match=message):
        register_target(name, factory)


def cluster_setup_error(tmp_path, **options) -> str:
    """The TargetError of the cluster target's setup (offline: --plan)."""
    target = ClusterTarget(FakeConfig(tmp_path, plan=True, **options), TOPOLOGY)
    with pytest.raises(TargetError) as excinfo:
        target.setup()
    return str(excinfo.value)


def test_kubeconfig_checks(tmp_path):
    """The kubeconfig must exist and hold the context; without --context its current-context is used.
    A wrong one says which contexts exist and which flag to fix, before any API call."""
    kubeconfig = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    assert check_kubeconfig(kubeconfig, None) == "fake"
    assert check_kubeconfig(kubeconfig, "prod") == "prod"
    assert cluster_setup_error(tmp_path, kubeconfig=str(kubeconfig), context="staging") == (
        f"context 'staging' is not in kubeconfig {kubeconfig} (contexts: fake, prod); pass --context with one of "
        f"them, or --kubeconfig with the file that has it")
    assert cluster_setup_error(tmp_path, kubeconfig=str(tmp_path / "nope")) == (
        f"kubeconfig {tmp_path}/nope does not exist; pass --kubeconfig with the file of the cluster to check")
    no_current = write_kubeconfig(tmp_path / "kc2", "http://127.0.0.1:1", current=None)
    assert cluster_setup_error(tmp_path, kubeconfig=str(no_current)) == (
        f"kubeconfig {no_current} has no current-context; pass --context (contexts: fake, prod)")


def test_default_kubeconfig_from_the_environment(tmp_path, monkeypatch):
    """Without --kubeconfig, the first file of $KUBECONFIG is the one named."""
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/first:{tmp_path}/second")
    assert cluster_setup_error(tmp_path) == (
        f"kubeconfig {tmp_path}/first does not exist; pass --kubeconfig with the file of the cluster to check")


def test_cluster_target_refuses_to_provision(tmp_path):
    """The cluster target is read-only."""
    with pytest.raises(TargetError, match="target cluster is read-only and cannot --provision"):
        ClusterTarget(FakeConfig(tmp_path, provision=True), TOPOLOGY)


def test_cluster_target_checks_the_namespace(api_server, tmp_path):
    """setup() connects, finds the namespace missing and says what to do."""
    api_server.routes["/apis/inference.networking.k8s.io/v1"] = resources("inferencepools")
    kubeconfig = write_kubeconfig(tmp_path / "kc", api_server.url)
    target = ClusterTarget(FakeConfig(tmp_path, kubeconfig=str(kubeconfig)), TOPOLOGY)
    with pytest.raises(TargetError) as excinfo:
        target.setup()
    assert str(excinfo.value) == ("target cluster (context fake): namespace 'llm-d' does not exist; "
                                  "check --namespace, --context fake, or deploy the topology first")


def test_cluster_target_reads_versions(api_server, tmp_path):
    """With the namespace present, setup() records the versions the cluster reports."""
    api_server.routes["/apis/inference.networking.k8s.io/v1"] = resources("inferencepools")
    api_server.routes["/api/v1/namespaces/llm-d"] = (200, {"kind": "Namespace", "apiVersion": "v1",
                                                           "metadata": {"name": "llm-d"}})
    api_server.routes["/version"] = (200, {"gitVersion": "v1.33.1-gke.1"})
    kubeconfig = write_kubeconfig(tmp_path / "kc", api_server.url)
    target = ClusterTarget(FakeConfig(tmp_path, kubeconfig=str(kubeconfig), context="prod",
                                      gateway_url="http://10.0.0.1"), TOPOLOGY)
    target.setup()
    assert target.context == "prod" and target.versions()["kubernetes"] == "v1.33.1-gke.1"
    assert target.gateway_url() == "http://10.0.0.1"
    assert target.describe() == f"existing cluster, context prod of {kubeconfig}, namespace llm-d, read-only"
    target.teardown()  # nothing to undo, and no error


def test_cluster_target_unreachable_api_server(tmp_path):
    """An API server nobody listens on is named as unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    target = ClusterTarget(FakeConfig(tmp_path, kubeconfig=str(kubeconfig)), TOPOLOGY)
    with pytest.raises(TargetError, match="target cluster: cannot reach the API server of context fake"):
        target.setup()


def test_cluster_target_plan_touches_nothing(tmp_path, capsys):
    """--plan checks the kubeconfig offline and prints what would be read."""
    kubeconfig = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1")
    ClusterTarget(FakeConfig(tmp_path, kubeconfig=str(kubeconfig), plan=True), TOPOLOGY).setup()
    assert capsys.readouterr().err.strip() == (f"target cluster: read-only; would only read namespace llm-d in "
                                               f"context fake of {kubeconfig}")


def test_snapshot_round_trip_and_attached_target(tmp_path):
    """Workers see the controller's target through a JSON snapshot; they cannot set it up or tear it down."""
    snapshot = TargetSnapshot(name="local", kubeconfig="/run/kc", context=None, gateway_url="http://127.77.0.1:80",
                              versions={"epp": "v1.5.0"}, description="local cluster")
    snapshot.write(tmp_path / "target.json")
    attached = AttachedTarget(TargetSnapshot.read(tmp_path / "target.json"))
    assert (attached.name, attached.kubeconfig, attached.context) == ("local", Path("/run/kc"), None)
    assert (attached.gateway_url(), attached.versions(), attached.describe()) == (
        "http://127.77.0.1:80", {"epp": "v1.5.0"}, "local cluster")
    with pytest.raises(TargetError, match="set up by the xdist controller"):
        attached.setup()
    with pytest.raises(TargetError, match="torn down by the xdist controller"):
        attached.teardown()
