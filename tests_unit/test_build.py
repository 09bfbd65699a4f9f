"""llmd_conformance.build: the cgo build of llm-d's scheduler says what is missing before it builds."""
from __future__ import annotations

import pytest

from llmd_conformance import build


def test_only_the_scheduler_is_a_cgo_build_and_its_stamp_says_so():
    """A cgo component's stamp names the Rust library, so switching cgo on or off rebuilds it."""
    cgo = [c.name for c in build.COMPONENTS if c.rust_lib]
    assert cgo == ["llm-d-inference-scheduler"]
    assert "cgo=tokenizers+python3-embed" in build.BY_NAME["llm-d-inference-scheduler"].stamp
    assert build.cgo_env(build.BY_NAME["payload-processor"], "go") == {"CGO_ENABLED": "0"}


def test_missing_python_headers_name_the_debian_packages(monkeypatch, tmp_path):
    """Without Debian's python3-config the error names the packages to install, before any cargo run."""
    monkeypatch.setattr(build, "PYTHON_CONFIG", str(tmp_path / "python3-config"))
    with pytest.raises(build.BuildError, match="apt-get install python3-dev libzmq3-dev g\\+\\+"):
        build.cgo_env(build.BY_NAME["llm-d-inference-scheduler"], "go")


def test_missing_cargo_says_rust_is_needed(monkeypatch, tmp_path):
    """Without cargo on PATH or in ~/.cargo/bin the error says Rust is needed for libtokenizers."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(build.BuildError, match="'cargo' is not on PATH .*install Rust"):
        build._cargo()
