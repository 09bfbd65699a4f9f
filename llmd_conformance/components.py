"""Which endpoint picker and which body-based router a deployment runs, and which inference CRD bundles
the cluster has: read from the cluster, never configured.

The EPP and the router are known by the repositories of their container images (Deployments of the
topology's namespace): GIE's reference EPP and BBR, llm-d's scheduler and payload processor (FACTS §10:
GIE v1.6 moved the EPP to llm-d and BBR to llm-d-inference-payload-processor). The version is the
image tag. CRDs are read from their bundle-version annotation and the versions they serve.
"""
from __future__ import annotations

from collections.abc import Iterable

from kubernetes import client
from kubernetes.client import ApiException

from llmd_conformance.kube import get_json

UNKNOWN = "unknown"
# (repository suffix of the image, role, implementation): role endpointPicker or bodyBasedRouter.
KNOWN_IMAGES = (
    ("gateway-api-inference-extension/epp", "endpointPicker", "gie-epp"),
    ("llm-d-inference-scheduler", "endpointPicker", "llm-d-inference-scheduler"),
    ("llm-d-router", "endpointPicker", "llm-d-router"),
    ("gateway-api-inference-extension/bbr", "bodyBasedRouter", "gie-bbr"),
    ("llm-d-inference-payload-processor", "bodyBasedRouter", "payload-processor"),
)
# API groups whose CRDs decide how a multi-model deployment routes.
INFERENCE_GROUPS = ("inference.networking.k8s.io", "inference.networking.x-k8s.io", "llm-d.ai")


def identify(image: str) -> tuple[str, str, str] | None:
    """(role, implementation, tag) of a container image, None for any other image."""
    name, _, digest = image.partition("@")
    repository, tag = name, ""
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
    for suffix, role, implementation in KNOWN_IMAGES:
        if repository == suffix or repository.endswith("/" + suffix):
            return role, implementation, tag or digest or "latest"
    return None


def components_of(deployments: Iterable[dict]) -> dict[str, str]:
    """Per Deployment running a known EPP or router: `<role>.<deployment>` -> `<implementation> <tag>`,
    and `<role>` -> the distinct ones, comma-separated."""
    found: dict[str, str] = {}
    for deployment in deployments:
        name = deployment.get("metadata", {}).get("name", "?")
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        for container in containers:
            known = identify(container.get("image") or "")
            if known:
                role, implementation, tag = known
                found[f"{role}.{name}"] = f"{implementation} {tag}"
    for role in ("endpointPicker", "bodyBasedRouter"):
        values = sorted({v for k, v in found.items() if k.startswith(role + ".")})
        if values:
            found[role] = ", ".join(values)
    return found


def crd_versions(crds: Iterable[dict]) -> dict[str, str]:
    """`crd.<plural>.<group>` -> `<bundle version> (served v1, ...)` for the inference groups' CRDs."""
    found = {}
    for crd in crds:
        spec = crd.get("spec", {})
        if spec.get("group") not in INFERENCE_GROUPS:
            continue
        annotations = crd.get("metadata", {}).get("annotations") or {}
        bundle = next((v for k, v in sorted(annotations.items()) if k.endswith("/bundle-version")), UNKNOWN)
        served = [v["name"] for v in spec.get("versions", []) if v.get("served")]
        found[f"crd.{crd['metadata']['name']}"] = f"{bundle} (served {', '.join(served) or 'none'})"
    return found


def detect_components(api_client: client.ApiClient, namespace: str) -> dict[str, str]:
    """EPP and router implementations in `namespace` and the inference CRDs; a list that cannot be read
    is named with 'unknown' rather than failing the run."""
    versions: dict[str, str] = {}
    status, body, _ = get_json(api_client, f"/apis/apps/v1/namespaces/{namespace}/deployments")
    if status == 200 and isinstance(body, dict):
        versions |= components_of(body.get("items") or [])
    else:
        versions["endpointPicker"] = versions["bodyBasedRouter"] = f"{UNKNOWN} (Deployments unreadable: HTTP {status})"
    status, body, _ = get_json(api_client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    if status == 200 and isinstance(body, dict):
        versions |= crd_versions(body.get("items") or [])
    else:
        versions["crd"] = f"{UNKNOWN} (CustomResourceDefinitions unreadable: HTTP {status})"
    return versions


def service_images(core: client.CoreV1Api, namespace: str, service: str) -> list[tuple[str, str]]:
    """(pod, image) of every container of the pods a Service selects; a missing Service raises ApiException."""
    selector = core.read_namespaced_service(service, namespace).spec.selector or {}
    if not selector:
        return []
    pods = core.list_namespaced_pod(namespace, label_selector=",".join(f"{k}={v}" for k, v in sorted(selector.items())))
    return [(p.metadata.name, c.image) for p in pods.items for c in p.spec.containers]


def implementation_problem(core: client.CoreV1Api, namespace: str, service: str, role: str, wanted: str) -> str | None:
    """Why the pods behind `service` do not run the `wanted` implementation of `role`, or None."""
    try:
        images = service_images(core, namespace, service)
    except ApiException as exc:
        if exc.status != 404:
            raise
        return f"Service {namespace}/{service} does not exist"
    if not images:
        return f"Service {namespace}/{service} selects no pod"
    known = [(pod, image, identify(image)) for pod, image in images]
    of_role = [(pod, image, kind[1]) for pod, image, kind in known if kind and kind[0] == role]
    if of_role and all(implementation == wanted for _, _, implementation in of_role):
        return None
    shown = of_role or [(pod, image, "not a known " + role) for pod, image in images]
    return (f"the pods behind Service {namespace}/{service} run "
            + ", ".join(f"{pod}: {image} ({implementation})" for pod, image, implementation in sorted(shown))
            + f"; expected {wanted}")


# Where InferenceModelRewrite is served: GIE (v1.5.0, which its EPP applies) and llm-d-router (GIE v1.6+).
REWRITE_APIS = ("inference.networking.x-k8s.io/v1alpha2", "llm-d.ai/v1alpha2")


def cluster_rewrites(custom: client.CustomObjectsApi, namespace: str) -> dict[str, tuple[str, ...]]:
    """Requested model name -> the names its InferenceModelRewrite may send it to, for every rule with
    an exact model match in `namespace`, from every API that serves the kind (none installed: empty).
    The oldest object wins a name, as the API's precedence says; rules without a match (every request
    of a pool) name no model and are left out."""
    found: list[tuple[str, str, tuple[str, ...]]] = []
    for api in REWRITE_APIS:
        group, version = api.split("/")
        try:
            items = custom.list_namespaced_custom_object(group, version, namespace, "inferencemodelrewrites")["items"]
        except ApiException as exc:
            if exc.status == 404:  # the API is not installed
                continue
            raise
        for item in items or []:
            created = item.get("metadata", {}).get("creationTimestamp") or ""
            for rule in item.get("spec", {}).get("rules") or []:
                targets = tuple(t.get("modelRewrite") for t in rule.get("targets") or [] if t.get("modelRewrite"))
                for match in rule.get("matches") or []:
                    name = (match.get("model") or {}).get("value")
                    if name and targets:
                        found.append((created, name, targets))
    rewrites: dict[str, tuple[str, ...]] = {}
    for _, name, targets in sorted(found, key=lambda f: f[0]):
        rewrites.setdefault(name, targets)
    return rewrites
