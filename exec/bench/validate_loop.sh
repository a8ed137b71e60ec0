#!/usr/bin/env bash
# The calibration-validation loop on this host (README, "Calibration and validation"):
#   1. glamexec calibrate under mpirun -np 2, one thread per rank: GEMM peak, memory bandwidth and
#      per-op curves of every rank working at once, the all-to-all link between the two ranks;
#   2. glamexec train run records of glam-tiny and glam-tiny-8e on 1, 2 and 4 ranks with the default
#      threads (cores / ranks: 1 x 2, 2 x 1, and 4 x 1 taking turns on the 2 cores); default text,
#      batches the calibration did not run, two of them past its largest, and two in two micro-batches
#      (--microbatches 2, gradient accumulation), and two in two pipeline stages (--stages 2, 1F1B over
#      4 micro-batches; one of them interleaved, --virtual-stages 2), and two in two tensor-parallel
#      slices (--tensor-parallel 2);
#   3. glamsim validate of the records against the profile: report.md, plot.svg, validation.json.
# The calibration's training steps (random tokens, 384..3072 tokens per rank) are separate runs from
# the validated records (text, 2,048 tokens in all): nothing is fitted on the records themselves.
#
# usage: exec/bench/validate_loop.sh [--quick] [--build DIR] [--out DIR]
#   --build DIR  the CMake build with bin/glamexec and bin/glamsim (default: build/)
#   --out DIR    where everything goes (default: reports/validation/); records in DIR/records/
#   --quick      the CI version: a --quick calibration, five short records (one in two
#                micro-batches, one in two pipeline stages, one in two tensor-parallel slices),
#                loose figures
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
OUT=$ROOT/reports/validation
QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --build) BUILD=$(cd "$2" && pwd); shift ;;
    --out) OUT=$2; shift ;;
    *) echo "validate_loop.sh: unknown argument $1 (expected --quick, --build DIR, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
BIN=$BUILD/bin
for b in glamexec glamsim; do
  [ -x "$BIN/$b" ] || { echo "validate_loop.sh: $BIN/$b not built (ninja -C $BUILD glamexec glamsim)" >&2; exit 2; }
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
# Relative model paths in the records (models/...), so the committed records resolve from the repository root.
export GLAM_HOME=.
# --bind-to none: OpenMPI pins each of 2 ranks to one core by default, which would keep the
# calibration's one-rank, all-cores product measurement on a single core; one-rank records run
# without mpirun, unpinned.
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x GLAM_HOME -x OPENBLAS_NUM_THREADS=1)
rel() { realpath --relative-to="$ROOT" "$1"; }

# Other work on the host skews every figure: the load averages go into summary.txt.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PROFILE=$OUT/profile-cpu.toml
RECORDS=$OUT/records
rm -rf "$RECORDS" && mkdir -p "$RECORDS"

echo "== 1. calibration (2 ranks x 1 thread)"
if [ $QUICK = 1 ]; then
  "${MPIRUN[@]}" -np 2 "$BIN/glamexec" calibrate --device cpu --threads 1 --quick --quiet --out "$PROFILE"
else
  "${MPIRUN[@]}" -np 2 "$BIN/glamexec" calibrate --device cpu --threads 1 --out "$PROFILE"
fi

echo "== 2. run records"
record() {  # model ranks global-batch steps [file-name suffix [more glamexec train arguments]]
  local model=$1 ranks=$2 batch=$3 steps=$4 file=$RECORDS/$1-$2rank${5:-}.json
  local cmd=("$BIN/glamexec" train --quiet --model "$model" --batch-tokens "$batch" --steps "$steps" --record "$file"
             "${@:6}")
  if [ "$ranks" = 1 ]; then "${cmd[@]}"; else "${MPIRUN[@]}" -np "$ranks" "${cmd[@]}"; fi
}
# This VM's two-thread products switch between speeds every few minutes (other tenants of the host):
# the speedup of 2 threads over 1, measured just before the one-rank records, goes into summary.txt
# next to the profile's, so a record made in another state than the calibration shows as such.
BLAS_CHECK="not measured"
blas_speedup() {
  local one two
  isolated() {  # threads -> GFLOP/s of the step's products in isolation
    "$BIN/glamexec-bench" --model glam-tiny-8e --batch-tokens 2048 --steps 1 --warmup 1 --threads "$1" --format json |
      grep -o '"matmul_gflops_per_s_isolated": *[0-9.eE+-]*' | head -1 | sed 's/.*: *//'
  }
  one=$(isolated 1)
  two=$(isolated "$(nproc)")
  awk -v a="$one" -v b="$two" 'BEGIN { printf "%.2f", b / a }'
}
# One-rank records first, right after the calibration's one-rank measurements, then the others.
if [ $QUICK = 1 ]; then
  record glam-tiny 1 1024 4
  record glam-tiny 2 1024 4
  record glam-tiny-8e 2 2048 4 -2mb --microbatches 2
  record glam-tiny-8e 2 2048 4 -pp2 --stages 2 --microbatches 2
  record glam-tiny-8e 2 2048 4 -tp2 --tensor-parallel 2
else
  [ -x "$BIN/glamexec-bench" ] && BLAS_CHECK="$(blas_speedup)x"
  record glam-tiny 1 2048 14
  record glam-tiny-8e 1 2048 14
  # Held out: 4,096 tokens per rank, past the calibration's largest step (3,072), where its curves
  # are held flat.
  record glam-tiny-8e 1 4096 8 -4096tok
  for model in glam-tiny glam-tiny-8e; do
    for ranks in 2 4; do record $model $ranks 2048 14; done
  done
  record glam-tiny 2 8192 8 -8192tok
  # Gradient accumulation: the StepGraph's micro-batch ops ("mb1. ...") against the measured ones.
  record glam-tiny-8e 1 4096 8 -2mb --microbatches 2
  record glam-tiny-8e 2 4096 8 -2mb --microbatches 2
  # Pipeline stages: each stage's 1F1B program, its sends ("s0.pp_send.fwd") and the bubble.
  record glam-tiny-8e 2 4096 8 -pp2 --stages 2 --microbatches 4
  record glam-tiny 2 4096 8 -pp2v2 --stages 2 --virtual-stages 2 --microbatches 4
  # Tensor parallelism: two slices of one data-parallel rank, with the StepGraph's tp all-reduces.
  record glam-tiny-8e 2 4096 8 -tp2 --tensor-parallel 2
  record glam-tiny 2 4096 8 -tp2 --tensor-parallel 2
fi

echo "== 3. glamsim validate"
STAGE=$(mktemp -d "$OUT/.validate.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
# Relative paths: the report names records and profile as the repository sees them.
mapfile -t FILES < <(for f in "$RECORDS"/*.json; do rel "$f"; done)
"$BIN/glamsim" validate "${FILES[@]}" --calibration "$(rel "$PROFILE")" --out "$STAGE/report" | tee "$STAGE/table.txt"
for f in report.md plot.svg validation.json; do mv "$STAGE/report/$f" "$OUT/$f"; done
{ cat "$STAGE/table.txt"
  echo "host load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "glamexec-bench products, $(nproc) threads over 1 (the other cores idle), just before the one-rank records: $BLAS_CHECK;" \
       "the profile's thread_speedup: $(sed -nE 's/^thread_speedup = ([0-9.eE+-]+).*/\1/p' "$PROFILE" | awk '{ printf "%.2fx", $1 }')"
} > "$OUT/summary.txt"
echo "== profile: $(rel "$PROFILE")"
grep -E '^(peak_flops|memory_bandwidth_Bps|threads|link_bandwidth_Bps|link_latency_s) ' "$PROFILE" || true
echo "== report: $(rel "$OUT")/report.md"
