"""The fault catalogue (manifests/faults/catalogue.yaml): every deliberately broken deployment is
failed by the checks it names, with the words it names, and the healthy deployment comes back.

    pytest suites/ -m faults                   # every fault, on the local target
    pytest suites/ -m faults -k bbr-missing    # one fault
    pytest suites/ -m "faults and ci_sample"   # the sample .ci/run runs (llmd_conformance/faults.py CI_SAMPLE)

One test per fault. The local target is set up once (healthy pattern2); each test applies its
fault, runs the suite against the cluster in a subprocess (--target cluster, read-only), judges
the JUnit XML and restores. The table fault -> expected check -> detected? -> message excerpt is
printed at the end and written to <report dir>/faults.md and faults.yaml; each suite run's JUnit
XML, log and report stay in <report dir>/faults/<fault>/.
"""
from __future__ import annotations

import pytest

from llmd_conformance import timing
from llmd_conformance.faults import CI_SAMPLE, BenchConfig, FaultBench, FaultTablePlugin, load_catalogue
from llmd_conformance.targets import progress_writer

pytestmark = [pytest.mark.faults]

CATALOGUE = load_catalogue()
SAMPLED = {CATALOGUE.fault(name).name for name in CI_SAMPLE}  # a name not in the catalogue fails collection


@pytest.fixture(scope="session")
def local_pattern2_only(run_config, topology) -> None:
    """Refuse before any target is set up: the catalogue breaks deployments, so only a local one of its topology."""
    if run_config.target != "local":
        pytest.skip(f"the fault catalogue breaks the deployment on purpose: it runs on --target local only, "
                    f"not {run_config.target}")
    if topology.name != CATALOGUE.healthy:
        pytest.fail(f"the fault catalogue starts from topology {CATALOGUE.healthy}; run it with "
                    f"--topology {CATALOGUE.healthy} (got {topology.name})", pytrace=False)


@pytest.fixture(scope="session")
def fault_bench(local_pattern2_only, target, kube, topology, run_config, pytestconfig) -> FaultBench:
    # local_pattern2_only comes first: pytest sets fixtures up in argument order.
    bench = FaultBench(CATALOGUE, topology, kube.api_client, target.cluster,
                       BenchConfig(kubeconfig=target.kubeconfig, report_dir=run_config.report_dir),
                       log=progress_writer(pytestconfig))
    pytestconfig.pluginmanager.register(FaultTablePlugin(bench), "llmd-fault-table")
    return bench


@pytest.mark.parametrize("fault", [
    pytest.param(f, id=f.name, marks=[pytest.mark.timeout(f.timeout + timing.DEFAULT.fault_restore),
                                      *([pytest.mark.ci_sample] if f.name in SAMPLED else [])])
    for f in CATALOGUE.faults])
def test_fault_is_failed_by_its_checks(fault, fault_bench):
    """The broken deployment fails the named checks with the named words, keeps the named ones passing,
    and is restored to a healthy deployment afterwards."""
    result = fault_bench.run(fault)
    assert result.passed, result.explain()
