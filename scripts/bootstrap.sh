#!/usr/bin/env bash
# Installs what the suite needs for one target on a fresh machine; quick when everything is already there.
# Usage: bash scripts/bootstrap.sh [local|cluster|gke]   (default local)
#   local          as root: Debian packages (iproute2, openssl, procps; wrk for benchmarks; shellcheck for the
#                  workflow lint; python3-dev, libzmq3-dev, g++ for llm-d's scheduler; Rust/cargo must be there
#                  already), the Python package, every pinned upstream Go program (the local cluster's, helm,
#                  helmfile, actionlint: tests_unit needs them all), the upstream GIE charts.
#   cluster, gke   any user: the Python package, and helm, helmfile and the GIE charts for --provision
#                  (checks of a deployment that is already there need only the Python package).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-local}
case $target in
  local)
    # Pods run in network namespaces: stop before a 40-minute build that a non-root run cannot use.
    if ((EUID != 0)); then
      echo "bootstrap: the local target runs as root (pods run in network namespaces): run this as root" >&2
      exit 2
    fi
    echo "bootstrap: target local: Debian packages, the Python package, every pinned Go program, the GIE charts"
    missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v shellcheck >/dev/null || missing+=(shellcheck)
    # llm-d's scheduler is a cgo build: it embeds CPython and links libzmq and (cargo-built) libtokenizers.
    for pkg in python3-dev libzmq3-dev g++; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if ((${#missing[@]})); then
      echo "bootstrap: apt-get install ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    build=()
    ;;
  cluster | gke)
    echo "bootstrap: target $target: the Python package; helm, helmfile and the GIE charts for --provision" \
      "(no Debian packages, no other Go program)"
    build=(--only helm helmfile)
    ;;
  *)
    echo "usage: bash scripts/bootstrap.sh [local|cluster|gke]" >&2
    exit 2
    ;;
esac

if ! command -v go >/dev/null; then
  echo "bootstrap: Go >= 1.26.6 is required (helmfile v1.8.0 needs it; the GIE charts come from a Go module)" >&2
  [[ $target == local ]] || echo "bootstrap: without --provision, 'pip install -e .' is all --target $target needs" >&2
  exit 2
fi

echo "bootstrap: pip install -e '.[lint]'"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[lint]'
python3 -m llmd_conformance.build "${build[@]}"
python3 -m llmd_conformance.charts >/dev/null
