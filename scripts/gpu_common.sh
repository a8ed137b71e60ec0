# Sourced by gpu_bundle.sh (which packs prebuilt GPU programs) and gpu_check.sh (which runs them).

# A digest of the sources the programs are built from, so that a bundle is never run against other
# sources than its own (the GPU machine gets a copy of the working tree, without .git).
glam_source_digest() {  # $1: the repository root
  (cd "$1" && find CMakeLists.txt models topologies kernels sim exec tests -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name CMakeLists.txt \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# The path of a shared library on this machine: the CUDA toolkit's and the driver's folders first,
# then anywhere under /usr, /opt and /lib (the NVIDIA wheels of a Python environment hold cuBLAS and
# NCCL on machines whose toolkit has only the compiler). GLAM_LIBRARY_SEARCH_ROOTS replaces all of
# these with its folders (the tests use it).
glam_find_library() {  # $1: the library's file name (soname)
  local d roots
  if [[ -n ${GLAM_LIBRARY_SEARCH_ROOTS:-} ]]; then
    read -r -a roots <<<"$GLAM_LIBRARY_SEARCH_ROOTS"
  else
    roots=(/usr /opt /lib /lib64)
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
      /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
      if [[ -e $d/$1 ]]; then
        echo "$d/$1"
        return 0
      fi
    done
  fi
  # find fails for a root it cannot read even when it found the library elsewhere: its output decides.
  local found
  found=$(find "${roots[@]}" \( -type f -o -type l \) -name "$1" -print -quit 2>/dev/null || true)
  [[ -n $found ]] && echo "$found"
}

glam_ldd_bundle() {  # $1: the unpacked bundle, then ldd's options; ldd of every program in it
  local bundle=$1 b
  shift
  for b in "$bundle"/bin/*; do ldd "$@" "$b" 2>&1 || true; done
}

# Exports LD_LIBRARY_PATH so that every program of the unpacked bundle $1 loads: the bundle's lib/
# first, then the folders of this machine that hold what is still missing (cuBLAS, NCCL), and the
# bundle's compat/ (libstdc++, libgcc_s) only where this machine's own are older than the build's.
glam_use_bundle_libraries() {
  local bundle=$1 lib path missing pass
  export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for pass in 1 2 3; do
    missing=$(glam_ldd_bundle "$bundle" | awk '/=> not found/ {print $1}' | sort -u)
    [[ -z $missing ]] && break
    for lib in $missing; do
      if ! path=$(glam_find_library "$lib"); then
        echo "not on this machine: $lib (needed by the bundle's programs; see MANIFEST)" >&2
        return 1
      fi
      echo "using $path" >&2
      LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$path")"
    done
  done
  if glam_ldd_bundle "$bundle" | grep -qE 'GLIBCXX_|GCC_[0-9.]+. not found'; then
    echo "this machine's libstdc++ is older than the build's: using the bundle's compat/" >&2
    LD_LIBRARY_PATH="$bundle/compat:$LD_LIBRARY_PATH"
  fi
  # With the symbols resolved too (-r): a library still missing stops here; functions this machine's
  # libraries lack (an older cuBLAS or NCCL than the build's) only warn, since a missing function fails
  # only when it is called, but the warning names the cause first.
  local report undefined
  report=$(glam_ldd_bundle "$bundle" -r)
  if grep -E 'not found' <<<"$report" | grep -v 'undefined symbol'; then
    echo "the bundle's programs cannot load on this machine (above)" >&2
    return 1
  fi
  undefined=$(grep 'undefined symbol' <<<"$report" | sort -u || true)
  if [[ -n $undefined ]]; then
    echo "warning: this machine's libraries lack symbols the bundle's programs use:" >&2
    echo "$undefined" | head -n 20 >&2
  fi
  return 0
}
