"""Gateway profiles: what each gateway implementation writes and answers, as data
(manifests/gateways/<name>.yaml), so that no check knows which implementation it runs against.

A profile is chosen by the `spec.controllerName` of the GatewayClass of the topology's Gateway
(`choose_profile`), or by `--gateway-profile NAME|FILE`; a controller no profile names gets the
strict `reference` profile, with a warning. A profile says, per object kind (Gateway, HTTPRoute,
InferencePool), which status conditions must be True and which must only not be False, among them
the implementation's own (GKE's HTTPRoute `Reconciled`); its condition and warm-up timeouts; the
answers its data plane gives for "no route" and while not yet programmed (`GatewayAnswers`); and how
body-based routing is attached (`extProc`: a filter inside the proxy, seen through the BBR Service's
endpoints; `GCPRoutingExtension`: GKE's objects, checked here by `bbr_attachment_problems`).

Schema (every key but those marked optional is required; unknown keys are errors):

    name: <DNS label>             description: <text>          seenLive: true|false
    controllerNames: [<GatewayClass controllerName>, ...]
    conditions:
      Gateway|HTTPRoute|InferencePool:                          (each optional)
        mustBeTrue: [<type>, ...]          mustNotBeFalse: [<type>, ...]      (each optional)
        implementationOnly: {mustBeTrue: [...], mustNotBeFalse: [...]}       (optional)
    timeouts: {condition: <s>, warmup: <s>}     (optional, each optional; default: llmd_conformance/timing.py)
    answers:
      noRoute: [{status: <int>, body: <text>}, ...]       (body optional: any body)
      notProgrammed: [...]                                 (may be empty)
    bbr: {attachment: extProc|GCPRoutingExtension}

PYTEST_DONT_REWRITE: the assertion messages here are evidence and must read the same whether pytest
loads this package from a checkout or as the installed plugin (which rewrites its whole distribution).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client import ApiException

from llmd_conformance import timing
from llmd_conformance.kube import GATEWAY_GROUP, GATEWAY_VERSION, NOT_FALSE, Kube, refers_to_gateway
from llmd_conformance.topology import REPO, Topology, _Checker, _display, _names, load_strict_yaml
from llmd_conformance.traffic import AnswerPattern, GatewayAnswers

PROFILE_DIR = REPO / "manifests" / "gateways"
STRICT = "reference"  # the profile of a controller no profile names
KINDS = ("Gateway", "HTTPRoute", "InferencePool")
EXT_PROC, GCP_ROUTING_EXTENSION = "extProc", "GCPRoutingExtension"
ATTACHMENTS = (EXT_PROC, GCP_ROUTING_EXTENSION)
GKE_GROUP, GKE_VERSION = "networking.gke.io", "v1"
# metav1.Condition's type: an optional DNS-subdomain prefix and a name.
_CONDITION_TYPE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_STATUS_OF = {"mustBeTrue": "True", "mustNotBeFalse": NOT_FALSE}


class ProfileError(ValueError):
    """A profile that cannot be loaded or chosen; the message says what to fix."""


@dataclass(frozen=True)
class ConditionRule:
    type: str
    status: str  # "True", or kube.NOT_FALSE
    implementation_only: bool

    def describe(self) -> str:
        return f"{self.type}={self.status}" if self.status == "True" else f"{self.type} {self.status}"


@dataclass(frozen=True)
class GatewayProfile:
    name: str
    description: str
    seen_live: bool
    controller_names: tuple[str, ...]
    rules: Mapping[str, tuple[ConditionRule, ...]]  # kind -> rules, every kind present
    answers: GatewayAnswers
    bbr_attachment: str
    source: Path
    condition_timeout: float | None = None  # None: timing's condition
    warmup_timeout: float | None = None  # None: timing's gateway_warmup

    def rule(self, kind: str, condition_type: str) -> ConditionRule | None:
        """The expectation of that condition, or None when the profile does not judge it."""
        return next((r for r in self.rules[kind] if r.type == condition_type), None)

    def condition_seconds(self, explicit: float | None) -> float:
        """--condition-timeout when given, else the profile's, else timing's default."""
        return next(t for t in (explicit, self.condition_timeout, timing.DEFAULT.condition) if t is not None)

    def warmup_seconds(self, explicit: float | None) -> float:
        """--warmup-timeout when given, else the profile's, else timing's default."""
        return next(t for t in (explicit, self.warmup_timeout, timing.DEFAULT.gateway_warmup) if t is not None)

    def implementation_rules(self, kind: str) -> tuple[ConditionRule, ...]:
        return tuple(r for r in self.rules[kind] if r.implementation_only)

    @property
    def evidence(self) -> str:
        return "seen live" if self.seen_live else "documented, not yet seen live"

    def title(self) -> str:
        return f"gateway profile {self.name} ({self.evidence})"


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> GatewayProfile:
    """A profile by name (manifests/gateways/<name>.yaml) or by the path of a profile YAML file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise ProfileError(f"gateway profile file {text} does not exist; pass a profile name "
                               f"({_names(known_profiles())}) or the path of a profile YAML file")
        return parse_profile(path.read_text(), path)
    path = PROFILE_DIR / f"{text}.yaml"
    if not path.is_file():
        raise ProfileError(f"unknown gateway profile {text!r} (known: {_names(known_profiles())}); "
                           f"pass one of these names or the path of a profile YAML file")
    profile = parse_profile(path.read_text(), path)
    if profile.name != text:
        raise ProfileError(f"{_display(path)}: name: {profile.name!r} differs from the file name {text!r}")
    return profile


def builtin_profiles() -> list[GatewayProfile]:
    """Every profile of manifests/gateways/; no controllerName may be claimed twice."""
    profiles = [load_profile(name) for name in known_profiles()]
    claimed: dict[str, str] = {}
    for profile in profiles:
        for controller in profile.controller_names:
            if controller in claimed:
                raise ProfileError(f"controllerName {controller} is claimed by gateway profiles {claimed[controller]} "
                                   f"and {profile.name}; keep it in one")
            claimed[controller] = profile.name
    return profiles


def profile_for_controller(controller: str) -> GatewayProfile | None:
    return next((p for p in builtin_profiles() if controller in p.controller_names), None)


def parse_profile(text: str, source: Path) -> GatewayProfile:
    shown = _display(source)
    data = load_strict_yaml(text, shown, ProfileError)
    checker = _ProfileChecker()
    profile = checker.profile(data, source)
    if checker.problems:
        raise ProfileError("\n".join(f"{shown}: {p}" for p in checker.problems))
    assert profile is not None
    return profile


class _ProfileChecker(_Checker):
    """The topology loader's checks (one line per problem, with its dotted path), for a profile."""

    def profile(self, data: Any, source: Path) -> GatewayProfile | None:
        top = self.fields(data, "", {
            "name": ("string", True), "description": ("string", True), "seenLive": ("boolean", True),
            "controllerNames": ("list", True), "conditions": ("mapping", True), "timeouts": ("mapping", False),
            "answers": ("mapping", True), "bbr": ("mapping", True),
        })
        if top is None:
            return None
        if "name" in top:
            self.dns_name(top["name"], "name")
        controllers = self.strings(top.get("controllerNames"), "controllerNames", unique=True)
        if controllers == ():
            self.problem("controllerNames", "name at least one GatewayClass controllerName")
        rules = self.conditions(top.get("conditions"))
        timeouts = self.timeouts(top.get("timeouts"))
        answers = self.answers(top.get("answers"), top.get("name", "?"))
        attachment = self.bbr(top.get("bbr"))
        if self.problems or len(top) < 7:
            return None
        return GatewayProfile(
            name=top["name"], description=top["description"], seen_live=top["seenLive"],
            controller_names=controllers, rules=rules, answers=answers, bbr_attachment=attachment, source=source,
            condition_timeout=timeouts.get("condition"), warmup_timeout=timeouts.get("warmup"))

    def strings(self, value, path: str, unique: bool) -> tuple[str, ...] | None:
        if value is None:
            return None
        good = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.problem(f"{path}[{i}]", f"expected a non-empty string, found {item!r}")
            elif unique and item in good:
                self.problem(f"{path}[{i}]", f"{item!r} is listed twice")
            else:
                good.append(item)
        return tuple(good)

    def conditions(self, value) -> dict[str, tuple[ConditionRule, ...]]:
        found: dict[str, tuple[ConditionRule, ...]] = {kind: () for kind in KINDS}
        fields = self.fields(value, "conditions", {kind: ("mapping", False) for kind in KINDS}) if value else None
        for kind, rules in (fields or {}).items():
            found[kind] = self.kind_rules(rules, f"conditions.{kind}")
        return found

    def kind_rules(self, value: dict, path: str) -> tuple[ConditionRule, ...]:
        lists = {key: ("list", False) for key in _STATUS_OF}
        fields = self.fields(value, path, {**lists, "implementationOnly": ("mapping", False)}) or {}
        rules = self.rule_lists(fields, path, implementation_only=False)
        if "implementationOnly" in fields:
            own = self.fields(fields["implementationOnly"], f"{path}.implementationOnly", lists) or {}
            rules += self.rule_lists(own, f"{path}.implementationOnly", implementation_only=True)
        seen: set[str] = set()
        for rule in rules:
            if rule.type in seen:
                self.problem(path, f"condition {rule.type} is listed more than once; keep one expectation")
            seen.add(rule.type)
        return tuple(rules)

    def rule_lists(self, fields: dict, path: str, implementation_only: bool) -> list[ConditionRule]:
        rules = []
        for key, status in _STATUS_OF.items():
            for condition_type in self.strings(fields.get(key), f"{path}.{key}", unique=True) or ():
                if len(condition_type) > 316 or not _CONDITION_TYPE.match(condition_type):
                    self.problem(f"{path}.{key}", f"{condition_type!r} is not a condition type (CamelCase, "
                                                  f"optionally prefixed by a DNS subdomain and '/')")
                else:
                    rules.append(ConditionRule(condition_type, status, implementation_only))
        return rules

    def timeouts(self, value) -> dict[str, float]:
        if value is None:
            return {}
        fields = self.fields(value, "timeouts", {"condition": ("number", False), "warmup": ("number", False)}) or {}
        for key, seconds in fields.items():
            self.bounded(seconds, f"timeouts.{key}", 0, 24 * 3600, True, False, " (seconds)")
        return {key: float(seconds) for key, seconds in fields.items()}

    def answers(self, value, profile: str) -> GatewayAnswers | None:
        if value is None:
            return None
        fields = self.fields(value, "answers", {"noRoute": ("list", True), "notProgrammed": ("list", True)})
        if fields is None or len(fields) < 2:
            return None
        no_route = self.patterns(fields["noRoute"], "answers.noRoute")
        if not fields["noRoute"]:
            self.problem("answers.noRoute", "name the answer of a request no rule matches (Envoy: "
                                            "{status: 404, body: \"\"})")
        not_programmed = self.patterns(fields["notProgrammed"], "answers.notProgrammed")
        overlap = set(no_route) & set(not_programmed)
        if overlap:
            self.problem("answers", f"{', '.join(p.describe() for p in overlap)} is both the no-route answer and "
                                    f"the not-programmed one: they must be told apart")
        return GatewayAnswers(profile, no_route=no_route, not_programmed=not_programmed)

    def patterns(self, value: list, path: str) -> tuple[AnswerPattern, ...]:
        patterns = []
        for i, item in enumerate(value):
            # Not self.fields: an empty body is a body too (Envoy's no-route 404).
            where = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.problem(where, f"expected a mapping {{status: <int>, body: <text>}}, found {item!r}")
                continue
            unknown = sorted(set(item) - {"status", "body"}, key=str)
            for key in unknown:
                self.problem(f"{where}.{key}", "unknown key (allowed here: body, status)")
            status, body = item.get("status"), item.get("body")
            if unknown:
                continue
            if "body" in item and not isinstance(body, str):
                self.problem(f"{where}.body", f"expected the whole body as text (\"\" for none), found {body!r}")
            elif not isinstance(status, int) or isinstance(status, bool):
                self.problem(f"{where}.status", f"expected an HTTP status, found {status!r}")
            elif self.bounded(status, f"{where}.status", 100, 599, False, False):
                patterns.append(AnswerPattern(status, body))
        return tuple(patterns)

    def bbr(self, value) -> str | None:
        if value is None:
            return None
        fields = self.fields(value, "bbr", {"attachment": ("string", True)})
        if not fields or "attachment" not in fields:
            return None
        if fields["attachment"] not in ATTACHMENTS:
            self.problem("bbr.attachment", f"{fields['attachment']!r} is not one of {', '.join(ATTACHMENTS)}")
            return None
        return fields["attachment"]


# ---------------------------------------------------------------- choosing the profile of a run

@dataclass(frozen=True)
class ProfileChoice:
    """The run's profile and why it was chosen; `warning` when it is the strict fallback."""

    profile: GatewayProfile
    chosen_by: str
    controller: str | None = None
    warning: str | None = None

    def as_property(self) -> dict[str, Any]:
        found = {"profile": self.profile.name, "evidence": self.profile.evidence,
                 "source": _display(self.profile.source), "chosenBy": self.chosen_by}
        own = [f"{kind} {r.describe()}" for kind in KINDS for r in self.profile.implementation_rules(kind)]
        if own:
            found["ownConditions"] = own
        if self.controller:
            found["controllerName"] = self.controller
        if self.warning:
            found["warning"] = self.warning
        return found


def chosen_by_option(profile: GatewayProfile, option: str) -> ProfileChoice:
    return ProfileChoice(profile, f"--gateway-profile {option}")


def strict_fallback(why: str, controller: str | None = None) -> ProfileChoice:
    return ProfileChoice(load_profile(STRICT), "fallback", controller,
                         f"{why}; judged by the strict {STRICT} profile (pass --gateway-profile NAME|FILE to choose one)")


def choose_profile(kube: Kube, namespace: str, gateway: str) -> ProfileChoice:
    """The profile naming the controllerName of the Gateway's GatewayClass, else the strict fallback."""
    try:
        class_name = kube.get_gateway_object(namespace, "gateways", gateway)["spec"]["gatewayClassName"]
    except ApiException as exc:
        return strict_fallback(f"cannot read Gateway {namespace}/{gateway} (HTTP {exc.status} {exc.reason})")
    try:
        gateway_class = kube.custom.get_cluster_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, "gatewayclasses",
                                                              class_name)
    except ApiException as exc:
        return strict_fallback(f"cannot read GatewayClass {class_name} of Gateway {namespace}/{gateway} "
                               f"(HTTP {exc.status} {exc.reason})")
    controller = (gateway_class.get("spec") or {}).get("controllerName", "")
    profile = profile_for_controller(controller)
    if profile is None:
        return strict_fallback(f"no gateway profile names controllerName {controller!r} of GatewayClass {class_name}",
                               controller)
    return ProfileChoice(profile, f"GatewayClass {class_name} controllerName", controller)


# ---------------------------------------------------------------- GKE's BBR objects

def gcp_routing_extension_problems(extensions: list[dict], policies: list[dict], namespace: str, gateway: str,
                                   service: str, port: int) -> list[str]:
    """Why BBR is not attached as GIE's chart does it on GKE (config/charts/body-based-routing/templates/gke.yaml):
    a GCPRoutingExtension targeting the Gateway with an extension whose backendRef is the BBR Service and
    port, and a HealthCheckPolicy targeting that Service. Empty when it is."""
    problems = []
    targeting = [e for e in extensions
                 if any(refers_to_gateway(ref, gateway, namespace) for ref in (e.get("spec") or {}).get("targetRefs") or [])]
    wanted = f"backendRef Service {service} port {port}"
    if not any((kind, name, ref_port) == ("Service", service, port)
               for e in targeting for kind, name, ref_port in _extension_backends(e)):
        found = [f"{e['metadata']['name']} (targets "
                 + (", ".join(f"{r.get('kind', 'Gateway')} {r.get('name')}" for r in (e.get("spec") or {}).get("targetRefs") or [])
                    or "nothing")
                 + "; backendRefs " + (", ".join(f"{k} {n} port {p}" for k, n, p in _extension_backends(e)) or "none")
                 + ")" for e in extensions]
        problems.append(f"no GCPRoutingExtension in {namespace} targets Gateway {gateway} with an extension whose "
                        f"{wanted}; GCPRoutingExtensions: {'; '.join(found) or 'none'}")
    checked = [p for p in policies if _targets_service(p, service, namespace)]
    if not checked:
        found = [f"{p['metadata']['name']} (targets {((p.get('spec') or {}).get('targetRef') or {}).get('kind')} "
                 f"{((p.get('spec') or {}).get('targetRef') or {}).get('name')})" for p in policies]
        problems.append(f"no HealthCheckPolicy in {namespace} targets Service {service} (the load balancer health-checks "
                        f"BBR through it); HealthCheckPolicies: {'; '.join(found) or 'none'}")
    return problems


def _extension_backends(extension: dict) -> list[tuple[str, str, int | None]]:
    return [((x.get("backendRef") or {}).get("kind", "Service"), (x.get("backendRef") or {}).get("name"),
             (x.get("backendRef") or {}).get("port"))
            for chain in (extension.get("spec") or {}).get("extensionChains") or []
            for x in chain.get("extensions") or []]


def _targets_service(policy: dict, service: str, namespace: str) -> bool:
    ref = (policy.get("spec") or {}).get("targetRef") or {}
    return (ref.get("kind"), ref.get("name"), ref.get("namespace", namespace)) == ("Service", service, namespace)


def bbr_attachment_problems(kube: Kube, topology: Topology) -> list[str]:
    """gcp_routing_extension_problems on the cluster's objects (a cluster without the GKE CRDs says so)."""
    namespace = topology.namespace
    listed = {}
    for plural in ("gcproutingextensions", "healthcheckpolicies"):
        try:
            listed[plural] = kube.custom.list_namespaced_custom_object(GKE_GROUP, GKE_VERSION, namespace, plural)["items"]
        except ApiException as exc:
            if exc.status != 404:
                raise
            return [f"the cluster serves no {plural} ({GKE_GROUP}/{GKE_VERSION}): the GCPRoutingExtension that "
                    f"attaches BBR to Gateway {topology.gateway_name} cannot exist"]
    return gcp_routing_extension_problems(listed["gcproutingextensions"], listed["healthcheckpolicies"], namespace,
                                          topology.gateway_name, topology.bbr_service, topology.bbr_port)
