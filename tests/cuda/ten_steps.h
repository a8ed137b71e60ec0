#pragma once
// Ten Adafactor steps of glam-tiny-8e from the same weights and batches: the float32 model on the CPU
// against the model with activations of type G on the GPU (the CPU under GLAM_GPU_TESTS_ON_CPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "cuda_test_support.h"
#include "model/transformer.h"
#include "optim/adafactor_optimizer.h"
#include "support/random_batch.h"

namespace glam::testing {

// Copies one MoE layer's routing sent elsewhere than another run's: a copy that moves changes two
// counts (two experts' loads, or a load and the drops).
inline int64_t routing_moves(const exec::MoeLayerStats& a, const exec::MoeLayerStats& b) {
  int64_t moved = std::abs(a.dropped - b.dropped);
  for (size_t e = 0; e < a.expert_load.size() && e < b.expert_load.size(); ++e)
    moved += std::abs(a.expert_load[e] - b.expert_load[e]);
  return moved / 2 + moved % 2;
}

// The MoE layers whose routing differs between two runs of one step. A token whose experts score within
// a rounding of each other can go either way when sums run in another order (cuBLAS, the GPU's
// reductions), and one copy sent elsewhere moves its layer's router gradient by several percent. Expects
// at most `most_moves` moves per layer (and at least 1 allowed); prints each layer's count.
inline std::vector<int64_t> layers_routed_differently(const std::vector<exec::MoeLayerStats>& got,
                                                      const std::vector<exec::MoeLayerStats>& want, double most_share,
                                                      const std::string& what) {
  std::vector<int64_t> layers;
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const int64_t moves = routing_moves(got[i], want[i]);
    std::cout << what << " MoE layer " << want[i].layer << ": " << moves << " of " << want[i].routed
              << " copies routed differently\n";
    EXPECT_LE(moves, std::max<int64_t>(1, static_cast<int64_t>(most_share * static_cast<double>(want[i].routed))))
        << what << " MoE layer " << want[i].layer;
    if (moves > 0) layers.push_back(want[i].layer);
  }
  return layers;
}

// Whether a parameter's gradient depends directly on the routing of one of `layers` (its router, its
// experts, and the norm in front of them: "L3.moe.router", "L3.ffn_norm.scale").
inline bool routed_by(const std::string& name, const std::vector<int64_t>& layers) {
  const size_t dot = name.find('.');
  if (name.size() < 2 || name[0] != 'L' || dot == std::string::npos) return false;
  const std::string rest = name.substr(dot + 1);
  if (rest.rfind("moe.", 0) != 0 && rest.rfind("ffn_norm.", 0) != 0) return false;
  return std::count(layers.begin(), layers.end(), std::stoll(name.substr(1, dot - 1))) > 0;
}

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
