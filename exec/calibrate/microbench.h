#pragma once
// Microbenchmarks of one rank, run on every rank at once: products through the executor's gemm
// kernel (on the context's backend, CPU or CUDA), streaming memory bandwidth, and collective
// timings between ranks through the Communicator the executor uses (MPI or NCCL).
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "kernel_context.h"
#include "step_graph.h"

namespace glam::exec {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false;
  double flops() const {
    return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(batch);
  }
};

// FLOP/s of one product shape through kernels::gemm (batch 1) or gemm_strided_batched on ctx's
// backend: median of repeated calls (each waited for) over at least `min_seconds`, warm operands.
double gemm_rate(const kernels::KernelContext& ctx, const GemmShape& s, double min_seconds);

// Bytes/s of a triad a = b + s*c (STREAM counting: 3 x 4 bytes per element) over `bytes` in all,
// split over `threads` threads; median of repeats over at least `min_seconds`.
double triad_rate(int threads, double bytes, double min_seconds);
// Bytes/s of a copy a = b (2 x 4 bytes per element).
double copy_rate(int threads, double bytes, double min_seconds);
// Bytes/s (read + written) of a device-to-device copy of `bytes` on a CUDA device.
double device_copy_rate(double bytes, double min_seconds);

struct CollectivePoint {
  double buffer_bytes = 0;  // per rank, as the StepGraph counts a collective's comm_bytes
  double seconds = 0;       // median time of one collective, mean over ranks
};
// Times one collective over every rank of `comm` for each buffer size, with buffers on `backend`
// (collective: every rank calls it). The buffer is what the StepGraph and the simulator count:
// all-to-all: the bytes each rank sends in all (size() blocks, its own included); all-reduce: the
// reduced buffer; reduce-scatter: the input of size() blocks; all-gather: the gathered output.
// Sizes are rounded up to whole floats per rank block.
std::vector<CollectivePoint> collective_times(Communicator& comm, CollectiveKind kind,
                                              const std::vector<double>& buffer_bytes, double min_seconds,
                                              kernels::Backend backend);

double now_s();

}  // namespace glam::exec
