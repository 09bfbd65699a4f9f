"""The shipped GitHub Actions workflows pass actionlint, so a broken workflow fails here, not on GitHub."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from llmd_conformance.build import binary

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow in .github/workflows"
    # Without shellcheck actionlint silently skips the run: scripts; bootstrap installs it (Debian).
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run 'bash scripts/bootstrap.sh' (apt-get install shellcheck)"
    # -pyflakes= : no step uses `shell: python`.
    cmd = [str(binary("actionlint")), "-no-color", f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, WORKFLOWS)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_actions_are_pinned_by_commit_sha():
    """A tag can be moved to other code; a commit cannot (the GKE job holds a cloud token)."""
    unpinned = []
    for path in WORKFLOWS:
        for job_name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for step in job.get("steps", []):
                uses = step.get("uses", "")
                if uses and not uses.startswith(("./", "docker://")) and not re.search(r"@[0-9a-f]{40}$", uses):
                    unpinned.append(f"{path.name}: {job_name}: {uses}")
    assert not unpinned, "actions not pinned by a full commit SHA:\n" + "\n".join(unpinned)
