"""llmd_conformance.components: which EPP and router a deployment runs, and its inference CRDs, from the
cluster (fake API server on loopback)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from llmd_conformance.components import (
    cluster_rewrites,
    components_of,
    crd_versions,
    detect_components,
    identify,
    implementation_problem,
)


def deployment(name: str, *images: str) -> dict:
    return {"metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]}}}}


@pytest.mark.parametrize("image, expected", [
    ("registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0", ("endpointPicker", "gie-epp", "v1.5.0")),
    ("ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0", ("endpointPicker", "llm-d-inference-scheduler", "v0.4.0")),
    ("registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0", ("bodyBasedRouter", "gie-bbr", "v1.5.0")),
    ("ghcr.io/llm-d/llm-d-inference-payload-processor:v0.1.0", ("bodyBasedRouter", "payload-processor", "v0.1.0")),
    ("localhost:5000/llm-d-inference-scheduler", ("endpointPicker", "llm-d-inference-scheduler", "latest")),
    ("ghcr.io/llm-d/llm-d-inference-sim:v0.10.2", None),
    ("ghcr.io/other/not-llm-d-inference-scheduler:v1", None),
])
def test_images_are_identified_by_repository(image, expected):
    """The repository names the implementation, the tag its version; a registry port is not a tag."""
    assert identify(image) == expected


def test_each_pool_epp_and_the_router_are_named_with_their_versions():
    """One entry per Deployment, and one per role listing the distinct implementations."""
    found = components_of([
        deployment("gaie-gemma-epp", "ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0"),
        deployment("gaie-phi-epp", "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"),
        deployment("payload-processor", "ghcr.io/llm-d/llm-d-inference-payload-processor:v0.1.0"),
        deployment("ms-gemma", "ghcr.io/llm-d/llm-d-inference-sim:v0.10.2"),
    ])
    assert found == {
        "endpointPicker.gaie-gemma-epp": "llm-d-inference-scheduler v0.4.0",
        "endpointPicker.gaie-phi-epp": "gie-epp v1.5.0",
        "bodyBasedRouter.payload-processor": "payload-processor v0.1.0",
        "endpointPicker": "gie-epp v1.5.0, llm-d-inference-scheduler v0.4.0",
        "bodyBasedRouter": "payload-processor v0.1.0",
    }


def test_inference_crds_give_bundle_version_and_served_versions():
    """Only the inference groups' CRDs; a CRD without a bundle annotation says unknown."""
    def crd(name, group, annotations, *served):
        return {"metadata": {"name": name, "annotations": annotations},
                "spec": {"group": group, "versions": [{"name": v, "served": True} for v in served]}}
    found = crd_versions([
        crd("inferencepools.inference.networking.k8s.io", "inference.networking.k8s.io",
            {"inference.networking.k8s.io/bundle-version": "v1.5.0"}, "v1"),
        crd("inferencemodelrewrites.llm-d.ai", "llm-d.ai", {}, "v1alpha2"),
        crd("gateways.gateway.networking.k8s.io", "gateway.networking.k8s.io",
            {"gateway.networking.k8s.io/bundle-version": "v1.5.1"}, "v1"),
    ])
    assert found == {"crd.inferencepools.inference.networking.k8s.io": "v1.5.0 (served v1)",
                     "crd.inferencemodelrewrites.llm-d.ai": "unknown (served v1alpha2)"}


def test_detect_components_reads_the_namespace_and_says_unknown_when_forbidden(api_server):
    """Deployments of the namespace and the CRD list; a forbidden list is named, not an error."""
    api_server.routes["/apis/apps/v1/namespaces/llm-d/deployments"] = (200, {"items": [
        deployment("bbr", "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0")]})
    api_server.routes["/apis/apiextensions.k8s.io/v1/customresourcedefinitions"] = (403, {"message": "forbidden"})
    found = detect_components(api_server.api_client(), "llm-d")
    assert found == {"bodyBasedRouter.bbr": "gie-bbr v1.5.0", "bodyBasedRouter": "gie-bbr v1.5.0",
                     "crd": "unknown (CustomResourceDefinitions unreadable: HTTP 403)"}


class FakeCore:
    """read_namespaced_service / list_namespaced_pod over a dict of Services and pods."""

    def __init__(self, services: dict[str, dict], pods: list[tuple[str, dict, list[str]]]):
        self.services, self.pods = services, pods

    def read_namespaced_service(self, name, namespace):
        if name not in self.services:
            raise ApiException(status=404)
        return SimpleNamespace(spec=SimpleNamespace(selector=self.services[name]))

    def list_namespaced_pod(self, namespace, label_selector):
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return SimpleNamespace(items=[
            SimpleNamespace(metadata=SimpleNamespace(name=name),
                            spec=SimpleNamespace(containers=[SimpleNamespace(image=i) for i in images]))
            for name, labels, images in self.pods if wanted.items() <= labels.items()])


SCHEDULER = "ghcr.io/llm-d/llm-d-inference-scheduler:v0.4.0"
GIE_EPP = "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"


def test_implementation_problem_names_what_runs_instead():
    """The pods behind the EPP Service must run the named implementation; otherwise the pod and image are named."""
    core = FakeCore({"gaie-phi-epp": {"app": "phi-epp"}, "empty": {"app": "none"}},
                    [("phi-epp-1", {"app": "phi-epp"}, [GIE_EPP, "busybox:1"])])
    assert implementation_problem(core, "llm-d", "gaie-phi-epp", "endpointPicker", "gie-epp") is None
    assert implementation_problem(core, "llm-d", "gaie-phi-epp", "endpointPicker", "llm-d-inference-scheduler") == (
        f"the pods behind Service llm-d/gaie-phi-epp run phi-epp-1: {GIE_EPP} (gie-epp); expected llm-d-inference-scheduler")
    assert implementation_problem(core, "llm-d", "gaie-phi-epp", "bodyBasedRouter", "payload-processor") == (
        "the pods behind Service llm-d/gaie-phi-epp run phi-epp-1: busybox:1 (not a known bodyBasedRouter), "
        f"phi-epp-1: {GIE_EPP} (not a known bodyBasedRouter); expected payload-processor")
    assert implementation_problem(core, "llm-d", "empty", "endpointPicker", "gie-epp") == \
        "Service llm-d/empty selects no pod"
    assert implementation_problem(core, "llm-d", "gone", "endpointPicker", "gie-epp") == \
        "Service llm-d/gone does not exist"


def test_cluster_rewrites_are_read_from_every_api_serving_them_oldest_first(api_server):
    """Exact-match rules of InferenceModelRewrites (GIE's group and llm-d.ai), the oldest object winning a name."""
    def rewrite(created, rules):
        return {"metadata": {"creationTimestamp": created}, "spec": {"rules": rules}}
    api_server.routes["/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/llm-d/inferencemodelrewrites"] = (200, {
        "items": [rewrite("2026-12-02T10:00:00Z", [
            {"matches": [{"model": {"type": "Exact", "value": "gemma-latest"}}],
             "targets": [{"modelRewrite": "google/gemma-2b-it", "weight": 90}, {"modelRewrite": "food-review-1"}]},
            {"targets": [{"modelRewrite": "every-request"}]}])]})
    api_server.routes["/apis/llm-d.ai/v1alpha2/namespaces/llm-d/inferencemodelrewrites"] = (200, {
        "items": [rewrite("2026-12-02T11:00:00Z", [
            {"matches": [{"model": {"value": "gemma-latest"}}, {"model": {"value": "phi-latest"}}],
             "targets": [{"modelRewrite": "microsoft/Phi-3-mini-4k-instruct"}]}])]})
    custom = client.CustomObjectsApi(api_server.api_client())
    assert cluster_rewrites(custom, "llm-d") == {
        "gemma-latest": ("google/gemma-2b-it", "food-review-1"), "phi-latest": ("microsoft/Phi-3-mini-4k-instruct",)}
    assert cluster_rewrites(custom, "other") == {}
