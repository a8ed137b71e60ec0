#!/usr/bin/env bash
# Installs what is missing, then configures (once) and builds everything into build/.
# Extra arguments go to CMake's configure step, e.g. -DGLAM_CUDA=OFF.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/install-deps.sh"
build_dir=${GLAM_BUILD_DIR:-$root/build}
if [[ ! -f "$build_dir/build.ninja" || $# -gt 0 ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja "$@" >/dev/null
fi
# The progress lines are dropped; under pipefail a failed build still fails the script.
ninja -C "$build_dir" -j "${GLAM_JOBS:-2}" | { grep -v '^\[' || true; }
