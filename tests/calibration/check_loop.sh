#!/usr/bin/env bash
# Runs the calibration-validation loop in its --quick form and checks what it produced:
# the profile (read back by glamsim validate), the records, report.md, plot.svg, validation.json,
# and median |step error| below GLAM_LOOP_MAX_ERROR percent (default 80: loose, because calibration
# and records are a few seconds apart on a shared two-core machine, where other builds moved the
# full loop's median between 9% and 51% in three runs).
# usage: check_loop.sh SOURCE_DIR BUILD_DIR OUT_DIR
set -euo pipefail
SRC=$1 BUILD=$2 OUT=$3
rm -rf "$OUT"
bash "$SRC/exec/bench/validate_loop.sh" --quick --build "$BUILD" --out "$OUT"
for f in profile-cpu.toml report.md plot.svg validation.json summary.txt; do
  [ -s "$OUT/$f" ] || { echo "check_loop: missing $OUT/$f" >&2; exit 1; }
done
n=$(ls "$OUT"/records/*.json | wc -l)
[ "$n" -ge 5 ] || { echo "check_loop: $n records, expected 5" >&2; exit 1; }
grep -q '^link_bandwidth_Bps = ' "$OUT/profile-cpu.toml" || { echo "check_loop: no network figures" >&2; exit 1; }
for kind in all_to_all all_reduce reduce_scatter all_gather; do
  grep -q "^kind = \"$kind\"" "$OUT/profile-cpu.toml" || { echo "check_loop: no measured $kind" >&2; exit 1; }
done
grep -q '^\[ops\.attn_softmax\.fwd\]' "$OUT/profile-cpu.toml" || { echo "check_loop: no per-op curves" >&2; exit 1; }
# The 2-rank records' collectives are compared per kind (glam-tiny-8e: all-to-all; every one: all-reduce).
for kind in all_to_all all_reduce; do
  grep -q "| $kind over " "$OUT/report.md" || { echo "check_loop: report.md has no $kind row" >&2; exit 1; }
  grep -q "\"collective\": \"$kind\"" "$OUT/validation.json" ||
    { echo "check_loop: validation.json has no $kind op" >&2; exit 1; }
done
# The micro-batched record's second micro-batch is compared op by op too ("mb1." ids); its gradients
# are reduced once per step, after the last micro-batch.
grep -q '"id": "mb1\.L0\.attn_qkv\.fwd"' "$OUT/validation.json" ||
  { echo "check_loop: validation.json has no op of the second micro-batch" >&2; exit 1; }
mb_record=$OUT/records/glam-tiny-8e-2rank-2mb.json
grep -q '"id": "grad_allreduce"' "$mb_record" && ! grep -q '"id": "mb1\.grad_allreduce"' "$mb_record" ||
  { echo "check_loop: $mb_record: expected one gradient all-reduce per step" >&2; exit 1; }
# The pipelined record: each stage's ops under the StepGraph's ids, every one of them simulated.
for id in s0.pp_send.fwd mb1.s1.pp_send.bwd s1.loss.fwd s0.embed_tie_allreduce.bwd; do
  grep -q "\"id\": \"$id\"" "$OUT/validation.json" ||
    { echo "check_loop: validation.json has no pipeline op $id" >&2; exit 1; }
done
# The tensor-parallel record: its slices' all-reduces, compared.
for id in embed_tp_allreduce.fwd L0.attn_tp_allreduce.bwd L1.ffn_tp_allreduce.fwd logits_tp_allreduce.bwd; do
  grep -q "\"id\": \"$id\"" "$OUT/validation.json" ||
    { echo "check_loop: validation.json has no tensor-parallel op $id" >&2; exit 1; }
done
! grep -q '"unmatched_ops": \[$' "$OUT/validation.json" ||
  { echo "check_loop: validation.json has measured ops the simulation does not have" >&2; exit 1; }
# "median |step error| 12.3%, largest 20.1%, median |op error| 15.0%"
line=$(grep 'median |step error|' "$OUT/summary.txt")
echo "check_loop: $line"
median=$(echo "$line" | sed -E 's/.*median \|step error\| ([0-9.]+)%.*/\1/')
bound=${GLAM_LOOP_MAX_ERROR:-80}
awk -v m="$median" -v b="$bound" 'BEGIN { exit !(m < b) }' ||
  { echo "check_loop: median |step error| $median% >= $bound%" >&2; exit 1; }
