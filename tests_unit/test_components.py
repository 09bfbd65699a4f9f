"""llmd_conformance.components: which EPP and router a deployment runs, and its inference CRDs, from the
cluster (fake API server on loopback)."""
from __future__ import annotations

import pytest

from llmd_conformance.components import components_of, crd_versions, detect_components, identify


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
