"""benchmarks/routing_driver.py and benchmarks/verdict_time.py run against fakes served on loopback;
the arguments and report reading of benchmarks/model_count.py and fault_repeat.py (they need a cluster)."""
from __future__ import annotations

import shutil

import pytest

import yaml

from benchmarks import fault_repeat, model_count, routing_driver, verdict_time
from llmd_conformance.topology import load_topology
from tests_unit.test_routing_fakes import FakeGateway, blind, by_model, topology_pods

GEMMA = "google/gemma-2b-it"
PHI = "microsoft/Phi-3-mini-4k-instruct"


def test_driver_benchmark_prints_its_rate_and_answers(capsys, monkeypatch):
    """The driver figure is printed with its answer classes; without wrk that half says it is skipped."""
    monkeypatch.setattr(routing_driver.shutil, "which", lambda name: None)
    with FakeGateway(topology_pods(load_topology("pattern2")), by_model).serve() as url:
        assert routing_driver.main(["--url", url, "--model", GEMMA, "--requests", "50", "--concurrency", "4"]) == 0
    out = capsys.readouterr().out
    assert "requests/s (50 requests, concurrency 4; answers: ok 50)" in out
    assert "wrk: not installed, skipped" in out


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (Debian: apt-get install wrk)")
def test_driver_benchmark_compares_with_wrk_on_the_same_url(capsys):
    """With wrk installed both rates are printed and their ratio."""
    with FakeGateway(topology_pods(load_topology("pattern2")), by_model).serve() as url:
        routing_driver.main(["--url", url, "--model", GEMMA, "--requests", "50", "--concurrency", "2",
                             "--wrk-seconds", "1"])
    out = capsys.readouterr().out
    assert "wrk: " in out and " requests/s over 1 s" in out and "driver / wrk: " in out


def test_verdict_time_reports_requests_and_seconds_per_run(capsys):
    """A healthy fake needs every planned request; a model-blind one is decided after one batch."""
    topology = load_topology("pattern2-single-pool")
    args = ["--model", GEMMA, "--model", PHI, "--requests", "200", "--mix-seed", "3", "--concurrency", "4"]
    with FakeGateway(topology_pods(load_topology("pattern2")), by_model).serve() as url:
        verdict_time.main(["--url", url, *args])
    with FakeGateway(topology_pods(topology), blind, seed=1).serve() as url:
        verdict_time.main(["--url", url, *args, "--runs", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run 1 (mix seed 3): 200 requests") and "PASS" in lines[0]
    assert lines[1].startswith("run 1 (mix seed 3): 10 requests") and "FAIL" in lines[1]
    assert lines[2].startswith("run 2 (mix seed 4): 10 requests")
    assert lines[3].startswith("median: 10 requests")


@pytest.mark.parametrize(("argv", "message"), [
    (["--url", "http://127.0.0.1:9", "--model", "m", "--threshold", "2"], "threshold must be in (0, 1)"),
    (["--url", "http://127.0.0.1:9", "--model", "m", "--unknown-share", "1"], "--unknown-share must be in [0, 1)"),
])
def test_verdict_time_refuses_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit):
        verdict_time.main(argv)
    assert message in capsys.readouterr().err


def test_driver_benchmark_refuses_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        routing_driver.main(["--url", "http://127.0.0.1:9", "--model", "m", "--concurrency", "0"])
    assert "--concurrency must be >= 1, got 0" in capsys.readouterr().err


def test_model_count_reads_requests_sent_and_the_failed_models_from_the_details(tmp_path):
    details = {"routing": [{"passed": False, "requests_sent": 302, "reason": "x",
                            "models_failed": ["HuggingFaceTB/SmolLM2-135M-Instruct"]}]}
    (tmp_path / "pattern2-4-models-cluster-details.yaml").write_text(yaml.safe_dump(details))
    assert model_count.routing_figures(tmp_path, "pattern2-4-models") == (
        "302", "FAIL (HuggingFaceTB/SmolLM2-135M-Instruct)")
    assert model_count.routing_figures(tmp_path, "pattern2")[0] == "-"


@pytest.mark.parametrize(("main", "argv", "message"), [
    (model_count.main, ["--topology", "pattern9"], "unknown topology 'pattern9'"),
    (fault_repeat.main, ["--fault", "no-such-fault"], "no fault 'no-such-fault'"),
    (fault_repeat.main, ["--fault", "bbr-missing", "--runs", "0"], "--runs must be >= 1, got 0"),
])
def test_cluster_benchmarks_refuse_bad_arguments_before_starting_anything(capsys, main, argv, message):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
