"""`python -m llmd_conformance discover` against a fake API server holding a deployment's objects: it
reproduces the topologies it was installed from, comments what it guessed, and names what is missing
before reading anything else."""
from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from llmd_conformance.__main__ import main
from llmd_conformance.discover import BASE_MODEL_HEADER, MODEL_HEADER, bbr_headers
from llmd_conformance.topology import Topology, load_topology, parse_topology
from tests_unit.conftest import resources
from tests_unit.fake_cluster import write_kubeconfig

NS = "llm-d"
GATEWAY = "infra-pattern2-inference-gateway"
GEMMA, PHI = "google/gemma-2b-it", "microsoft/Phi-3-mini-4k-instruct"
SERVING = {"llm-d.ai/inferenceServing": "true"}
V1_GROUP, V1ALPHA2_GROUP = "inference.networking.k8s.io", "inference.networking.x-k8s.io"


def semantic(topology: Topology) -> dict:
    """What a topology says about a deployment: all but its name, description and file."""
    return {
        "namespace": topology.namespace,
        "gateway": (topology.gateway_name, topology.listener_port),
        "bbr": (topology.bbr_header, topology.bbr_service, topology.bbr_port),
        "routes": {r.name: sorted((rule.model or "", rule.pool) for rule in r.rules) for r in topology.routes},
        "pools": {p.name: p for p in topology.pools},
        "models": {m.id: m for m in topology.models},
        "accelerator": (topology.accelerator_label, topology.accelerator_value, topology.node_pool,
                        topology.gpu_nodes),
        "expectations": (topology.distinct_gpu_nodes_per_model, topology.routing),
    }


class FakeCluster(dict):
    """The fake API server's routes, computed from objects: a collection (labelSelector honoured), one
    object by name, a pod proxy answer; plain entries (API discovery) as set."""

    def __init__(self):
        super().__init__()
        self.collections: dict[str, list[dict]] = {}
        self.proxy: dict[str, tuple[int, object]] = {}

    def add(self, collection: str, obj: dict) -> dict:
        self.collections.setdefault(collection, []).append(obj)
        return obj

    def get(self, path, default=None):
        if path in self:
            return self[path]
        url = urllib.parse.urlsplit(path)
        if url.path in self.proxy:
            return self.proxy[url.path]
        if url.path in self.collections:
            selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
            wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
            items = [o for o in self.collections[url.path]
                     if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
        parent, _, name = url.path.rpartition("/")
        found = [o for o in self.collections.get(parent, []) if o["metadata"]["name"] == name]
        return (200, found[0]) if found else default


def core(kind: str) -> str:
    return f"/api/v1/namespaces/{NS}/{kind}"


def apps(kind: str) -> str:
    return f"/apis/apps/v1/namespaces/{NS}/{kind}"


class Deployment:
    """Builds a deployment's objects into a FakeCluster, like `helmfile sync` of the topology would."""

    def __init__(self, pool_version: str = "v1"):
        self.cluster = FakeCluster()
        group = V1_GROUP if pool_version == "v1" else V1ALPHA2_GROUP
        self.pool_group, self.pool_version = group, pool_version
        self.cluster[f"/apis/{group}/{pool_version}"] = resources("inferencepools")
        self.cluster[f"/api/v1/namespaces/{NS}"] = (200, {"kind": "Namespace", "metadata": {"name": NS}})
        for collection in (core("pods"), core("services"), apps("deployments"), apps("replicasets"),
                           "/api/v1/nodes", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"):
            self.cluster.collections.setdefault(collection, [])

    def gateway(self, name: str = GATEWAY, port: int = 80) -> None:
        self.cluster.add(f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/gateways", {
            "kind": "Gateway", "metadata": {"name": name, "namespace": NS},
            "spec": {"gatewayClassName": "x", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]}})

    def route(self, name: str, rules: list[tuple[str | None, str]], header: str = BASE_MODEL_HEADER) -> None:
        self.cluster.add(f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes", {
            "kind": "HTTPRoute", "metadata": {"name": name, "namespace": NS},
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY}],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}
                                            | ({"headers": [{"type": "Exact", "name": header, "value": model}]}
                                               if model else {})],
                                "backendRefs": [{"group": self.pool_group, "kind": "InferencePool", "name": pool}]}
                               for model, pool in rules]}})

    def pool(self, name: str, selector: dict, epp_port: int | None = 9002) -> None:
        if self.pool_version == "v1":
            spec = {"selector": {"matchLabels": selector}, "targetPorts": [{"number": 8000}],
                    "endpointPickerRef": {"kind": "Service", "name": f"{name}-epp"}
                    | ({"port": {"number": epp_port}} if epp_port else {})}
        else:
            spec = {"selector": selector, "targetPortNumber": 8000,
                    "extensionRef": {"name": f"{name}-epp"} | ({"portNumber": epp_port} if epp_port else {})}
        self.cluster.add(f"/apis/{self.pool_group}/{self.pool_version}/namespaces/{NS}/inferencepools",
                         {"kind": "InferencePool", "metadata": {"name": name, "namespace": NS}, "spec": spec})
        self.service(f"{name}-epp", {"inferencepool": f"{name}-epp"}, [("grpc-ext-proc", 9002), ("metrics", 9090)])

    def service(self, name: str, selector: dict, ports: list[tuple[str, int]], protocol: str | None = None) -> None:
        self.cluster.add(core("services"), {"kind": "Service", "metadata": {"name": name, "namespace": NS},
                                            "spec": {"selector": selector, "ports": [
                                                {"name": n, "port": p, "appProtocol": protocol} for n, p in ports]}})

    def node(self, name: str, labels: dict, gpus: int = 1) -> None:
        self.cluster.add("/api/v1/nodes", {
            "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)} if gpus else {},
                       "conditions": [{"type": "Ready", "status": "True"}]}})

    def t4_nodes(self, count: int = 2) -> list[str]:
        names = [f"gke-nvidia-t4-pool-{i}" for i in range(1, count + 1)]
        for name in names:
            self.node(name, {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4",
                             "cloud.google.com/gke-nodepool": "nvidia-t4-pool"})
        self.node("cpu-node-1", {"cloud.google.com/gke-nodepool": "default-pool"}, gpus=0)
        return names

    def workload(self, name: str, labels: dict, template: dict, replicas: int, release: str | None,
                 containers: list[dict]) -> None:
        annotations = {"meta.helm.sh/release-name": release} if release else {}
        self.cluster.add(apps("deployments"), {
            "kind": "Deployment", "metadata": {"name": name, "namespace": NS, "annotations": annotations},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": template}, "spec": {"containers": containers}}}})
        self.cluster.add(apps("replicasets"), {
            "kind": "ReplicaSet", "metadata": {"name": f"{name}-5d8f", "namespace": NS, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": "u1", "controller": True}]},
            "spec": {"selector": {"matchLabels": labels}}})

    def pod(self, name: str, labels: dict, node: str, served: list[dict] | None, owner: str | None = None,
            gpus: int = 1, ready: bool = True) -> None:
        owners = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-5d8f", "uid": "u2",
                   "controller": True}] if owner else []
        self.cluster.add(core("pods"), {
            "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels, "ownerReferences": owners},
            "spec": {"nodeName": node, "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
                     "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11",
                                     "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}})
        if served is not None:
            self.cluster.proxy[f"{core('pods')}/{name}:8000/proxy/v1/models"] = (200, {"object": "list",
                                                                                     "data": served})

    def model_server(self, release: str, model_id: str, short: str, node: str, extra: dict | None = None) -> None:
        labels = {"app.kubernetes.io/name": "modelserver", "app.kubernetes.io/instance": release,
                  "llm-d.ai/role": "decode"}
        template = labels | SERVING | {"llm-d.ai/model": short} | (extra or {})
        self.workload(f"{release}-decode", labels, template, 1, release, [{"name": "vllm", "image": "vllm"}])
        self.pod(f"{release}-decode-5d8f-abcde", template | {"pod-template-hash": "5d8f"}, node,
                 [{"id": model_id, "parent": None}], owner=f"{release}-decode")

    def bbr(self, args: list[str]) -> None:
        labels = {"app": "body-based-router"}
        self.workload("body-based-router", labels, labels, 1, "bbr", [
            {"name": "bbr", "image": "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0", "args": args}])
        self.service("body-based-router", labels, [("", 9004)], protocol="HTTP2")


GIE_BBR_ARGS = ["--streaming", "--plugin",
                'body-field-to-header:model-extractor:{"fieldName":"model","headerName":"X-Gateway-Model-Name"}',
                "--plugin", "base-model-to-header:base-model-mapper"]


def pattern2(pool_version: str = "v1") -> Deployment:
    """What `helmfile sync` of manifests/topologies/pattern2.yaml creates."""
    d = Deployment(pool_version)
    d.gateway()
    d.route("llm-d-pattern2", [(GEMMA, "gaie-gemma"), (PHI, "gaie-phi")])
    d.pool("gaie-gemma", SERVING | {"llm-d.ai/model": "gemma-2b-it"})
    d.pool("gaie-phi", SERVING | {"llm-d.ai/model": "phi-3-mini-4k-instruct"})
    nodes = d.t4_nodes()
    d.model_server("ms-gemma", GEMMA, "gemma-2b-it", nodes[1])
    d.model_server("ms-phi", PHI, "phi-3-mini-4k-instruct", nodes[0])
    d.bbr(GIE_BBR_ARGS)
    return d


def single_pool() -> Deployment:
    """The seed's deployment (manifests/topologies/pattern2-single-pool.yaml), on the v1alpha2 API."""
    d = Deployment("v1alpha2")
    d.gateway()
    d.route("llm-d-multi-model-inference", [(None, "gaie-pattern2")])
    d.pool("gaie-pattern2", SERVING)
    nodes = d.t4_nodes()
    d.model_server("ms-gemma", GEMMA, "gemma-2b-it", nodes[0])
    d.model_server("ms-phi", PHI, "phi-3-mini-4k-instruct", nodes[1])
    return d


@pytest.fixture
def discover(api_server, tmp_path, capsys):
    """Runs the command against the fake API server holding a Deployment; (exit status, stdout, stderr)."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)

    def run(deployment: Deployment, *args: str) -> tuple[int, str, str]:
        api_server.routes = deployment.cluster
        status = main(["discover", "--kubeconfig", str(kubeconfig), "--namespace", NS, *args])
        out, err = capsys.readouterr()
        return status, out, err
    return run


def comments(text: str) -> str:
    """The comments of a YAML text as one line (wrapping undone)."""
    return " ".join(line.strip()[2:] for line in text.splitlines() if line.strip().startswith("# "))


def loaded(text: str, tmp_path: Path) -> Topology:
    return parse_topology(text, tmp_path / "discovered.yaml")


@pytest.mark.parametrize("pool_version", ["v1", "v1alpha2"])
def test_pattern2_is_reproduced(discover, tmp_path, pool_version):
    """The objects pattern2 installs give back pattern2: models, served names, pools, selectors, ports, EPP
    Services, routes and header, BBR, accelerator, GPUs per pod, replicas; on either InferencePool API."""
    status, out, err = discover(pattern2(pool_version), "--context", "fake-context")
    assert status == 0, err
    assert semantic(loaded(out, tmp_path)) == semantic(load_topology("pattern2"))
    assert "share of the suite's request mix, not in the cluster" in comments(out)  # weights are a guess
    assert "the suite's demands, not read from the cluster" in comments(out)
    assert "selector: {llm-d.ai/inferenceServing: 'true', llm-d.ai/model: gemma-2b-it}" in out
    assert "comment(s) mark guesses" in err


def test_the_seeds_single_pool_is_reproduced(discover, tmp_path):
    """One pool over both models' pods, one catch-all rule, no BBR: pattern2-single-pool."""
    status, out, err = discover(single_pool(), "--name", "seed")
    assert status == 0, err
    topology = loaded(out, tmp_path)
    assert topology.name == "seed" and topology.bbr_header is None
    assert semantic(topology) == semantic(load_topology("pattern2-single-pool"))


def test_guesses_and_choices_carry_comments(discover, tmp_path):
    """What discovery had to guess or choose is commented where it is written, and the file still loads:
    a bare pod (replicas counted), aliases and a LoRA adapter, an HPA, an EPP port left to the Service, a
    node without a node-pool label, a BBR that does not set the header the rules match."""
    d = Deployment()
    d.gateway()
    d.route("r", [(GEMMA, "gaie-gemma"), (PHI, "gaie-phi"), ("nobody/serves-this", "gaie-phi")])
    d.pool("gaie-gemma", SERVING | {"llm-d.ai/model": "gemma"}, epp_port=None)
    d.pool("gaie-phi", SERVING | {"llm-d.ai/model": "phi"})
    d.node("gpu-a", {"nvidia.com/gpu.product": "Tesla-T4"})
    d.node("gpu-b", {"nvidia.com/gpu.product": "Tesla-T4"})
    d.pod("gemma-by-hand", SERVING | {"llm-d.ai/model": "gemma"}, "gpu-a",
          [{"id": "gemma", "parent": None}, {"id": GEMMA, "parent": None}, {"id": "sql-lora", "parent": GEMMA}])
    d.model_server("ms-phi", PHI, "phi", "gpu-b")
    d.cluster.add(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", {
        "kind": "HorizontalPodAutoscaler", "metadata": {"name": "phi-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "ms-phi-decode"}, "minReplicas": 1,
                 "maxReplicas": 4}})
    d.bbr(["--plugin", "body-field-to-header:model-extractor"])
    status, out, err = discover(d)
    assert status == 0, err
    topology = loaded(out, tmp_path)
    gemma = topology.model(GEMMA)  # the name the route matches, not the pod's first
    assert (gemma.replicas, gemma.release, gemma.pod_labels) == (1, "gemma-by-hand", {"llm-d.ai/model": "gemma"})
    assert topology.pool("gaie-gemma").epp_port == 9002
    assert (topology.accelerator_label, topology.accelerator_value, topology.node_pool) == (
        "nvidia.com/gpu.product", "Tesla-T4", "Tesla-T4")
    assert [r.model for r in topology.routes[0].rules] == [GEMMA, PHI]
    for comment in ("its pods also serve gemma under other names; only google/gemma-2b-it is written",
                    "belong to no Deployment or StatefulSet: replicas counts the pods answering now",
                    "not installed by Helm: named after pod gemma-by-hand",
                    "HorizontalPodAutoscaler phi-hpa scales it (1 to 4)",
                    "InferencePool gaie-gemma names no EPP port; took Service gaie-gemma-epp's first port",
                    "no node-pool label on their nodes",
                    "body-based-router sets X-Gateway-Model-Name, not X-Gateway-Base-Model-Name",
                    "matches X-Gateway-Base-Model-Name: nobody/serves-this, which no pod of the pools serves"):
        assert comment in comments(out), out
    assert "sql-lora" not in out  # a LoRA adapter is not a model of the topology


def test_a_rule_to_a_pool_whose_pods_serve_another_model_is_left_out_with_why(discover, tmp_path):
    """A second route sending gemma's header to phi's pool cannot be written (the loader refuses it): commented."""
    d = pattern2()
    d.route("crossed", [(GEMMA, "gaie-phi"), (PHI, "gaie-phi")])
    status, out, err = discover(d)
    assert status == 0, err
    routes = {r.name: [(rule.model, rule.pool) for rule in r.rules] for r in loaded(out, tmp_path).routes}
    assert routes["crossed"] == [(PHI, "gaie-phi")]
    assert ("HTTPRoute crossed rule 0 sends google/gemma-2b-it to gaie-phi, whose pods do not serve it "
            "(gaie-gemma's do); left out") in comments(out)


def test_bbr_headers_from_its_plugin_flags():
    assert bbr_headers(GIE_BBR_ARGS) == [MODEL_HEADER, BASE_MODEL_HEADER]
    assert bbr_headers(["--plugin=body-field-to-header:x:{\"headerName\":\"X-Model\"}"]) == ["X-Model"]
    assert bbr_headers(["--streaming"]) == [MODEL_HEADER, BASE_MODEL_HEADER]  # no flags: BBR's defaults


def test_missing_kubeconfig_and_context_are_named_before_any_api_call(api_server, tmp_path, capsys):
    status = main(["discover", "--kubeconfig", str(tmp_path / "nope"), "--namespace", NS])
    assert status == 1
    assert capsys.readouterr().err.startswith(f"discover: error: kubeconfig {tmp_path}/nope does not exist; "
                                              f"pass --kubeconfig")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api_server.url)
    assert main(["discover", "--kubeconfig", str(kubeconfig), "--context", "other", "--namespace", NS]) == 1
    assert "context 'other' is not in kubeconfig" in capsys.readouterr().err
    assert api_server.requests == []


def test_namespace_is_required_and_must_exist(discover, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["discover"])
    assert excinfo.value.code == 2 and "--namespace" in capsys.readouterr().err
    d = pattern2()
    del d.cluster[f"/api/v1/namespaces/{NS}"]
    status, out, err = discover(d)
    assert (status, out) == (1, "")
    assert err.startswith(f"discover: error: namespace '{NS}' does not exist; pass --namespace")


def test_gateway_missing_or_ambiguous(discover):
    status, out, err = discover(pattern2(), "--gateway", "nope")
    assert (status, out) == (1, "")
    assert err.strip() == (f"discover: error: Gateway {NS}/nope does not exist (Gateways in {NS}: {GATEWAY}); "
                           f"pass --gateway with one of them")
    d = pattern2()
    d.gateway("other-gateway")
    status, out, err = discover(d)
    assert status == 1 and f"has 2 Gateways ({GATEWAY}, other-gateway); pass --gateway" in err
    status, out, err = discover(d, "--gateway", GATEWAY)
    assert status == 0, err


def test_no_route_to_a_pool_says_so(discover):
    d = pattern2()
    d.cluster.collections[f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"].clear()
    status, out, err = discover(d)
    assert (status, out) == (1, "")
    assert f"no HTTPRoute in {NS} is attached to Gateway {GATEWAY}" in err


def test_output_file_and_bad_name(discover, tmp_path):
    target = tmp_path / "topology.yaml"
    status, out, err = discover(pattern2(), "-o", str(target), "--name", "mine")
    assert (status, out) == (0, "")
    assert load_topology(target).name == "mine"
    status, out, err = discover(pattern2(), "--name", "Not_A_Label")
    assert status == 2 and "not a DNS-1123 label" in err
