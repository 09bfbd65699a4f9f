"""llmd_conformance.timing: one table of named waits, its environment overrides, and the options that read it."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest

from llmd_conformance import timing
from llmd_conformance.commands import fmt_duration
from llmd_conformance.gke import parse_duration
from llmd_conformance.timing import Timing, TimingError
from tests_unit.conftest import REPO


def test_every_entry_is_a_duration_and_the_table_is_frozen():
    defaults = Timing()
    for entry in dataclasses.fields(Timing):
        value = getattr(defaults, entry.name)
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (entry.name, value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.condition = 1.0  # type: ignore[misc]


def test_environment_overrides_replace_their_entry_only():
    got = Timing.from_env({"LLMD_LOCAL_READY_TIMEOUT": "12.5", "LLMD_CLUSTER_WAIT": "300", "UNRELATED": "x"})
    assert got == dataclasses.replace(Timing(), local_pods_ready=12.5, cluster_lock_wait=300.0)
    assert Timing.from_env({}) == Timing()


def test_a_bad_override_names_the_variable_and_what_to_give():
    with pytest.raises(TimingError, match=r"^LLMD_CLUSTER_WAIT='soon': give the seconds to wait for another run, "
                                          r"e\.g\. 300$"):
        Timing.from_env({"LLMD_CLUSTER_WAIT": "soon"})


def _default_in_a_new_process(**environ: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMD_LOCAL_READY_TIMEOUT", "LLMD_CLUSTER_WAIT")}
    code = "from llmd_conformance.timing import DEFAULT; print(DEFAULT.local_pods_ready, DEFAULT.cluster_lock_wait)"
    return subprocess.run([sys.executable, "-c", code], env=env | environ, cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.split()


def test_default_is_read_from_the_environment_at_import():
    assert _default_in_a_new_process() == [str(Timing().local_pods_ready), str(Timing().cluster_lock_wait)]
    assert _default_in_a_new_process(LLMD_LOCAL_READY_TIMEOUT="7") == ["7.0", str(Timing().cluster_lock_wait)]


def test_gke_wait_timeout_default_reads_back_as_the_entry():
    """--gke-wait-timeout's default is the entry written as a duration; it must parse back to the same seconds."""
    assert parse_duration(fmt_duration(timing.DEFAULT.gke_wait)) == timing.DEFAULT.gke_wait
