"""One target per run: set up once and torn down once by the process that owns the run, with and
without pytest-xdist, only when a selected test needs it; setup failures reach every such test."""
from __future__ import annotations

import pytest
import yaml

from tests_unit.conftest import dedent, events, resources

USES_TARGET = dedent("""
    import os
    from pathlib import Path

    def record_pid():
        with (Path(__file__).parent / "test-pids.log").open("a") as log:
            log.write(f"{{os.getpid()}}\\n")

    def test_{name}_a(target):
        record_pid()
        assert (target.name, target.context, target.versions()) == ("fake", "fake-context", {{"fake": "1.0"}})

    def test_{name}_b(target):
        record_pid()
        assert target.describe() == "a fake target for the harness tests"
""")


def recorded_pids(pytester) -> set[int]:
    return {int(line) for line in (pytester.path / "test-pids.log").read_text().split()}


def write_target_tests(pytester) -> None:
    pytester.makepyfile(test_one=USES_TARGET.format(name="one"), test_two=USES_TARGET.format(name="two"))


def test_target_is_set_up_once_under_xdist(suite_pytester):
    """With -n 2 the controller sets up and tears down exactly once; workers only read the snapshot."""
    write_target_tests(suite_pytester)
    result = suite_pytester.runpytest_subprocess("-n", "2", "--target", "fake")
    result.assert_outcomes(passed=4)
    recorded = events(suite_pytester)
    assert [event for event, _ in recorded] == ["setup", "teardown"]
    owner = recorded[0][1]
    assert recorded[1][1] == owner
    workers = recorded_pids(suite_pytester)
    assert owner not in workers and len(workers) == 2
    result.stdout.fnmatch_lines(["target fake: setting up", "target fake: ready (a fake target for the harness tests)",
                                 "*", "target fake: tearing down", "target fake: torn down"], consecutive=False)


def test_target_is_set_up_once_without_xdist(suite_pytester):
    """In a single process the first test needing the target sets it up; teardown comes at the end."""
    write_target_tests(suite_pytester)
    result = suite_pytester.runpytest_subprocess("--target", "fake")
    result.assert_outcomes(passed=4)
    assert [event for event, _ in events(suite_pytester)] == ["setup", "teardown"]
    assert {pid for _, pid in events(suite_pytester)} == recorded_pids(suite_pytester)
    result.stdout.fnmatch_lines(["*target fake: setting up*", "*target fake: torn down*"], consecutive=False)


@pytest.mark.parametrize("args", [["-n", "2"], []], ids=["xdist", "single"])
def test_no_target_when_no_selected_test_needs_one(suite_pytester, args):
    """Tests that do not use the target (or are deselected) never cause a setup."""
    suite_pytester.makepyfile(dedent("""
        import pytest

        def test_plain():
            pass

        @pytest.mark.slow
        def test_deselected(target):
            pass
    """))
    result = suite_pytester.runpytest_subprocess(*args, "--target", "fake", "-m", "not slow")
    # xdist does not report deselections made in its workers
    result.assert_outcomes(passed=1, deselected=0 if args else 1)
    assert events(suite_pytester) == []
    assert "setting up" not in result.stdout.str()


@pytest.mark.parametrize("args", [["-n", "2"], []], ids=["xdist", "single"])
def test_failed_setup_errors_each_test_needing_the_target(suite_pytester, monkeypatch, args):
    """Setup fails once; every test needing the target errors with the cause; teardown still runs once."""
    monkeypatch.setenv("FAKE_SETUP_ERROR", "no GPUs today")
    write_target_tests(suite_pytester)
    suite_pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = suite_pytester.runpytest_subprocess(*args, "--target", "fake")
    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines(["*target fake: setup failed*"])
    assert result.stdout.str().count("RuntimeError: no GPUs today") >= 4
    assert [event for event, _ in events(suite_pytester)] == ["setup", "teardown"]


def test_plan_prints_and_runs_no_test(suite_pytester):
    """--plan calls the target's setup in plan mode, then ends the run with exit code 0 and no test."""
    write_target_tests(suite_pytester)
    result = suite_pytester.runpytest_subprocess("-n", "2", "--target", "fake", "--plan")
    assert result.ret == pytest.ExitCode.OK
    result.stderr.fnmatch_lines(["Exit: --plan: printed the actions above; nothing was changed"])
    assert [event for event, _ in events(suite_pytester)] == ["plan"]
    assert not (suite_pytester.path / "test-pids.log").exists()


def test_missing_namespace_errors_each_test_using_kube(suite_pytester, monkeypatch, api_server):
    """The `kube` fixture checks the topology's namespace exists and says how to fix it."""
    api_server.routes["/apis/inference.networking.k8s.io/v1"] = resources("inferencepools")
    kubeconfig = suite_pytester.path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake-context",
        "clusters": [{"name": "c", "cluster": {"server": api_server.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake-context", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("FAKE_KUBECONFIG", str(kubeconfig))
    suite_pytester.makepyfile("def test_a(kube):\n    pass\n\ndef test_b(kube):\n    pass\n")
    result = suite_pytester.runpytest_subprocess("--target", "fake", "--namespace", "team-a")
    result.assert_outcomes(errors=2)
    assert "During handling" not in result.stdout.str()
    result.stdout.fnmatch_lines([
        f"target fake, context fake-context of {kubeconfig}: namespace 'team-a' does not exist; the topology "
        f"pattern2 deploys there; pass --namespace or deploy it first"])
