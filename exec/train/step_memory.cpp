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

}  // namespace

StepMemory step_memory(const ModelConfig& m, const ExecShape& shape, bool bf16) {
  return bf16 ? count_step<kernels::bf16>(m, shape) : count_step<float>(m, shape);
}

int64_t max_sequences_within(const ModelConfig& m, ExecShape shape, bool bf16, int64_t bytes) {
  // The smallest runnable count (the routing groups may need several sequences); its multiples run.
  int64_t unit = 0;
  for (int64_t s = 1; s <= 1024 && unit == 0; ++s) {
    shape.seqs = s;
    if (runnable(m, shape)) unit = s;
  }
  if (unit == 0) return 0;
  auto fits = [&](int64_t units) {
    shape.seqs = units * unit;
    return step_memory(m, shape, bf16).total() <= bytes;
  };
  // The memory grows with the batch (not in proportion: the bf16 logits stop at their chunk), so a
  // search: doubling past the largest fit, then bisection.
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = 2;
  while (fits(hi)) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo * unit;
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
