"""The helmfile renders, for every topology and environment, exactly the objects the topology describes.

Renders with `helmfile -e ENV template` (the command `sync` runs before applying) and compares the
objects with manifests/topologies/<name>.yaml. Needs the helm and helmfile binaries
(`python -m llmd_conformance.build --only helm helmfile`) and Go for the GIE charts.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from llmd_conformance import charts
from llmd_conformance.build import binary
from llmd_conformance.topology import Topology, known_topologies, load_topology

REPO = Path(__file__).resolve().parents[1]
HELMFILE = REPO / "manifests" / "helmfile.yaml.gotmpl"
ENVIRONMENTS = ("local", "gke")
GATEWAY_CLASS = {"local": "llmd-local", "gke": "gke-l7-regional-external-managed"}
SIM_IMAGE = "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"
POOL_GROUP = "inference.networking.k8s.io"
BBR_SERVICE, BBR_PORT = "body-based-router", 9004
BBR_ANNOTATION = "llmd.local/body-based-routing"
BBR_MANAGED = "inference.networking.k8s.io/bbr-managed"
IPP_MANAGED = "inference.llm-d.ai/ipp-managed"
# The container image of each EPP and router implementation (pools[].epp.implementation, bbr.implementation).
EPP_IMAGE = {"gie-epp": "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0",
             "llm-d-inference-scheduler": "ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0"}
ROUTER_IMAGE = {"gie-bbr": "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0",
                "payload-processor": "ghcr.io/llm-d/llm-d-inference-payload-processor:v0.1.0"}
SHOWN = 5  # offending items listed in a failure message


def expect_none(problems: list[str], what: str) -> None:
    assert not problems, f"{what}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:SHOWN])


@dataclass(frozen=True)
class Tools:
    helm: Path
    helmfile: Path
    env: dict[str, str]

    def helmfile_run(self, environment: str, *args: str, **env: str | None) -> subprocess.CompletedProcess:
        """Run helmfile on our helmfile; env values of None unset the variable."""
        run_env = dict(self.env)
        for key, value in env.items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        cmd = [str(self.helmfile), "--file", str(HELMFILE), "--helm-binary", str(self.helm), "-e", environment, *args]
        return subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def tools(tmp_path_factory) -> Tools:
    helm, helmfile = binary("helm"), binary("helmfile")
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ, LLMD_GIE_CHARTS=str(charts.prepare_charts()), HELM_CACHE_HOME=str(home / "cache"),
               HELM_CONFIG_HOME=str(home / "config"), HELM_DATA_HOME=str(home / "data"))
    for name in ("TOPOLOGY", "RELEASE_NAME_POSTFIX"):
        env.pop(name, None)
    return Tools(helm, helmfile, env)


@dataclass(frozen=True)
class Rendered:
    topology: Topology
    environment: str
    objects: tuple[dict, ...]

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def names(self, kind: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.of_kind(kind))

    def one(self, kind: str, name: str) -> dict:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, (f"{self}: expected one {kind} named {name!r}, found {len(found)}; "
                                 f"{kind} objects rendered: {self.names(kind)}")
        return found[0]

    def model_server(self, release: str) -> dict:
        found = [d for d in self.of_kind("Deployment")
                 if d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == release]
        assert len(found) == 1, (f"{self}: expected one Deployment of release {release!r}, found "
                                 f"{[d['metadata']['name'] for d in found]}")
        return found[0]

    def __str__(self) -> str:
        return f"TOPOLOGY={self.topology.name} -e {self.environment}"


def parse_objects(text: str) -> tuple[dict, ...]:
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


@pytest.fixture(scope="session")
def render(tools):
    cache: dict[tuple[str, str], Rendered] = {}

    def _render(topology_name: str, environment: str) -> Rendered:
        key = (topology_name, environment)
        if key not in cache:
            result = tools.helmfile_run(environment, "template", "--skip-deps", TOPOLOGY=topology_name)
            assert result.returncode == 0, (f"helmfile template failed for TOPOLOGY={topology_name} -e {environment}:"
                                            f"\n{result.stderr[-3000:]}")
            cache[key] = Rendered(load_topology(topology_name), environment, parse_objects(result.stdout))
        return cache[key]

    return _render


CASES = [(name, env) for name in known_topologies() for env in ENVIRONMENTS]


@pytest.fixture(params=CASES, ids=[f"{name}-{env}" for name, env in CASES])
def rendered(request, render) -> Rendered:
    return render(*request.param)


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"Deployment {deployment['metadata']['name']}: expected one container, found {len(containers)}"
    return containers[0]


def flag_value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def pod_labels(deployment: dict) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def test_each_pool_renders_an_inferencepool_with_the_topology_selector_and_ports(rendered):
    """One InferencePool per topology pool, with its selector and target ports."""
    topo = rendered.topology
    assert rendered.names("InferencePool") == sorted(p.name for p in topo.pools), \
        f"{rendered}: InferencePools rendered {rendered.names('InferencePool')}, topology pools {[p.name for p in topo.pools]}"
    problems = []
    for pool in topo.pools:
        spec = rendered.one("InferencePool", pool.name)["spec"]
        if spec["selector"]["matchLabels"] != pool.selector:
            problems.append(f"{pool.name}: selector {spec['selector']['matchLabels']}, expected {pool.selector}")
        ports = tuple(p["number"] for p in spec["targetPorts"])
        if ports != pool.target_ports:
            problems.append(f"{pool.name}: targetPorts {ports}, expected {pool.target_ports}")
    expect_none(problems, f"{rendered}: InferencePool specs")


def test_each_pool_points_at_its_epp_service_and_fails_closed(rendered):
    """endpointPickerRef names the topology's EPP Service and port, failureMode FailClose; the Service exists."""
    problems = []
    for pool in rendered.topology.pools:
        ref = rendered.one("InferencePool", pool.name)["spec"]["endpointPickerRef"]
        found = (ref["name"], ref["port"]["number"], ref.get("failureMode"))
        if found != (pool.epp_service, pool.epp_port, "FailClose"):
            problems.append(f"{pool.name}: endpointPickerRef (name, port, failureMode) {found}, "
                            f"expected {(pool.epp_service, pool.epp_port, 'FailClose')}")
        service_ports = [p["port"] for p in rendered.one("Service", pool.epp_service)["spec"]["ports"]]
        if pool.epp_port not in service_ports:
            problems.append(f"Service {pool.epp_service}: ports {service_ports} lack {pool.epp_port}")
        epp = container(rendered.one("Deployment", pool.epp_service))
        if epp["image"] != EPP_IMAGE[pool.epp_implementation]:
            problems.append(f"Deployment {pool.epp_service}: image {epp['image']}, expected {EPP_IMAGE[pool.epp_implementation]}")
        args = epp["args"]
        for flag, wanted in (("--pool-name", pool.name), ("--grpc-port", str(pool.epp_port))):
            if flag_value(args, flag) != wanted:
                problems.append(f"Deployment {pool.epp_service}: {flag} {flag_value(args, flag)!r}, expected {wanted!r}")
    expect_none(problems, f"{rendered}: EPP wiring")


def test_epp_requests_and_provider_objects_follow_the_environment(rendered):
    """Locally the EPP asks for 100m CPU / 128Mi; on GKE the chart adds one HealthCheckPolicy per pool."""
    problems = []
    for pool in rendered.topology.pools:
        requests = container(rendered.one("Deployment", pool.epp_service))["resources"]["requests"]
        if rendered.environment == "local" and requests != {"cpu": "100m", "memory": "128Mi"}:
            problems.append(f"Deployment {pool.epp_service}: requests {requests}, expected cpu 100m, memory 128Mi")
    pool_policies = sorted(p["spec"]["targetRef"]["name"] for p in rendered.of_kind("HealthCheckPolicy")
                           if p["spec"]["targetRef"]["kind"] == "InferencePool")
    expected = sorted(p.name for p in rendered.topology.pools) if rendered.environment == "gke" else []
    if pool_policies != expected:
        problems.append(f"HealthCheckPolicies target pools {pool_policies}, expected {expected}")
    expect_none(problems, f"{rendered}: EPP environment settings")


def test_each_model_server_labels_its_pods_with_pool_selector_and_model_labels(rendered):
    """Pod labels of a model's Deployment include pool.selector | model.pod_labels and llm-d.ai/role=decode."""
    problems = []
    for model in rendered.topology.models:
        labels = pod_labels(rendered.model_server(model.release))
        wanted = rendered.topology.model_selector(model.id) | {"llm-d.ai/role": "decode"}
        missing = {k: v for k, v in wanted.items() if labels.get(k) != v}
        if missing:
            problems.append(f"{model.release} ({model.id}): pod labels {labels} lack {missing}")
    expect_none(problems, f"{rendered}: model server pod labels")


def test_each_pool_selects_exactly_the_pods_of_its_models(rendered):
    """Among every rendered Deployment, a pool selector matches exactly its models' releases."""
    deployments = rendered.of_kind("Deployment")
    problems = []
    for pool in rendered.topology.pools:
        selected = sorted(d["metadata"]["name"] for d in deployments
                          if pool.selector.items() <= pod_labels(d).items())
        expected = sorted(rendered.model_server(m.release)["metadata"]["name"]
                          for m in rendered.topology.models_of_pool(pool.name))
        if selected != expected:
            problems.append(f"pool {pool.name} selector {pool.selector} selects {selected}, expected {expected}")
    for model in rendered.topology.models:
        selector = rendered.topology.model_selector(model.id)
        selected = sorted(d["metadata"]["name"] for d in deployments if selector.items() <= pod_labels(d).items())
        if selected != [rendered.model_server(model.release)["metadata"]["name"]]:
            problems.append(f"model {model.id} selector {selector} selects {selected}, expected only release {model.release}")
    expect_none(problems, f"{rendered}: label selection")


def test_each_model_server_serves_the_model_id(rendered):
    """--served-model-name is the model id; local runs the sim without Hugging Face look-ups, GKE `vllm serve`."""
    problems = []
    for model in rendered.topology.models:
        c = container(rendered.model_server(model.release))
        args = [str(a) for a in c["args"]]
        checks = {"--served-model-name": model.id, "--port": str(rendered.topology.pool(model.pool).target_ports[0]),
                  "--max-model-len": "2048"}
        if rendered.environment == "local":
            checks["--model"] = model.id
            if c["image"] != SIM_IMAGE:
                problems.append(f"{model.release}: image {c['image']}, expected {SIM_IMAGE}")
            if "--force-dummy-tokenizer" not in args:
                problems.append(f"{model.release}: args {args} lack --force-dummy-tokenizer (the sim would query huggingface.co)")
        else:
            checks["--gpu-memory-utilization"] = "0.85"
            if c.get("command") != ["vllm", "serve"] or args[:1] != [model.id]:
                problems.append(f"{model.release}: command {c.get('command')} args {args[:1]}, expected vllm serve {model.id}")
            if not c["image"].startswith("vllm/vllm-openai:v"):
                problems.append(f"{model.release}: image {c['image']}, expected a pinned vllm/vllm-openai tag")
        for flag, value in checks.items():
            if flag_value(args, flag) != value:
                problems.append(f"{model.release}: {flag} {flag_value(args, flag)!r}, expected {value!r}")
    expect_none(problems, f"{rendered}: model server command lines")


def test_each_model_server_asks_for_its_gpus_on_the_accelerator_nodes(rendered):
    """GPU limit = gpusPerPod, nodeSelector on the accelerator label, GPU taint tolerated, replicas as declared."""
    topo = rendered.topology
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    problems = []
    for model in topo.models:
        deployment = rendered.model_server(model.release)
        pod = deployment["spec"]["template"]["spec"]
        gpus = container(deployment)["resources"].get("limits", {}).get("nvidia.com/gpu")
        if gpus != model.gpus_per_pod:
            problems.append(f"{model.release}: nvidia.com/gpu limit {gpus!r}, expected {model.gpus_per_pod}")
        if pod.get("nodeSelector", {}).get(topo.accelerator_label) != topo.accelerator_value:
            problems.append(f"{model.release}: nodeSelector {pod.get('nodeSelector')}, expected "
                            f"{topo.accelerator_label}={topo.accelerator_value}")
        if gpu_toleration not in pod.get("tolerations", []):
            problems.append(f"{model.release}: tolerations {pod.get('tolerations')} lack {gpu_toleration}")
        if deployment["spec"]["replicas"] != model.replicas:
            problems.append(f"{model.release}: replicas {deployment['spec']['replicas']}, expected {model.replicas}")
    expect_none(problems, f"{rendered}: GPU placement")


def test_each_model_server_probes_models_and_health_and_knows_its_pod(rendered):
    """Readiness GET /v1/models, liveness and startup GET /health on the serving port; POD_NAME/POD_NAMESPACE set."""
    expected_startup = (30, 90) if rendered.environment == "gke" else None
    problems = []
    for model in rendered.topology.models:
        c = container(rendered.model_server(model.release))
        port = c["ports"][0]["containerPort"]
        for probe, path in (("readinessProbe", "/v1/models"), ("livenessProbe", "/health"), ("startupProbe", "/health")):
            get = c.get(probe, {}).get("httpGet", {})
            if (get.get("path"), get.get("port")) != (path, port):
                problems.append(f"{model.release}: {probe} httpGet {get}, expected {path} on port {port}")
        startup = (c["startupProbe"].get("periodSeconds"), c["startupProbe"].get("failureThreshold"))
        if expected_startup and startup != expected_startup:
            problems.append(f"{model.release}: startupProbe (period, failures) {startup}, expected {expected_startup}")
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
        for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
            if env.get(name) != field:
                problems.append(f"{model.release}: env {name} from {env.get(name)!r}, expected fieldRef {field}")
    expect_none(problems, f"{rendered}: model server probes and env")


def test_routes_send_each_rule_to_its_pool(rendered):
    """One HTTPRoute per topology route; each rule matches the BBR header on its model (if any) and targets its pool."""
    topo = rendered.topology
    assert rendered.names("HTTPRoute") == sorted(r.name for r in topo.routes), \
        f"{rendered}: HTTPRoutes rendered {rendered.names('HTTPRoute')}, topology routes {[r.name for r in topo.routes]}"
    problems = []
    for route in topo.routes:
        spec = rendered.one("HTTPRoute", route.name)["spec"]
        parents = [(p.get("kind"), p["name"]) for p in spec["parentRefs"]]
        if parents != [("Gateway", topo.gateway_name)]:
            problems.append(f"{route.name}: parentRefs {parents}, expected Gateway {topo.gateway_name}")
        if len(spec["rules"]) != len(route.rules):
            problems.append(f"{route.name}: {len(spec['rules'])} rules, expected {len(route.rules)}")
            continue
        for i, (rule, found) in enumerate(zip(route.rules, spec["rules"])):
            backends = [(b.get("group"), b.get("kind"), b["name"]) for b in found["backendRefs"]]
            if backends != [(POOL_GROUP, "InferencePool", rule.pool)]:
                problems.append(f"{route.name} rule {i}: backendRefs {backends}, expected InferencePool {rule.pool}")
            headers = [(h.get("type"), h["name"], h["value"]) for m in found["matches"] for h in m.get("headers", [])]
            wanted = [("Exact", topo.bbr_header, rule.model)] if rule.model else []
            if headers != wanted:
                problems.append(f"{route.name} rule {i}: header matches {headers}, expected {wanted}")
    expect_none(problems, f"{rendered}: HTTPRoute rules")


def test_gateway_has_the_topology_name_class_listener_and_bbr_annotation(rendered):
    """Gateway named by the topology, environment's class, HTTP listener; locally annotated with BBR's address."""
    topo = rendered.topology
    gateway = rendered.one("Gateway", topo.gateway_name)
    problems = []
    if gateway["spec"]["gatewayClassName"] != GATEWAY_CLASS[rendered.environment]:
        problems.append(f"gatewayClassName {gateway['spec']['gatewayClassName']}, expected {GATEWAY_CLASS[rendered.environment]}")
    listeners = [(l["protocol"], l["port"]) for l in gateway["spec"]["listeners"]]
    if listeners != [("HTTP", topo.listener_port)]:
        problems.append(f"listeners {listeners}, expected HTTP on {topo.listener_port}")
    annotation = gateway["metadata"].get("annotations", {}).get(BBR_ANNOTATION)
    wanted = f"{topo.bbr_service}:{topo.bbr_port}" if topo.bbr_header and rendered.environment == "local" else None
    if annotation != wanted:
        problems.append(f"annotation {BBR_ANNOTATION}={annotation!r}, expected {wanted!r}")
    if wanted and topo.bbr_port not in [p["port"] for p in rendered.one("Service", topo.bbr_service)["spec"]["ports"]]:
        problems.append(f"Service {topo.bbr_service} does not expose port {topo.bbr_port} named by the annotation")
    expect_none(problems, f"{rendered}: Gateway {topo.gateway_name}")


def test_bbr_and_one_allowlist_per_model_exist_only_with_bbr(rendered):
    """With bbr: the router's Deployment of the topology's implementation, its header plugins, a ConfigMap
    per model with the label that router reads; without: none of them."""
    topo = rendered.topology
    payload_processor = topo.bbr_implementation == "payload-processor"
    label = IPP_MANAGED if payload_processor else BBR_MANAGED
    allowlists = sorted(c["data"]["baseModel"] for c in rendered.of_kind("ConfigMap")
                        if {BBR_MANAGED, IPP_MANAGED} & set(c["metadata"].get("labels", {})))
    routers = [d["metadata"]["name"] for d in rendered.of_kind("Deployment")
               if container(d)["image"] in ROUTER_IMAGE.values()]
    if not topo.bbr_header:
        assert not routers and not allowlists, \
            f"{rendered}: topology has no bbr, found router Deployments {routers}, allowlists {allowlists}"
        return
    problems = []
    labelled = sorted(c["data"]["baseModel"] for c in rendered.of_kind("ConfigMap")
                      if c["metadata"].get("labels", {}).get(label) == "true")
    if allowlists != labelled or labelled != sorted(m.id for m in topo.models):
        problems.append(f"ConfigMaps labelled {label} name base models {labelled} (all allowlists: {allowlists}), "
                        f"expected {sorted(m.id for m in topo.models)}")
    image = container(rendered.one("Deployment", topo.bbr_service))["image"]
    if routers != [topo.bbr_service] or image != ROUTER_IMAGE[topo.bbr_implementation]:
        problems.append(f"router Deployments {routers}, image {image}: expected only {topo.bbr_service} "
                        f"with {ROUTER_IMAGE[topo.bbr_implementation]}")
    if payload_processor:
        config = rendered.one("ConfigMap", topo.bbr_service)["data"]["default-ipp-config.yaml"]
        if "type: base-model-to-header" not in config or "headerName: X-Gateway-Model-Name" not in config:
            problems.append(f"payload processor configuration lacks base-model-to-header or body-field-to-header:\n{config}")
        expect_none(problems, f"{rendered}: payload processor")
        return
    args = container(rendered.one("Deployment", topo.bbr_service))["args"]
    plugins = [args[i + 1] for i, a in enumerate(args) if a == "--plugin"]
    if not any(p.startswith("base-model-to-header:") for p in plugins):
        problems.append(f"BBR plugins {plugins} lack base-model-to-header (sets X-Gateway-Base-Model-Name)")
    if topo.bbr_header != "X-Gateway-Base-Model-Name" and not any(
            p.startswith("body-field-to-header:") and f'"headerName":"{topo.bbr_header}"' in p for p in plugins):
        problems.append(f"BBR plugins {plugins} do not copy the model into {topo.bbr_header}")
    if rendered.environment == "gke":
        targets = [t["name"] for t in rendered.one("GCPRoutingExtension", topo.bbr_service)["spec"]["targetRefs"]]
        if targets != [topo.gateway_name]:
            problems.append(f"GCPRoutingExtension targets {targets}, expected {[topo.gateway_name]}")
    expect_none(problems, f"{rendered}: body-based routing")


def test_no_secret_value_is_rendered_inline(rendered):
    """No Secret data and no literal token-like env value; on GKE HF_TOKEN comes from a secretKeyRef."""
    problems = [f"Secret {s['metadata']['name']} carries data" for s in rendered.of_kind("Secret")
                if s.get("data") or s.get("stringData")]
    for deployment in rendered.of_kind("Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if any(word in e["name"].upper() for word in ("TOKEN", "SECRET", "PASSWORD", "KEY")) and "value" in e:
                    problems.append(f"Deployment {deployment['metadata']['name']}: env {e['name']} has a literal value")
    if rendered.environment == "gke":
        for model in rendered.topology.models:
            env = {e["name"]: e for e in container(rendered.model_server(model.release)).get("env", [])}
            ref = env.get("HF_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
            if not ref or not ref.get("name"):
                problems.append(f"{model.release}: HF_TOKEN is not taken from a Secret ({env.get('HF_TOKEN')})")
    expect_none(problems, f"{rendered}: secrets")


def list_releases(tools: Tools, topology_name: str, environment: str = "local") -> list[dict]:
    result = tools.helmfile_run(environment, "list", "--output", "json", TOPOLOGY=topology_name)
    assert result.returncode == 0, f"helmfile list failed for TOPOLOGY={topology_name}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


@pytest.mark.parametrize("topology_name", known_topologies())
def test_release_type_labels_group_the_releases(tools, topology_name):
    """type=modelservice|gaie|bbr|infra labels name exactly the model, pool, BBR and infra releases."""
    topo = load_topology(topology_name)
    by_type: dict[str, list[str]] = {}
    for release in list_releases(tools, topology_name):
        labels = dict(item.split(":", 1) for item in release["labels"].split(",") if item)
        by_type.setdefault(labels.get("type", "<none>"), []).append(release["name"])
    postfix = topo.gateway_name.removeprefix("infra-").removesuffix("-inference-gateway")
    expected = {"modelservice": sorted(m.release for m in topo.models), "gaie": sorted(p.name for p in topo.pools),
                "infra": [f"infra-{postfix}"]}
    if topo.bbr_header:  # llm-d's payload processor is installed under its own chart's name
        expected["bbr"] = ["payload-processor" if topo.bbr_implementation == "payload-processor" else "bbr"]
    found = {kind: sorted(names) for kind, names in by_type.items()}
    assert found == expected, f"TOPOLOGY={topology_name}: releases by type {found}, expected {expected}"


def test_modelservice_selector_renders_only_the_model_servers(tools):
    """The seed's `--selector type=modelservice` installs the model servers and nothing else."""
    topo = load_topology("pattern2")
    result = tools.helmfile_run("gke", "template", "--skip-deps", "--selector", "type=modelservice", TOPOLOGY=topo.name)
    assert result.returncode == 0, f"helmfile template --selector type=modelservice failed:\n{result.stderr[-3000:]}"
    objects = parse_objects(result.stdout)
    instances = sorted({o["metadata"]["labels"]["app.kubernetes.io/instance"] for o in objects})
    kinds = sorted({o["kind"] for o in objects})
    assert instances == sorted(m.release for m in topo.models) and kinds == ["ConfigMap", "Deployment"], \
        f"--selector type=modelservice rendered releases {instances} kinds {kinds}, expected only {[m.release for m in topo.models]}"


def test_release_values_and_disabled_releases_reach_only_the_named_releases(tools, tmp_path):
    """State values releaseValues.<release> override one release; disabledReleases drops a release."""
    topo = load_topology("pattern2")
    flipped, untouched = topo.pools[0].name, topo.pools[1].name
    postfix = topo.gateway_name.removeprefix("infra-").removesuffix("-inference-gateway")
    overrides = tmp_path / "fault.yaml"
    overrides.write_text(yaml.safe_dump({
        "releaseValues": {flipped: {"inferenceExtension": {"failureMode": "FailOpen"}},
                          f"infra-{postfix}": {"backendRef": {"group": "inference.networking.x-k8s.io"}}},
        "disabledReleases": ["bbr"],
    }))
    result = tools.helmfile_run("local", "--state-values-file", str(overrides), "template", "--skip-deps", TOPOLOGY=topo.name)
    assert result.returncode == 0, f"helmfile template with {overrides.read_text()} failed:\n{result.stderr[-3000:]}"
    out = Rendered(topo, "local", parse_objects(result.stdout))
    modes = {name: out.one("InferencePool", name)["spec"]["endpointPickerRef"]["failureMode"] for name in (flipped, untouched)}
    assert modes == {flipped: "FailOpen", untouched: "FailClose"}, f"failureMode per pool {modes}"
    groups = {b["group"] for r in out.of_kind("HTTPRoute") for rule in r["spec"]["rules"] for b in rule["backendRefs"]}
    assert groups == {"inference.networking.x-k8s.io"}, f"backendRef groups {groups}, expected the overridden group"
    assert BBR_SERVICE not in out.names("Deployment"), f"disabled release bbr still rendered: {out.names('Deployment')}"


@pytest.mark.parametrize("value", ["no-such-topology", None], ids=["unknown", "unset"])
def test_a_bad_topology_value_is_refused_with_the_known_names(tools, value):
    """TOPOLOGY missing or unknown fails before rendering, naming every known topology."""
    result = tools.helmfile_run("local", "list", TOPOLOGY=value)
    message = result.stderr + result.stdout
    assert result.returncode != 0, f"TOPOLOGY={value!r} was accepted:\n{result.stdout[-1000:]}"
    wanted = [f'TOPOLOGY="{value or ""}"', *known_topologies()]
    missing = [w for w in wanted if w not in message]
    assert not missing, f"TOPOLOGY={value!r}: error lacks {missing}:\n{message[-2000:]}"


def test_missing_gie_charts_are_refused_with_the_prepare_command(tools):
    """Without LLMD_GIE_CHARTS the error says how to prepare the charts."""
    result = tools.helmfile_run("local", "list", TOPOLOGY="pattern1", LLMD_GIE_CHARTS=None)
    message = result.stderr + result.stdout
    assert result.returncode != 0 and "python -m llmd_conformance.charts" in message, \
        f"rc={result.returncode}, expected a failure naming python -m llmd_conformance.charts:\n{message[-2000:]}"


def test_release_name_postfix_must_name_the_topology_gateway(tools):
    """RELEASE_NAME_POSTFIX is accepted when it matches the topology's Gateway name and refused otherwise."""
    topo = load_topology("pattern1")
    postfix = topo.gateway_name.removeprefix("infra-").removesuffix("-inference-gateway")
    assert tools.helmfile_run("local", "list", TOPOLOGY=topo.name, RELEASE_NAME_POSTFIX=postfix).returncode == 0
    result = tools.helmfile_run("local", "list", TOPOLOGY=topo.name, RELEASE_NAME_POSTFIX=postfix + "-other")
    message = result.stderr + result.stdout
    assert result.returncode != 0 and topo.gateway_name in message, \
        f"RELEASE_NAME_POSTFIX={postfix}-other: rc={result.returncode}, expected an error naming {topo.gateway_name}:\n{message[-2000:]}"


def test_prepare_charts_runs_once():
    """A second prepare_charts() returns the same folder without rewriting it."""
    first = charts.prepare_charts()
    stamp = first / charts.STAMP_NAME
    before = stamp.stat().st_mtime_ns
    assert charts.prepare_charts() == first and stamp.stat().st_mtime_ns == before, "second call rebuilt the charts"
    archives = list((first / "inferencepool" / "charts").glob("*.tgz"))
    assert archives, f"{first / 'inferencepool' / 'charts'} holds no dependency archive"


def test_prepare_charts_without_helm_names_the_build_command(monkeypatch, tmp_path):
    """With no helm binary built, the error gives the build command."""
    monkeypatch.setenv("LLMD_BIN_DIR", str(tmp_path / "bin"))
    monkeypatch.setenv("LLMD_CHARTS_DIR", str(tmp_path / "charts"))
    with pytest.raises(charts.ChartsError, match="python -m llmd_conformance.build"):
        charts.prepare_charts()


def test_prepare_charts_without_go_says_go_is_needed(monkeypatch, tmp_path):
    """With no go on PATH (and nothing prepared yet), the error says Go is needed."""
    binary("helm")  # the helm check comes first
    monkeypatch.setenv("LLMD_CHARTS_DIR", str(tmp_path / "charts"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(charts.ChartsError, match="'go' is not on PATH"):
        charts.prepare_charts()
