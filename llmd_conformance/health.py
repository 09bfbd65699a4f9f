"""The components behind each model at one moment — its pool's EPP, its backends, the body-based
router (BBR) — and the diagnosis of gateway errors from two such moments.

`read_health(kube, topology)` lists the namespace's Pods, Services and EndpointSlices once (three
API calls) and works out, per component: its pods (Ready? restarts?) and its Service's ready
endpoints. The routing check reads it before its traffic and again when the answers hold gateway
errors or timeouts; `diagnose_errors` compares the two and names, for each affected model, the
component that was not Ready, restarted, was replaced or lost its endpoints during the run.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmd_conformance.kube import pod_ready, to_plain
from llmd_conformance.traffic import Outcome, RequestResult

if TYPE_CHECKING:
    from llmd_conformance.kube import Kube
    from llmd_conformance.topology import Topology

# The local target's pod runner counts a restarted process here: kwok, its kubelet, keeps restartCount at 0.
RESTARTS_ANNOTATION = "llmd.local/restarts"
ERRORS = (Outcome.GATEWAY_ERROR, Outcome.TIMEOUT)
UNKNOWN_MODELS = "(unknown model names)"


@dataclass(frozen=True)
class PodState:
    name: str
    uid: str
    ready: bool
    restarts: int
    waiting: str | None = None  # a container's waiting reason, e.g. CrashLoopBackOff


@dataclass(frozen=True)
class Component:
    label: str  # e.g. "EPP of pool gaie-gemma (Service gaie-gemma-epp)"
    pods: tuple[PodState, ...]
    service: str | None = None
    ready_endpoints: int | None = None  # of the Service; None when the component has none
    missing: str | None = None  # why it could not be found at all


@dataclass(frozen=True)
class Health:
    epp: dict[str, Component] = field(default_factory=dict)  # pool name ->
    backends: dict[str, Component] = field(default_factory=dict)  # model id ->
    bbr: Component | None = None
    error: str | None = None  # the cluster could not be read: why


@dataclass(frozen=True)
class NamespaceState:
    """Pods, Services and EndpointSlices of one namespace, as plain dicts (kubectl's camelCase)."""

    pods: list[dict]
    services: list[dict]
    slices: list[dict]

    @classmethod
    def read(cls, kube: Kube, namespace: str) -> NamespaceState:
        services = [to_plain(s) for s in kube.core.list_namespaced_service(namespace).items]
        return cls([to_plain(p) for p in kube.core.list_namespaced_pod(namespace).items], services,
                   [to_plain(s) for s in kube.discovery.list_namespaced_endpoint_slice(namespace).items])

    def pods_with(self, labels: Mapping[str, str]) -> list[dict]:
        return [p for p in self.pods if _matches(labels, _meta(p).get("labels"))]

    def service(self, name: str) -> dict | None:
        return next((s for s in self.services if _meta(s).get("name") == name), None)

    def ready_endpoints(self, service: str) -> int:
        """Distinct ready addresses in the Service's EndpointSlices (a missing `ready` means ready)."""
        addresses = set()
        for endpoint_slice in self.slices:
            if (_meta(endpoint_slice).get("labels") or {}).get("kubernetes.io/service-name") != service:
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is not False:
                    addresses.update(endpoint.get("addresses") or [])
        return len(addresses)


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def _matches(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """An empty selector matches nothing here: a Service without one has no pods of its own."""
    labels = labels or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_state(pod: Mapping) -> PodState:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    counted = sum(int(s.get("restartCount") or 0) for s in statuses)
    annotated = int((_meta(pod).get("annotations") or {}).get(RESTARTS_ANNOTATION) or 0)
    waiting = next((s["state"]["waiting"].get("reason") for s in statuses
                    if (s.get("state") or {}).get("waiting")), None)
    # max, not sum: a target that kept both counts would otherwise count each restart twice
    return PodState(_meta(pod).get("name", "?"), _meta(pod).get("uid", ""), pod_ready(pod), max(counted, annotated),
                    waiting)


def _service_component(state: NamespaceState, label: str, name: str) -> Component:
    service = state.service(name)
    if service is None:
        return Component(label, (), name, None, f"Service {name} does not exist")
    pods = state.pods_with((service.get("spec") or {}).get("selector"))
    return Component(label, tuple(pod_state(p) for p in pods), name, state.ready_endpoints(name))


def health_of(topology: Topology, state: NamespaceState) -> Health:
    epp = {pool.name: _service_component(state, f"EPP of pool {pool.name} (Service {pool.epp_service})",
                                         pool.epp_service)
           for pool in topology.pools}
    backends = {model.id: Component(f"backends of {model.id}",
                                    tuple(pod_state(p) for p in state.pods_with(topology.model_selector(model.id))))
                for model in topology.models}
    bbr = (_service_component(state, f"BBR (Service {topology.bbr_service})", topology.bbr_service)
           if topology.bbr_service else None)
    return Health(epp, backends, bbr)


def read_health(kube: Kube, topology: Topology) -> Health:
    """The components now; a cluster that cannot be read gives a Health saying why, never an exception,
    so that reading it never hides the routing verdict."""
    try:
        return health_of(topology, NamespaceState.read(kube, topology.namespace))
    except Exception as exc:  # noqa: BLE001 (any client, network or fake failure is evidence, not a crash)
        return Health(error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


def faults(before: Component | None, after: Component) -> list[str]:
    """What is wrong with a component now, or went wrong since `before` (None: no earlier look)."""
    if after.missing:
        return [after.missing]
    found = [] if after.pods else ["no pod"]
    earlier = {p.uid: p for p in before.pods} if before is not None else {}
    for pod in after.pods:
        if not pod.ready:
            found.append(f"pod {pod.name} not Ready" + (f" ({pod.waiting})" if pod.waiting else ""))
        old = earlier.get(pod.uid)
        if before is None:
            if pod.restarts:
                found.append(f"pod {pod.name} restarted {pod.restarts} time(s) (no earlier look to date them)")
        elif old is None:
            found.append(f"pod {pod.name} started during the run")
        elif pod.restarts > old.restarts:
            found.append(f"pod {pod.name} restarted {pod.restarts - old.restarts} time(s) during the run")
    now = {p.uid for p in after.pods}
    found += [f"pod {p.name} went away during the run" for uid, p in earlier.items() if uid not in now]
    if after.ready_endpoints == 0:
        found.append(f"Service {after.service} has no ready endpoint")
    return found


def _status_counts(results: Iterable[RequestResult]) -> str:
    counts = Counter("timeout" if r.outcome is Outcome.TIMEOUT else str(r.status) for r in results)
    return ", ".join(f"{n} × {status}" for status, n in counts.most_common())


def diagnose_errors(topology: Topology, results: Sequence[RequestResult], before: Health, after: Health) -> str | None:
    """For each model whose requests met gateway errors or timeouts: the likely component and its
    evidence, with the components that looked healthy; None when there were no such answers."""
    errors = [r for r in results if r.outcome in ERRORS]
    if not errors:
        return None
    by_model: dict[str, list[RequestResult]] = defaultdict(list)
    served = {m.id for m in topology.models}
    for r in errors:
        by_model[r.spec.model if r.spec.model in served else UNKNOWN_MODELS].append(r)
    head = f"{len(errors)} gateway error(s)/timeout(s) in {len(results)} requests"
    if after.error:
        return f"{head}; the cluster state could not be read to name a component: {after.error}"
    parts = []
    every_model_failed = served <= by_model.keys()
    for model, failed in sorted(by_model.items()):
        candidates: list[tuple[Component | None, Component | None]] = []
        if model in served:
            pool = topology.model(model).pool
            candidates += [(before.epp.get(pool), after.epp[pool]), (before.backends.get(model), after.backends[model])]
        bbr = (before.bbr, after.bbr)
        # BBR serves every model: errors on all of them point at it before any one pool.
        candidates.insert(0 if every_model_failed else len(candidates), bbr)
        judged = [(now, faults(earlier, now)) for earlier, now in candidates if now is not None]
        faulty = [(c, f) for c, f in judged if f]
        healthy = [c.label for c, f in judged if not f]
        line = f"{model} ({_status_counts(failed)}): "
        if faulty:
            line += "likely the " + "; also the ".join(f"{c.label}: {', '.join(f)}" for c, f in faulty)
        elif all(r.outcome is Outcome.TIMEOUT for r in failed):
            line += ("no component shows a fault (Ready, no restart, endpoints present): the answers were slower "
                     "than the request timeout, from a slow backend or gateway")
        else:
            line += ("no component shows a fault (Ready, no restart, endpoints present); look at the answers below, "
                     "the HTTPRoute's status and the gateway's logs in the diagnostics bundle")
        if healthy and faulty:
            line += f" (healthy: {', '.join(healthy)})"
        parts.append(line)
    earlier = f"; no look before the run ({before.error}), so restarts are not dated" if before.error else ""
    return f"{head}{earlier}: " + " | ".join(parts)

