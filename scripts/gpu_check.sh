#!/usr/bin/env bash
# The GPU check of issue 7, for a machine with one NVIDIA H200 (or any sm_90 GPU), in under eight
# minutes: builds the CUDA backend, runs the GPU tests (every kernel against the CPU reference, the
# step against the CPU step), times the training step of the configs that fit one GPU in bf16 (bf16
# activations and products with float32 accumulation, float32 master weights, as GLaM trained),
# writes one run record per config into reports/measured/, and prints a table last
# (MFU = the accounting's model FLOPs per second / 989 TFLOP/s, the H200's dense bf16 peak), then
# measures the GPU's calibration profile (reports/measured/profile-h200.toml) with the time left.
#
#   scripts/gpu_check.sh                  # everything
#   GLAM_GPU_CHECK_SKIP_TESTS=1 scripts/gpu_check.sh   # timing only
#
# On a machine without the project's Debian packages (no network to install them), build a bundle
# first on one that has them, `bash scripts/gpu_bundle.sh`, and carry .gpu-bundle/ along: when
# .gpu-bundle/glam-gpu-bundle.tar.gz (or $GLAM_GPU_BUNDLE) exists, this script runs its prebuilt
# programs instead of building, after checking that they were built from these sources.
#
# Environment: GLAM_BUILD_DIR (default build-gpu), GLAM_JOBS (default: all cores),
# GLAM_GPU_CHECK_DEADLINE_S (default 450: no new run starts after it), GLAM_GPU_CHECK_LIMIT_S (default
# 480: every step's timeout is cut so that the script ends by then, and what a caller does next, such
# as packing reports/measured, still runs inside a device call's limit), GLAM_PRECISION (default bf16).
# GLAM_GPU_CHECK_DRY=1 checks the script itself on a machine without a GPU: tiny configs on the CPU
# (in the same precision), records into the build folder, not reports/measured/.
# GLAM_GPU_CHECK_EMULATED=1 rehearses the GPU call on a machine without a GPU: the CUDA emulator's
# programs of the default build (tests/cuda_emulator/: the GPU tests, glamexec --device cuda and its
# calibration on the CPU), tiny configs, records into build/gpu-check-emulated/ (393 s in all on a
# two-core VM, the emulated step tests 308 s of them, one after another; 870 s there before the
# emulator's speedups).
# A failed GPU test program gets its first failed test rerun under compute-sanitizer (memcheck), when
# the machine has it, so that one call's logs name a bad access; with time left at the end, the whole
# kernel test program runs under memcheck.
# Exit status 0 when the build, the tests and every timing run passed; the table is printed anyway.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${GLAM_BUILD_DIR:-$root/build-gpu}
jobs=${GLAM_JOBS:-$(nproc)}
deadline=${GLAM_GPU_CHECK_DEADLINE_S:-450}
limit=${GLAM_GPU_CHECK_LIMIT_S:-480}
precision=${GLAM_PRECISION:-bf16}
out=$root/reports/measured
logs=$build/gpu-check-logs
device=cuda
dry=${GLAM_GPU_CHECK_DRY:-}
emulated=${GLAM_GPU_CHECK_EMULATED:-}
test_suffix=
if [[ -n $dry ]]; then
  out=$build/gpu-check-dry
  device=cpu
elif [[ -n $emulated ]]; then
  build=${GLAM_BUILD_DIR:-$root/build}
  out=$build/gpu-check-emulated
  logs=$build/gpu-check-emulated-logs
  test_suffix=_emulated
  export OPENBLAS_NUM_THREADS=1  # its idle workers would spin on the core the emulator needs
  deadline=${GLAM_GPU_CHECK_DEADLINE_S:-1500}
  limit=${GLAM_GPU_CHECK_LIMIT_S:-1800}
fi
peak_tflops=989
peak_GBps=4800
status=0
SECONDS=0

say() { printf '[gpu_check %3ds] %s\n' "$SECONDS" "$*"; }
# A step's timeout: its own bound, cut to what is left before the limit (20 s kept: a SIGKILL grace and the summary).
# Every timeout also sends SIGKILL 10 s after its SIGTERM: a process stuck in the driver after a hung
# kernel would otherwise outlive the limit (the caller's outer timeout kills only this script's group).
within_limit() {
  local left=$((limit - SECONDS - 20))
  ((left < 1)) && left=1
  echo $(($1 < left ? $1 : left))
}
# One process per GPU, no launcher: a launcher's variables left in the environment would make glamexec
# start MPI, whose plugins a bare machine lacks.
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK MPI_LOCALNRANKS

source "$root/scripts/gpu_common.sh"
bundle=${GLAM_GPU_BUNDLE:-$root/.gpu-bundle/glam-gpu-bundle.tar.gz}
[[ -f $bundle && -z $emulated ]] || bundle=
# The catalogues of this copy of the sources, wherever the programs were built.
export GLAM_HOME=$root

tools=(timeout awk)
if [[ -n $bundle ]]; then tools+=(tar gzip ldd sha256sum); else tools+=(cmake ninja nvcc); fi
for tool in "${tools[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1 && ! [[ $tool == nvcc && -x /usr/local/cuda/bin/nvcc ]]; then
    say "missing tool: $tool"
    exit 1
  fi
done
export PATH=$PATH:/usr/local/cuda/bin
# The driver's libraries (libcuda, and libnvidia-ml that the energy meter opens by name) where a
# container mounts them without the loader's cache knowing; NCCL names the cause of a failure.
[[ -d /usr/local/nvidia/lib64 ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64"
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Tokenizers the tests train are cached in this run's build folder, not the build machine's path.
export GLAM_CACHE_DIR=${GLAM_CACHE_DIR:-$build/cache}
# A rerun on a warm machine starts clean: no log or record of an earlier run is packed with this one's.
rm -rf "$logs"
[[ -z $dry && -z $emulated ]] && rm -f "$out"/h200-*.json "$out"/h200-*.json.* "$out"/.h200-* "$out/profile-h200.toml" \
  "$out/op-shares.txt" "$out/summary.txt" "$out/device.txt"
mkdir -p "$out" "$logs"

# ---- device ----
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee "$out/device.txt" || true
else
  say "nvidia-smi not found (continuing)"
fi

if [[ -n $bundle ]]; then
  # ---- prebuilt programs (scripts/gpu_bundle.sh) ----
  say "unpack $bundle"
  rm -rf "$build/bundle"
  mkdir -p "$build/bundle"
  tar -C "$build/bundle" -xzf "$bundle"
  unpacked=$build/bundle/glam-gpu-bundle
  sed -n '1,5p' "$unpacked/MANIFEST"
  built_from=$(awk '$1 == "sources" {print $2}' "$unpacked/MANIFEST")
  here=$(glam_source_digest "$root")
  if [[ $built_from != "$here" ]]; then
    # The device cannot rebuild, and its time is scarce: measure the bundle's programs anyway, and say
    # so in the summary, so that the records are not taken for these sources' (gpu_bundle.sh --verify
    # catches this before the call).
    sources_note="WARNING: the bundle was built from other sources (digest $built_from; these: $here): the records measure the bundle's programs"
    say "$sources_note"
  fi
  if ! glam_use_bundle_libraries "$unpacked" 2>&1; then
    say "the bundle's programs cannot load here"
    exit 1
  fi
  bin=$unpacked/bin
  # The GPU tests start glamexec from PATH when the build's bin folder is not there.
  export PATH=$bin:$PATH
  say "prebuilt programs ready"
elif [[ -n $emulated ]]; then
  # ---- the emulator's programs, in the default build (scripts/build.sh configured it) ----
  say "build the emulated programs in $build"
  if ! timeout -k 10 "$(within_limit 600)" ninja -C "$build" -j "$jobs" glamexec_emulated cuda_kernel_tests_emulated \
      cuda_step_tests_emulated >"$logs/build.log" 2>&1; then
    grep -E 'error|FAILED' -A3 "$logs/build.log" | head -40 || tail -40 "$logs/build.log"
    say "build failed (run scripts/build.sh first; the emulator needs the CUDA toolkit's headers)"
    exit 1
  fi
  bin=$build/emulated-bin
  test_bin=$build/bin
  say "built"
else
  # ---- build (only what the check runs) ----
  say "configure ($build)"
  cuda_flag=-DGLAM_CUDA=ON
  [[ -n $dry ]] && cuda_flag=-DGLAM_CUDA=AUTO
  if ! timeout -k 10 "$(within_limit 180)" cmake -S "$root" -B "$build" -G Ninja "$cuda_flag" >"$logs/configure.log" 2>&1; then
    tail -30 "$logs/configure.log"
    say "configure failed. Where the project's packages cannot be installed, build a bundle with scripts/gpu_bundle.sh on a machine that has them and carry .gpu-bundle/ here"
    exit 1
  fi
  say "build with $jobs jobs"
  if ! timeout -k 10 "$(within_limit 420)" ninja -C "$build" -j "$jobs" glamexec cuda_kernel_tests cuda_step_tests >"$logs/build.log" 2>&1; then
    grep -E 'error|FAILED' -A3 "$logs/build.log" | head -40 || tail -40 "$logs/build.log"
    say "build failed"
    exit 1
  fi
  bin=$build/bin
  say "built"
fi

# ---- GPU tests ----
# The lines of a compute-sanitizer log that say what went wrong and where.
sanitizer_findings() { grep -m 24 -E 'Invalid|ERROR SUMMARY|Program hit|^=========     at |by thread' "$1" || true; }
# After a failure, the first failed test once more under compute-sanitizer's memcheck (where the
# machine has it and time allows): a bad access is named in this call's logs rather than the next's.
diagnose_with_sanitizer() {
  local t=$1 first
  first=$(grep -m 1 -oE '^\[  FAILED  \] [A-Za-z0-9_]+\.[A-Za-z0-9_/]+' "$logs/$t.log" | awk '{print $NF}' || true)
  [[ -n $first ]] && command -v compute-sanitizer >/dev/null 2>&1 && ((limit - SECONDS > 150)) || return 0
  say "$t: $first under compute-sanitizer (log: $logs/$t.sanitizer.log)"
  GLAM_HOME=$root timeout -k 10 "$(within_limit 60)" compute-sanitizer --tool memcheck "$bin/$t" --gtest_filter="$first" \
    >"$logs/$t.sanitizer.log" 2>&1 || true
  sanitizer_findings "$logs/$t.sanitizer.log"
}

tests_result="not run"
if [[ -z ${GLAM_GPU_CHECK_SKIP_TESTS:-} ]]; then
  tests_result="passed"
  # Caps of a few times their expected run (kernel tests: seconds; the step tests compare with CPU
  # steps), so that a hung kernel costs at most that.
  step_cap=180
  [[ -n $emulated ]] && step_cap=1200
  for spec in cuda_kernel_tests:120 cuda_step_tests:$step_cap; do
    t=${spec%%:*}$test_suffix
    say "$t"
    rc=0
    GLAM_HOME=$root timeout -k 10 "$(within_limit "${spec##*:}")" "${test_bin:-$bin}/$t" --gtest_brief=1 >"$logs/$t.log" 2>&1 || rc=$?
    if ((rc == 0)); then
      grep -E '^\[  (PASSED|SKIPPED) ' "$logs/$t.log" || true
      if grep -q '^\[  SKIPPED \]' "$logs/$t.log" && grep -q 'no CUDA device' "$logs/$t.log"; then
        say "$t: skipped, $(grep -m 1 -oE 'no CUDA device.*' "$logs/$t.log")"
        tests_result="skipped (no device)"
        status=1
      fi
    else
      tail -60 "$logs/$t.log"
      tests_result="FAILED"
      ((rc == 124 || rc == 137)) && tests_result="FAILED (timed out)"
      say "$t $tests_result (log: $logs/$t.log)"
      status=1
      diagnose_with_sanitizer "$t"
    fi
  done
fi

# ---- timed steps ----
# 12 steps, 2 of them warm-up: 10 timed steps, 5 with op timers and 5 without (--op-timing alternate),
# and a window long enough (over 1 s) for the GPU's energy counter.
# name | model | layers (0: all) | global batch tokens (a multiple of seq_len 1024 and group_tokens 1024)
# | the issue's MFU target in % (empty: none).
# Batches that fill most of the GPU: glamexec describe --model M --layers L --batch-tokens N gives each
# one's buffers in bf16, 79.8, 103.6, 98.6, 67.1 and 99.9 GiB, of the H200's memory (about 139 GiB).
runs=(
  "glam-0.1b|glam-0.1b|0|65536"
  "glam-0.1b-64e|glam-0.1b-64e|0|65536|30"
  "glam-1.7b|glam-1.7b|0|24576|45"
  "glam-1.7b-64e-4layers|glam-1.7b-64e|4|16384"
  "glam-8b-64e-2layers|glam-8b-64e|2|4096"
)
if [[ -n $dry || -n $emulated ]]; then
  runs=("glam-tiny|glam-tiny|0|512|0" "glam-tiny-8e-2layers|glam-tiny-8e|2|512")
fi
declare -a table
for spec in "${runs[@]}"; do
  IFS='|' read -r name model layers tokens target <<<"$spec"
  record=$out/h200-$name.json
  line="-"
  attempt_tokens=$tokens
  while :; do
    if (( SECONDS > deadline )); then
      say "$name: skipped (past the ${deadline}s deadline)"
      line="skipped (time)"
      status=1
      break
    fi
    say "$name: $model, layers $layers, $attempt_tokens tokens, $precision"
    log=$logs/$name.log
    rc=0
    timeout -k 10 "$(within_limit 200)" "$bin/glamexec" train --device "$device" --precision "$precision" --model "$model" \
      --layers "$layers" --batch-tokens "$attempt_tokens" --steps 12 --warmup 2 --random-tokens --quiet \
      --record "$record.tmp" >"$log" 2>&1 || rc=$?
    if ((rc == 0)); then
      if ! mv "$record.tmp" "$record"; then
        say "$name: glamexec wrote no record"
        line="FAILED (no record)"
        status=1
        break
      fi
      # "<id> (<L> layers) on 1 rank(s) x T thread(s): X tokens/s, Y GFLOP/s (model FLOPs), median step Z ms[, GPU P W]"
      line=$(awk -v peak="$peak_tflops" -v tok="$attempt_tokens" -v target="$target" '/tokens\/s,/ {
               w = "-"
               for (i = 1; i <= NF; i++) {
                 if ($(i+1) == "tokens/s,") tps = $i
                 if ($(i+1) == "GFLOP/s") gf = $i
                 if ($i == "step") ms = $(i+1)
                 if ($i == "GPU") w = $(i+1)
               }
               mfu = 100 * gf / 1000 / peak
               verdict = target == "" ? "" : sprintf("  (target %s%%: %s)", target, mfu >= target ? "met" : "MISSED")
               printf "%8d %12.0f %10.1f %9.1f %6.1f%% %6s%s", tok, tps, ms, gf / 1000, mfu, w, verdict
             }' "$log")
      cat "$log"
      break
    fi
    tail -5 "$log"
    if [[ -f $record.tmp ]]; then
      # The record was complete (written atomically) before the failure: kept for reading, under a
      # name that validation does not take as a measurement.
      mv "$record.tmp" "$record.exit-$rc"
      say "$name: the run failed after writing its record, kept as $(basename "$record.exit-$rc")"
    fi
    # glamexec counts the step's buffers before allocating and names the largest batch that fits.
    fit=$(grep -oE 'at most --batch-tokens [0-9]+ fits' "$log" | grep -oE '[0-9]+' | head -n 1 || true)
    if [[ -n $fit ]] && ((fit < attempt_tokens)); then
      attempt_tokens=$fit
      say "$name: does not fit the GPU's free memory, retrying with the $attempt_tokens tokens that do"
      continue
    fi
    if grep -qiE 'out of memory|cudaErrorMemoryAllocation' "$log" && (( attempt_tokens > 2048 )); then
      attempt_tokens=$((attempt_tokens / 2))
      say "$name: out of memory, retrying with $attempt_tokens tokens"
      continue
    fi
    line="FAILED"
    ((rc == 124 || rc == 137)) && line="FAILED (timed out)"
    say "$name $line (log: $log)"
    status=1
    break
  done
  table+=("$(printf '%-24s %s' "$name" "$line")")
done

# ---- calibration profile of this GPU (glamexec calibrate), if time is left ----
# glamsim validate reads it with --calibration; the per-op curves come from its own training steps
# (random tokens of glam-0.1b and glam-0.1b-64e), not from the records above.
calibration_result="not run"
profile=$out/profile-h200.toml
[[ -n $dry ]] && profile=$out/profile-cpu.toml
[[ -n $emulated ]] && profile=$out/profile-emulated.toml
if (( SECONDS > deadline - 60 )); then
  say "calibration: skipped (too close to the ${deadline}s deadline)"
  calibration_result="skipped (time)"
else
  quick=()
  (( SECONDS > deadline - 180 )) && quick=(--quick)
  [[ -n $dry || -n $emulated ]] && quick=(--quick --model glam-tiny --tokens 256)
  say "calibration: glamexec calibrate --device $device ${quick[*]}"
  if timeout -k 10 "$(within_limit $((deadline - SECONDS + 60)))" "$bin/glamexec" calibrate --device "$device" --precision "$precision" \
      "${quick[@]}" --quiet \
      --out "$profile" >"$logs/calibrate.log" 2>&1; then
    calibration_result="written ($(basename "$profile"))"
    cat "$logs/calibrate.log"
  else
    tail -20 "$logs/calibrate.log"
    say "calibration FAILED (log: $logs/calibrate.log)"
    calibration_result="FAILED"
    status=1
  fi
fi

# ---- the kernel tests under compute-sanitizer's memcheck, with the time left ----
# An access out of bounds can pass a test unnoticed (shared memory, padding); memcheck names it.
memcheck_result="not run"
if [[ -n $dry || -n $emulated || -n ${GLAM_GPU_CHECK_SKIP_TESTS:-} ]] || ! command -v compute-sanitizer >/dev/null 2>&1; then
  memcheck_result="not run (no compute-sanitizer, or tests skipped)"
elif ((limit - SECONDS < 60)); then
  memcheck_result="skipped (time)"
else
  say "cuda_kernel_tests under compute-sanitizer memcheck (log: $logs/memcheck.log)"
  GLAM_HOME=$root timeout -k 10 "$(within_limit 150)" compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$bin/cuda_kernel_tests" --gtest_brief=1 >"$logs/memcheck.log" 2>&1 && rc=0 || rc=$?
  summary=$(grep -m 1 -oE 'ERROR SUMMARY: [0-9]+ errors?' "$logs/memcheck.log" || true)
  # Some virtual machines do not let the sanitizer attach: that says nothing about the kernels. (A
  # program that dies before its first CUDA call is a failure, not this.)
  unavailable=$(grep -m 1 -iE 'Device not supported|unable to (attach|initialize)' "$logs/memcheck.log" || true)
  [[ -n $unavailable && -z $summary ]] && rc=unavailable
  case $rc in
    unavailable) memcheck_result="unavailable on this machine ($unavailable)" ;;
    0) memcheck_result="clean (${summary:-no summary})" ;;
    124 | 137) memcheck_result="timed out (${summary:-no summary})" ;;
    *) memcheck_result="FAILED, exit $rc (${summary:-no summary})"
       status=1
       sanitizer_findings "$logs/memcheck.log" ;;
  esac
  say "memcheck: $memcheck_result"
fi

# ---- per-op shares of each record (python3 when present) ----
if command -v python3 >/dev/null 2>&1; then
  # Without the bundle's libraries: this machine's python3 wants its own (libz, libstdc++).
  # On the GPU in bf16, each op against its roofline at the H200's peaks (989 TFLOP/s dense bf16, 4.8 TB/s
  # HBM3e); in another precision the products' peak is another, and no roofline is drawn.
  peaks=(--top 40)
  [[ -z $dry && -z $emulated && $precision == bf16 ]] && peaks+=(--peak-tflops "$peak_tflops" --peak-GBps "$peak_GBps")
  env -u LD_LIBRARY_PATH python3 "$root/scripts/op_shares.py" "${peaks[@]}" "$out" >"$out/op-shares.txt" || true
  cat "$out/op-shares.txt"
fi

# What the runtime (CUDA context, cuBLAS) held before a step's buffers: the device's memory less what
# was free then, from the first record that has both (the simulator keeps back runtime_reserved_bytes).
runtime_held=$(env -u LD_LIBRARY_PATH python3 -c '
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/h200-*.json")):
    m = json.load(open(f)).get("device", {}).get("memory", {})
    if m.get("total_bytes") and m.get("free_bytes_before"):
        held, total = m["total_bytes"] - m["free_bytes_before"], m["total_bytes"]
        print("%.2f GiB of %.2f GiB (%s)" % (held / 2**30, total / 2**30, f.rsplit("/", 1)[-1]))
        break
' "$out" 2>/dev/null || true)

# ---- the table ----
{
  echo "GPU check on $(cat "$out/device.txt" 2>/dev/null | head -1 || echo 'unknown GPU'), --precision $precision, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  [[ -n ${sources_note:-} ]] && echo "$sources_note"
  echo "GPU tests: $tests_result"
  echo "Calibration profile: $calibration_result"
  echo "Kernel tests under memcheck: $memcheck_result"
  printf '%-24s %8s %12s %10s %9s %7s %6s\n' config tokens tokens/s step_ms TFLOP/s MFU GPU_W
  for row in "${table[@]}"; do echo "$row"; done
  echo "MFU: model FLOPs (the accounting's convention) per second / $peak_tflops TFLOP/s (H200 dense bf16)."
  echo "Targets (issue 7): MFU of at least 45% for glam-1.7b and 30% for glam-0.1b-64e."
  echo "Step times are those of the steps without op timers (--op-timing alternate, the CUDA default);"
  echo "the per-op times come from the other steps, which wait for the device around every op."
  echo "GPU_W: mean power over the timed steps from the GPU's energy counter (NVML), in each record's device.energy."
  echo "Held by the runtime before the step's buffers: ${runtime_held:-not recorded} (plans keep back 2 GiB per GPU)."
} | tee "$out/summary.txt"
say "done in ${SECONDS}s"
exit $status
