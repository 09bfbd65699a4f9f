"""What the local target keeps to itself: credentials only root reads, etcd only the apiserver reaches,
children without our environment, a lock that never has two holders, state folders that are ours."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from kubernetes import client

from llmd_conformance.childenv import BASE
from llmd_conformance.local import cluster as local_cluster
from llmd_conformance.local import podrunner
from llmd_conformance.local.cluster import STATE_MARKER, ClusterError, LocalCluster, clean_stale
from llmd_conformance.local.instance import ETCD_PORTS, LOCK_PATH
from llmd_conformance.local.podrunner import PodRunner

REPO = Path(__file__).resolve().parents[1]
SECRET = "secret-value"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_credentials_private(state_dir: Path) -> None:
    """The state folder and the PKI folder are 0700; every key, token and kubeconfig is 0600."""
    pki = state_dir / "pki"
    folders = {str(p): oct(_mode(p)) for p in (state_dir, pki)}
    assert folders == dict.fromkeys(folders, "0o700"), folders
    files = [*pki.glob("*.key"), pki / "tokens.csv", state_dir / "admin.token", state_dir / "admin.kubeconfig"]
    assert len(files) >= 8, f"expected the keys of two CAs, the apiserver, etcd and the SA signer: {files}"
    modes = {p.name: oct(_mode(p)) for p in files}
    assert modes == dict.fromkeys(modes, "0o600"), modes


def test_state_folder_and_credentials_are_private(tmp_path):
    """The state folder is made 0700 with its marker; keys, tokens.csv, the admin token and kubeconfig 0600."""
    cluster = LocalCluster(state_dir=tmp_path / "state", logs_dir=tmp_path / "logs")
    cluster._make_state_dir()
    cluster._write_pki()
    cluster._write_kubeconfig()
    assert_credentials_private(cluster.state_dir)
    assert (cluster.state_dir / STATE_MARKER).read_text() == local_cluster.MARKER_TEXT


# -- etcd ------------------------------------------------------------------------------------------

def _etcd_range(port: int, scheme: str = "https", ctx: ssl.SSLContext | bool = False) -> httpx.Response:
    """Every key (range from \\0 to the end), as anyone reaching the port would ask for it."""
    return httpx.post(f"{scheme}://127.0.0.1:{port}/v3/kv/range", json={"key": "AA==", "range_end": "AA=="},
                      verify=ctx, timeout=3)


def _tls(pki: Path, cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "etcd-ca.crt"))
    if cert:
        ctx.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return ctx


def _answer(port: int, scheme: str, ctx: ssl.SSLContext | bool) -> str:
    try:
        response = _etcd_range(port, scheme, ctx)
    except httpx.HTTPError as exc:
        return f"refused ({type(exc).__name__}: {exc})"
    return f"{response.status_code} {response.text[:200]}"


def assert_etcd_refuses_strangers(pki: Path, port: int) -> None:
    """Plain HTTP, TLS without a certificate and a certificate of the cluster CA all get nothing;
    the apiserver's etcd client certificate reads (so the refusals are not a dead port)."""
    plain = _answer(port, "http", False)
    assert not plain.startswith("200 "), f"etcd answers plain HTTP: {plain}"
    for label, cert in [("TLS without a certificate", None), ("a cluster-CA certificate", "apiserver")]:
        answer = _answer(port, "https", _tls(pki, cert))
        assert not answer.startswith("200 "), f"etcd answers {label}: {answer}"
    assert _etcd_range(port, ctx=_tls(pki, "apiserver-etcd-client")).status_code == 200


@pytest.mark.local
@pytest.mark.serial
def test_etcd_answers_only_the_apiserver_certificate(tmp_path):
    """etcd alone, as the cluster starts it: TLS with client-certificate auth against its own CA."""
    cluster = LocalCluster(state_dir=tmp_path / "state", logs_dir=tmp_path / "logs")
    cluster.lock()  # etcd's ports belong to whoever holds this instance
    try:
        cluster._make_state_dir()
        cluster._write_pki()
        cluster._start_etcd()
        pki = cluster.state_dir / "pki"
        deadline = time.monotonic() + 30
        while True:
            cluster._check_alive("etcd")
            try:
                _etcd_range(ETCD_PORTS[0], ctx=_tls(pki, "apiserver-etcd-client"))
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (cluster.logs_dir / "etcd.log").read_text()[-2000:]
                time.sleep(0.2)
        assert_etcd_refuses_strangers(pki, ETCD_PORTS[0])
    finally:
        cluster.stop()


# -- child environment -----------------------------------------------------------------------------

def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw if entry)


def _wait_exec(pid: int, program: str) -> None:
    """Until the child has exec'd program: before that it still shows our environment."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() != program:
        assert time.monotonic() < deadline, Path(f"/proc/{pid}/cmdline").read_bytes()
        time.sleep(0.05)


def test_control_plane_child_gets_no_hf_token(tmp_path, monkeypatch):
    """A control-plane process started while HF_TOKEN is set does not have it (nor anything not named)."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("LLMD_BIN_DIR", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "etcd"
    fake.symlink_to(shutil.which("sleep"))  # no shell between: a shell would add PWD
    cluster = LocalCluster(state_dir=tmp_path / "state", logs_dir=tmp_path / "logs")
    cluster._make_state_dir()
    proc = cluster._spawn("etcd", ["30"])
    try:
        _wait_exec(proc.pid, str(fake))
        env = environ_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert set(env) <= set(BASE) and env.get("PATH") == os.environ["PATH"], env


# -- the lock --------------------------------------------------------------------------------------

HOLDER = """
import sys
from llmd_conformance.local.cluster import ClusterError, LocalCluster
cluster = LocalCluster(log=lambda _m: None)
try:
    cluster.lock()
except ClusterError as exc:
    print(f"refused: {exc}", flush=True)
    sys.exit(3)
print("held", flush=True)
sys.stdin.readline()
cluster.unlock()
print("released", flush=True)
sys.stdin.readline()
"""


def _python(*args: str, **env: str) -> dict:
    return {"args": [sys.executable, *args], "cwd": REPO, "text": True,
            "env": {**os.environ, "PYTHONPATH": str(REPO), **env}}


class Holder:
    """A process taking the cluster lock of this test's instance (the same LLMD_INSTANCE and xdist worker)."""

    def __init__(self):
        self.proc = subprocess.Popen(**_python("-c", HOLDER), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.said = self.proc.stdout.readline().strip()

    def step(self) -> str:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()


@pytest.fixture
def holder():
    """Call it for each holder process; all are killed at the end."""
    started: list[Holder] = []

    def start() -> Holder:
        started.append(Holder())
        return started[-1]

    yield start
    for one in started:
        one.proc.kill()
        one.proc.wait()


@pytest.mark.local
@pytest.mark.serial
def test_lock_has_one_holder_even_across_a_release(holder):
    """A second process is refused while the first holds the lock; a process that opened the lock file before
    the release and locks after it contends with the next holder, because the file is never replaced."""
    first = holder()
    assert first.said == "held"
    second = holder()
    assert second.said.startswith("refused: ") and f"pid {first.proc.pid} " in second.said, second.said
    early = os.open(LOCK_PATH, os.O_RDWR)  # a waiter that opened the file while the first held it
    try:
        assert first.step() == "released"
        assert LOCK_PATH.exists() and os.stat(LOCK_PATH).st_ino == os.fstat(early).st_ino, "lock file replaced"
        assert holder().said == "held"
        with pytest.raises(BlockingIOError):
            fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(early)


# -- `down` and the state folder -------------------------------------------------------------------

def _down(state_dir: Path, wait: str = "0") -> subprocess.Popen:
    return subprocess.Popen(**_python("-m", "llmd_conformance.local.cluster", "down", LLMD_STATE_DIR=str(state_dir),
                                      LLMD_CLUSTER_WAIT=wait), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _our_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_MARKER).write_text(local_cluster.MARKER_TEXT)
    (state / "admin.token").write_text("x")
    return state


@pytest.mark.local
@pytest.mark.serial
def test_down_refuses_a_live_run_and_waits_with_cluster_wait(tmp_path, holder):
    """`cluster down` while a run holds the lock removes nothing and names the holder's pid; with
    LLMD_CLUSTER_WAIT it waits for the release, then cleans."""
    state = _our_state(tmp_path)
    live = holder()
    assert live.said == "held"
    output, _ = _down(state).communicate(timeout=60)
    assert "nothing removed" in output and f"in use by pid {live.proc.pid} " in output, output
    assert (state / "admin.token").exists()
    waiting = _down(state, wait="60")
    announced = waiting.stdout.readline()
    assert f"waiting up to 60s for the run holding it (pid {live.proc.pid} " in announced and state.exists(), announced
    assert live.step() == "released"
    output, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, announced + output
    assert not state.exists(), announced + output


def test_unmarked_state_folder_is_never_deleted(tmp_path):
    """A folder that holds files but no marker (or another instance's) is refused by name and survives."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(ClusterError, match=rf"state folder {folder} is not deleted: it has no {STATE_MARKER}"):
        clean_stale(folder, log=lambda _m: None)
    (folder / STATE_MARKER).write_text("llmd-conformance local cluster, instance 7\n")
    with pytest.raises(ClusterError, match="instance 7"):
        clean_stale(folder, log=lambda _m: None)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_down_leaves_an_unmarked_state_folder(tmp_path):
    """The command line refuses too, with the folder and the reason."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    down = _down(folder)
    output, _ = down.communicate(timeout=60)
    assert down.returncode != 0 and f"state folder {folder} is not deleted" in output, output
    assert (folder / "thesis.tex").exists()


def test_marked_state_folder_is_cleaned(tmp_path, monkeypatch):
    monkeypatch.setattr(local_cluster.netns, "teardown_host", lambda: None)
    monkeypatch.setattr(local_cluster.netns, "list_namespaces", lambda: [])
    monkeypatch.setattr(local_cluster.netns, "list_links", lambda: [])
    state = _our_state(tmp_path)
    clean_stale(state, log=lambda _m: None)
    assert not state.exists()


# -- the pod runner's inputs -----------------------------------------------------------------------

class FakeCore:
    """The CoreV1Api calls the runner makes, over dicts of ConfigMaps and Secrets."""

    def __init__(self, pods, config_maps=None, secrets=None):
        self.pods, self.config_maps, self.secrets, self.events = pods, config_maps or {}, secrets or {}, []

    def list_pod_for_all_namespaces(self):
        return SimpleNamespace(items=self.pods)

    def _get(self, store, name):
        if name not in store:
            raise client.ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=store[name])

    def read_namespaced_config_map(self, name, namespace):
        return self._get(self.config_maps, name)

    def read_namespaced_secret(self, name, namespace):
        return self._get(self.secrets, name)

    def create_namespaced_service_account_token(self, name, namespace, body):
        return SimpleNamespace(status=SimpleNamespace(token="sa-token"))

    def create_namespaced_event(self, namespace, body):
        self.events.append(body)


def _pod(name: str, volumes: list[dict]) -> client.V1Pod:
    pod = {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
           "spec": {"nodeName": "cpu-node-1", "volumes": volumes,
                    "containers": [{"name": "main", "image": "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"}]},
           "status": {"podIP": "192.0.2.5", "phase": "Running"}}  # in no pod CIDR: never wired
    return client.ApiClient().deserialize(json.dumps(pod), "V1Pod", "application/json")


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def runner(tmp_path, monkeypatch, lines):
    """A PodRunner whose API is a FakeCore (set .core per test) and whose binaries all exist."""
    monkeypatch.setattr(podrunner, "binary", lambda name: Path("/bin/true"))
    fake_cluster = SimpleNamespace(api_client=client.ApiClient, state_dir=tmp_path / "state",
                                   server="https://10.244.255.254:16443")
    return PodRunner(fake_cluster, tmp_path / "logs", log=lines.append)


def test_missing_configmap_volume_stops_only_its_pod(runner, lines):
    """A pod whose ConfigMap volume is missing gets a FailedMount Event and a log line, once; the runner
    goes on (no exception out of its loop), leaves no pod folder, and retries later."""
    runner.core = FakeCore([_pod("broken", [{"name": "cfg", "configMap": {"name": "absent"}}])])
    runner._reconcile()
    runner._reconcile()
    events = [(e.reason, e.message) for e in runner.core.events]
    assert events == [("FailedMount", 'MountVolume.SetUp failed for volume "cfg": configmap "ns/absent" not found')]
    assert any("ns/broken not started" in line and "ns/absent" in line for line in lines), lines
    assert runner.pods == {} and not (runner.cluster.state_dir / "pods" / "uid-broken").exists()
    assert "uid-broken" in runner._waiting


def test_missing_secret_env_names_the_container(runner):
    pod = _pod("env", [])
    pod.spec.containers[0].env = [client.V1EnvVar(name="TOKEN", value_from=client.V1EnvVarSource(
        secret_key_ref=client.V1SecretKeySelector(name="absent", key="t")))]
    runner.core = FakeCore([pod])
    runner._reconcile()
    assert [(e.reason, e.message) for e in runner.core.events] == [
        ("CreateContainerConfigError", 'container main: secret "ns/absent" not found')]


def test_optional_missing_volume_is_empty(runner, tmp_path):
    pod = _pod("optional", [{"name": "cfg", "configMap": {"name": "absent", "optional": True}}])
    runner.core = FakeCore([pod])
    volumes = runner._materialize_volumes(pod, tmp_path / "pod")
    assert list(volumes["cfg"].iterdir()) == []


def test_secret_volume_and_pod_kubeconfig_are_private(runner, tmp_path):
    """Secret volume files 0600 in 0700 folders; the pod's ServiceAccount kubeconfig 0600."""
    pod = _pod("secretive", [{"name": "creds", "secret": {"secretName": "creds"}},
                             {"name": "cfg", "configMap": {"name": "cfg"}}])
    runner.core = FakeCore([pod], config_maps={"cfg": {"a.yaml": "a: 1"}},
                           secrets={"creds": {"token": base64.b64encode(SECRET.encode()).decode()}})
    folder = local_cluster.private_dir(tmp_path / "pod")
    volumes = runner._materialize_volumes(pod, folder)
    kubeconfig = runner._write_pod_kubeconfig(pod, folder)
    assert (volumes["creds"] / "token").read_text() == SECRET
    modes = {str(p.relative_to(folder)): oct(_mode(p))
             for p in (folder, volumes["creds"], volumes["creds"] / "token", kubeconfig)}
    assert modes == {".": "0o700", "volumes/creds": "0o700", "volumes/creds/token": "0o600", "kubeconfig": "0o600"}
