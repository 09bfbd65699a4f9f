"""Discovery: read a live llm-d deployment and print the topology that describes it.

    python -m llmd_conformance discover --kubeconfig K --context C --namespace N [--gateway G] > topology.yaml
    pytest suites -m pattern2 --target cluster --kubeconfig K --context C --topology topology.yaml

It only reads (get and list): the Gateway and its listener; the HTTPRoutes attached to it, their
header matches and InferencePool backendRefs; each pool's selector, target ports and EPP Service;
the pods each pool selects and the models they serve (`/v1/models` through the API server's pod
proxy); their Deployments (replicas, Helm release), GPU limits and nodes (accelerator and node-pool
labels); the body-based router (BBR) and the header it sets. What the cluster cannot say (weights,
the expectations) or what was chosen among several candidates carries a comment above it. The text
is loaded back with the topology loader before it is printed, so the output is always a topology
the suite takes.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client
from kubernetes.client import ApiException

from llmd_conformance.kube import (
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    POOL_APIS,
    Kube,
    KubeError,
    connect,
    get_or_none,
    label_selector,
    namespace_must_exist,
    node_gpus,
    node_ready,
    pod_gpus,
    pod_proxy_get,
    pod_ready,
    pods_matching,
    refers_to_gateway,
)
from llmd_conformance.topology import LABEL, RELEASE, TopologyError, parse_topology

# Node labels naming a GPU model (GKE, NVIDIA GPU feature discovery, Karpenter on AWS), in order.
ACCELERATOR_LABELS = ("cloud.google.com/gke-accelerator", "nvidia.com/gpu.product",
                      "karpenter.k8s.aws/instance-gpu-name")
NODE_POOL_LABELS = ("cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup", "karpenter.sh/nodepool",
                    "kubernetes.azure.com/agentpool")
# Pod labels that tell a model's pods apart, most telling first: llm-d's own, then Helm's release.
MODEL_LABELS = ("llm-d.ai/model", "app.kubernetes.io/instance", "app.kubernetes.io/name", "app")
# Labels controllers stamp per revision or per pod: they never name a model.
VOLATILE_LABELS = ("pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name",
                   "apps.kubernetes.io/pod-index")
HELM_RELEASE = "meta.helm.sh/release-name"
# The body-based router's image (GIE's bbr, the chart's name for it, its successor's).
BBR_IMAGE = re.compile(r"(^|/)(bbr|body-based-rout[a-z-]*|payload-processor)(:|@|$)")
# GIE BBR plugins: body-field-to-header copies `model` into its headerName (this by default);
# base-model-to-header sets the base model's header. Without --plugin flags BBR loads both.
MODEL_HEADER, BASE_MODEL_HEADER = "X-Gateway-Model-Name", "X-Gateway-Base-Model-Name"
DEFAULT_EPP_PORT = 9002  # GIE: "implementations SHOULD infer a default value of 9002"
# The suite's demands of a Pattern 2 deployment (as in manifests/topologies/pattern2.yaml).
ROUTING_DEFAULTS = {"requests": 300, "maxMisroutes": 0, "accuracyLowerBound": 0.98, "confidence": 0.95,
                    "unknownModelShare": 0.05}
FLOW_KEYS = ("selector", "podLabels", "targetPorts", "epp")  # written on one line, like the hand-written files
WIDTH = 110  # comment lines wrap here


class DiscoveryError(RuntimeError):
    """The cluster cannot be described as asked; the message says what to fix."""


Where = tuple  # a place in the topology document, e.g. ("models", 0, "replicas")


@dataclass
class Notes:
    """Comments to write above places of the document."""

    at: dict[Where, list[str]] = field(default_factory=dict)

    def add(self, path: Where, text: str) -> None:
        self.at.setdefault(tuple(path), []).append(text)

    def __len__(self) -> int:
        return sum(len(v) for v in self.at.values())


@dataclass
class RawRule:
    route: str
    index: int
    pool: str | None  # None: no InferencePool backendRef
    models: list[str | None]  # header values of its matches; None: a match without the model header


@dataclass
class PodModels:
    pod: client.V1Pod
    pool: str
    served: list[str]  # base model names from /v1/models (LoRA adapters left out)


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def _most_common(values: Iterable[Any]) -> tuple[Any, Counter]:
    counts = Counter(values)
    return counts.most_common(1)[0][0], counts


class Discovery:
    """One read of a namespace: `topology()` returns the document, `notes` what to comment in it."""

    def __init__(self, kube: Kube, namespace: str, gateway: str | None):
        self.kube, self.ns, self.gateway_arg = kube, namespace, gateway
        self.notes = Notes()
        self._nodes: dict[str, client.V1Node | None] = {}
        self._owners: dict[tuple[str, str], Any] = {}
        self.pods_of: dict[str, list[client.V1Pod]] = {}  # model id -> its pods in its pool
        self._autoscalers: list[client.V2HorizontalPodAutoscaler] | None = None

    # -- Gateway and routes ---------------------------------------------------------------------

    def gateway(self) -> dict:
        gateways = self._list_gateway_api("gateways")
        names = [_meta(g).get("name") for g in gateways]
        if self.gateway_arg:
            found = [g for g in gateways if _meta(g).get("name") == self.gateway_arg]
            if not found:
                raise DiscoveryError(f"Gateway {self.ns}/{self.gateway_arg} does not exist (Gateways in {self.ns}: "
                                     f"{_names(names)}); pass --gateway with one of them")
            return found[0]
        if not gateways:
            raise DiscoveryError(f"namespace {self.ns} has no Gateway; pass --namespace with the namespace of the "
                                 f"deployment's Gateway")
        if len(gateways) > 1:
            raise DiscoveryError(f"namespace {self.ns} has {len(gateways)} Gateways ({_names(names)}); pass "
                                 f"--gateway with the one to describe")
        return gateways[0]

    def _list_gateway_api(self, plural: str) -> list[dict]:
        try:
            return self.kube.list_gateway_objects(self.ns, plural)
        except ApiException as exc:
            if exc.status == 404:
                raise DiscoveryError(f"the cluster serves no {plural} ({GATEWAY_GROUP}/{GATEWAY_VERSION}); install "
                                     f"the Gateway API CRDs, or pass --kubeconfig/--context of the deployment's "
                                     f"cluster") from None
            raise

    def routes(self, gateway: str) -> list[dict]:
        routes = [r for r in self._list_gateway_api("httproutes")
                  if any(refers_to_gateway(p, gateway, self.ns) for p in (r.get("spec") or {}).get("parentRefs") or [])]
        if not routes:
            raise DiscoveryError(f"no HTTPRoute in {self.ns} is attached to Gateway {gateway}; the suite checks "
                                 f"routes to InferencePools, so there is nothing to describe")
        return routes

    def listener_port(self, gateway: dict, routes: list[dict]) -> int:
        name = _meta(gateway)["name"]
        listeners = (gateway.get("spec") or {}).get("listeners") or []
        refs = [p for r in routes for p in r["spec"]["parentRefs"] if refers_to_gateway(p, name, self.ns)]
        sections = {p["sectionName"] for p in refs if p.get("sectionName")}
        ports = {p["port"] for p in refs if p.get("port")}
        chosen = [v for v in listeners if (not sections or v.get("name") in sections)
                  and (not ports or v.get("port") in ports)] or listeners
        http = [v for v in chosen if v.get("protocol") == "HTTP"] or chosen
        if not http:
            raise DiscoveryError(f"Gateway {self.ns}/{name} has no listener; the suite sends requests to one")
        if len(http) > 1:
            self.notes.add(("gateway", "listenerPort"), "the Gateway has several listeners the routes attach to ("
                           + ", ".join(f"{v.get('name')}:{v.get('port')}" for v in http) + "); the first is taken")
        if http[0].get("protocol") != "HTTP":
            self.notes.add(("gateway", "listenerPort"), f"listener {http[0].get('name')} speaks "
                           f"{http[0].get('protocol')}; the suite sends plain HTTP (--gateway-url to change it)")
        return http[0]["port"]

    def raw_rules(self, routes: list[dict], header: str | None) -> list[RawRule]:
        groups = {api.group for api in POOL_APIS}
        rules = []
        for route in routes:
            route_name = _meta(route)["name"]
            for i, rule in enumerate(route["spec"].get("rules") or []):
                where = f"HTTPRoute {route_name} rule {i}"
                pools = [b for b in rule.get("backendRefs") or [] if b.get("kind") == "InferencePool"
                         and b.get("group") in groups and b.get("namespace", self.ns) == self.ns]
                others = [f"{b.get('kind', 'Service')}/{b.get('name')}" for b in rule.get("backendRefs") or []
                          if b not in pools]
                if others:
                    self.notes.add(("routes",), f"{where}: backendRefs {_names(others)} are not InferencePools of "
                                                f"{self.ns}; the topology cannot name them")
                if len(pools) > 1:
                    self.notes.add(("routes",), f"{where} splits traffic over InferencePools "
                                                f"{_names(b['name'] for b in pools)}; only the first is written")
                models: list[str | None] = []
                for match in rule.get("matches") or [{}]:
                    values = [h.get("value") for h in match.get("headers") or []
                              if header and h.get("name", "").lower() == header.lower()
                              and h.get("type", "Exact") == "Exact"]
                    models.append(values[0] if values else None)
                rules.append(RawRule(route_name, i, pools[0]["name"] if pools else None, models))
        return rules

    # -- pools, pods, models --------------------------------------------------------------------

    def pools(self, wanted: list[str]) -> dict[str, dict]:
        """Each pool a rule names, as the topology writes it; pools that cannot be described are noted."""
        api = self.kube.pool_api
        listed = {_meta(p)["name"]: p for p in self.kube.list_pools(self.ns)}
        unused = sorted(set(listed) - set(wanted))
        if unused:
            self.notes.add(("pools",), f"InferencePools {_names(unused)} are in {self.ns} but no route of this "
                                       f"Gateway sends to them; left out")
        pools = {}
        for name in wanted:
            pool = listed.get(name)
            if pool is None:
                self.notes.add(("routes",), f"a rule sends to InferencePool {name}, which does not exist "
                                            f"({api.api_version}); its rules are left out")
                continue
            selector, ports, epp = api.selector(pool), api.target_ports(pool), api.endpoint_picker(pool)
            if not selector or not ports or not epp:
                missing = ", ".join(what for what, value in (("a selector", selector), ("target ports", ports),
                                                              ("an endpoint picker", epp)) if not value)
                self.notes.add(("pools",), f"InferencePool {name} has no {missing}; left out with its rules")
                continue
            pools[name] = {"name": name, "selector": selector, "targetPorts": ports,
                           "epp": {"service": epp[0], "port": self.epp_port(len(pools), name, *epp)}}
        return pools

    def epp_port(self, index: int, pool: str, service_name: str, port: int | None) -> int:
        where = ("pools", index, "epp")
        service = get_or_none(lambda: self.kube.core.read_namespaced_service(service_name, self.ns))
        if service is None:
            self.notes.add(where, f"the EPP Service {service_name} that InferencePool {pool} names does not exist")
        if port:
            return port
        ports = [p.port for p in (service.spec.ports or [])] if service else []
        self.notes.add(where, f"InferencePool {pool} names no EPP port; "
                              + (f"took Service {service_name}'s first port" if ports
                                 else f"GIE's default {DEFAULT_EPP_PORT}"))
        return ports[0] if ports else DEFAULT_EPP_PORT

    def served(self, pools: dict[str, dict]) -> list[PodModels]:
        """The base models each Ready pod of each pool serves, asked on the pool's first target port."""
        found, asked = [], {}
        for name, pool in pools.items():
            pods = pods_matching(self.kube.core, self.ns, pool["selector"])
            if not pods:
                self.notes.add(("pools",), f"InferencePool {name} selects no pod now ({label_selector(pool['selector'])})")
            unready = [p.metadata.name for p in pods if not pod_ready(p)]
            if unready:
                self.notes.add(("models",), f"pods of InferencePool {name} not Ready, so not asked for their models: "
                                            f"{_names(unready)}")
            for pod in pods:
                if not pod_ready(pod):
                    continue
                key = (pod.metadata.name, pool["targetPorts"][0])
                if key not in asked:
                    asked[key] = self.models_of(pod, pool["targetPorts"][0])
                if asked[key]:
                    found.append(PodModels(pod, name, asked[key]))
        return found

    def models_of(self, pod: client.V1Pod, port: int) -> list[str]:
        name = pod.metadata.name
        try:
            status, body = pod_proxy_get(self.kube.api_client, self.ns, name, port, "/v1/models")
        except (KubeError, urllib3.exceptions.HTTPError) as exc:
            self.notes.add(("models",), f"pod {name}: /v1/models on port {port} did not answer ({exc}); left out")
            return []
        data = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(data, list):
            self.notes.add(("models",), f"pod {name}: /v1/models on port {port} answered HTTP {status} "
                                        f"{str(body)[:80]!r}; left out")
            return []
        # vLLM lists LoRA adapters with their base model as parent; the topology names base models.
        models = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and not m.get("parent")]
        if not models:
            self.notes.add(("models",), f"pod {name}: /v1/models on port {port} lists no base model; left out")
        return models

    def node(self, name: str | None) -> client.V1Node | None:
        if name and name not in self._nodes:
            self._nodes[name] = get_or_none(lambda: self.kube.core.read_node(name))
        return self._nodes.get(name) if name else None

    def owner(self, pod: client.V1Pod) -> tuple[str, Any] | None:
        """(kind, object) of the Deployment or StatefulSet a pod belongs to (through its ReplicaSet), or None."""
        refs = [r for r in pod.metadata.owner_references or [] if r.controller]
        if refs and refs[0].kind == "ReplicaSet":
            rs = self._read("ReplicaSet", refs[0].name)
            refs = [r for r in (rs.metadata.owner_references or [] if rs else []) if r.controller]
        if not refs or refs[0].kind not in ("Deployment", "StatefulSet"):
            return None
        found = self._read(refs[0].kind, refs[0].name)
        return (refs[0].kind, found) if found is not None else None

    def _read(self, kind: str, name: str) -> Any:
        read = {"ReplicaSet": self.kube.apps.read_namespaced_replica_set,
                "Deployment": self.kube.apps.read_namespaced_deployment,
                "StatefulSet": self.kube.apps.read_namespaced_stateful_set}[kind]
        if (kind, name) not in self._owners:
            self._owners[(kind, name)] = get_or_none(lambda: read(name, self.ns))
        return self._owners[(kind, name)]

    # -- the document ---------------------------------------------------------------------------

    def topology(self, name: str, context: str | None) -> dict:
        namespace_must_exist(self.kube.core, self.ns,
                             "pass --namespace with the namespace of the deployment's Gateway, routes and pools")
        gateway = self.gateway()
        gateway_name = _meta(gateway)["name"]
        routes = self.routes(gateway_name)
        header = self.route_header(routes)
        raw = self.raw_rules(routes, header)
        pools = self.pools(list(dict.fromkeys(r.pool for r in raw if r.pool)))
        if not pools:
            raise DiscoveryError(f"no route of Gateway {gateway_name} sends to an InferencePool that can be "
                                 f"described:\n" + "\n".join(f"  {t}" for ts in self.notes.at.values() for t in ts))
        pool_list = list(pools.values())
        models = self.models(pools, raw)
        doc: dict[str, Any] = {
            "name": name,
            "description": f"Discovered from Gateway {self.ns}/{gateway_name}"
                           + (f" (context {context})" if context else ""),
            "namespace": self.ns,
            "gateway": {"name": gateway_name, "listenerPort": self.listener_port(gateway, routes)},
        }
        bbr = self.bbr(header)
        if bbr:
            doc["bbr"] = bbr
        doc["routes"] = self.topology_routes(raw, pools, models, header)
        doc["pools"] = pool_list
        doc["models"] = models
        doc["accelerator"] = self.accelerator()
        doc["expectations"] = self.expectations(len(models), doc["accelerator"]["gpuNodes"])
        return doc

    def route_header(self, routes: list[dict]) -> str | None:
        """The header the rules match models on: the one most Exact header matches name."""
        names = [h["name"] for r in routes for rule in r["spec"].get("rules") or []
                 for m in rule.get("matches") or [] for h in m.get("headers") or []
                 if h.get("type", "Exact") == "Exact" and h.get("name")]
        if not names:
            return None
        header, counts = _most_common(names)
        if len(counts) > 1:
            self.notes.add(("bbr", "header"), f"the rules match on several headers ({_names(counts)}); the model is "
                                              f"taken from {header}, matches on the others are left out")
        return header

    def models(self, pools: dict[str, dict], raw: list[RawRule]) -> list[dict]:
        served = self.served(pools)
        if not served:
            raise DiscoveryError(f"no Ready pod of InferencePools {_names(pools)} answered /v1/models with a model; "
                                 f"the topology needs at least one:\n"
                                 + "\n".join(f"  {t}" for ts in self.notes.at.values() for t in ts))
        routed = {(m, r.pool) for r in raw for m in r.models if m}
        routed_names = {m for m, _ in routed}
        # One name per pod: the one a route matches, else the first it lists.
        by_model: dict[str, list[PodModels]] = {}
        aliases: dict[str, set[str]] = {}
        for entry in served:
            name = next((n for n in entry.served if n in routed_names), entry.served[0])
            by_model.setdefault(name, []).append(entry)
            aliases.setdefault(name, set()).update(set(entry.served) - {name})
        models = []
        for model_id, entries in by_model.items():
            in_pools = list(dict.fromkeys(e.pool for e in entries))
            pool = next((p for p in in_pools if (model_id, p) in routed), in_pools[0])
            where = ("models", len(models))
            if len(in_pools) > 1:
                self.notes.add(where, f"{model_id} is served by pods of InferencePools {_names(in_pools)}; "
                                      f"the topology gives a model one pool: {pool}")
            if aliases[model_id]:
                self.notes.add(where, f"its pods also serve {_names(sorted(aliases[model_id]))} under other names; "
                                      f"only {model_id} is written")
            self.pods_of[model_id] = list({e.pod.metadata.name: e.pod for e in entries if e.pool == pool}.values())
            models.append({"id": model_id, "pool": pool})
        for i, model in enumerate(models):
            pods = self.pods_of[model["id"]]
            others = [p for other, pods_of in self.pods_of.items() if other != model["id"] for p in pods_of]
            release, replicas = self.release_and_replicas(i, pods)
            models[i] = {"id": model["id"], "release": release, "pool": model["pool"],
                         "podLabels": self.pod_labels(i, model["id"], pods, others), "replicas": replicas,
                         "weight": 1, "gpusPerPod": self.gpus(i, pods)}
            self.notes.add(("models", i, "weight"), "share of the suite's request mix, not in the cluster: equal")
        seen: dict[tuple, str] = {}
        for model in models:
            key = tuple(sorted(model["podLabels"].items()))
            if key in seen:
                raise DiscoveryError(f"the pods of models {seen[key]} and {model['id']} carry the same labels "
                                     f"({label_selector(model['podLabels'])}); the suite tells a model's pods apart "
                                     f"by their labels: give each model's pods a label of its own (llm-d.ai/model)")
            seen[key] = model["id"]
        return models

    def pod_labels(self, index: int, model_id: str, pods: list[client.V1Pod],
                   others: list[client.V1Pod]) -> dict[str, str]:
        """The label that tells this model's pods from the other models', the most telling first."""
        common = dict(pods[0].metadata.labels or {})
        for pod in pods[1:]:
            labels = pod.metadata.labels or {}
            common = {k: v for k, v in common.items() if labels.get(k) == v}
        common = {k: v for k, v in common.items() if k not in VOLATILE_LABELS}
        telling = [k for k, v in common.items() if all((o.metadata.labels or {}).get(k) != v for o in others)]
        ranked = [k for k in MODEL_LABELS if k in telling] + sorted(k for k in telling if k not in MODEL_LABELS)
        if ranked:
            return {ranked[0]: common[ranked[0]]}
        self.notes.add(("models", index, "podLabels"), f"no single label tells the pods of {model_id} from the "
                                                       f"other models' pods; all the labels they share are written")
        return common  # holds the pool's selector at least

    def release_and_replicas(self, index: int, pods: list[client.V1Pod]) -> tuple[str, int]:
        where = ("models", index)
        owners = list({o[1].metadata.name: o for o in (self.owner(p) for p in pods) if o is not None}.values())
        if not owners:
            self.notes.add((*where, "replicas"), f"its pods ({_names(p.metadata.name for p in pods)}) belong to no "
                                                 f"Deployment or StatefulSet: replicas counts the pods answering now")
            instance = (pods[0].metadata.labels or {}).get("app.kubernetes.io/instance")
            if instance:
                return self.release_name(index, instance, "its pods' app.kubernetes.io/instance"), len(pods)
            return self.release_name(index, pods[0].metadata.name, f"pod {pods[0].metadata.name}"), len(pods)
        if len(owners) > 1:
            self.notes.add((*where, "replicas"), f"its pods belong to {_names(o.metadata.name for _, o in owners)}: "
                                                 f"replicas is their sum, release the first one's")
        replicas = sum(o.spec.replicas if o.spec.replicas is not None else 1 for _, o in owners)
        scaled = [h for h in self.autoscalers() for kind, o in owners
                  if (h.spec.scale_target_ref.kind, h.spec.scale_target_ref.name) == (kind, o.metadata.name)]
        if scaled:
            self.notes.add((*where, "replicas"), f"HorizontalPodAutoscaler {_names(h.metadata.name for h in scaled)} "
                                                 f"scales it ({scaled[0].spec.min_replicas or 1} to "
                                                 f"{scaled[0].spec.max_replicas}): replicas is the count now")
        if replicas != len(pods):
            self.notes.add((*where, "replicas"), f"{_names(o.metadata.name for _, o in owners)} want {replicas} "
                                                 f"replica(s); {len(pods)} pod(s) answered /v1/models now")
        kind, owner = owners[0]
        helm = (owner.metadata.annotations or {}).get(HELM_RELEASE)
        if helm:
            return self.release_name(index, helm, ""), replicas
        return self.release_name(index, owner.metadata.name, f"{kind} {owner.metadata.name}"), replicas

    def autoscalers(self) -> list[client.V2HorizontalPodAutoscaler]:
        if self._autoscalers is None:
            api = client.AutoscalingV2Api(self.kube.api_client)
            try:
                self._autoscalers = api.list_namespaced_horizontal_pod_autoscaler(self.ns).items
            except ApiException as exc:
                if exc.status != 404:
                    raise
                self._autoscalers = []  # a cluster without autoscaling/v2 scales nothing by HPA
        return self._autoscalers

    def release_name(self, index: int, name: str, guessed_from: str) -> str:
        """A Helm release name (DNS label of at most 53 characters); `guessed_from` when not Helm's."""
        clean = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:RELEASE].strip("-") or "release"
        if guessed_from or clean != name:
            self.notes.add(("models", index, "release"), f"not installed by Helm: named after {guessed_from}"
                           if guessed_from else f"Helm release {name!r} written as a DNS label")
        return clean

    def gpus(self, index: int, pods: list[client.V1Pod]) -> int:
        gpus, counts = _most_common(pod_gpus(p) for p in pods)
        if len(counts) > 1:
            self.notes.add(("models", index, "gpusPerPod"), "its pods reserve different GPU counts ("
                           + ", ".join(f"{n} pod(s) {g}" for g, n in sorted(counts.items())) + "); the most common")
        if gpus < 1:
            self.notes.add(("models", index, "gpusPerPod"), "its pods reserve no nvidia.com/gpu; 1 is written, "
                                                            "so the GPU checks say so")
            return 1
        return gpus

    def accelerator(self) -> dict:
        pods = [p for pods in self.pods_of.values() for p in pods]
        nodes = [n for n in (self.node(p.spec.node_name) for p in pods) if n is not None]
        labels = [n.metadata.labels or {} for n in nodes]
        # A GPU label the pods select nodes by comes first; then the well-known ones.
        selected = [k for p in pods for k in (p.spec.node_selector or {})
                    if k in ACCELERATOR_LABELS or k.startswith("nvidia.com/")]
        keys = list(dict.fromkeys([*selected, *ACCELERATOR_LABELS]))
        key = next((k for k in keys if labels and all(k in node for node in labels)), None)
        where = ("accelerator",)
        if key is None:
            self.notes.add(where, f"no node of the model pods carries an accelerator label (looked for "
                                  f"{_names(keys)}); set label and value: the GPU placement checks fail until then")
            return {"label": ACCELERATOR_LABELS[0], "value": "none-found", "nodePool": "none-found", "gpuNodes": 1}
        value, counts = _most_common(node[key] for node in labels)
        if len(counts) > 1:
            self.notes.add((*where, "value"), f"the model pods run on nodes with {key} "
                                              + ", ".join(f"{v} ({n})" for v, n in counts.items()) + "; the most common")
        pool_key = next((k for k in NODE_POOL_LABELS if all(k in node for node in labels)), None)
        if pool_key:
            node_pool, pool_counts = _most_common(node[pool_key] for node in labels)
            if len(pool_counts) > 1:
                self.notes.add((*where, "nodePool"), f"the model pods run in node pools {_names(pool_counts)}; "
                                                     f"the most common")
        else:
            node_pool = value
            self.notes.add((*where, "nodePool"), f"no node-pool label on their nodes (looked for "
                                                 f"{_names(NODE_POOL_LABELS)}); named after the accelerator")
        same = self.kube.core.list_node(label_selector=label_selector({key: value})).items
        ready = sum(1 for n in same if node_ready(n) and node_gpus(n) >= 1)
        self.notes.add((*where, "gpuNodes"), f"Ready nodes labelled {key}={value} with a GPU now; the suite "
                                             f"expects at least this many")
        return {"label": key, "value": value, "nodePool": node_pool, "gpuNodes": max(ready, 1)}

    def expectations(self, models: int, gpu_nodes: int) -> dict:
        distinct = models <= gpu_nodes
        self.notes.add(("expectations",), "the suite's demands, not read from the cluster: the defaults of "
                                          "manifests/topologies/pattern2.yaml")
        if not distinct:
            self.notes.add(("expectations", "distinctGpuNodesPerModel"),
                           f"{models} models on {gpu_nodes} GPU node(s) cannot each have their own nodes")
        return {"distinctGpuNodesPerModel": distinct, "routing": dict(ROUTING_DEFAULTS)}

    # -- BBR and routes -------------------------------------------------------------------------

    def bbr(self, header: str | None) -> dict | None:
        """The body-based router: header the rules match, its Service and port, checked against its flags."""
        routers = [(d, c) for d in self.kube.apps.list_namespaced_deployment(self.ns).items
                   for c in d.spec.template.spec.containers if BBR_IMAGE.search(c.image or "")]
        if not routers:
            if header:
                self.notes.add(("bbr",), f"the rules match on {header}, but no body-based router runs in {self.ns} "
                                         f"(looked for images bbr, body-based-router, payload-processor); its "
                                         f"Service and port are the GIE chart's defaults")
                return {"header": header}
            return None
        deployment, container = routers[0]
        sets = bbr_headers(container.args or [])
        if len(routers) > 1:
            self.notes.add(("bbr",), f"several body-based routers run ({_names(d.metadata.name for d, _ in routers)}); "
                                     f"the first is written")
        if header is None:
            header = sets[0]
            self.notes.add(("bbr", "header"), f"no route rule matches on a header; {deployment.metadata.name} "
                                              f"sets {header}")
        elif header.lower() not in {h.lower() for h in sets}:
            self.notes.add(("bbr", "header"), f"{deployment.metadata.name} sets {_names(sets)}, not {header}: the "
                                              f"rules matching on it never match")
        pod_labels = deployment.spec.template.metadata.labels or {}
        services = [s for s in self.kube.core.list_namespaced_service(self.ns).items
                    if s.spec.selector and all(pod_labels.get(k) == v for k, v in s.spec.selector.items())]
        if not services:
            self.notes.add(("bbr",), f"no Service selects the pods of {deployment.metadata.name}; the GIE chart's "
                                     f"Service name and port are assumed")
            return {"header": header}
        service = services[0]
        ports = service.spec.ports or []
        grpc = [p for p in ports if (p.app_protocol or "").lower() in ("http2", "kubernetes.io/h2c", "grpc")
                or "grpc" in (p.name or "")]
        port = (grpc or ports)[0].port
        if len(services) > 1 or (len(ports) > 1 and not grpc):
            self.notes.add(("bbr", "service"), f"Services {_names(s.metadata.name for s in services)} select BBR's "
                                               f"pods; {service.metadata.name} port {port} is taken")
        return {"header": header, "service": service.metadata.name, "port": port}

    def topology_routes(self, raw: list[RawRule], pools: dict[str, dict], models: list[dict],
                        header: str | None) -> list[dict]:
        model_pool = {m["id"]: m["pool"] for m in models}
        routes: dict[str, list[dict]] = {}
        for rule in raw:
            where = f"HTTPRoute {rule.route} rule {rule.index}"
            if rule.pool not in pools:
                continue  # noted with the pool
            for model in dict.fromkeys(rule.models):
                if model is None:
                    entry = {"pool": rule.pool}
                elif model not in model_pool:
                    self.notes.add(("routes",), f"{where} matches {header}: {model}, which no pod of the pools "
                                                f"serves; left out")
                    continue
                elif model_pool[model] != rule.pool:
                    self.notes.add(("routes",), f"{where} sends {model} to {rule.pool}, whose pods do not serve "
                                                f"it ({model_pool[model]}'s do); left out")
                    continue
                else:
                    entry = {"model": model, "pool": rule.pool}
                rules = routes.setdefault(rule.route, [])
                if any(r.get("model") == entry.get("model") for r in rules):
                    self.notes.add(("routes",), f"{where} repeats a match of an earlier rule; left out")
                    continue
                rules.append(entry)
        if not routes:
            raise DiscoveryError("no route rule sends to a model the pools serve:\n"
                                 + "\n".join(f"  {t}" for ts in self.notes.at.values() for t in ts))
        return [{"name": name, "rules": rules} for name, rules in routes.items()]


def bbr_headers(args: list[str]) -> list[str]:
    """Headers a GIE BBR sets, from its --plugin flags (type:name[:json]); none given: the defaults."""
    plugins = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--plugin"]
    plugins += [a.split("=", 1)[1] for a in args if a.startswith("--plugin=")]
    if not plugins:
        return [MODEL_HEADER, BASE_MODEL_HEADER]
    headers = []
    for plugin in plugins:
        kind, _, rest = plugin.partition(":")
        config = rest.partition(":")[2]
        if kind == "body-field-to-header":
            try:
                headers.append(json.loads(config).get("headerName") or MODEL_HEADER)
            except (ValueError, AttributeError):
                headers.append(MODEL_HEADER)
        elif kind == "base-model-to-header":
            headers.append(BASE_MODEL_HEADER)
    return headers or [MODEL_HEADER]


# -- writing YAML with comments ---------------------------------------------------------------------

def render(doc: dict, notes: Notes, header: list[str]) -> str:
    out = [f"# {line}" for text in header for line in textwrap.wrap(text, WIDTH - 2)]
    _mapping(doc, (), 0, out, notes, item=False)
    return "\n".join(out) + "\n"


def _comments(texts: list[str] | None, pad: str, out: list[str]) -> None:
    for text in texts or []:
        out += [f"{pad}# {line}" for line in textwrap.wrap(text, max(40, WIDTH - len(pad) - 2))]


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False).strip().removesuffix(
        "...").strip()


def _inline(value: Any, key: Any, notes: Notes, path: Where) -> bool:
    if not isinstance(value, (dict, list)) or not value:
        return True
    nested = any(p[:len(path)] == path and len(p) > len(path) for p in notes.at)
    scalars = all(not isinstance(v, (dict, list)) for v in (value.values() if isinstance(value, dict) else value))
    return key in FLOW_KEYS and scalars and not nested


def _mapping(mapping: dict, path: Where, indent: int, out: list[str], notes: Notes, item: bool) -> None:
    pad = " " * indent
    for n, (key, value) in enumerate(mapping.items()):
        here = (*path, key)
        lead = " " * (indent - 2) + "- " if item and n == 0 else pad
        if not (item and n == 0):  # the first key's comments go above the "- "
            _comments(notes.at.get(here), pad, out)
        if _inline(value, key, notes, here):
            out.append(f"{lead}{key}: {_scalar(value)}")
        elif isinstance(value, dict):
            out.append(f"{lead}{key}:")
            _mapping(value, here, indent + 2, out, notes, item=False)
        else:
            out.append(f"{lead}{key}:")
            _sequence(value, here, indent + 2, out, notes)


def _sequence(items: list, path: Where, indent: int, out: list[str], notes: Notes) -> None:
    pad = " " * indent
    for i, value in enumerate(items):
        here = (*path, i)
        first = (*here, next(iter(value))) if isinstance(value, dict) and value else None
        _comments((notes.at.get(here) or []) + (notes.at.get(first) or []), pad, out)
        if isinstance(value, dict) and value:
            _mapping(value, here, indent + 2, out, notes, item=True)
        else:
            out.append(f"{pad}- {_scalar(value)}")


# -- command line -----------------------------------------------------------------------------------

def discover(kube: Kube, namespace: str, gateway: str | None = None, name: str = "discovered",
             context: str | None = None) -> tuple[str, Notes]:
    """The topology of the deployment behind one Gateway, as YAML with comments, loaded back to prove it valid."""
    discovery = Discovery(kube, namespace, gateway)
    doc = discovery.topology(name, context)
    header = [f"Discovered by `python -m llmd_conformance discover` from namespace {namespace}"
              + (f", context {context}" if context else "") + ". A comment marks what the cluster could not say "
              "or what was chosen among several candidates: check those before relying on the verdicts."]
    text = render(doc, discovery.notes, header)
    try:
        parse_topology(text, Path(f"{name}.yaml"))
    except TopologyError as exc:
        raise DiscoveryError(f"discovery wrote a topology its loader refuses (a discovery bug; please report it "
                             f"with this text):\n{exc}\n---\n{text}") from None
    return text, discovery.notes


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("discover", help="read a live deployment and print its topology YAML",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: its current-context)")
    parser.add_argument("--namespace", required=True, help="namespace of the Gateway, HTTPRoutes and InferencePools")
    parser.add_argument("--gateway", default=None, help="Gateway to describe (needed when the namespace has several)")
    parser.add_argument("--name", default="discovered", help="topology name (default: discovered); reports are named "
                                                             "after it")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write here instead of standard output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", args.name) or len(args.name) > LABEL:
        print(f"discover: error: --name {args.name!r} is not a DNS-1123 label (lowercase letters, digits, '-')",
              file=sys.stderr)
        return 2
    try:
        kube = connect(args.kubeconfig, args.context)  # checks the file and context before any API call
        text, notes = discover(kube, args.namespace, args.gateway, args.name, args.context)
    except (KubeError, DiscoveryError) as exc:
        print(f"discover: error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"discover: error: the API server answered HTTP {exc.status} {exc.reason}: {str(exc.body)[:300]}; "
              f"discovery needs get and list on Gateways, HTTPRoutes, InferencePools, Services, Pods, pods/proxy, "
              f"ReplicaSets, Deployments, StatefulSets and Nodes", file=sys.stderr)
        return 1
    except urllib3.exceptions.HTTPError as exc:
        print(f"discover: error: cannot reach the API server: {exc}; check --kubeconfig and --context",
              file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    print(f"discover: topology {args.name}{f' written to {args.output}' if args.output else ''}; {len(notes)} "
          f"comment(s) mark guesses and choices", file=sys.stderr)
    return 0
