#!/usr/bin/env bash
# The main job: install, build, then print the model catalogue beside the paper's figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
"${GLAM_BUILD_DIR:-$root/build}/bin/glamsim" models
