#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
cd "${GLAM_BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "${GLAM_JOBS:-2}" "$@"
