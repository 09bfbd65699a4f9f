"""The environment a child process gets: named variables only, never the whole of ours.

Our environment may hold credentials (HF_TOKEN, cloud keys, CI tokens) that helm, helmfile,
gcloud or a control-plane process has no use for; a child that logs its environment, or a chart
that templates it, would leak them. Each caller names what it passes on.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

# What any tool needs to find programs, write its caches and speak the locale.
BASE = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ")


def child_env(extra: Mapping[str, str] | None = None, *, passthrough: Iterable[str] = (),
              source: Mapping[str, str] | None = None) -> dict[str, str]:
    """BASE and `passthrough` copied from `source` (default os.environ) when set, then `extra` on top."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in (*BASE, *passthrough) if name in source}
    env.update(extra or {})
    return env
