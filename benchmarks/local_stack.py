"""Local inference stack figures, in one run:

- time from an empty cluster to every pod Ready and the route Programmed (helmfile sync included);
- requests/s through the Envoy gateway (BBR + EPP + sim) measured with wrk, side by side with wrk
  hitting one simulator pod directly on its pod IP — the cost of the gateway path.

    python -m benchmarks.local_stack [--topology pattern2] [--seconds 10] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from kubernetes import client

from benchmarks.routing_driver import wrk_rate
from llmd_conformance.kube import pods_matching
from llmd_conformance.local.stack import gateway_url
from llmd_conformance.local.target import LocalTarget
from llmd_conformance.topology import load_topology


def route_programmed(target: LocalTarget) -> bool:
    custom = client.CustomObjectsApi(target.cluster.api_client())
    for route in target.topology.routes:
        obj = custom.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", target.topology.namespace,
                                                  "httproutes", route.name)
        parents = obj.get("status", {}).get("parents") or []
        if not parents or not all(c["status"] == "True" for p in parents for c in p["conditions"]):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="pattern2")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    topology = load_topology(args.topology)
    with TemporaryDirectory() as reports:
        target = LocalTarget(topology, Path(reports), log=lambda _m: None)
        began = time.monotonic()
        target.setup()
        try:
            while not route_programmed(target):
                time.sleep(0.2)
            ready = time.monotonic() - began
            print(f"empty machine -> cluster up, {topology.name} installed, every pod Ready, routes Accepted: {ready:.1f}s"
                  f" (cluster start {sum(target.cluster.timings.values()):.1f}s of it)")
            model = topology.models[0]
            pod = pods_matching(client.CoreV1Api(target.cluster.api_client()), topology.namespace,
                                topology.model_selector(model.id))[0]
            load = argparse.Namespace(model=model.id, max_tokens=8, concurrency=args.concurrency,
                                      wrk_seconds=args.seconds)
            print(f"wrk, {args.concurrency} connections, /v1/completions for {model.id}:")
            print("  through the gateway:", end=" ")
            via_gateway = wrk_rate(argparse.Namespace(**vars(load), url=gateway_url(target)))
            print(f"  direct to pod {pod.metadata.name} ({pod.status.pod_ip}):", end=" ")
            direct = wrk_rate(argparse.Namespace(**vars(load), url=f"http://{pod.status.pod_ip}:{topology.pool(model.pool).target_ports[0]}"))
            if via_gateway and direct:
                print(f"gateway / direct: {via_gateway / direct:.2f}")
        finally:
            target.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
