#pragma once
// `glamexec calibrate`: measures this host with the executor's own kernels and writes a
// calibration profile (TOML) that the simulator's load_profile reads:
//  - [measured] the best sgemm rate of the gemm kernel (peak_flops), the streaming memory
//    bandwidth of one rank with its threads, and the threads per rank;
//  - [compute] and [memory] efficiency curves over size (square GEMMs, attention-shaped batched
//    GEMMs, triads);
//  - [network] (only with several ranks) point-to-point bandwidth and latency from all-to-all
//    timings, and the bandwidth efficiency by message size; [[network.collective]] the four
//    collectives (all-to-all, all-reduce, reduce-scatter, all-gather) over groups of 2, 4, ... and
//    all ranks, by buffer size, through the executor's communicator;
//  - [ops.<name>] per-op curves from real training steps of small GLaM-shaped configs: each op
//    id's median time against the StepGraph's FLOPs (matrix ops) or bytes (memory-bound ops), by
//    op name and phase; [ops_alone.<name>] the same for rank 0 alone with every core of the host.
// Under mpirun every rank measures at once (so shared caches and memory bandwidth are contended
// as in a run with that many ranks); rank 0 writes the profile, atomically.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace glam::exec {

struct CalibrateOptions {
  std::string device = "cpu";       // cpu, or cuda (one GPU per rank, NCCL between ranks)
  std::string precision;            // glamexec train's --precision (default bf16 on CUDA, fp32 on the CPU)
  int threads = 0;                  // threads per rank (0: cores / ranks on this host)
  std::string out;                  // profile to write ("": print it on stdout)
  bool quick = false;               // a few seconds: fewer sizes and steps (tests)
  std::vector<std::string> models;  // configs whose training steps give the per-op curves
                                    // (default: glam-tiny and glam-tiny-8e)
  std::vector<int64_t> tokens;      // tokens per rank of those steps (default: 384 768 1536 3072)
  int64_t layers = 0;               // layers of those configs to run (0: all)
  int64_t steps = 0;                // steps per config, warm-up included (0: 8, quick 3)
  std::vector<std::string> records; // more per-op points from existing run records (same host)
  uint64_t seed = 11;
  bool quiet = false;
};

// Returns the process exit code; throws UsageError / ConfigError on bad input (exit 2).
int run_calibrate(const CalibrateOptions& options, Communicator& comm, std::ostream& out);

}  // namespace glam::exec
