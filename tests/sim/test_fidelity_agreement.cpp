// Analytical and flow-level (SimGrid) fidelity agree on symmetric cases up to 256 chips.
// Each test simulates one cluster: SimGrid keeps one platform per process, and ctest runs
// every test case in a process of its own.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/step_simulator.h"

namespace glam {
namespace {

struct Both {
  StepResult analytical, flow;
};

Both simulate_both(const std::string& model, const Cluster& cluster, int64_t dp, int64_t ep, int64_t tp,
                   int64_t batch) {
  ParallelPlan p;
  p.dp = dp, p.ep = ep, p.tp = tp, p.batch_tokens = batch;
  SimulationInput in{load_model(model), cluster, p, {}, Fidelity::kAnalytical, default_profile(cluster.chip().kind)};
  Both b;
  b.analytical = simulate_step(in);
  in.fidelity = Fidelity::kFlow;
  in.flow_max_flows = 1 << 20;  // play every phase in SimGrid
  b.flow = simulate_step(in);
  return b;
}

void expect_agreement(const Both& b) {
  const auto& a = b.analytical;
  const auto& f = b.flow;
  EXPECT_GT(f.network_events, 0);
  EXPECT_EQ(f.flow_phases_analytical, 0);
  EXPECT_NEAR(f.step_time_s, a.step_time_s, 0.10 * a.step_time_s);
  EXPECT_NEAR(f.comm_s, a.comm_s, 0.10 * a.comm_s);
  EXPECT_NEAR(f.alltoall_s, a.alltoall_s, 0.10 * a.alltoall_s);
  EXPECT_DOUBLE_EQ(f.compute_s, a.compute_s);
  ::testing::Test::RecordProperty("analytical_comm_s", std::to_string(a.comm_s));
  ::testing::Test::RecordProperty("flow_comm_s", std::to_string(f.comm_s));
}

TEST(FidelityAgreement, Torus64ChipsExpertParallel) {
  expect_agreement(simulate_both("glam-8b-64e", load_cluster("tpu-v4-64"), 64, 64, 1, 1 << 18));
}

TEST(FidelityAgreement, Torus64ChipsTensorAndExpertParallel) {
  expect_agreement(simulate_both("glam-1.7b-64e", load_cluster("tpu-v4-64"), 16, 16, 4, 1 << 18));
}

TEST(FidelityAgreement, Torus256Chips) {
  expect_agreement(simulate_both("glam-1.7b-64e", load_cluster("tpu-v4-256"), 128, 64, 2, 1 << 18));
}

TEST(FidelityAgreement, GpuCluster64) {
  expect_agreement(simulate_both("glam-1.7b-64e", load_cluster("dgx-h100-64"), 64, 64, 1, 1 << 18));
}

}  // namespace
}  // namespace glam
