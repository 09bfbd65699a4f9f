"""Imports point one way: suites → the plugin (llmd_conformance/fixtures) → the harness (the rest of
llmd_conformance); targets depend on the engine, never the reverse; only llmd_conformance/local imports
the local target."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offenders(folder: str, forbidden, exclude: str | None = None) -> dict[str, list[str]]:
    found = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        if exclude and exclude in path.relative_to(REPO).as_posix():
            continue
        bad = sorted(m for m in imported_modules(path) if forbidden(m))
        if bad:
            found[path.relative_to(REPO).as_posix()] = bad
    return found


def test_the_harness_never_imports_the_plugin_or_the_checks():
    plugin_or_checks = ("llmd_conformance.fixtures", "llmd_conformance.suites", "suites")
    assert offenders("llmd_conformance", lambda m: m.split(".")[0] == "fixtures" or m.startswith(plugin_or_checks),
                     exclude="llmd_conformance/fixtures/") == {}


def test_only_the_local_package_imports_the_local_target():
    outside = offenders("llmd_conformance", lambda m: m.startswith("llmd_conformance.local"),
                        exclude="llmd_conformance/local/")
    outside.update(offenders("suites", lambda m: m.startswith("llmd_conformance.local")))
    assert outside == {}


def test_the_step_engine_depends_on_no_target():
    targets = ("llmd_conformance.gke", "llmd_conformance.local", "llmd_conformance.targets", "llmd_conformance.faults")
    assert sorted(m for m in imported_modules(REPO / "llmd_conformance" / "steps.py") if m.startswith(targets)) == []
