"""A recording stand-in for the cloud side of `--target gke`: gcloud, and the helm/helmfile it drives.

`install(bin_dir, state, log)` writes executables named gcloud, helmfile and helm into `bin_dir`
(put it first on PATH); each runs this file, appends {"tool", "argv", "env"} to the JSON-lines
`log` and answers from the JSON `state` file: auth, node-pool describe/list, resize (which refuses
to run without --quiet, as a prompt would hang CI), get-credentials; helmfile list/sync (sync can
be told to fail after installing some releases); helm list/uninstall.

gcloud also answers `clusters describe` (add-ons, network, control-plane version) and `compute networks
subnets list`, and node-pools describe carries the GPU driver setting, for the GKE preflight.

`FakeCore`, `FakeApps`, `FakeApiextensions` and `FakeCoordination` answer the Kubernetes API calls the provisioner and
the run-lock make, from the same state: Nodes follow the pool size, model pods follow the installed
releases, Leases keep resourceVersion semantics (404 / 409 like the API server). All access to the
state goes through a file lock, so a provisioner in another process sees the same cloud.
"""
from __future__ import annotations

import base64
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

FAKE_TOKEN = "ya29.FAKE-ACCESS-TOKEN-0123456789abcdef"
NODE_POOL_LABEL = "cloud.google.com/gke-nodepool"
TOOLS = ("gcloud", "helmfile", "helm")
# Environment variables recorded with each call (the ones the commands' behaviour depends on).
RECORDED_ENV = ("TOPOLOGY", "RELEASE_NAME_POSTFIX", "LLMD_GIE_CHARTS", "HF_TOKEN_SECRET", "KUBECONFIG", "HF_TOKEN",
                "GITHUB_TOKEN")


def default_state(topology) -> dict:
    """A cloud where the topology's GPU pool exists at size 0 and nothing is installed."""
    releases = [{"name": m.release, "namespace": topology.namespace} for m in topology.models]
    releases += [{"name": p.name, "namespace": topology.namespace} for p in topology.pools]
    return {
        "authenticated": True,
        "project": "test-project",
        "cluster": "test-cluster",
        "zones": ["us-central1-a"],
        "pools": {topology.node_pool: {"size": 0, "autoscaling": False, "status": "RUNNING",
                                       "version": "1.33.5-gke.1000000", "machineType": "n1-standard-4"}},
        "accelerator": [topology.accelerator_label, topology.accelerator_value],
        "gpu_ready": True,
        "resize_delay_s": 0,
        "helmfile_releases": releases,
        "helmfile_fail": False,
        "helmfile_fail_after": 0,
        "releases": {},
        "pods_ready": True,
        "model_pods": {m.release: {**topology.pool(m.pool).selector, **m.pod_labels} for m in topology.models},
        "namespaces": ["default", "kube-system"],
        "namespace_labels": {},  # name -> labels
        "secrets": {},
        "secret_labels": {},  # namespace/name -> labels (also helm's release records)
        "endpoint": "127.0.0.1",  # the cluster's API endpoint (clusters describe)
        # What GKE's Gateway needs (the GKE preflight), all present: add-on, proxy-only subnet, driver, CRD.
        "http_load_balancing": True,
        "master_version": "1.34.1-gke.1829001",
        "network": "default",
        "network_project": None,  # a Shared VPC's host project; None: the cluster's
        "subnets": [{"name": "default", "region": "us-central1", "network": "default", "purpose": "PRIVATE",
                     "ipCidrRange": "10.128.0.0/20"},
                    {"name": "proxy-only-subnet", "region": "us-central1", "network": "default",
                     "purpose": "REGIONAL_MANAGED_PROXY", "role": "ACTIVE", "ipCidrRange": "10.129.0.0/23"}],
        "gpu_driver": "DEFAULT",  # the pool's gpuDriverInstallationConfig.gpuDriverVersion; None: field absent
        "daemonsets": [],  # namespace/name
        "crds": {"inferencepools.inference.networking.k8s.io": {
            "versions": ["v1"], "labels": {"addonmanager.kubernetes.io/mode": "Reconcile"},
            "annotations": {"components.gke.io/component-name": "fake-inference-crds",
                            "components.gke.io/layer": "addon"}}},
        "leases": {},
        "resource_version": 1,
    }


def install(bin_dir: Path, state: Path, log: Path) -> dict[str, str]:
    """Write the gcloud/helmfile/helm stand-ins; returns the environment that makes them active."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" {tool} "$@"\n')
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_CLOUD_STATE": str(state), "FAKE_CLOUD_LOG": str(log),
            # The tools get an explicit environment: name the fake's own variables for them.
            "LLMD_TOOL_ENV": "FAKE_CLOUD_STATE,FAKE_CLOUD_LOG"}


def read_log(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def commands(log: Path) -> list[str]:
    """The recorded calls as 'tool arg arg ...' strings, in order."""
    return [" ".join([entry["tool"], *entry["argv"]]) for entry in read_log(log)]


# -- the state file -------------------------------------------------------------------------------


class State:
    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, data: dict) -> None:
        with self.edit() as state:
            state.clear()
            state.update(data)

    def read(self) -> dict:
        with self._locked():
            return json.loads(self.path.read_text())

    @contextmanager
    def edit(self):
        with self._locked():
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.path)

    @contextmanager
    def _locked(self):
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            yield


# -- the command-line stand-ins -------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _positionals(args: list[str], with_values: tuple[str, ...]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in with_values:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


GCLOUD_VALUE_FLAGS = ("--project", "--zone", "--region", "--location", "--cluster", "--node-pool", "--num-nodes", "--format",
                      "--network", "--regions")
COMPUTE = "https://www.googleapis.com/compute/v1/projects/{project}"
GROUP_URL = "https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instanceGroupManagers/gke-{pool}-grp"


def gcloud(args: list[str], state: State) -> int:
    quiet = "--quiet" in args
    words = _positionals(args, GCLOUD_VALUE_FLAGS)
    s = state.read()
    if words[:2] == ["auth", "print-access-token"]:
        if not s["authenticated"]:
            return _fail("ERROR: (gcloud.auth.print-access-token) You do not currently have an active account selected.")
        print(FAKE_TOKEN)
        return 0
    if not s["authenticated"]:
        return _fail("ERROR: (gcloud) You do not currently have an active account selected.")
    location = _flag(args, "--zone") or _flag(args, "--region")
    here = f"projects/{_flag(args, '--project')}/locations/{location}/clusters/{_flag(args, '--cluster') or (words[3:4] or ['?'])[0]}"
    right_cluster = (_flag(args, "--project") == s["project"] and location in (*s["zones"], s["zones"][0][:-2]))
    if words[:3] == ["container", "node-pools", "describe"]:
        pool = s["pools"].get(words[3]) if right_cluster and _flag(args, "--cluster") == s["cluster"] else None
        if pool is None:
            return _fail(f"ERROR: (gcloud.container.node-pools.describe) ResponseError: code=404, message=Not found: {here}/nodePools/{words[3]}.")
        print(json.dumps({
            "name": words[3], "status": pool["status"], "version": pool["version"], "locations": s["zones"],
            "initialNodeCount": 1,
            "instanceGroupUrls": [GROUP_URL.format(project=s["project"], zone=z, pool=words[3]) for z in s["zones"]],
            "autoscaling": {"enabled": True, "minNodeCount": 0, "maxNodeCount": 3} if pool["autoscaling"] else {},
            "config": {"machineType": pool["machineType"],
                       "accelerators": [{"acceleratorCount": "1", "acceleratorType": s["accelerator"][1],
                                         **({"gpuDriverInstallationConfig": {"gpuDriverVersion": s["gpu_driver"]}}
                                            if s["gpu_driver"] else {})}]},
        }))
        return 0
    if words[:4] == ["compute", "instance-groups", "managed", "describe"]:
        pool = words[4].removeprefix("gke-").removesuffix("-grp")
        if _flag(args, "--project") != s["project"] or _flag(args, "--zone") not in s["zones"] or pool not in s["pools"]:
            return _fail(f"ERROR: (gcloud.compute.instance-groups.managed.describe) Could not fetch resource: "
                         f"The resource '{words[4]}' was not found")
        print(s["pools"][pool]["size"])
        return 0
    if words[:3] == ["container", "clusters", "describe"]:
        if not (right_cluster and words[3] == s["cluster"]):
            return _fail(f"ERROR: (gcloud.container.clusters.describe) ResponseError: code=404, message=Not found: {here}.")
        network_project = s["network_project"] or s["project"]
        print(json.dumps({
            "name": s["cluster"], "endpoint": s["endpoint"], "status": "RUNNING",
            "currentMasterVersion": s["master_version"], "network": s["network"],
            "networkConfig": {"network": f"projects/{network_project}/global/networks/{s['network']}"},
            "addonsConfig": {"httpLoadBalancing": {} if s["http_load_balancing"] else {"disabled": True}},
        }))
        return 0
    if words[:4] == ["compute", "networks", "subnets", "list"]:
        project, network = _flag(args, "--project"), _flag(args, "--network")
        if project != (s["network_project"] or s["project"]):
            return _fail(f"ERROR: (gcloud.compute.networks.subnets.list) Some requests did not succeed:\n"
                         f" - The resource 'projects/{project}' was not found")
        expression = _flag(args, "--filter") or ""
        if expression and not expression.startswith("purpose="):
            return _fail(f"fake gcloud: unsupported --filter {expression!r}", 2)
        regions = (_flag(args, "--regions") or "").split(",")
        rows = [{**sub, "region": f"{COMPUTE.format(project=project)}/regions/{sub['region']}",
                 "network": f"{COMPUTE.format(project=project)}/global/networks/{sub['network']}"}
                for sub in s["subnets"]
                if sub["network"] == network and sub["region"] in regions
                and (not expression or sub["purpose"] == expression.split("=", 1)[1])]
        print(json.dumps(rows))
        return 0
    if words[:3] == ["container", "node-pools", "list"]:
        if not (right_cluster and _flag(args, "--cluster") == s["cluster"]):
            return _fail(f"ERROR: (gcloud.container.node-pools.list) ResponseError: code=404, message=Not found: {here}.")
        print("\n".join(sorted(s["pools"])))
        return 0
    if words[:3] == ["container", "clusters", "resize"]:
        if not quiet:
            return _fail("Pool [x] for [y] will be resized to [n] node(s) in each zone it spans.\n"
                         "Do you want to continue (Y/n)?  (fake gcloud: a prompt would hang a CI job: pass --quiet)")
        pool_name, size = _flag(args, "--node-pool"), int(_flag(args, "--num-nodes"))
        if not right_cluster or words[3] != s["cluster"] or pool_name not in s["pools"]:
            return _fail(f"ERROR: (gcloud.container.clusters.resize) ResponseError: code=404, message=Not found: {here}.")
        time.sleep(s.get("resize_delay_s", 0))
        with state.edit() as st:
            st["pools"][pool_name]["size"] = size
        print(f"Resizing {words[3]}...done.", file=sys.stderr)
        return 0
    if words[:3] == ["container", "clusters", "get-credentials"]:
        kubeconfig = os.environ.get("KUBECONFIG")
        context = f"gke_{_flag(args, '--project')}_{location}_{words[3]}"
        Path(kubeconfig).write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": "https://127.0.0.1:1"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "users": [{"name": context, "user": {}}],
        }))
        print(f"kubeconfig entry generated for {words[3]}.", file=sys.stderr)
        return 0
    return _fail(f"fake gcloud: unsupported command {args}", 2)


def helmfile(args: list[str], state: State) -> int:
    if not os.environ.get("TOPOLOGY"):
        return _fail("in manifests/helmfile.yaml.gotmpl: TOPOLOGY=\"\" is not a topology of manifests/topologies/")
    words = _positionals(args, ("-f", "--file", "-e", "--environment", "-l", "--selector", "--kube-context",
                                "--output", "-b", "--helm-binary"))
    selectors = [args[i + 1] for i, a in enumerate(args) if a in ("-l", "--selector")]
    s = state.read()
    if words == ["list"]:
        print(json.dumps([{**r, "enabled": True, "installed": True, "labels": "", "chart": "", "version": ""}
                          for r in s["helmfile_releases"]]))
        return 0
    if words == ["sync"]:
        names = {sel.removeprefix("name=") for sel in selectors}
        targets = [r for r in s["helmfile_releases"] if not names or r["name"] in names]
        if s["helmfile_fail"]:
            targets = targets[: s["helmfile_fail_after"]]
        with state.edit() as st:
            for release in targets:
                st["releases"][f"{release['namespace']}/{release['name']}"] = "deployed"
        if s["helmfile_fail"]:
            return _fail("Error: UPGRADE FAILED: context deadline exceeded (fake helmfile told to fail)")
        return 0
    return _fail(f"fake helmfile: unsupported command {args}", 2)


def helm(args: list[str], state: State) -> int:
    words = _positionals(args, ("-n", "--namespace", "-o", "--output", "--timeout", "--kube-context"))
    namespace = _flag(args, "-n") or "default"
    if words == ["list"]:
        rows = [{"name": key.split("/", 1)[1], "namespace": namespace, "status": status}
                for key, status in state.read()["releases"].items() if key.split("/", 1)[0] == namespace]
        print(json.dumps(rows))
        return 0
    if words[:1] == ["uninstall"]:
        key = f"{namespace}/{words[1]}"
        with state.edit() as st:
            found = st["releases"].pop(key, None)
            st["secret_labels"].pop(f"{namespace}/sh.helm.release.v1.{words[1]}.v1", None)
        if found is None and "--ignore-not-found" not in args:
            return _fail(f"Error: uninstall: Release not loaded: {words[1]}: release: not found")
        print(f'release "{words[1]}" uninstalled')
        return 0
    return _fail(f"fake helm: unsupported command {args}", 2)


def main(argv: list[str]) -> int:
    tool, args = argv[0], argv[1:]
    state = State(Path(os.environ["FAKE_CLOUD_STATE"]))
    entry = {"tool": tool, "argv": args, "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ}}
    with state._locked(), open(os.environ["FAKE_CLOUD_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    return {"gcloud": gcloud, "helmfile": helmfile, "helm": helm}[tool](args, state)


# -- the Kubernetes API side ----------------------------------------------------------------------


def _api_error(status: int, reason: str):
    from kubernetes.client import ApiException

    return ApiException(status=status, reason=reason)


def _matches(labels: dict, selector: str | None) -> bool:
    if not selector:
        return True
    wanted = dict(part.split("=", 1) for part in selector.split(","))
    return all(labels.get(k) == v for k, v in wanted.items())


class FakeCore:
    """The CoreV1Api calls of the provisioner, answered from the fake cloud's state."""

    def __init__(self, state: State):
        self.state = state

    def list_node(self, label_selector: str | None = None):
        from kubernetes.client import V1NodeList
        from kubernetes.client import V1Node

        s = self.state.read()
        nodes = []
        for pool_name, pool in s["pools"].items():
            for zone in s["zones"]:
                for i in range(pool["size"]):
                    labels = {NODE_POOL_LABEL: pool_name, s["accelerator"][0]: s["accelerator"][1]}
                    nodes.append(V1Node.from_dict({
                        "metadata": {"name": f"gke-{s['cluster']}-{pool_name}-{zone}-{i}", "labels": labels},
                        "spec": {},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                   "allocatable": {"nvidia.com/gpu": "1" if s["gpu_ready"] else "0"}},
                    }))
        return V1NodeList(items=[n for n in nodes if _matches(n.metadata.labels, label_selector)])

    def list_namespaced_pod(self, namespace: str, label_selector: str | None = None):
        from kubernetes.client import V1Pod, V1PodList

        s = self.state.read()
        pods = []
        for key in s["releases"]:
            ns, release = key.split("/", 1)
            if ns != namespace or release not in s["model_pods"]:
                continue
            ready = "True" if s["pods_ready"] else "False"
            pods.append(V1Pod.from_dict({
                "metadata": {"name": f"{release}-decode-0", "namespace": ns, "labels": s["model_pods"][release]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready}],
                           "containerStatuses": [{"name": "vllm", "ready": s["pods_ready"], "restartCount": 0,
                                                  "image": "vllm", "imageID": "", "state": {"running": {}}}]},
            }))
        return V1PodList(items=[p for p in pods if _matches(p.metadata.labels, label_selector)])

    def read_namespace(self, name: str):
        from kubernetes.client import V1Namespace, V1ObjectMeta

        s = self.state.read()
        if name not in s["namespaces"]:
            raise _api_error(404, "Not Found")
        return V1Namespace(metadata=V1ObjectMeta(name=name, labels=s["namespace_labels"].get(name)))

    def create_namespace(self, body):
        with self.state.edit() as s:
            if body.metadata.name in s["namespaces"]:
                raise _api_error(409, "AlreadyExists")
            s["namespaces"].append(body.metadata.name)
            if body.metadata.labels:
                s["namespace_labels"][body.metadata.name] = dict(body.metadata.labels)
        return body

    def delete_namespace(self, name: str):
        with self.state.edit() as s:
            if name not in s["namespaces"]:
                raise _api_error(404, "Not Found")
            s["namespaces"].remove(name)
            s["namespace_labels"].pop(name, None)
            s["secrets"] = {k: v for k, v in s["secrets"].items() if not k.startswith(name + "/")}

    def read_namespaced_secret(self, name: str, namespace: str):
        from kubernetes.client import V1ObjectMeta, V1Secret

        s = self.state.read()
        key = f"{namespace}/{name}"
        keys = s["secrets"].get(key)
        if keys is None and name.startswith("sh.helm.release.v1.") and name.endswith(".v1"):
            release = name.removeprefix("sh.helm.release.v1.").removesuffix(".v1")
            keys = ["release"] if f"{namespace}/{release}" in s["releases"] else None
        if keys is None:
            raise _api_error(404, "Not Found")
        return V1Secret(metadata=V1ObjectMeta(name=name, namespace=namespace, labels=s["secret_labels"].get(key)),
                        data={k: base64.b64encode(b"x").decode() for k in keys})

    def patch_namespaced_secret(self, name: str, namespace: str, body: dict):
        self.read_namespaced_secret(name, namespace)  # 404 as the API server would
        with self.state.edit() as s:
            labels = s["secret_labels"].setdefault(f"{namespace}/{name}", {})
            labels.update(body.get("metadata", {}).get("labels") or {})
        return body

    def create_namespaced_secret(self, namespace: str, body):
        # Only the keys are kept: the fake cloud's state is a file a test may print.
        keys = sorted({**(body.data or {}), **(body.string_data or {})})
        with self.state.edit() as s:
            if namespace not in s["namespaces"]:
                raise _api_error(404, "Not Found")
            s["secrets"][f"{namespace}/{body.metadata.name}"] = keys
            if body.metadata.labels:
                s["secret_labels"][f"{namespace}/{body.metadata.name}"] = dict(body.metadata.labels)
        return body

    def delete_namespaced_secret(self, name: str, namespace: str):
        with self.state.edit() as s:
            if s["secrets"].pop(f"{namespace}/{name}", None) is None:
                raise _api_error(404, "Not Found")
            s["secret_labels"].pop(f"{namespace}/{name}", None)


class FakeApps:
    """One Deployment per installed release, annotated like helm does, ready when the pods are; DaemonSets by name."""

    def __init__(self, state: State):
        self.state = state

    def read_namespaced_daemon_set(self, name: str, namespace: str):
        if f"{namespace}/{name}" not in self.state.read()["daemonsets"]:
            raise _api_error(404, "Not Found")
        return {"metadata": {"name": name, "namespace": namespace}}  # only its existence is read

    def list_namespaced_deployment(self, namespace: str):
        from kubernetes.client import V1Deployment, V1DeploymentList

        s = self.state.read()
        items = []
        for key in s["releases"]:
            ns, release = key.split("/", 1)
            if ns == namespace:
                items.append(V1Deployment.from_dict({
                    "metadata": {"name": release, "namespace": ns,
                                 "annotations": {"meta.helm.sh/release-name": release}},
                    "spec": {"replicas": 1, "selector": {}, "template": {}},
                    "status": {"readyReplicas": 1 if s["pods_ready"] else 0},
                }))
        return V1DeploymentList(items=items)


class FakeApiextensions:
    """read_custom_resource_definition from the state's "crds" (name -> versions served, labels, annotations)."""

    def __init__(self, state: State):
        self.state = state

    def read_custom_resource_definition(self, name: str):
        from kubernetes.client import (V1CustomResourceDefinition, V1CustomResourceDefinitionNames,
                                       V1CustomResourceDefinitionSpec, V1CustomResourceDefinitionVersion, V1ObjectMeta)

        crd = self.state.read()["crds"].get(name)
        if crd is None:
            raise _api_error(404, "Not Found")
        plural, group = name.split(".", 1)
        return V1CustomResourceDefinition(
            metadata=V1ObjectMeta(name=name, labels=crd["labels"] or None, annotations=crd["annotations"] or None),
            spec=V1CustomResourceDefinitionSpec(
                group=group, scope="Namespaced", names=V1CustomResourceDefinitionNames(plural=plural, kind="Kind"),
                versions=[V1CustomResourceDefinitionVersion(name=v, served=True, storage=i == 0)
                          for i, v in enumerate(crd["versions"])]))


class FakeCoordination:
    """read/create/replace/delete_namespaced_lease with the API server's 404/409 semantics."""

    def __init__(self, state: State):
        self.state = state

    @staticmethod
    def _to_json(lease) -> dict:
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(lease)

    @staticmethod
    def _from_json(data: dict):
        from kubernetes.client import V1Lease

        return V1Lease.from_dict(data)

    def read_namespaced_lease(self, name: str, namespace: str):
        data = self.state.read()["leases"].get(f"{namespace}/{name}")
        if data is None:
            raise _api_error(404, "Not Found")
        return self._from_json(data)

    def create_namespaced_lease(self, namespace: str, body):
        with self.state.edit() as s:
            key = f"{namespace}/{body.metadata.name}"
            if key in s["leases"]:
                raise _api_error(409, "AlreadyExists")
            s["resource_version"] += 1
            data = self._to_json(body)
            data["metadata"]["resourceVersion"] = str(s["resource_version"])
            s["leases"][key] = data
        return self._from_json(data)

    def replace_namespaced_lease(self, name: str, namespace: str, body):
        with self.state.edit() as s:
            key = f"{namespace}/{name}"
            current = s["leases"].get(key)
            if current is None:
                raise _api_error(404, "Not Found")
            if body.metadata.resource_version != current["metadata"]["resourceVersion"]:
                raise _api_error(409, "Conflict")
            s["resource_version"] += 1
            data = self._to_json(body)
            data["metadata"]["resourceVersion"] = str(s["resource_version"])
            s["leases"][key] = data
        return self._from_json(data)

    def delete_namespaced_lease(self, name: str, namespace: str, body=None):
        with self.state.edit() as s:
            key = f"{namespace}/{name}"
            current = s["leases"].get(key)
            if current is None:
                raise _api_error(404, "Not Found")
            wanted = body.preconditions.resource_version if body is not None and body.preconditions else None
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise _api_error(409, "Conflict")
            del s["leases"][key]


# -- a provisioner wired to the fake cloud ---------------------------------------------------------


def fake_clock() -> dict:
    """A monotonic clock that sleeping moves forward 20 times faster than real time: a run-lock's 90 s
    watch of another holder takes 4.5 s, long enough to see a live holder (renewing every 0.2 s) renew."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        time.sleep(seconds / 20)
        now[0] += seconds

    return {"sleep": sleep, "monotonic": lambda: now[0]}


class FakeCloud:
    """The fake cloud in folder `root`: state, call log, the stand-in executables, API fakes."""

    def __init__(self, root: Path, topology, fresh: bool = True):
        self.root = Path(root)
        self.topology = topology
        self.state = State(self.root / "state.json")
        self.log = self.root / "calls.jsonl"
        self.env = install(self.root / "bin", self.state.path, self.log)
        if fresh:
            self.state.write(default_state(topology))

    def commands(self) -> list[str]:
        return commands(self.log)

    def edit(self):
        return self.state.edit()

    def provisioner(self, policy: str = "restore", *, progress=print, holder: str = "run-1",
                    hf_token=None, wait_timeout_s: float = 5.0, undo_kept: bool = False):
        from llmd_conformance import gke
        from llmd_conformance.commands import CommandRunner
        from llmd_conformance.helmfile import HelmfileRunner
        from llmd_conformance.runlock import RunLock

        s = self.state.read()
        runner = CommandRunner(progress=progress)
        pool = gke.GcloudPool(project=s["project"], cluster=s["cluster"], node_pool=self.topology.node_pool,
                              zone=s["zones"][0], runner=runner, retry_every_s=0.1,
                              accelerator=self.topology.accelerator_value)
        helmfile = HelmfileRunner.for_topology(self.topology, "gke", runner,
                                                   charts_dir=lambda: Path("/charts/gie-v1.5.0"))
        kube = gke.KubeApis(FakeCore(self.state), FakeApps(self.state), FakeApiextensions(self.state))
        return gke.Provisioner(
            pool, helmfile, kube, self.topology, gke.TeardownPolicy.parse(policy),
            lock=RunLock(FakeCoordination(self.state), holder=holder, renew_every_s=0.2, **fake_clock()),
            hf_token=hf_token, wait_timeout_s=wait_timeout_s, poll_s=0.05, progress_every_s=0.2, progress=progress,
            undo_kept=undo_kept, preflight=gke.GkePreflight(pool, kube, progress).steps,
        )


def drive(root: str, topology_name: str, policy: str) -> None:
    """Run one provisioning in this process as a test run would: setup, then teardown (subprocess tests)."""
    from llmd_conformance.topology import load_topology

    cloud = FakeCloud(Path(root), load_topology(topology_name), fresh=False)
    provisioner = cloud.provisioner(policy, progress=lambda line: print(line, flush=True), wait_timeout_s=600)
    provisioner.setup()
    provisioner.teardown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
