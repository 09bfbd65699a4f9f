"""Secrets (the HF token, cloud access tokens) never reach logs, command lines, exceptions, JUnit or reports."""
from __future__ import annotations

import base64
import logging
import sys
from pathlib import Path

import pytest

from fake_gcloud import install, read_log
from llmd_conformance import redact
from llmd_conformance.commands import CommandError, CommandRunner

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_" + "Q" * 34
PLUGINS_CONFTEST = 'pytest_plugins = ["llmd_conformance.fixtures.plugin", "llmd_conformance.fixtures.gke_plugin"]\n'


@pytest.fixture
def planted():
    """A token registered as the suite registers env HF_TOKEN (registration is process-wide, like in a run)."""
    redact.register_secret(TOKEN)
    return TOKEN


def test_registered_secret_and_its_base64_are_masked(planted):
    encoded = base64.b64encode(planted.encode()).decode()
    assert redact.redact(f"token={planted} data: {encoded}") == "token=*** data: ***"


def test_truncated_copies_are_masked(planted):
    """pytest shortens long strings in assertion diffs to their two ends: both ends are secret."""
    assert redact.redact(f"assert '{planted[:12]}...{planted[-13:]}' == 'x'") == "assert '***...***' == 'x'"


@pytest.mark.parametrize(("text", "expected"), [
    ("hf_" + "a1B2" * 8, "***"),
    ("ya29.a0AfH6SMBx-token_value.more", "***"),
    ("Authorization: Bearer abc.def.ghi", "Authorization: Bearer ***"),
    ("HF_TOKEN=somethingsecret", "HF_TOKEN=***"),
])
def test_token_shapes_are_masked_without_registration(text, expected):
    assert redact.redact(text) == expected


def test_short_values_are_not_registered():
    redact.register_secret("abc")
    assert redact.redact("abc abcdef") == "abc abcdef"


def test_argv_is_quoted_and_masked(planted):
    assert redact.redact_argv(["kubectl", "create", "secret", f"--from-literal=HF_TOKEN={planted}"]) == \
        "kubectl create secret --from-literal=HF_TOKEN=***"


def test_log_records_are_cleaned_at_creation_for_every_handler(planted):
    redact.install()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    logger = logging.getLogger("test_gke_redact")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.warning("token is %s", planted)
        try:
            raise RuntimeError(f"failed with {planted}")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert seen[0] == "token is ***"
    assert "failed with ***" in seen[1] and planted not in "\n".join(seen)


def test_a_failing_command_that_prints_the_token_raises_without_it(planted):
    lines: list[str] = []
    runner = CommandRunner(progress=lines.append)
    script = f"import sys; print('out {planted}'); print('err {planted}', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandError) as failure:
        runner.run([sys.executable, "-c", script], what="leaky tool")
    text = str(failure.value) + "\n".join(lines)
    assert "leaky tool failed (exit 3)" in text and "err ***" in text
    assert planted not in text


def _all_output(result: pytest.RunResult, folder: Path) -> dict[str, str]:
    """Everything a run leaves behind: its stdout and stderr and every file it wrote."""
    out = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".xml", ".yaml", ".yml", ".json", ".log", ".txt"):
            out[str(path.relative_to(folder))] = path.read_text(errors="replace")
    return out


def _assert_no_token(outputs: dict[str, str]) -> None:
    leaks = {name: text.count(TOKEN[:12]) + text.count(TOKEN[-13:]) for name, text in outputs.items()}
    assert not any(leaks.values()), f"the planted token (or a part of it) appears in: {[n for n, c in leaks.items() if c]}"


def test_planted_secret_never_appears_in_the_output_of_a_plan_run(pytester, monkeypatch, tmp_path):
    """--plan with HF_TOKEN set: the Secret step is printed masked; no gcloud, helm or helmfile call is made."""
    env = install(tmp_path / "bin", tmp_path / "state.json", tmp_path / "calls.jsonl")
    for key, value in {**env, "PYTHONPATH": str(REPO), "HF_TOKEN": TOKEN}.items():
        monkeypatch.setenv(key, value)
    pytester.makeconftest(PLUGINS_CONFTEST)
    pytester.makepyfile(test_any="import pytest\n\n@pytest.mark.pattern2\ndef test_any():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--target", "gke", "--provision", "--plan", "--gke-project", "test-project",
        "--gke-zone", "us-central1-a", "--gke-cluster", "test-cluster", "--junitxml", "junit.xml", "--report-dir", "reports",
    )
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([
        "*1. [[]check ] gcloud auth print-access-token*",
        "*[[]change] gcloud --quiet container clusters resize test-cluster --node-pool nvidia-t4-pool --num-nodes 2 "
        "--zone us-central1-a --project test-project*",
        "*[[]change] kubectl create secret generic llm-d-hf-token -n llm-d --from-literal=HF_TOKEN=[*][*][*]*",
        "*[[]change] * helmfile -f manifests/helmfile.yaml.gotmpl -e gke sync*",
        "*teardown restore:*",
        "*[[]undo  ] helm uninstall RELEASE -n llm-d*",
        "*[[]undo  ] gcloud --quiet container clusters resize test-cluster * --num-nodes FOUND *",
        "*--plan: printed the actions above; nothing was changed*",
    ])
    # pytest.exit at session start means junitxml writes no file; whatever was written is checked below.
    assert read_log(tmp_path / "calls.jsonl") == [], "--plan ran a command"
    _assert_no_token(_all_output(result, pytester.path))


def test_planted_secret_never_appears_in_junit_or_the_conformance_report(pytester, monkeypatch):
    """A failing pattern2 check that prints, logs, records and asserts with the token: all of it is masked."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    pytester.makeconftest(PLUGINS_CONFTEST)
    pytester.makepyfile(test_leaky='''
        import json, logging, os
        import pytest

        TOKEN = os.environ["HF_TOKEN"]

        @pytest.mark.pattern2
        def test_leaky(record_property):
            print("stdout:", TOKEN)
            logging.getLogger("leaky").warning("log: %s", TOKEN)
            record_property("llmd.property.token", json.dumps(TOKEN))
            assert TOKEN == "expected", f"message: {TOKEN}"
    ''')
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--target", "gke", "--junitxml", "junit.xml", "--report-dir", "reports",
        "-o", "junit_logging=all", "-o", "junit_family=legacy", "-rA",
    )
    assert result.ret == 1
    outputs = _all_output(result, pytester.path)
    assert any(name.endswith("report.yaml") for name in outputs), f"no conformance report written: {sorted(outputs)}"
    junit = outputs["junit.xml"]
    # The masked copies prove every channel was exercised: message, captured stdout and log, the property.
    for channel in ("message: ***", "stdout: ***", "log: ***", 'name="llmd.property.token" value="&quot;***&quot;"'):
        assert channel in junit, f"{channel!r} missing from JUnit XML"
    _assert_no_token(outputs)
