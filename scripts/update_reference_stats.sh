#!/usr/bin/env bash
# Regenerates the simulator's reference statistics (tests/sim/reference/*.stats.txt) from
# tests/sim/reference/cases.txt with the built glamsim, and lists the cases whose figures changed.
# Usage: scripts/update_reference_stats.sh [BUILD_DIR]   (default: build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build}"
[[ "$build" = /* ]] || build="$root/$build"
glamsim="$build/bin/glamsim"
[[ -x "$glamsim" ]] || { echo "update_reference_stats: $glamsim not found; build first (scripts/build.sh)" >&2; exit 2; }
ref="$root/tests/sim/reference"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
changed=0
while read -r name args; do
  [[ -z "$name" || "$name" = \#* ]] && continue
  # shellcheck disable=SC2086  # the arguments are words by design
  "$glamsim" run $args --quiet --out "$work/$name" >/dev/null
  if ! cmp -s "$work/$name/stats.txt" "$ref/$name.stats.txt"; then
    echo "changed: $name"
    changed=$((changed + 1))
    cp "$work/$name/stats.txt" "$ref/.$name.stats.txt.tmp"
    mv "$ref/.$name.stats.txt.tmp" "$ref/$name.stats.txt"
  fi
done <"$ref/cases.txt"
echo "update_reference_stats: $changed case(s) rewritten in tests/sim/reference/"
