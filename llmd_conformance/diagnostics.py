"""The diagnostics bundle of a failed run: what the cluster looked like when the checks failed.

`collect()` writes into `<report dir>/diagnostics/`, through the Kubernetes API only (so it works
on every target): the namespace's events, the YAML of its Gateways, HTTPRoutes, InferencePools,
Deployments, Pods, Services and EndpointSlices, the logs of every pod's containers (the previous
container's too when one restarted), the gateway's address and status, and `index.yaml` saying why
it was collected, what each file is, which pods are the EPPs and BBR, and every problem met on
the way. Secrets are never read; env values in pod specs are masked, and every file goes through
llmd_conformance.redact. A failure while collecting one part is noted in the index and the rest
is still collected; only a folder that cannot be written at all raises.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes.client import ApiException

from llmd_conformance import health
from llmd_conformance.kube import GATEWAY_GROUP, GATEWAY_VERSION, to_plain, url_for
from llmd_conformance.redact import MASK, redact

if TYPE_CHECKING:
    from llmd_conformance.kube import Kube
    from llmd_conformance.topology import Topology

FOLDER = "diagnostics"
INDEX = "index.yaml"
KIND = "llm-d conformance diagnostics"  # marks a folder as ours: only ours is ever replaced
LOG_TAIL_LINES = 5000
# The whole collection, so that an API server that hangs cannot hold the run (and its teardown) long.
BUDGET_SECONDS = 120.0
# Annotations that repeat a whole spec, env values included.
SPEC_COPIES = ("kubectl.kubernetes.io/last-applied-configuration",)


class Bundle:
    """The files written so far, their descriptions, and the problems met; writes redacted text only."""

    def __init__(self, folder: Path, budget: float):
        self.folder = folder
        self.deadline = time.monotonic() + budget
        self.budget = budget
        self.files: dict[str, str] = {}
        self.problems: list[str] = []

    def write(self, relative: str, text: str, what: str) -> None:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact(text))
        self.files[relative] = what

    def attempt(self, what: str, action: Callable[[], Any]) -> Any:
        """Run one part; on any failure note it and return None, so the next part still runs."""
        if time.monotonic() > self.deadline:
            self.problems.append(f"{what}: skipped, the collection's {self.budget:g}s budget was spent")
            return None
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 (a collection problem is noted, never raised over a test result)
            self.problems.append(f"{what}: {describe_error(exc)}")
            return None


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return redact(f"HTTP {exc.status} {exc.reason}: {' '.join(str(exc.body or '').split())[:300]}")
    return redact(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def mask_env(obj: Any) -> Any:
    """A copy with every container env `value` masked (valueFrom references stay: they name, not hold)
    and the managedFields and whole-spec annotations dropped, wherever they sit (pods, pod templates)."""
    if isinstance(obj, list):
        return [mask_env(item) for item in obj]
    if not isinstance(obj, Mapping):
        return obj
    copy = {}
    for key, value in obj.items():
        if key == "managedFields":
            continue
        if key == "env" and isinstance(value, list):
            value = [{**e, "value": MASK} if isinstance(e, Mapping) and "value" in e else e for e in value]
        elif key == "annotations" and isinstance(value, Mapping):
            value = {k: (MASK if k in SPEC_COPIES else v) for k, v in value.items()}
        copy[key] = mask_env(value)
    return copy


def as_list_yaml(items: Sequence[Any]) -> str:
    """`kubectl get -o yaml` shape: a v1 List."""
    plain = [mask_env(to_plain(item)) for item in items]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": plain}, sort_keys=False)


def event_lines(events: Sequence[Any]) -> str:
    """One line per event, oldest first: time, type, reason, object, count, message."""
    plain = [to_plain(e) for e in events]

    def when(event: Mapping) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    lines = []
    for event in sorted(plain, key=when):
        involved = event.get("involvedObject") or {}
        lines.append(f"{when(event) or '-'} {event.get('type', '?')} {event.get('reason', '?')} "
                     f"{involved.get('kind', '?')}/{involved.get('name', '?')} x{event.get('count') or 1}: "
                     f"{' '.join(str(event.get('message') or '').split())}")
    return "\n".join(lines) + "\n" if lines else "(no events)\n"


def fresh_folder(folder: Path) -> None:
    """An empty bundle folder; a previous bundle of ours is replaced, anything else is left alone."""
    if folder.exists():
        index = folder / INDEX
        ours = index.is_file() and (yaml.safe_load(index.read_text()) or {}).get("kind") == KIND
        if not ours:
            raise OSError(f"{folder} exists and is not a diagnostics bundle of this suite; not replaced "
                          f"(move it away or pass another --report-dir)")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def collect(report_dir: Path, topology: Topology, connect: Callable[[], Kube], *, why: Sequence[str],
            target: str, gateway_url: str | None, budget: float = BUDGET_SECONDS) -> Path:
    """Write the bundle into `<report_dir>/diagnostics/` and return that folder.

    `connect` makes the clients (its failure is a noted problem: a target whose setup failed may
    have no cluster); `why` names the failed tests or the setup failure; `target` describes the target.
    """
    folder = report_dir / FOLDER
    fresh_folder(folder)
    bundle = Bundle(folder, budget)
    started = time.monotonic()
    namespace = topology.namespace
    kube = bundle.attempt("connecting to the cluster", connect)
    components: dict[str, Any] = {}
    address = None
    if kube is not None:
        components, address = _collect_cluster(bundle, kube, topology)
    if gateway_url is None and address:  # targets that read it from the Gateway's status, as the checks do
        gateway_url = url_for(address, topology.listener_port)
    logs = report_dir / "logs"
    index = {
        "kind": KIND,
        "collected": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "why": list(why),
        "target": target,
        "topology": topology.name,
        "namespace": namespace,
        "gateway": {"name": topology.gateway_name, "url": gateway_url},
        "files": dict(sorted(bundle.files.items())),
        "components": components,
        "problems": bundle.problems,
    }
    if logs.is_dir():  # the local target writes every process's log there, which its pods' log API cannot serve
        index["targetLogs"] = f"{logs} (this target's own process logs)"
    (folder / INDEX).write_text(redact(yaml.safe_dump(index, sort_keys=False, width=200)))
    return folder


def _collect_cluster(bundle: Bundle, kube: Kube, topology: Topology) -> tuple[dict[str, Any], str | None]:
    """Every part of the bundle that reads the cluster; returns the index's component table and the
    Gateway's first address."""
    ns = topology.namespace
    lists: dict[str, Callable[[], list]] = {
        "gateways": lambda: kube.list_gateway_objects(ns, "gateways"),
        "httproutes": lambda: kube.list_gateway_objects(ns, "httproutes"),
        "inferencepools": lambda: kube.list_pools(ns),
        "deployments": lambda: kube.apps.list_namespaced_deployment(ns).items,
        "pods": lambda: kube.core.list_namespaced_pod(ns).items,
        "services": lambda: kube.core.list_namespaced_service(ns).items,
        "endpointslices": lambda: kube.discovery.list_namespaced_endpoint_slice(ns).items,
    }
    read: dict[str, list] = {}
    for name, listing in lists.items():
        items = bundle.attempt(f"listing {name} in {ns}", listing)
        if items is not None:
            read[name] = items
            bundle.write(f"objects/{name}.yaml", as_list_yaml(items), f"{name} in namespace {ns} ({len(items)})")
    events = bundle.attempt(f"listing events in {ns}", lambda: kube.core.list_namespaced_event(ns).items)
    if events is not None:
        bundle.write("events.txt", event_lines(events), f"events in namespace {ns}, oldest first ({len(events)})")
    address = None
    if "gateways" in read:
        address = bundle.attempt("gateway status", lambda: _gateway_status(bundle, kube, topology, read["gateways"]))
    pods = [to_plain(p) for p in read.get("pods", [])]
    log_files = {}
    for pod in pods:
        log_files.update(_pod_logs(bundle, kube, ns, pod))
    if not {"pods", "services", "endpointslices"} <= read.keys():
        return {}, address
    state = health.NamespaceState(pods, [to_plain(s) for s in read["services"]],
                                  [to_plain(s) for s in read["endpointslices"]])
    return _components(health.health_of(topology, state), log_files), address


def _gateway_status(bundle: Bundle, kube: Kube, topology: Topology, gateways: list[dict]) -> str | None:
    gateway = next((g for g in gateways if (g.get("metadata") or {}).get("name") == topology.gateway_name), None)
    if gateway is None:
        names = [(g.get("metadata") or {}).get("name") for g in gateways]
        bundle.problems.append(f"gateway status: Gateway {topology.gateway_name} not in {topology.namespace} "
                               f"(Gateways there: {names or 'none'})")
        return None
    class_name = (gateway.get("spec") or {}).get("gatewayClassName")
    controller = None
    if class_name:
        gateway_class = bundle.attempt(
            f"reading GatewayClass {class_name}",
            lambda: kube.custom.get_cluster_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, "gatewayclasses", class_name))
        controller = ((gateway_class or {}).get("spec") or {}).get("controllerName")
    status = gateway.get("status") or {}
    text = yaml.safe_dump({"name": topology.gateway_name, "gatewayClassName": class_name,
                           "controllerName": controller, "addresses": status.get("addresses") or [],
                           "conditions": status.get("conditions") or [], "listeners": status.get("listeners") or []},
                          sort_keys=False)
    bundle.write("gateway.yaml", text, f"Gateway {topology.gateway_name}: class, controller, addresses, status")
    return next((a.get("value") for a in status.get("addresses") or [] if a.get("value")), None)


def _pod_logs(bundle: Bundle, kube: Kube, namespace: str, pod: Mapping) -> dict[str, list[str]]:
    """Logs of each container (and of the previous one after a restart); pod name -> files written."""
    name = (pod.get("metadata") or {}).get("name", "?")
    restarted = {s.get("name") for s in (pod.get("status") or {}).get("containerStatuses") or []
                 if s.get("restartCount")}
    written = []
    for container in [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]:
        for previous in (False, True) if container in restarted else (False,):
            text = bundle.attempt(
                f"logs of {name}/{container}{' (previous container)' if previous else ''}",
                lambda c=container, p=previous: kube.core.read_namespaced_pod_log(
                    name, namespace, container=c, previous=p, tail_lines=LOG_TAIL_LINES))
            if text is None:
                continue
            relative = f"logs/{name}/{container}{'.previous' if previous else ''}.log"
            bundle.write(relative, text, f"{'previous' if previous else 'current'} container {container} of pod "
                                         f"{name}, last {LOG_TAIL_LINES} lines")
            written.append(relative)
    return {name: written}


def _components(state: health.Health, log_files: Mapping[str, list[str]]) -> dict[str, Any]:
    """Each EPP, backend set and BBR: its pods with readiness, restarts and log files."""
    parts = [*state.epp.values(), *state.backends.values(), *([state.bbr] if state.bbr else [])]
    return {c.label: {**({"missing": c.missing} if c.missing else {}),
                      **({"readyEndpoints": c.ready_endpoints} if c.ready_endpoints is not None else {}),
                      "pods": {p.name: {"ready": p.ready, "restarts": p.restarts,
                                        **({"waiting": p.waiting} if p.waiting else {}),
                                        "logs": log_files.get(p.name, [])} for p in c.pods}}
            for c in parts}
