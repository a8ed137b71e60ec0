#pragma once
// Microbenchmarks of one rank, run on every rank at once: products through the executor's gemm
// kernel, streaming memory bandwidth with the rank's threads, and all-to-all timings between
// ranks through the Communicator the executor uses.
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "kernel_context.h"

namespace glam::exec {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false;
  double flops() const {
    return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(batch);
  }
};

// FLOP/s of one product shape through kernels::gemm (batch 1) or gemm_strided_batched: median of
// repeated calls over at least `min_seconds`, warm operands.
double gemm_rate(const kernels::KernelContext& ctx, const GemmShape& s, double min_seconds);

// Bytes/s of a triad a = b + s*c (STREAM counting: 3 x 4 bytes per element) over `bytes` in all,
// split over `threads` threads; median of repeats over at least `min_seconds`.
double triad_rate(int threads, double bytes, double min_seconds);
// Bytes/s of a copy a = b (2 x 4 bytes per element).
double copy_rate(int threads, double bytes, double min_seconds);

struct AllToAllPoint {
  double block_bytes = 0;  // per destination rank
  double seconds = 0;      // median time of one all-to-all, mean over ranks
};
// All-to-all over every rank for each block size (collective: every rank calls it).
std::vector<AllToAllPoint> alltoall_times(Communicator& comm, const std::vector<double>& block_bytes,
                                          double min_seconds);

double now_s();

}  // namespace glam::exec
