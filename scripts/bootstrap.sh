#!/usr/bin/env bash
# Installs what the suite needs on a fresh machine; quick when everything is already there.
# Debian packages (iproute2, openssl; wrk for benchmarks), the Python package with its pinned
# ranges, every upstream Go program at its pinned version, and the upstream GIE charts.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v wrk >/dev/null || missing+=(wrk)
command -v pgrep >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
  echo "bootstrap: apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "bootstrap: Go >= 1.26.6 is required (helmfile v1.8.0 needs it)" >&2; exit 2; }

echo "bootstrap: pip install -e '.[lint]'"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[lint]'
python3 -m llmd_conformance.build
python3 -m llmd_conformance.charts >/dev/null
