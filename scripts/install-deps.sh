#!/usr/bin/env bash
# Installs the Debian packages the project builds against. Idempotent: when every
# package is already present it only runs dpkg-query and returns in well under a second.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libsimgrid-dev            # simulation engine (flow-level network, energy plugins)
  libtomlplusplus-dev       # model and cluster configs
  libboost-graph-dev        # cluster topologies
  libsentencepiece-dev      # tokenizer (library and trainer)
  libgtest-dev              # tests
  libopenmpi-dev openmpi-bin  # multi-process executor
  libopenblas-dev           # CPU matrix products
  libcli11-dev              # command-line parsing
  nlohmann-json3-dev        # JSON outputs and run records
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
