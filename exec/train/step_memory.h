#pragma once
// The memory one rank's training step allocates on its device: the model's buffers (master weights,
// their bf16 copy, gradients, the activations kept for the backward pass, its scratch) and the
// optimizer's state. Counted by constructing them without memory (kernels::AllocationCount), so the
// figure is the executor's own allocation, not a model of it: a run that cannot fit is refused before
// anything is allocated, with the batch that would fit.
#include <cstdint>

#include "model/transformer.h"
#include "model_config.h"

namespace glam::exec {

struct StepMemory {
  int64_t model_bytes = 0;
  int64_t optimizer_bytes = 0;
  int64_t total() const { return model_bytes + optimizer_bytes; }
};

// bf16: bf16 activations with float32 master weights (--precision bf16); float32 throughout otherwise.
// Throws UsageError when the shape cannot run (check_runnable).
StepMemory step_memory(const ModelConfig& m, const ExecShape& shape, bool bf16);

// The most sequences per rank (shape.seqs) whose step fits in `bytes`, among the counts the model can
// run with (multiples of the smallest, for the routing groups); 0 when not even the smallest fits.
int64_t max_sequences_within(const ModelConfig& m, ExecShape shape, bool bf16, int64_t bytes);

// Memory the host can still give to new processes (MemAvailable in /proc/meminfo); -1 where unknown.
int64_t host_available_memory();

}  // namespace glam::exec
