#!/usr/bin/env bash
# Checks scripts/gpu_common.sh on a made-up bundle: a program whose library lies only in a vendor
# folder of the "machine" (as cuBLAS lies in a Python environment's NVIDIA wheels) must be made to
# load, a library found nowhere must be named, the source digest must follow the sources alone, and
# gpu_bundle.sh --verify must tell a bundle of the working tree's sources from a stale one.
set -uo pipefail
root=${1:?usage: test_gpu_common.sh REPOSITORY_ROOT}
source "$root/scripts/gpu_common.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }

# A library with a soname, in a folder no loader searches, and a program that needs it (no rpath).
vendor=$tmp/machine/opt/venv/nvidia/lib
mkdir -p "$vendor" "$tmp/bundle/bin" "$tmp/bundle/lib" "$tmp/bundle/compat"
echo 'extern "C" int glam_probe() { return 42; }' >"$tmp/probe.cpp"
echo 'extern "C" int glam_probe(); int main() { return glam_probe() == 42 ? 0 : 1; }' >"$tmp/main.cpp"
g++ -shared -fPIC -Wl,-soname,libglamprobe.so.1 -o "$vendor/libglamprobe.so.1" "$tmp/probe.cpp" || exit 1
g++ -o "$tmp/bundle/bin/probe" "$tmp/main.cpp" "$vendor/libglamprobe.so.1" || exit 1

unset LD_LIBRARY_PATH
if "$tmp/bundle/bin/probe" 2>/dev/null; then fail "the probe loaded before its folder was found"; fi

# A root that does not exist beside the one that holds the library: find fails for it, the lookup must not.
export GLAM_LIBRARY_SEARCH_ROOTS="$tmp/absent $tmp/machine"
if ! glam_use_bundle_libraries "$tmp/bundle" 2>"$tmp/err"; then
  fail "the vendor library was not found: $(cat "$tmp/err")"
fi
[[ ":$LD_LIBRARY_PATH:" == *":$vendor:"* ]] || fail "LD_LIBRARY_PATH lacks $vendor: $LD_LIBRARY_PATH"
[[ $LD_LIBRARY_PATH == "$tmp/bundle/lib:"* ]] || fail "the bundle's lib/ is not first: $LD_LIBRARY_PATH"
[[ $LD_LIBRARY_PATH != *compat* ]] || fail "compat/ used although this libstdc++ is the build's"
"$tmp/bundle/bin/probe" || fail "the probe does not run with LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# The same library nowhere on the machine: refused, naming it.
unset LD_LIBRARY_PATH
rm "$vendor/libglamprobe.so.1"
if glam_use_bundle_libraries "$tmp/bundle" 2>"$tmp/err"; then fail "a missing library was accepted"; fi
grep -q 'libglamprobe.so.1' "$tmp/err" || fail "the error does not name the library: $(cat "$tmp/err")"

# A library older than the build's, which lacks a function the program uses: it loads (a function is
# missed only when called), with a warning that names the function.
mkdir -p "$tmp/newer" "$tmp/bundle2/bin" "$tmp/bundle2/lib" "$vendor"
echo 'extern "C" int glam_probe() { return 42; } extern "C" int glam_probe_v2() { return 2; }' >"$tmp/probe2.cpp"
echo 'extern "C" int glam_probe(); extern "C" int glam_probe_v2();
int main(int argc, char**) { return argc > 5 ? glam_probe_v2() : glam_probe() == 42 ? 0 : 1; }' >"$tmp/main2.cpp"
g++ -shared -fPIC -Wl,-soname,libglamprobe.so.1 -o "$tmp/newer/libglamprobe.so.1" "$tmp/probe2.cpp" || exit 1
g++ -o "$tmp/bundle2/bin/probe" "$tmp/main2.cpp" "$tmp/newer/libglamprobe.so.1" || exit 1
g++ -shared -fPIC -Wl,-soname,libglamprobe.so.1 -o "$vendor/libglamprobe.so.1" "$tmp/probe.cpp" || exit 1
unset LD_LIBRARY_PATH
if ! glam_use_bundle_libraries "$tmp/bundle2" 2>"$tmp/err"; then fail "an older library was refused: $(cat "$tmp/err")"; fi
grep -q 'glam_probe_v2' "$tmp/err" || fail "no warning names the missing function: $(cat "$tmp/err")"
"$tmp/bundle2/bin/probe" || fail "the program does not run on the older library"

# The digest changes with a source file and with a new one, not with files outside the sources.
src=$tmp/src
mkdir -p "$src/kernels/cuda" "$src/exec" "$src/models" "$src/topologies" "$src/sim" "$src/tests"
echo 'project(x)' >"$src/CMakeLists.txt"
echo '__global__ void k() {}' >"$src/kernels/cuda/a.cu"
echo 'int f();' >"$src/exec/b.h"
d1=$(glam_source_digest "$src")
[[ $d1 =~ ^[0-9a-f]{16}$ ]] || fail "digest '$d1' is not 16 hex digits"
echo 'notes' >"$src/README.md"
mkdir -p "$src/build-gpu" && echo 'int g();' >"$src/build-gpu/gen.h"
[[ $(glam_source_digest "$src") == "$d1" ]] || fail "the digest changed with files outside the sources"
echo '__global__ void k() { }' >"$src/kernels/cuda/a.cu"
d2=$(glam_source_digest "$src")
[[ $d2 != "$d1" ]] || fail "the digest did not change with a kernel's source"
echo 'int h();' >"$src/exec/c.cpp"
[[ $(glam_source_digest "$src") != "$d2" ]] || fail "the digest did not change with a new source file"

# gpu_bundle.sh --verify: an archive whose manifest names the working tree's digest passes, another fails.
fake_bundle() {  # $1: the digest its manifest names
  rm -rf "$tmp/pack" "$tmp/bundles" && mkdir -p "$tmp/pack/glam-gpu-bundle" "$tmp/bundles"
  echo "sources $1" >"$tmp/pack/glam-gpu-bundle/MANIFEST"
  tar -C "$tmp/pack" -czf "$tmp/bundles/glam-gpu-bundle.tar.gz" glam-gpu-bundle
}
fake_bundle "$(glam_source_digest "$root")"
GLAM_BUNDLE_DIR=$tmp/bundles bash "$root/scripts/gpu_bundle.sh" --verify >"$tmp/out" 2>&1 ||
  fail "--verify refused a bundle of these sources: $(cat "$tmp/out")"
fake_bundle 0123456789abcdef
if GLAM_BUNDLE_DIR=$tmp/bundles bash "$root/scripts/gpu_bundle.sh" --verify >"$tmp/out" 2>&1; then
  fail "--verify accepted a bundle of other sources"
fi
grep -q 'stale bundle' "$tmp/out" || fail "--verify does not say the bundle is stale: $(cat "$tmp/out")"

if ((failures)); then exit 1; fi
echo "gpu_common.sh: all checks passed"
