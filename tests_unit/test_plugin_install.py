"""The suite as an installed pytest plugin: dormant in other projects' runs, configured by ini keys,
and the wheel in a fresh venv running the smoke checks from an empty folder (`--pyargs`).

In this checkout the entry point is emulated with `-p llmd_conformance.fixtures` (the module it names);
the wheel test uses the real one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import venv

import pytest
import yaml

from llmd_conformance.fixtures.plugin import DORMANT
from llmd_conformance.topology import load_topology
from tests_unit.conftest import FAKE_TARGET_CONFTEST, REPO, FakeApiServer, dedent
from tests_unit.fake_cluster import serving_routes, write_kubeconfig
from tests_unit.test_routing_fakes import FakeGateway, by_model, topology_pods

ENTRY_POINT = ["-p", "llmd_conformance.fixtures"]

# Another project's tests: they see the state pytest and hypothesis left, not ours.
FOREIGN_TESTS = '''
import logging

from hypothesis import settings


def test_state_is_untouched():
    assert logging.getLogRecordFactory() is logging.LogRecord
    current = settings.get_current_profile_name()
    print("PROFILE", current, settings.get_profile(current).max_examples, sorted(settings._profiles))
'''


def _profile_line(result: pytest.RunResult) -> str:
    return next(line for line in result.stdout.lines if "PROFILE" in line)


def test_dormant_plugin_changes_nothing_in_another_projects_run(pytester, monkeypatch):
    """Loaded but not asked for: no header, no topology read (a broken ini topology goes unnoticed),
    no report, logging and hypothesis profiles as without it (CI=true: hypothesis's own "ci")."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("CI", "true")
    pytester.makeini("[pytest]\nllmd_topology = missing/topology.yaml\n")
    pytester.makepyfile(test_foreign=FOREIGN_TESTS)
    without = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *ENTRY_POINT)
    without.assert_outcomes(passed=1)
    result.assert_outcomes(passed=1)
    assert _profile_line(result) == _profile_line(without)
    assert "llm-d" not in result.stdout.str()
    assert not (pytester.path / "reports").exists()


def test_dormant_plugin_registers_options_ini_keys_and_markers(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    help_text = pytester.runpytest_subprocess(*ENTRY_POINT, "--help").stdout.str()
    for name in ("--target", "--topology", "--gke-project", "--gke-cluster", "--requests", "llmd_target",
                 "llmd_topology", "llmd_namespace", "llmd_report_dir"):
        assert name in help_text, name
    pytester.makepyfile("import pytest\n\n@pytest.mark.pattern2\ndef test_marked():\n    pass\n")
    pytester.runpytest_subprocess(*ENTRY_POINT, "--strict-markers", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_dormant_run_asking_for_a_suite_fixture_is_told_how_to_turn_it_on(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile("def test_uses(topology):\n    pass\n")
    result = pytester.runpytest_subprocess(*ENTRY_POINT, "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{DORMANT}*"])


def test_ini_keys_configure_target_topology_namespace_and_report_dir(pytester, monkeypatch):
    """A deployment repository's pytest.ini: llmd_target turns the plugin on; relative paths are the
    ini file's, wherever pytest is started; command-line options win."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest(FAKE_TARGET_CONFTEST)
    mine = yaml.safe_load((REPO / "manifests/topologies/pattern1.yaml").read_text())
    mine["name"] = "team-topology"
    (pytester.path / "conformance").mkdir()
    (pytester.path / "conformance/topology.yaml").write_text(yaml.safe_dump(mine))
    pytester.makeini(dedent("""
        [pytest]
        llmd_target = fake
        llmd_topology = conformance/topology.yaml
        llmd_namespace = team-a
        llmd_report_dir = out
    """))
    pytester.makepyfile(test_show=dedent("""
        def test_show(run_config):
            print("OPTIONS", run_config.target, run_config.topology.name, run_config.topology.namespace,
                  run_config.report_dir)
    """))
    (pytester.path / "sub").mkdir()
    monkeypatch.chdir(pytester.path / "sub")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", str(pytester.path / "test_show.py"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*OPTIONS fake team-topology team-a {pytester.path / 'out'}"])
    override = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--namespace", "cli-ns",
                                             "--topology", "pattern2", str(pytester.path / "test_show.py"))
    override.stdout.fnmatch_lines(["*OPTIONS fake pattern2 cli-ns *"])


def test_naming_the_checks_turns_the_plugin_on(pytester, monkeypatch):
    """`pytest suites/` in a checkout needs no --target: the header names the (default local) target."""
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-m", "smoke", str(REPO / "suites"),
                                           "-p", "no:cacheprovider", f"--rootdir={REPO}", "-c", str(REPO / "pyproject.toml"))
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*test_smoke.py::test_model_answers_through_the_gateway*"])


@pytest.fixture
def fake_deployment(tmp_path):
    """A pattern2 deployment as the smoke checks see it: API server (kubeconfig) and gateway, on loopback."""
    topology = load_topology("pattern2")
    api = FakeApiServer(serving_routes(topology))
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    with FakeGateway(topology_pods(topology), by_model).serve() as url:
        yield kubeconfig, url
    api.server.shutdown()
    api.server.server_close()


def test_wheel_in_a_fresh_venv_runs_the_smoke_checks_from_an_empty_folder(tmp_path, fake_deployment):
    """pip install of the built wheel; then, in a folder holding nothing of this repository, another
    project's run stays untouched, `--pyargs llmd_conformance.suites -m smoke` passes, and the local
    target (which needs a checkout) says so."""
    kubeconfig, gateway = fake_deployment
    # Built from a copy: setuptools writes build/ and an .egg-info (whose entry point any run started
    # in the checkout would then load) into the source folder.
    source, dist = tmp_path / "source", tmp_path / "dist"
    for folder in ("llmd_conformance", "suites", "manifests"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source], check=True,
                   timeout=600)
    wheel, = dist.glob("llmd_conformance-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv/bin/python")
    subprocess.run([python, "-m", "pip", "install", "-q", wheel], check=True, timeout=900)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTEST_ADDOPTS", "GITHUB_STEP_SUMMARY")}

    def pytest_in_venv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=300)

    (empty / "test_foreign.py").write_text(FOREIGN_TESTS)
    foreign = pytest_in_venv("-s", "test_foreign.py")
    assert foreign.returncode == 0, foreign.stdout + foreign.stderr
    assert "llmd-conformance-0.1.0" in foreign.stdout and "llm-d conformance:" not in foreign.stdout
    (empty / "test_foreign.py").unlink()

    smoke = pytest_in_venv("--pyargs", "llmd_conformance.suites", "-m", "smoke", "--target", "cluster",
                           "--kubeconfig", str(kubeconfig), "--gateway-url", gateway, "-v")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "3 passed" in smoke.stdout, smoke.stdout
    assert "site-packages/llmd_conformance/manifests/topologies/pattern2.yaml" in smoke.stdout
    assert sorted(p.name for p in (empty / "reports").iterdir()) == ["pattern2-cluster-details.yaml"]
    assert sorted(p.name for p in empty.iterdir()) == ["reports"]

    local = pytest_in_venv("--pyargs", "llmd_conformance.suites", "-m", "smoke", "--report-dir", str(tmp_path / "r"))
    assert local.returncode == pytest.ExitCode.TESTS_FAILED
    assert "--target local builds its cluster from the Go modules under localcluster/ of a checkout" in local.stdout
