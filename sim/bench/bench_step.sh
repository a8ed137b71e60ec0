#!/usr/bin/env bash
# Simulator speed: one GLaM 64B/64E step at 64, 256, 1,024 and 4,096 TPU v4 chips, and on 1,024 H100s
# (a GPU cluster's layout and schedules), both fidelities. Prints wall time, ops, routed and
# simulated flows, and peak memory per run.
# Usage: sim/bench/bench_step.sh [build dir] > reports/simulator-speed.md (the whole report: title,
# the host and date, and the table).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${1:-$root/build}/bin/glamsim
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
echo "# Simulator speed"
echo
echo "One GLaM 64B/64E training step (2^20 tokens) on TPU v4 slices and 1,024 H100s; \`sim/bench/bench_step.sh\` on $(nproc) cores" \
  "(${cpu:-unknown CPU}), $(date -u +%Y-%m-%d). Plans chosen by glamsim (wall time includes choosing the plan); the" \
  "64- and 256-chip layouts do not fit in memory and are simulated with --allow-oom, for speed only. The last three rows take a layout like GLaM's."
echo
echo "| chips | fidelity | plan | step (s) | wall (s) | ops | flows routed | flows in SimGrid | phases in SimGrid / analytical | peak RSS (MiB) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() {
  local chips=$1 cluster=$2 fidelity=$3; shift 3
  "$bin" run --model glam-64b-64e --cluster "$cluster" --fidelity "$fidelity" --allow-oom --quiet --format json "$@" \
    > "$tmp/out.json"
  python3 - "$tmp/out.json" "$chips" "$fidelity" "$*" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["plan"]
plan = f'dp{p["dp"]} tp{p["tp"]} ep{p["ep"]}' + (f' pp{p["pp"]}' if p["pp"] > 1 else "")
plan += (f' v{p["virtual_stages"]}' if p["virtual_stages"] > 1 else "") + (f' mb{p["microbatches"]}' if p["microbatches"] > 1 else "")
plan += (" zs" if p["shard_weights"] else "") + (" zo" if p.get("shard_optimizer") else "") + (" rc" if p["recompute"] else "") + (" sp" if p.get("sequence_parallel") and p["tp"] > 1 else "")
extra = sys.argv[4][sys.argv[4].find("--flow"):] if "--flow" in sys.argv[4] else ""
plan += " " + extra if extra else ""
print(f'| {sys.argv[2]} | {sys.argv[3]} | {plan} | {d["step_time_s"]:.3f} | {d["wall_time_s"]:.3f} | {d["ops"]} | '
      f'{d["routed_flows"]:.0f} | {d["simulated_flows"]:.0f} | {d["flow_phases_simulated"]} / {d["flow_phases_analytical"]} | '
      f'{d["peak_rss_bytes"] / 2**20:.0f} |')
PY
}
for spec in "64 tpu-v4-64" "256 tpu-v4-256" "1024 tpu-v4-1024" "4096 tpu-v4-4096"; do
  set -- $spec
  for fidelity in analytical flow; do run "$1" "$2" "$fidelity"; done
done
for fidelity in analytical flow; do run 1024 dgx-h100-1024 "$fidelity"; done
# A layout like GLaM's (GSPMD 2D sharding, no pipeline): its all-to-alls and gathers are the largest
# phases; then every phase in SimGrid, no analytical fallback, where that is affordable.
glam_layout="--dp 256 --tp 4 --ep 64 --shard-weights --recompute"
for fidelity in analytical flow; do run 1024 tpu-v4-1024 "$fidelity" $glam_layout; done
run 1024 tpu-v4-1024 flow $glam_layout --flow-max-flows 1000000
