"""The 'llm-d conformance' options and markers: validation with messages that say what to fix."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llmd_conformance.fixtures.plugin import MARKERS, read_options
from tests_unit.conftest import dedent

DEFAULTS = {
    "target": "local", "topology": "pattern2", "namespace": None, "kubeconfig": None, "context": None,
    "gateway_url": None, "condition_timeout": None, "warmup_timeout": None, "gateway_profile": None,
    "report_dir": "reports", "provision": False, "teardown": None, "plan": False,
}


def options(**overrides):
    values = DEFAULTS | overrides
    return read_options(values.__getitem__, Path("/somewhere"))


def usage_error(**overrides) -> str:
    with pytest.raises(pytest.UsageError) as excinfo:
        options(**overrides)
    return str(excinfo.value)


def test_defaults_resolve_from_the_topology():
    """Without options: target local, topology pattern2 in its namespace, reports under the invocation folder,
    timeouts and gateway profile left to the profile the Gateway's class names."""
    run = options()
    assert (run.target, run.topology.name, run.topology.namespace) == ("local", "pattern2", "llm-d")
    assert run.report_dir == Path("/somewhere/reports")
    assert (run.condition_timeout, run.warmup_timeout, run.gateway_profile) == (None, None, None)


def test_namespace_overrides_the_topology():
    """--namespace replaces the topology's namespace for every check."""
    assert options(namespace="team-a").topology.namespace == "team-a"


def test_unknown_target_lists_the_known_ones():
    """An unknown --target names the registered ones."""
    assert usage_error(target="minikube") == "--target 'minikube' is not a known target (known: cluster, gke, local)"


def test_bad_topology_is_a_usage_error():
    """Topology problems surface as a usage error prefixed with the option."""
    assert usage_error(topology="pattern3").startswith("--topology: unknown topology 'pattern3' (known: ")


@pytest.mark.parametrize("overrides,message", [
    ({"condition_timeout": 0.0}, "--condition-timeout must be > 0 seconds, got 0.0"),
    ({"warmup_timeout": -1.0}, "--warmup-timeout must be >= 0 seconds, got -1.0"),
    ({"gateway_url": "127.0.0.1:80"}, "--gateway-url '127.0.0.1:80' must look like http://HOST[:PORT]"),
    ({"gateway_url": "ftp://gw"}, "--gateway-url 'ftp://gw' must look like http://HOST[:PORT]"),
    ({"namespace": ""}, "--namespace must not be empty"),
])
def test_bad_values_say_what_to_fix(overrides, message):
    """Each bad value gets its own line."""
    assert usage_error(**overrides) == message


def test_all_problems_are_reported_together():
    """Several bad options: one line each."""
    assert usage_error(target="x", condition_timeout=-1.0).splitlines() == [
        "--target 'x' is not a known target (known: cluster, gke, local)",
        "--condition-timeout must be > 0 seconds, got -1.0"]


def test_gateway_profile_by_name_or_file(tmp_path):
    """--gateway-profile takes a profile name or the path of a profile file; the choice says which."""
    assert options(gateway_profile="gke").gateway_profile.profile.name == "gke"
    copy = tmp_path / "mine.yaml"
    copy.write_text((Path(__file__).parents[1] / "manifests" / "gateways" / "istio.yaml").read_text())
    chosen = options(gateway_profile=str(copy)).gateway_profile
    assert (chosen.profile.name, chosen.chosen_by) == ("istio", f"--gateway-profile {copy}")


def test_unknown_gateway_profile_lists_the_known_ones():
    """A misspelt profile is a usage error naming the profiles there are."""
    assert usage_error(gateway_profile="gkee") == (
        "--gateway-profile: unknown gateway profile 'gkee' (known: gke, istio, kgateway, reference); "
        "pass one of these names or the path of a profile YAML file")


def test_gateway_url_loses_its_trailing_slash():
    """URLs are joined with paths later; a trailing slash would double it."""
    assert options(gateway_url="http://127.0.0.1:8080/").gateway_url == "http://127.0.0.1:8080"


def test_usage_error_from_the_command_line(suite_pytester):
    """A bad option stops pytest before any test with exit code 4 and the message."""
    suite_pytester.makepyfile("def test_x(): pass")
    result = suite_pytester.runpytest_subprocess("--target", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --target 'nosuch' is not a known target (known: cluster, fake, gke, local)"])


def test_options_form_one_help_group(suite_pytester):
    """All options appear under the 'llm-d conformance' group of --help."""
    result = suite_pytester.runpytest_subprocess("--help")
    text = result.stdout.str()
    group = text[text.index("llm-d conformance"):]
    for flag in ("--target", "--topology", "--namespace", "--kubeconfig", "--context", "--gateway-url",
                 "--condition-timeout", "--report-dir", "--provision", "--teardown", "--plan"):
        assert flag in group, flag


def test_markers_are_registered_with_descriptions(suite_pytester):
    """pytest --markers lists every suite marker with its description."""
    result = suite_pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines([f"@pytest.mark.{name}: {description}" for name, description in MARKERS.items()],
                                consecutive=False)


def test_unregistered_marker_is_an_error_with_strict_markers(suite_pytester):
    """Under --strict-markers a typo in a marker fails collection."""
    suite_pytester.makepyfile(dedent("""
        import pytest

        @pytest.mark.patern2
        def test_x():
            pass
    """))
    result = suite_pytester.runpytest_subprocess("--strict-markers")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*'patern2' not found in `markers` configuration option*"])


def test_selecting_an_unknown_marker_is_an_error_with_strict_markers(suite_pytester):
    """-m naming no registered marker: a usage error under --strict-markers (pytest 9), else nothing selected."""
    suite_pytester.makepyfile(dedent("""
        import pytest

        @pytest.mark.pattern2
        def test_x():
            pass
    """))
    result = suite_pytester.runpytest_subprocess("--strict-markers", "-m", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: Unknown marker(s) in '-m' expression: nosuch.*"])
    result = suite_pytester.runpytest_subprocess("-m", "nosuch")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["*1 deselected*"])
    assert suite_pytester.runpytest_subprocess("--strict-markers", "-m", "pattern2").ret == pytest.ExitCode.OK


def test_unreachable_gateway_url_fails_at_session_start(suite_pytester):
    """--gateway-url nothing listens on stops the run before any test, naming the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    suite_pytester.makepyfile("def test_x(): pass")
    result = suite_pytester.runpytest_subprocess("--target", "fake", "--gateway-url", f"http://127.0.0.1:{port}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: cannot connect to http://127.0.0.1:{port}: connection refused; check --gateway-url"])


def test_report_dir_that_cannot_be_written_is_refused_before_any_setup(tmp_path):
    """A file where the folder should be used to end in an INTERNALERROR after the run, with no teardown."""
    a_file = tmp_path / "reports"
    a_file.write_text("not a folder")
    assert "--report-dir" in usage_error(report_dir=str(a_file)) and "it is a file, not a folder" in usage_error(
        report_dir=str(a_file))
    assert f"{a_file} is a file, not a folder" in usage_error(report_dir=str(a_file / "below"))
    assert options(report_dir=str(tmp_path / "new" / "folder")).report_dir == tmp_path / "new" / "folder"
