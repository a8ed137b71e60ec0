#!/usr/bin/env bash
# The main job: install, build, then plan GLaM 64B/64E (1.2T parameters) on a 1,024-chip
# TPU v4 slice for the paper's full 600B-token run. Extra arguments go to `glamsim plan`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
"${GLAM_BUILD_DIR:-$root/build}/bin/glamsim" plan --model glam-64b-64e --cluster tpu-v4-1024 --tokens 600e9 "$@"
