"""Where the suite's data lives. In a source checkout manifests/ and suites/ sit beside the package;
an installed wheel carries them inside it (pyproject.toml maps them there), so ROOT is the folder
holding both either way. localcluster/ (the Go modules of the local target) exists only in a checkout."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
INSTALLED = (PACKAGE / "manifests").is_dir()
ROOT = PACKAGE if INSTALLED else PACKAGE.parent
MANIFESTS = ROOT / "manifests"
SUITES = ROOT / "suites"
