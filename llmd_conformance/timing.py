"""How long the harness waits, named per operation, in one place (as the Gateway API Inference
Extension conformance suite's conformance/utils/config/timing.go does).

Every duration is in seconds. Code reads `DEFAULT`: the defaults below with the environment
overrides that exist (ENV_OVERRIDES). An option (--condition-timeout, --warmup-timeout,
--request-timeout, --gke-wait-timeout) replaces its entry for one run. Only the poll interval the
condition waits share is here; other loops' pacing stays beside the loop, since it bounds nothing.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

# entry → (environment variable, what a bad value should have been)
ENV_OVERRIDES = {
    "local_pods_ready": ("LLMD_LOCAL_READY_TIMEOUT", "the seconds to wait for the local pods to be Ready, e.g. 90"),
    "cluster_lock_wait": ("LLMD_CLUSTER_WAIT", "the seconds to wait for another run, e.g. 300"),
}


class TimingError(ValueError):
    """An environment override that is not a number of seconds."""


@dataclass(frozen=True)
class Timing:
    # -- checks, on every target
    condition: float = 120.0  # a status condition, an address or readiness in a check (--condition-timeout)
    condition_poll: float = 1.0  # between two looks of a condition wait
    # kube's ..._must_have_condition when the caller names none (GIE's GeneralMustHaveConditionTimeout)
    must_have_condition: float = 300.0
    gateway_address: float = 180.0  # Gateway status.addresses (Gateway API conformance's GatewayMustHaveAddress)
    smoke_condition: float = 30.0  # smoke's cap on condition: a broken deployment must not hold the quick subset
    gateway_warmup: float = 30.0  # until the gateway has served every model once (--warmup-timeout)
    # Totals, not per read: a gateway dripping one byte at a time defeats per-read timeouts.
    warmup_probe: float = 5.0  # one warm-up completion
    gateway_reachable: float = 5.0  # the --gateway-url probe's answer headers
    request: float = 30.0  # one routing request's complete answer (--request-timeout)
    smoke_request: float = 60.0  # smoke's one completion per model
    models_request: float = 30.0  # one GET /v1/models through the gateway
    api_request: float = 30.0  # one Kubernetes API call (the client library would wait forever)
    pod_proxy: float = 10.0  # one GET through the API server's pod proxy
    # -- GKE
    gke_wait: float = 45 * 60.0  # --provision: GPU nodes, then pods Ready with the model downloaded (--gke-wait-timeout)
    gke_poll: float = 10.0  # between two looks while waiting for GPU nodes or pods
    gke_progress_every: float = 30.0  # between two progress lines of a long wait
    gke_operation_wait: float = 15 * 60.0  # another operation on the cluster refusing our resize (retried)
    gke_operation_retry: float = 30.0  # between two resize attempts while that operation runs
    helm_uninstall: float = 10 * 60.0  # helm uninstall --wait (resources gone)
    command_heartbeat: float = 60.0  # between two "still running" lines of a long gcloud/helm/helmfile
    command_stop_grace: float = 30.0  # an interrupted tool between SIGTERM and SIGKILL
    # -- local target
    cluster_lock_wait: float = 0.0  # another run holding this instance's lock; 0: refuse at once (LLMD_CLUSTER_WAIT)
    apiserver_ready: float = 60.0  # kube-apiserver answering /readyz
    apiserver_probe: float = 2.0  # one /readyz request
    crds_established: float = 30.0  # the CRDs Established
    nodes_ready: float = 30.0  # kwok's nodes Ready with a pod CIDR from the controller-manager
    default_service_account: float = 30.0  # the controller-manager creating ServiceAccount default/default
    # the deployment's pods Ready; after it the checks say why not (LLMD_LOCAL_READY_TIMEOUT)
    local_pods_ready: float = 90.0
    readiness_probe: float = 1.0  # a readiness probe without timeoutSeconds (Kubernetes' default)
    pod_stop_grace: float = 3.0  # a pod's container between SIGTERM and SIGKILL
    pod_runner_stop: float = 15.0  # the pod runner's loop ending
    envoy_start: float = 20.0  # Envoy's admin interface ready
    envoy_config_load: float = 10.0  # Envoy loading a new listener, cluster or route config
    gateway_controller_stop: float = 30.0  # the gateway controller's loop ending
    # GKE mode of the local gateway: from taking a Gateway to serving its routes (404 `fault filter abort` until then)
    gke_local_programming_delay: float = 20.0
    process_stop_grace: float = 5.0  # a control-plane process between SIGTERM and SIGKILL
    keeper_ready: float = 60 * 60.0  # a kept target's keeper setting it up (a cold build included)
    keeper_stop: float = 120.0  # a keeper's teardown after SIGTERM, then SIGKILL
    keeper_reuse: float = 10.0  # a kept target's pods Ready again before a reusing run's checks
    # -- fault catalogue: Ready waits, two helmfile syncs and the healthy checks, on top of a fault's own timeout
    fault_restore: float = 600.0
    fault_suite_run: float = 300.0  # one fault's suite run, when the catalogue names no timeout
    fault_settled: float = 150.0  # pods Ready after a change (a replaced pod can take ~45 s locally)
    fault_healthy: float = 120.0  # the healthy deployment at rest before its smoke checks
    fault_healthy_smoke: float = 180.0  # the healthy smoke run (its condition waits capped at smoke_condition)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Timing:
        """The defaults with the ENV_OVERRIDES that `environ` sets."""
        overrides = {}
        for entry, (name, expected) in ENV_OVERRIDES.items():
            raw = environ.get(name)
            if raw is None:
                continue
            try:
                overrides[entry] = float(raw)
            except ValueError:
                raise TimingError(f"{name}={raw!r}: give {expected}") from None
        return replace(cls(), **overrides)


DEFAULT = Timing.from_env(os.environ)
