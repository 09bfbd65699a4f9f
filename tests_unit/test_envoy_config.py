"""Envoy config rendering (checked by `envoy --mode validate`) and the Envoy process on loopback.

The process tests send traffic only to 127.77.0.0/24 addresses on this machine.
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from llmd_conformance.local import envoy as ev

EPP = ev.GrpcService("epp/llm-d/gaie-gemma-epp/9002", (ev.Endpoint("10.244.1.5", 9002),))
BBR = ev.GrpcService("bbr/llm-d/body-based-router/9004", (ev.Endpoint("10.244.1.7", 9004),))


def pool_backend(epp: ev.GrpcService, fail_open: bool, pool: str, fallback=(), h2c=False) -> ev.PoolBackend:
    return ev.PoolBackend(epp, fail_open, f"pool-destination/{pool}", f"pool/{pool}", tuple(fallback), h2c)


def by_model(model: str) -> ev.Match:
    return ev.Match(headers=(ev.HeaderMatch("X-Gateway-Base-Model-Name", model),))


def pattern2_listener(address="127.77.0.1", port=80, fail_open=False) -> ev.Listener:
    routes = (
        ev.Route("gemma", by_model("google/gemma-2b-it"),
                 pool_backend(EPP, fail_open, "llm-d/gaie-gemma", (ev.Endpoint("10.244.2.2", 8000),) if fail_open else ())),
        ev.Route("web", ev.Match(path_type="PathPrefix", path="/web/"), ev.ServiceBackend("service/llm-d/web/80", (ev.Endpoint("10.244.4.2", 8080),))),
        ev.Route("exact", ev.Match(path_type="Exact", path="/v1/models", method="GET"), ev.DirectResponse(500, "missing pool\n")),
        ev.Route("regex", ev.Match(path_type="RegularExpression", path="/v[0-9]+/.*",
                                   query=(ev.HeaderMatch("debug", "[01]", regex=True),)), ev.DirectResponse(503, "x")),
    )
    return ev.Listener("llm-d/gw/80", address, port, (ev.VirtualHost("*", ("*",), routes),), bbr=BBR)


def filters(listener_config: dict) -> list[dict]:
    return listener_config["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


def envoy_routes(listener_config: dict) -> list[dict]:
    hcm = listener_config["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


# ------------------------------------------------------------- rendering, validated by envoy itself

@pytest.mark.parametrize("fail_open", [False, True], ids=["FailClose", "FailOpen"])
def test_rendered_pattern2_config_passes_envoy_validate(tmp_path, fail_open):
    """The full config (BBR, EPP per route, service, direct responses, regex) is valid for the real Envoy."""
    config = ev.render_static_config([pattern2_listener(fail_open=fail_open)], tmp_path / "access.log")
    ev.validate(config, tmp_path)


def test_validate_reports_what_envoy_rejects(tmp_path):
    """A broken config fails validation with Envoy's own complaint (the validator can fail)."""
    config = ev.render_static_config([pattern2_listener()], tmp_path / "access.log")
    envoy_routes(config["static_resources"]["listeners"][0])[0]["route"]["cluster"] = "no-such-cluster"
    with pytest.raises(ev.EnvoyError, match="no-such-cluster"):
        ev.validate(config, tmp_path)


def test_bbr_runs_before_the_epp_and_clears_the_route_cache(tmp_path):
    """BBR first (so header matches see its header), then the EPP filter (acting for pool routes only), then the router."""
    config = ev.render_listener(pattern2_listener(), tmp_path / "a.log")
    names = [f["name"] for f in filters(config)]
    assert names == [ev.BBR_FILTER, ev.EPP_FILTER, ev.SERVED_FILTER, "envoy.filters.http.router"]
    bbr, epp = filters(config)[0], filters(config)[1]
    assert bbr["typed_config"]["route_cache_action"] == "CLEAR"
    assert bbr["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == BBR.cluster
    assert bbr["typed_config"]["failure_mode_allow"] is False, "a broken BBR must fail requests, not skip routing"
    assert epp["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == ev.NO_EPP_CLUSTER
    assert epp["typed_config"]["failure_mode_allow"] is True, "a request matching no route must get the router's 404"
    assert "disabled" not in epp, "a filter disabled by default would be left out when BBR changes the route"
    assert epp["typed_config"]["processing_mode"]["request_body_mode"] == "FULL_DUPLEX_STREAMED"
    without_bbr = ev.render_listener(ev.Listener("l", "127.77.0.1", 80, ()), tmp_path / "a.log")
    assert ev.BBR_FILTER not in [f["name"] for f in filters(without_bbr)]


def test_fail_close_pool_route_goes_to_original_dst_with_its_epp():
    """FailClose: one route to the pool's ORIGINAL_DST cluster, ext_proc enabled with the pool's EPP, no fallback."""
    [route] = ev.render_routes(pattern2_listener().virtual_hosts[0].routes[0])
    assert route["route"]["cluster"] == "pool-destination/llm-d/gaie-gemma"
    override = route["typed_per_filter_config"][ev.EPP_FILTER]["overrides"]
    assert override == {"grpc_service": {"envoy_grpc": {"cluster_name": EPP.cluster}}, "failure_mode_allow": False}


def test_fail_open_pool_has_header_gated_route_then_fallback():
    """FailOpen: ORIGINAL_DST only once the EPP set the destination header, else the pool's endpoints."""
    picked, fallback = ev.render_routes(pattern2_listener(fail_open=True).virtual_hosts[0].routes[0])
    assert {"name": ev.DESTINATION_HEADER, "present_match": True} in picked["match"]["headers"]
    assert picked["route"]["cluster"] == "pool-destination/llm-d/gaie-gemma"
    assert fallback["route"]["cluster"] == "pool/llm-d/gaie-gemma"
    assert ev.DESTINATION_HEADER not in json.dumps(fallback["match"])
    for r in (picked, fallback):
        assert r["typed_per_filter_config"][ev.EPP_FILTER]["overrides"]["failure_mode_allow"] is True


def test_routes_to_services_and_direct_responses_switch_the_epp_off():
    """Only pool routes consult an EPP; the others disable the filter for themselves."""
    for route in pattern2_listener().virtual_hosts[0].routes[1:]:
        [rendered] = ev.render_routes(route)
        assert rendered["typed_per_filter_config"][ev.EPP_FILTER].get("disabled") is True, rendered


def test_clusters_are_rendered_once_each_with_tls_for_ext_proc():
    """EPP/BBR clusters speak h2 over TLS (GIE's --secure-serving default); ORIGINAL_DST reads the EPP header."""
    listener = pattern2_listener(fail_open=True)
    clusters = {c["name"]: c for c in ev.render_clusters([listener, listener])}
    assert sorted(clusters) == sorted(["pool-destination/llm-d/gaie-gemma", EPP.cluster, BBR.cluster,
                                       "pool/llm-d/gaie-gemma", "service/llm-d/web/80"])
    destination = clusters["pool-destination/llm-d/gaie-gemma"]
    assert destination["type"] == "ORIGINAL_DST"
    assert destination["original_dst_lb_config"] == {"use_http_header": True, "http_header_name": ev.DESTINATION_HEADER}
    for name in (EPP.cluster, BBR.cluster):
        assert clusters[name]["transport_socket"]["name"] == "envoy.transport_sockets.tls"
        assert clusters[name]["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"] == ["h2"]
    assert "transport_socket" not in clusters["pool/llm-d/gaie-gemma"]


EPP_B = ev.GrpcService("epp/llm-d/gaie-phi-epp/9002", (ev.Endpoint("10.244.1.6", 9002),))
WEB = ev.ServiceBackend("service/llm-d/web/80", (ev.Endpoint("10.244.4.2", 8080),))


def split_route(b_fail_open: bool) -> ev.Route:
    """70 to a FailClose pool, 20 to a pool of the given mode, 5 to a Service, 5 to an invalid backendRef."""
    return ev.Route("split", ev.Match(), ev.Split((
        ev.Weighted(pool_backend(EPP, False, "llm-d/a"), 70),
        ev.Weighted(pool_backend(EPP_B, b_fail_open, "llm-d/b", (ev.Endpoint("10.244.2.3", 8000),), h2c=True), 20),
        ev.Weighted(WEB, 5),
        ev.Weighted(ev.DirectResponse(500, "InferencePool llm-d/c not found\n"), 5),
    )))


@pytest.mark.parametrize("b_fail_open", [False, True], ids=["FailClose", "FailOpen"])
def test_weighted_split_config_passes_envoy_validate(tmp_path, b_fail_open):
    """A split over two pools, a Service and an invalid backendRef is valid for the real Envoy."""
    listener = ev.Listener("llm-d/gw/80", "127.77.0.1", 80, (ev.VirtualHost("*", ("*",), (split_route(b_fail_open),)),), bbr=BBR)
    ev.validate(ev.render_static_config([listener], tmp_path / "access.log"), tmp_path)


def test_weighted_split_gives_each_pool_its_cluster_and_epp():
    """Weighted clusters in backendRef order; each pool's entry carries its own EPP and failure mode."""
    [route] = ev.render_routes(split_route(b_fail_open=False))
    action = route["route"]
    entries = action["weighted_clusters"]["clusters"]
    assert [(e["name"], e["weight"]) for e in entries] == [
        ("pool-destination/llm-d/a", 70), ("pool-destination/llm-d/b", 20), (WEB.cluster, 5), ("invalid-backend/split/3", 5)]
    overrides = [e["typed_per_filter_config"][ev.EPP_FILTER] for e in entries]
    assert overrides[0]["overrides"] == {"grpc_service": {"envoy_grpc": {"cluster_name": EPP.cluster}}, "failure_mode_allow": False}
    assert overrides[1]["overrides"]["grpc_service"]["envoy_grpc"]["cluster_name"] == EPP_B.cluster
    assert overrides[2].get("disabled") is True and overrides[3].get("disabled") is True
    assert "typed_per_filter_config" not in route, "the weighted cluster's config must decide, not the route's"
    assert action["cluster_not_found_response_code"] == "INTERNAL_SERVER_ERROR", "an invalid backendRef's share gets 500"
    clusters = {c["name"]: c for c in ev.render_clusters([ev.Listener("l", "127.77.0.1", 80, (
        ev.VirtualHost("*", ("*",), (split_route(b_fail_open=False),)),))])}
    assert clusters["pool-destination/llm-d/a"]["type"] == clusters["pool-destination/llm-d/b"]["type"] == "ORIGINAL_DST"
    assert "typed_extension_protocol_options" in clusters["pool-destination/llm-d/b"], "pool b is h2c"
    assert "typed_extension_protocol_options" not in clusters["pool-destination/llm-d/a"]
    assert "invalid-backend/split/3" not in clusters


def test_fail_open_inside_a_split_falls_back_per_pool():
    """FailOpen in a split: the header-gated route keeps every pool's ORIGINAL_DST cluster; the fallback
    route has the same weights in the same order (Envoy's pick comes from the stream id, so it stays the
    same) with the FailOpen pool's endpoints in its place."""
    picked, fallback = ev.render_routes(split_route(b_fail_open=True))
    assert {"name": ev.DESTINATION_HEADER, "present_match": True} in picked["match"]["headers"]
    names = [[(e["name"], e["weight"]) for e in r["route"]["weighted_clusters"]["clusters"]] for r in (picked, fallback)]
    assert names[0][1] == ("pool-destination/llm-d/b", 20) and names[1][1] == ("pool/llm-d/b", 20)
    assert names[0][0] == names[1][0] == ("pool-destination/llm-d/a", 70), "the FailClose pool has no fallback"
    assert [w for _, w in names[0]] == [w for _, w in names[1]]


def test_pool_routes_report_the_served_endpoint_to_the_epp():
    """The address Envoy connected to goes back to the EPP as envoy.lb metadata (GIE endpoint picker protocol)."""
    config = ev.render_listener(pattern2_listener(), Path("a.log"))
    epp = next(f for f in filters(config) if f["name"] == ev.EPP_FILTER)
    assert epp["typed_config"]["metadata_options"] == {"forwarding_namespaces": {"untyped": ["envoy.lb"]}}
    served = next(f for f in filters(config) if f["name"] == ev.SERVED_FILTER)["typed_config"]["response_rules"]
    assert served == [{"header": "x-gateway-destination-endpoint-served", "remove": True, "on_header_present": {
        "metadata_namespace": "envoy.lb", "key": "x-gateway-destination-endpoint-served", "type": "STRING"}}]
    routes = envoy_routes(config)
    assert routes[0]["response_headers_to_add"][0]["header"] == {
        "key": "x-gateway-destination-endpoint-served", "value": "%UPSTREAM_REMOTE_ADDRESS%"}
    assert all("response_headers_to_add" not in r for r in routes[1:]), "only pool routes report to an EPP"


def test_path_prefix_matches_whole_segments():
    """Gateway API PathPrefix /web/ matches /web and /web/x, not /website."""
    web = envoy_routes(ev.render_listener(pattern2_listener(), Path("a.log")))[1]
    assert web["match"] == {"path_separated_prefix": "/web"}


# ------------------------------------------------------------- the Envoy process (real traffic on loopback)

def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    """Answers with which backend served the request and the headers it got."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({"served_by": "%s:%d" % self.server.server_address, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(address: str):
    server = http.server.ThreadingHTTPServer((address, 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ev.Endpoint(*server.server_address)
    server.shutdown()
    server.server_close()


@pytest.fixture
def backend():
    yield from serve("127.77.0.250")


@pytest.fixture
def backend_b():
    yield from serve("127.77.0.251")


def access_log(envoy: ev.EnvoyProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while len(envoy.access_log.read_text().splitlines()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return [json.loads(line) for line in envoy.access_log.read_text().splitlines()]


@pytest.fixture
def envoy(tmp_path):
    proc = ev.EnvoyProcess(tmp_path)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def listener_with(routes, address="127.77.0.249") -> ev.Listener:
    return ev.Listener("test/gw/x", address, free_port(address), (ev.VirtualHost("*", ("*",), tuple(routes)),))


def test_routes_and_failure_modes_with_the_epp_down(envoy, backend, client):
    """Service route reaches its backend; EPP unreachable: FailClose → 500, FailOpen → a pool endpoint; no route → 404."""
    no_epp = ev.GrpcService("epp/test/down/9002", ())
    listener = listener_with([
        ev.Route("svc", ev.Match(headers=(ev.HeaderMatch("x-model", "svc"),)), ev.ServiceBackend("service/test/b/80", (backend,))),
        ev.Route("closed", ev.Match(headers=(ev.HeaderMatch("x-model", "closed"),)), pool_backend(no_epp, False, "test/c")),
        ev.Route("open", ev.Match(headers=(ev.HeaderMatch("x-model", "open"),)), pool_backend(no_epp, True, "test/o", (backend,))),
    ])
    assert envoy.apply([listener]) == {}
    url = f"http://{listener.address}:{listener.port}/v1/completions"
    # A client may not choose the endpoint itself: the gateway drops a client-sent destination header.
    spoof = {ev.DESTINATION_HEADER: f"{backend.address}:{backend.port}"}
    got = {m: client.post(url, json={"model": m}, headers={"x-model": m, **spoof}) for m in ("svc", "closed", "open", "none")}
    assert {m: r.status_code for m, r in got.items()} == {"svc": 200, "closed": 500, "open": 200, "none": 404}, \
        {m: r.text[:200] for m, r in got.items()}
    assert got["open"].json()["served_by"] == f"{backend.address}:{backend.port}"
    assert ev.DESTINATION_HEADER not in got["svc"].json()["headers"]

    entries = {e["route"]: e for e in access_log(envoy, 4)}
    assert entries["open/epp-failed-open"]["upstream_host"] == f"{backend.address}:{backend.port}", entries
    assert entries["open/epp-failed-open"]["served_endpoint"] == f"{backend.address}:{backend.port}", entries
    assert entries["closed"]["status"] == 500 and "ext_proc" in entries["closed"]["details"], entries["closed"]


def test_weighted_split_applies_each_pools_failure_mode(envoy, backend, backend_b, client):
    """EPPs down: a 70/30 split of two FailOpen pools shares 200 requests within GIE's tolerance
    (max(0.10, 3 sigma), its GatewayWeightedAcrossTwoInferencePools), each request served by a pool
    endpoint reported as served; with the 30 pool FailClose its share becomes ext_proc 500s."""
    down = ev.GrpcService("epp/test/down/9002", ())
    a, b = (f"{e.address}:{e.port}" for e in (backend, backend_b))

    def split(b_fail_open: bool) -> ev.Split:
        return ev.Split((ev.Weighted(pool_backend(down, True, "test/a", (backend,)), 70),
                         ev.Weighted(pool_backend(down, b_fail_open, "test/b", (backend_b,)), 30)))

    total = 200
    listener = listener_with([ev.Route("open", ev.Match(), split(True))])
    assert envoy.apply([listener]) == {}
    url = f"http://{listener.address}:{listener.port}/v1/completions"
    served = [client.post(url, json={"model": "m"}).json()["served_by"] for _ in range(total)]
    share = served.count(a) / total
    tolerance = max(0.10, 3 * (0.7 * 0.3 / total) ** 0.5)
    assert served.count(a) + served.count(b) == total
    assert abs(share - 0.7) <= tolerance, f"primary share {share:.3f}, expected 0.700 ± {tolerance:.3f}"
    logged = access_log(envoy, total)
    assert all(e["served_endpoint"] == e["upstream_host"] in (a, b) for e in logged), logged[:3]

    closed = ev.Listener(listener.name, listener.address, listener.port,
                         (ev.VirtualHost("*", ("*",), (ev.Route("mixed", ev.Match(), split(False)),)),))
    envoy.apply([closed])
    answers = [client.post(url, json={"model": "m"}) for _ in range(total)]
    codes = [r.status_code for r in answers]
    assert set(codes) == {200, 500}, codes
    assert {r.json()["served_by"] for r in answers if r.status_code == 200} == {a}
    assert abs(codes.count(500) / total - 0.3) <= tolerance, f"{codes.count(500)} of {total} got 500"


def test_config_changes_apply_without_restarting_envoy(envoy, backend, client):
    """A second apply changes routing in place: same Envoy process, new answer."""
    pid = envoy._proc.pid
    route = ev.Route("r", ev.Match(), ev.DirectResponse(503, "first\n"))
    listener = listener_with([route])
    envoy.apply([listener])
    url = f"http://{listener.address}:{listener.port}/"
    assert client.post(url).status_code == 503
    changed = ev.Listener(listener.name, listener.address, listener.port,
                          (ev.VirtualHost("*", ("*",), (ev.Route("r", ev.Match(), ev.ServiceBackend("service/t/b/80", (backend,))),)),))
    envoy.apply([changed])
    assert client.post(url).status_code == 200
    assert envoy._proc.pid == pid and envoy.running


def test_each_listener_gets_its_own_route_config(envoy, client):
    """Two Gateways: each listener serves its own routes (Envoy takes one route config per RDS file),
    and changing one Gateway's routes leaves the other's file alone."""
    first = listener_with([ev.Route("a", ev.Match(), ev.DirectResponse(418, "first\n"))])
    second = ev.Listener("test/other/x", "127.77.0.247", free_port("127.77.0.247"),
                         (ev.VirtualHost("*", ("*",), (ev.Route("b", ev.Match(), ev.DirectResponse(429, "second\n")),)),))
    assert envoy.apply([first, second]) == {}
    assert [client.get(f"http://{l.address}:{l.port}/").status_code for l in (first, second)] == [418, 429]
    before = envoy.rds_path(first.name).stat().st_mtime_ns
    changed = ev.Listener(second.name, second.address, second.port,
                          (ev.VirtualHost("*", ("*",), (ev.Route("b", ev.Match(), ev.DirectResponse(503, "changed\n")),)),))
    envoy.apply([first, changed])
    assert [client.get(f"http://{l.address}:{l.port}/").status_code for l in (first, second)] == [418, 503]
    assert envoy.rds_path(first.name).stat().st_mtime_ns == before


def test_port_in_use_is_reported_with_the_holding_process(envoy):
    """Envoy cannot bind a taken port: apply returns the error and listening_process names the holder."""
    address = "127.77.0.248"
    with socket.socket() as squatter:
        squatter.bind((address, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        listener = ev.Listener("test/taken/x", address, port, (ev.VirtualHost("*", ("*",), ()),))
        errors = envoy.apply([listener])
        assert "Address already in use" in errors.get(listener.name, ""), errors
        holder = ev.listening_process(address, port)
        assert holder is not None and "python" in holder, holder
    # Once the port is free the same listener is retried and binds.
    assert envoy.apply([listener]) == {}


def test_missing_binary_is_a_clear_error(tmp_path):
    """A wrong envoy path fails at construction, naming the path."""
    with pytest.raises(ev.EnvoyError, match="does not exist"):
        ev.EnvoyProcess(tmp_path, envoy_bin=tmp_path / "no-envoy")
