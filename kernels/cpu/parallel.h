#pragma once
// Row-parallel loops for the CPU kernels. Work is split by rows only, so every value is computed
// by the same arithmetic whatever the thread count (results do not depend on threads).
#include <cstdint>

#ifdef GLAM_KERNELS_OPENMP
#include <omp.h>
#define GLAM_PRAGMA(x) _Pragma(#x)
#define GLAM_PARALLEL_FOR(n) GLAM_PRAGMA(omp parallel for schedule(static) if ((n) > 1))
#else
#define GLAM_PARALLEL_FOR(n)
#endif
