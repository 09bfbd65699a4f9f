"""Root conftest of a checkout: load the suite's pytest plugin (options, fixtures, reports) from it.

With the package installed (`pip install -e .`), the plugin's entry point has loaded the same
modules already: pytest loads each module name once, so this list then adds nothing.
"""
from pathlib import Path

import llmd_conformance
from llmd_conformance.fixtures import pytest_plugins  # noqa: F401  (read by pytest)

_CHECKOUT = Path(__file__).resolve().parent
_LOADED = Path(llmd_conformance.__file__).resolve().parent
if _LOADED != _CHECKOUT / "llmd_conformance":
    raise ImportError(f"llmd_conformance was imported from {_LOADED}, not from this checkout ({_CHECKOUT}): an "
                      "installed copy's pytest entry point loaded it first. Run `python -m pytest` from this folder, "
                      "or `pip install -e .` here")
