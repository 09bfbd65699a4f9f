"""`helmfile -e gke-local` (topology pattern2-gke-local) installs GKE's release set: every object
`-e gke` renders, the same but for what cannot run locally (simulators for vLLM, the EPP's /metrics
without a token, the local gateway's GKE-mode class). Needs helm, helmfile and the GIE charts, like
test_manifests.py."""
from __future__ import annotations

from tests_unit.test_manifests import Rendered, container, render, tools  # noqa: F401 - fixtures

GKE_LOCAL = "pattern2-gke-local"


def by_name(rendered: Rendered) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered.objects}


def test_gke_local_renders_gkes_objects_changing_only_what_cannot_run_here(render):  # noqa: F811 - fixture
    gke, here = render("pattern2", "gke"), render(GKE_LOCAL, "gke-local")
    assert here.topology.local_environment == "gke-local"
    ours, theirs = by_name(here), by_name(gke)
    assert sorted(ours) == sorted(theirs), f"objects only in -e gke-local: {sorted(set(ours) - set(theirs))}; " \
                                           f"only in -e gke: {sorted(set(theirs) - set(ours))}"
    model_servers = {("Deployment", here.model_server(m.release)["metadata"]["name"]) for m in here.topology.models}
    epps = {("Deployment", p.epp_service) for p in here.topology.pools}
    gateway = ("Gateway", here.topology.gateway_name)
    differing = {k for k in ours if ours[k] != theirs[k]}
    assert differing == model_servers | epps | {gateway}, f"unexpected differences: {sorted(differing)}"
    for key in epps:
        args = container(ours[key])["args"]
        assert [a for a in args if a not in container(theirs[key])["args"]] == ["--metrics-endpoint-auth=false"], key
    assert ours[gateway]["spec"] | {"gatewayClassName": "gke-l7-regional-external-managed"} == theirs[gateway]["spec"]
    assert ours[gateway]["spec"]["gatewayClassName"] == "llmd-local-gke"
    assert not ours[gateway]["metadata"].get("annotations"), "GKE mode reads BBR from the GCPRoutingExtension only"


def test_gke_local_runs_the_local_model_servers(render):  # noqa: F811 - fixture
    here, local = render(GKE_LOCAL, "gke-local"), render("pattern2", "local")
    for model in here.topology.models:
        assert here.model_server(model.release) == local.model_server(model.release), model.release


def test_bbr_is_wired_by_a_routing_extension_with_its_health_check(render):  # noqa: F811 - fixture
    """What the local gateway's GKE mode reads: an extension targeting the Gateway naming BBR's HTTP2 port."""
    here = render(GKE_LOCAL, "gke-local")
    topo = here.topology
    ext = here.one("GCPRoutingExtension", topo.bbr_service)["spec"]
    assert ext["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": topo.gateway_name}]
    ref = ext["extensionChains"][0]["extensions"][0]["backendRef"]
    assert (ref["name"], ref["port"]) == (topo.bbr_service, topo.bbr_port)
    ports = [(p["port"], p.get("appProtocol")) for p in here.one("Service", topo.bbr_service)["spec"]["ports"]]
    assert (topo.bbr_port, "HTTP2") in ports
    targets = sorted((p["spec"]["targetRef"]["kind"], p["spec"]["targetRef"]["name"]) for p in here.of_kind("HealthCheckPolicy"))
    assert targets == sorted([("Service", topo.bbr_service), *(("InferencePool", p.name) for p in topo.pools)])
