"""Running gcloud, helm and helmfile: the command line printed (redacted) first, heartbeat lines while a
long command runs, the child stopped when we are interrupted, and an explicit environment."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmd_conformance import redact, timing
from llmd_conformance.childenv import child_env
from llmd_conformance.targets import TargetError

Progress = Callable[[str], None]
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # helmfile colours its errors even into a pipe
# What the tools may need besides childenv.BASE: their own configuration and credentials (gcloud's,
# helm's), the kubeconfig, proxies. Never HF_TOKEN or any other credential of ours.
TOOL_ENV = ("KUBECONFIG", "CLOUDSDK_CONFIG", "CLOUDSDK_CORE_PROJECT", "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
            "GOOGLE_APPLICATION_CREDENTIALS", "USE_GKE_GCLOUD_AUTH_PLUGIN", "HELM_CACHE_HOME", "HELM_CONFIG_HOME",
            "HELM_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HTTPS_PROXY", "HTTP_PROXY",
            "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")


def tool_env_names() -> tuple[str, ...]:
    """TOOL_ENV and the names listed in LLMD_TOOL_ENV (comma-separated): what a setup's tools need more."""
    extra = [name.strip() for name in os.environ.get("LLMD_TOOL_ENV", "").split(",") if name.strip()]
    return (*TOOL_ENV, *extra)


class CommandError(TargetError):
    """A tool is missing or a command failed; the message has the command line and its last lines."""


def stderr_progress(line: str) -> None:
    print(redact.redact(line), file=sys.stderr, flush=True)



def fmt_duration(seconds: float) -> str:
    """45m, 3m07s, 1h30m, 12s."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m" + (f"{seconds % 60:02d}s" if seconds % 60 else "")
    return f"{seconds}s"


def find_tool(name: str) -> str | None:
    """A tool on PATH, else the copy built into the local cache by llmd_conformance.build."""
    found = shutil.which(name)
    if found:
        return found
    from llmd_conformance.build import bin_dir

    cached = bin_dir() / name
    return str(cached) if cached.is_file() and os.access(cached, os.X_OK) else None



@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_tail(self, lines: int = 8) -> str:
        text = ANSI_ESCAPE.sub("", self.stderr.strip() or self.stdout.strip()).splitlines()
        return redact.redact("\n".join(text[-lines:]))


class CommandRunner:
    """Runs external commands; every command line is printed (redacted) before it runs."""

    def __init__(self, progress: Progress = stderr_progress, heartbeat_s: float = timing.DEFAULT.command_heartbeat):
        self.progress = progress
        self.heartbeat_s = heartbeat_s

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        check: bool = True,
        quiet: bool = False,
        what: str | None = None,
        cwd: Path | None = None,
    ) -> CommandResult:
        """Run `argv` with childenv.BASE, TOOL_ENV and `env`. `quiet` hides the output (not the command line)."""
        argv = tuple(str(a) for a in argv)
        # PATH is plumbing (where helm is), not part of what the command does.
        shown_env = [f"{k}={v}" for k, v in (env or {}).items() if k != "PATH"]
        shown = " ".join([*shown_env, redact.redact_argv([Path(argv[0]).name, *argv[1:]])])
        self.progress(f"$ {shown}")
        started = time.monotonic()
        try:
            # Own session: a Ctrl-C in the terminal reaches us, and we decide how the child stops.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=child_env(env, passthrough=tool_env_names()), cwd=cwd, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise CommandError(f"{argv[0]} is not installed (not found on PATH)") from exc
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=self.heartbeat_s)
                    break
                except subprocess.TimeoutExpired:
                    self.progress(f"  ... still running after {fmt_duration(time.monotonic() - started)}: {Path(argv[0]).name} {' '.join(argv[1:3])}")
        except BaseException:
            _stop(proc)
            raise
        result = CommandResult(argv, proc.returncode, stdout, stderr)
        if not quiet:
            for line in stdout.strip().splitlines()[-20:]:
                self.progress(f"  {redact.redact(line)}")
        if check and not result.ok:
            raise CommandError(f"{what or Path(argv[0]).name} failed (exit {result.returncode}): {shown}\n{result.error_tail()}")
        return result


def _stop(proc: subprocess.Popen, grace_s: float = timing.DEFAULT.command_stop_grace) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


