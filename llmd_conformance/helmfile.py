"""helmfile and helm for one topology on one environment (`gke`, `local`): the one way this suite runs them,
for GKE provisioning, the local target and the fault catalogue."""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmd_conformance import paths, timing
from llmd_conformance.commands import CommandError, CommandResult, CommandRunner, find_tool, fmt_duration

REPO = paths.ROOT
HELMFILE = REPO / "manifests" / "helmfile.yaml.gotmpl"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def release_name_postfix(topology) -> str:
    """The seed's RELEASE_NAME_POSTFIX: the <postfix> of Gateway infra-<postfix>-inference-gateway."""
    match = re.fullmatch(r"infra-(.+)-inference-gateway", topology.gateway_name)
    return match.group(1) if match else topology.name


class HelmfileRunner:
    """helmfile and helm for one topology on one environment (`gke`, `local`)."""

    def __init__(
        self,
        topology_name: str,
        environment: str,
        runner: CommandRunner,
        *,
        postfix: str,
        charts_dir: Callable[[], Path] | None = None,
        extra_env: dict[str, str] | None = None,
        helmfile_file: Path = HELMFILE,
        helmfile: str = "helmfile",
        helm: str = "helm",
        kubeconfig: Path | None = None,
        context: str | None = None,
    ):
        self.topology_name, self.environment, self.runner = topology_name, environment, runner
        self.kubeconfig, self.context = kubeconfig, context
        self.postfix = postfix
        self.charts_dir = charts_dir or _prepare_charts
        self.extra_env = dict(extra_env or {})
        self.helmfile_file = helmfile_file
        self.helmfile, self.helm = helmfile, helm
        self._charts: Path | None = None

    @classmethod
    def for_topology(cls, topology, environment: str, runner: CommandRunner, **kwargs) -> HelmfileRunner:
        return cls(topology.name, environment, runner, postfix=release_name_postfix(topology), **kwargs)

    @classmethod
    def local(cls, topology, kubeconfig: Path | None, progress: Callable[[str], None]) -> HelmfileRunner:
        """The topology's local environment (`local` or `gke-local`), with the helm and helmfile this machine built."""
        from llmd_conformance import build

        return cls.for_topology(topology, topology.local_environment, CommandRunner(progress=progress),
                                kubeconfig=kubeconfig,
                                helmfile=str(build.binary("helmfile")), helm=str(build.binary("helm")))

    def preflight(self) -> None:
        for attr, what in (("helmfile", "helmfile v1.1 (https://helmfile.readthedocs.io)"), ("helm", "helm v3.19")):
            found = find_tool(getattr(self, attr))
            if not found:
                raise CommandError(f"{getattr(self, attr)} is not installed: install {what} or build it with "
                               "`python -m llmd_conformance.build --only helm helmfile`")
            setattr(self, attr, found)
        if not self.helmfile_file.is_file():
            raise CommandError(f"helmfile {self.helmfile_file} is missing")

    def env(self, charts: str | None = None) -> dict[str, str]:
        if charts is None:
            if self._charts is None:
                self._charts = self.charts_dir()
            charts = str(self._charts)
        helm_dir = str(Path(self.helm).parent) if os.sep in self.helm else None
        env = {"TOPOLOGY": self.topology_name, "RELEASE_NAME_POSTFIX": self.postfix, "LLMD_GIE_CHARTS": charts,
               **self.extra_env}
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        if helm_dir:  # helmfile calls `helm`: make it the one we resolved
            env["PATH"] = helm_dir + os.pathsep + os.environ.get("PATH", "")
        return env

    def _helmfile_base(self) -> list[str]:
        context = ["--kube-context", self.context] if self.context else []
        return [self.helmfile, "-f", _shown_path(self.helmfile_file), "-e", self.environment, *context]

    def _helm_context(self) -> list[str]:
        return ["--kube-context", self.context] if self.context else []

    def command(self, *args: str, only: Sequence[str] = (), state_values: str | None = None) -> list[str]:
        """helmfile ARGS, limited to the releases in `only`, with a --state-values-file."""
        selectors = [arg for name in only for arg in ("-l", f"name={name}")]
        values = ["--state-values-file", state_values] if state_values else []
        return [*self._helmfile_base(), *values, *selectors, *args]

    def list_command(self) -> list[str]:
        return self.command("list", "--output", "json")

    def sync_command(self, only: Sequence[str] | None = None) -> list[str]:
        return self.command("sync", only=only or ())

    def helm_list_command(self, namespace: str) -> list[str]:
        return [self.helm, "list", "-n", namespace, "-a", "-o", "json", *self._helm_context()]

    def uninstall_command(self, release: Release) -> list[str]:
        return [self.helm, "uninstall", release.name, "-n", release.namespace, "--ignore-not-found", "--wait",
                "--timeout", fmt_duration(timing.DEFAULT.helm_uninstall), *self._helm_context()]

    def releases(self) -> list[Release]:
        """The releases the helmfile installs for this topology, in its order."""
        result = self._run(self.list_command(), quiet=True)
        try:
            listed = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise CommandError(f"`helmfile list --output json` did not answer JSON: {result.stdout[:200]!r}") from exc
        return [Release(r["name"], r["namespace"]) for r in listed if r.get("enabled", True) and r.get("installed", True)]

    def statuses(self, namespaces: set[str]) -> dict[Release, str]:
        """Helm status ('deployed', 'failed', 'pending-install', ...) of every release present."""
        found: dict[Release, str] = {}
        for namespace in sorted(namespaces):
            result = self.runner.run(self.helm_list_command(namespace), env=self._helm_env(), quiet=True, what="helm list")
            try:
                rows = json.loads(result.stdout or "[]")
            except json.JSONDecodeError as exc:
                raise CommandError(f"`helm list -o json` did not answer JSON: {result.stdout[:200]!r}") from exc
            for row in rows:
                found[Release(row["name"], row.get("namespace", namespace))] = row.get("status", "unknown")
        return found

    def sync(self, only: Sequence[str] | None = None, state_values: dict | None = None) -> None:
        self.run("sync", only=only or (), state_values=state_values)

    def run(self, *args: str, only: Sequence[str] = (), state_values: dict | None = None,
            quiet: bool = False) -> CommandResult:
        """helmfile ARGS; `state_values` (the fault catalogue's releaseValues / disabledReleases) go to
        a private file for this call."""
        if not state_values:
            return self._run(self.command(*args, only=only), quiet=quiet, what=f"helmfile {args[0]}")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="llmd-state-values-") as values:
            yaml.safe_dump(state_values, values)
            values.flush()
            return self._run(self.command(*args, only=only, state_values=values.name), quiet=quiet,
                             what=f"helmfile {args[0]}")

    def uninstall(self, release: Release) -> None:
        self.runner.run(self.uninstall_command(release), env=self._helm_env(), what=f"helm uninstall {release.name}")

    def _helm_env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig is not None else {}

    def _run(self, argv: list[str], quiet: bool = False, what: str | None = None) -> CommandResult:
        return self.runner.run(argv, env=self.env(), quiet=quiet, what=what, cwd=REPO)

    def plan_env(self) -> str:
        env = self.env("<GIE v1.5.0 charts from `python -m llmd_conformance.charts`>")
        return " ".join(f"{k}={v}" for k, v in env.items() if k != "PATH")


def _shown_path(path: Path) -> str:
    """Relative to the repository root (where helmfile runs) when inside it: shorter command lines."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _prepare_charts() -> Path:
    from llmd_conformance.charts import prepare_charts

    return prepare_charts()
