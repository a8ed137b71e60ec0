#include "train/step_memory.h"

#include <fstream>
#include <sstream>
#include <string>

#include "comm/communicator.h"
#include "common/errors.h"
#include "device.h"
#include "kernel_context.h"
#include "optim/adafactor_optimizer.h"

namespace glam::exec {

namespace {

template <class T>
StepMemory count_step(const ModelConfig& m, const ExecShape& shape) {
  auto comm = make_single_communicator();
  const kernels::KernelContext ctx;
  StepMemory out;
  kernels::AllocationCount count;
  Transformer<T> model(m, shape, *comm, ctx);
  out.model_bytes = count.bytes();
  AdafactorOptimizer<float> optimizer(model.layout());
  out.optimizer_bytes = count.bytes() - out.model_bytes;
  return out;
}

bool runnable(const ModelConfig& m, const ExecShape& s) {
  try {
    check_runnable(m, s);
    return true;
  } catch (const UsageError&) {
    return false;
  }
}

}  // namespace

StepMemory step_memory(const ModelConfig& m, const ExecShape& shape, bool bf16) {
  return bf16 ? count_step<kernels::bf16>(m, shape) : count_step<float>(m, shape);
}

int64_t max_sequences_within(const ModelConfig& m, ExecShape shape, bool bf16, int64_t bytes) {
  // The smallest runnable count (the routing groups may need several sequences), then the memory is
  // affine in the sequences: every buffer is fixed or proportional to the tokens.
  int64_t unit = 0;
  for (int64_t s = 1; s <= 1024 && unit == 0; ++s) {
    shape.seqs = s;
    if (runnable(m, shape)) unit = s;
  }
  if (unit == 0) return 0;
  shape.seqs = unit;
  const int64_t one = step_memory(m, shape, bf16).total();
  if (one > bytes) return 0;
  shape.seqs = 2 * unit;
  const int64_t per_unit = step_memory(m, shape, bf16).total() - one;
  if (per_unit <= 0) return unit;
  return unit * (1 + (bytes - one) / per_unit);
}

int64_t host_available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (fields >> key >> kib && key == "MemAvailable:") return kib * 1024;
  }
  return -1;
}

}  // namespace glam::exec
