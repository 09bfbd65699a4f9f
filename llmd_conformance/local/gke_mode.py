"""GKE mode of the local gateway: what GKE's managed Gateway writes and serves (FACTS §9), so the
gke gateway profile's checks run against it without a GKE cluster.

The controller (gateway.py) creates GatewayClass `llmd-local-gke` with GKE's controllerName
`networking.gke.io/gateway` and reconciles its Gateways as it does its own, except:

- HTTPRoute parents carry GKE's three conditions: Accepted, ResolvedRefs and `Reconciled`
  (ReconciliationSucceeded). A pool without ready endpoints gives Reconciled=False
  ReconciliationFailed while Accepted and ResolvedRefs stay True (GIE issues #806, #846); a
  missing EPP Service gives ResolvedRefs=False BackendNotFound with GKE's GWCER104 message
  (GIE PR #1131). Messages for which no GKE code is documented carry `GWCER-LOCAL`.
- InferencePool parents carry Accepted, and ResolvedRefs only when it is False: no source shows
  GKE writing ResolvedRefs=True on a healthy pool, so this mode writes the least GKE may.
- The data plane is programmed only `programming_delay` seconds after the controller takes the
  Gateway (annotation llmd.local/gke-programming-delay, default timing.gke_local_programming_delay);
  until then every request gets 404 `fault filter abort` although the status already says
  Programmed with an address, as while GKE's load balancer propagates. (No source says when GKE
  sets Programmed; True at once is the harder case for a suite: only the answers tell.)
- Body-based routing comes only from a GCPRoutingExtension targeting the Gateway (the llmd.local
  annotation is ignored); a backendRef Service without that port with appProtocol HTTP2 makes the
  Gateway Programmed=False. Without a HealthCheckPolicy on that Service, GKE's default HTTP
  health check fails against gRPC, so BBR gets no healthy endpoint.
- A rule whose backend cannot be resolved answers 500 `fault filter abort` (GIE's troubleshooting
  guide).

GKE's own CRDs are stood in for by manifests/gke-stand-ins/ (GCPRoutingExtension,
HealthCheckPolicy, GCPBackendPolicy: what the GIE charts render with provider.name=gke), installed
when the local cluster starts; real GKE supplies its own.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from llmd_conformance import timing
from llmd_conformance.local import envoy as ev

CONTROLLER_NAME = "networking.gke.io/gateway"
GATEWAY_CLASS_NAME = "llmd-local-gke"
DELAY_ANNOTATION = "llmd.local/gke-programming-delay"
GROUP, VERSION = "networking.gke.io", "v1"
ROUTING_EXTENSIONS = "gcproutingextensions"
HEALTH_CHECK_POLICIES = "healthcheckpolicies"
FAULT_FILTER_ABORT = "fault filter abort"  # the body of Envoy's fault filter, which GKE's proxies answer with
EXTENSION_APP_PROTOCOL = "HTTP2"


def programming_delay(gateway: dict) -> tuple[float, str | None]:
    """Seconds from taking the Gateway to serving its routes, and why the annotation is invalid."""
    raw = (gateway["metadata"].get("annotations") or {}).get(DELAY_ANNOTATION)
    if raw is None:
        return timing.DEFAULT.gke_local_programming_delay, None
    try:
        delay = float(raw)
    except ValueError:
        delay = -1.0
    if not 0 <= delay < float("inf"):
        return (timing.DEFAULT.gke_local_programming_delay,
                f"annotation {DELAY_ANNOTATION} must be seconds >= 0, found {raw!r}")
    return delay, None


class ProgrammingClock:
    """Which GKE-mode Gateways are still within their programming delay, counted from when the
    controller first took each (by uid: a Gateway deleted and created again waits again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._taken: dict[str, float] = {}
        self.waiting: frozenset[tuple[str, str]] = frozenset()

    def update(self, gateways: list[dict]) -> tuple[frozenset[tuple[str, str]], list[tuple[str, str]]]:
        """(the Gateways still waiting, those whose delay ended since the last call); forgets the others."""
        now, taken, waiting = self._clock(), {}, set()
        for gw in gateways:
            meta = gw["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            uid = meta.get("uid") or "/".join(key)
            taken[uid] = self._taken.get(uid, now)
            if now - taken[uid] < programming_delay(gw)[0]:
                waiting.add(key)
        ended = sorted(k for k in self.waiting - waiting if any(
            (g["metadata"].get("namespace", ""), g["metadata"]["name"]) == k for g in gateways))
        self._taken, self.waiting = taken, frozenset(waiting)
        return self.waiting, ended


def not_programmed_hosts() -> tuple[ev.VirtualHost, ...]:
    """What a listener serves before its load balancer is programmed: 404 `fault filter abort` to everything."""
    route = ev.Route("gke/not-yet-programmed", ev.Match(), ev.DirectResponse(404, FAULT_FILTER_ABORT))
    return (ev.VirtualHost("*", ("*",), (route,)),)


def as_served(hosts: tuple[ev.VirtualHost, ...]) -> tuple[ev.VirtualHost, ...]:
    """Our descriptive 500s for unresolvable backends become GKE's bare `fault filter abort`."""
    def served(route: ev.Route) -> ev.Route:
        b = route.backend
        if isinstance(b, ev.DirectResponse) and b.status == 500:
            return ev.Route(route.name, route.match, ev.DirectResponse(500, FAULT_FILTER_ABORT))
        return route
    return tuple(ev.VirtualHost(h.name, h.domains, tuple(served(r) for r in h.routes)) for h in hosts)


def extension_for(extensions: list[dict], namespace: str, gateway: str) -> dict | None:
    """The GCPRoutingExtension of the Gateway's namespace that targets it (the oldest when several do)."""
    def targets(ext: dict) -> bool:
        return any((t.get("group") or "") == "gateway.networking.k8s.io" and t.get("kind") == "Gateway"
                   and t.get("name") == gateway for t in (ext.get("spec") or {}).get("targetRefs") or [])
    found = [e for e in extensions if e["metadata"].get("namespace") == namespace and targets(e)]
    return min(found, key=lambda e: e["metadata"].get("creationTimestamp") or "", default=None)


def extension_backend(ext: dict) -> dict | None:
    """The backendRef of the extension's first extension (the GIE BBR chart renders one)."""
    for chain in (ext.get("spec") or {}).get("extensionChains") or []:
        for extension in chain.get("extensions") or []:
            if extension.get("backendRef"):
                return extension["backendRef"]
    return None


def extension_problem(ext: dict, ref: dict | None, service: dict | None) -> str | None:
    """Why GKE would not program this extension (the Gateway's Programmed=False message)."""
    ns, name = ext["metadata"].get("namespace"), ext["metadata"]["name"]
    where = f"GCPRoutingExtension {ns}/{name}"
    if ref is None:
        return f"{where} has no extension with a backendRef"
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return f"{where}: backendRef {ref.get('group')}/{ref.get('kind')} {ref.get('name')} is not a Service"
    if service is None:
        return f"{where}: Service {ns}/{ref.get('name')} not found"
    ports = (service.get("spec") or {}).get("ports") or []
    if not any(p.get("port") == ref.get("port") and p.get("appProtocol") == EXTENSION_APP_PROTOCOL for p in ports):
        return (f"{where}: Service {ns}/{ref.get('name')} does not have port {ref.get('port')} with protocol "
                f"{EXTENSION_APP_PROTOCOL}")
    return None


def has_health_check_policy(policies: list[dict], namespace: str, service: str) -> bool:
    return any(p["metadata"].get("namespace") == namespace
               and ((p.get("spec") or {}).get("targetRef") or {}).get("kind") == "Service"
               and ((p.get("spec") or {}).get("targetRef") or {}).get("name") == service for p in policies)


def route_conditions(route_key: tuple[str, str], ref_problems: list[tuple[str, str]],
                     missing_epps: list[str], unready_pools: list[str]) -> list[tuple[str, bool, str, str]]:
    """ResolvedRefs and Reconciled of one parent entry, as (type, status, reason, message).

    ref_problems: (reason, message) of backendRefs that do not resolve; missing_epps: EPP Services
    (namespace/name) of the referenced pools that do not exist; unready_pools: referenced pools
    (namespace/name) with no ready endpoint."""
    route = f'HTTPRoute "{route_key[0]}/{route_key[1]}" is misconfigured, err: '
    if ref_problems:
        resolved = (False, ref_problems[0][0], "; ".join(m for _, m in ref_problems))
    elif missing_epps:
        resolved = (False, "BackendNotFound", "; ".join(
            f"error cause: reference-not-found: Error GWCER104: {route}failed to validate inference pool "
            f"extension ref: InferencePool extension service {svc.split('/')[1]} not found." for svc in missing_epps))
    else:
        resolved = (True, "ResolvedRefs", "")
    failures = ([m for _, m in ref_problems] + [f"missing Service {svc}" for svc in missing_epps]
                + [f"InferencePool {pool} has no ready endpoints (no Ready Pod matches its selector)"
                   for pool in unready_pools])
    reconciled = ((False, "ReconciliationFailed", f"Error GWCER-LOCAL: {route}" + "; ".join(failures)) if failures
                  else (True, "ReconciliationSucceeded", ""))
    return [("ResolvedRefs", *resolved), ("Reconciled", *reconciled)]
