#pragma once
// Ten Adafactor steps of glam-tiny-8e from the same weights and batches: the float32 model on the CPU
// against the model with activations of type G on the GPU (the CPU under GLAM_GPU_TESTS_ON_CPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "comm/communicator.h"
#include "cuda_test_support.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"
#include "support/random_batch.h"
#include "support/routing_moves.h"

namespace glam::testing {

// Expects `loss` (a StepLoss member) within `tolerance` (relative) at every step; returns the
// largest relative difference.
template <class G>
double ten_steps_against_the_cpu(double exec::StepLoss::*loss, double tolerance) {
  ModelConfig m = load_model("glam-tiny-8e");
  exec::ExecShape s;
  s.seqs = 4;
  s.seq_len = m.seq_len;
  auto comm = exec::make_single_communicator();
  kernels::KernelContext cpu;
  exec::Transformer<float> cm(m, s, *comm, cpu);
  exec::AdafactorOptimizer<float> copt(cm.layout());
  CudaContext gpu;
  exec::Transformer<G> gm(m, s, *comm, gpu.ctx);
  std::unique_ptr<exec::AdafactorOptimizer<float>> gopt;
  {
    kernels::MemoryBackendScope on_gpu(kDeviceBackend);
    gopt = std::make_unique<exec::AdafactorOptimizer<float>>(gm.layout());
  }
  cm.init_params(3);
  gm.init_params(3);
  double worst = 0;
  for (int64_t step = 1; step <= 10; ++step) {
    auto b = random_batch(s.tokens(), m.vocab_size, 100 + static_cast<uint64_t>(step));
    DeviceVec<int32_t> in(b.inputs), tg(b.targets);
    const double lc = cm.run(b.inputs.data(), b.targets.data(), step, true).*loss;
    copt.update(cpu, cm.params(), cm.grads(), step);
    const double lg = gm.run(in.get(), tg.get(), step, true).*loss;
    gopt->update(gpu.ctx, gm.params(), gm.grads(), step);
    EXPECT_NEAR(lg, lc, tolerance * std::abs(lc)) << "step " << step;
    worst = std::max(worst, std::abs(lg - lc) / std::abs(lc));
  }
  return worst;
}

}  // namespace glam::testing
