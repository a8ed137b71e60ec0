#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh runs, prebuilt, for a GPU machine that cannot install the project's
# Debian packages (no network): glamexec and the two GPU test programs, built here with CUDA (the
# build's architectures, sm_80 and sm_90 by default), and the shared libraries they load that a bare
# CUDA machine lacks (OpenBLAS, SentencePiece, TOML++, OpenMPI's runtime, ...), in one archive,
# .gpu-bundle/glam-gpu-bundle.tar.gz.
# Carry .gpu-bundle to the GPU machine and run scripts/gpu_check.sh there: it uses the archive
# instead of building, once it has checked that the archive was built from the same sources.
#
# Left out: glibc and the driver (the machine's own), and the CUDA toolkit's large libraries
# (cuBLAS, cuBLASLt, NCCL: hundreds of MB), which gpu_check.sh finds on the GPU machine. libstdc++
# and libgcc_s go into compat/, which gpu_check.sh uses only where the machine's own are older.
#
#   scripts/gpu_bundle.sh            # build and pack
#   scripts/gpu_bundle.sh --verify   # only check that the archive was built from the working tree's
#                                    # sources (before a device call: records of another bundle belong to no commit)
#
# Environment: GLAM_BUILD_DIR (default build-gpu), GLAM_JOBS (default 2), GLAM_BUNDLE_DIR (default
# .gpu-bundle). Needs the project's packages (scripts/install-deps.sh) and nvcc.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source "$root/scripts/gpu_common.sh"
build=${GLAM_BUILD_DIR:-$root/build-gpu}
jobs=${GLAM_JOBS:-2}
bundle_dir=${GLAM_BUNDLE_DIR:-$root/.gpu-bundle}
programs=(glamexec cuda_kernel_tests cuda_step_tests)
archive=$bundle_dir/glam-gpu-bundle.tar.gz

if [[ ${1:-} == --verify ]]; then
  [[ -f $archive ]] || { echo "no bundle at $archive: run scripts/gpu_bundle.sh"; exit 1; }
  built_from=$(tar -xzOf "$archive" glam-gpu-bundle/MANIFEST | awk '$1 == "sources" {print $2}')
  here=$(glam_source_digest "$root")
  if [[ $built_from != "$here" ]]; then
    echo "stale bundle: built from sources $built_from, the working tree's are $here: run scripts/gpu_bundle.sh"
    exit 1
  fi
  echo "bundle matches the working tree (sources $here)"
  exit 0
fi

bash "$root/scripts/install-deps.sh"
# Taken before the build and compared after it: a source edited meanwhile would otherwise be vouched
# for by the manifest without being in the programs.
sources=$(glam_source_digest "$root")
export PATH=$PATH:/usr/local/cuda/bin
# The CPU kernels at the compiler's portable x86-64 level (GLAM_CPU_ARCH=""): the GPU machine's CPU is
# not this one, and its CPU work here (the tests' references) is small.
cmake -S "$root" -B "$build" -G Ninja -DGLAM_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DGLAM_CPU_ARCH= >/dev/null
# Under pipefail a failed build fails the script: old programs are never packed under new sources.
ninja -C "$build" -j "$jobs" "${programs[@]}" | { grep -v '^\[' || true; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pack=$stage/glam-gpu-bundle
mkdir -p "$pack/bin" "$pack/lib" "$pack/compat"
for p in "${programs[@]}"; do
  strip -o "$pack/bin/$p" "$build/bin/$p"
done

# Every shared library the programs load, by the path this machine resolves it to.
manifest_libs=()
while read -r name path; do
  case $name in
    linux-vdso.so.* | ld-linux-*.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | \
      libresolv.so.* | libutil.so.* | libcuda.so.* | libnvidia-*.so.* | libcublas.so.* | libcublasLt.so.* | \
      libnccl.so.*)
      continue ;;
    libstdc++.so.* | libgcc_s.so.*) dest=$pack/compat ;;
    *) dest=$pack/lib ;;
  esac
  cp -L "$path" "$dest/$name"
  manifest_libs+=("$name <- $path")
done < <(for p in "${programs[@]}"; do ldd "$build/bin/$p"; done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u)

{
  echo "sources $sources"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cpu kernels -march=$(sed -n 's/^GLAM_CPU_ARCH:STRING=//p' "$build/CMakeCache.txt") (empty: the compiler's x86-64 default)"
  echo "nvcc $(nvcc --version | awk -F', ' '/release/ {print $2}'), code $(grep -o -- '--generate-code=[^ ]*' "$build/build.ninja" | sort -u | tr '\n' ' ')"
  glibc=$(for f in "$pack"/bin/* "$pack"/lib/*; do objdump -T "$f"; done | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
  echo "needs from the GPU machine: ${glibc/_/ >= }, the NVIDIA driver (CUDA 13), libcublas.so.13, libcublasLt.so.13, libnccl.so.2 (ncclAlltoAll used where it is 2.28 or later)"
  printf 'library %s\n' "${manifest_libs[@]}"
} >"$pack/MANIFEST"

if [[ $(glam_source_digest "$root") != "$sources" ]]; then
  echo "the sources changed during the build: run scripts/gpu_bundle.sh again" >&2
  exit 1
fi
mkdir -p "$bundle_dir"
tar -C "$stage" -czf - glam-gpu-bundle >"$archive.tmp"
mv "$archive.tmp" "$archive"
cat "$pack/MANIFEST"
echo "wrote $archive ($(du -h "$archive" | cut -f1))"
