// The energy model against hand-computed timelines.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "energy/energy_model.h"
#include "planner/training_estimate.h"
#include "support/run_command.h"

namespace glam {
namespace {

namespace fs = std::filesystem;

SimulationInput tiny_input() {
  ParallelPlan p;
  p.dp = 64, p.ep = 1, p.tp = 1, p.batch_tokens = 1 << 16;
  return {load_model("glam-1.7b"), load_cluster("tpu-v4-64"), p, {}, Fidelity::kAnalytical, default_profile("tpu-v4")};
}

// One 10 TFLOP product, then the chip waits as long again; `t` gets the product's time.
StepResult one_matmul_step(const SimulationInput& in, double& t) {
  StepOp op;
  op.kind = OpKind::kMatmul;
  op.flops = 1e13;
  op.bytes = 1e6;
  t = ComputeModel(in.cluster.chip(), in.profile, "bf16").op_time_s(op);
  StepResult r;
  r.graph.ops.push_back(op);
  r.timing.push_back({0, t, "", {}});
  r.step_time_s = 2 * t;
  return r;
}

TEST(Energy, AChipIdleAllStepDrawsExactlyItsIdlePower) {
  SimulationInput in = tiny_input();
  StepResult r;
  r.step_time_s = 2.5;
  StepEnergy e = step_energy(in, r, 1.0);
  const ChipSpec& chip = in.cluster.chip();
  EXPECT_DOUBLE_EQ(e.chip_compute_J, 0);
  EXPECT_DOUBLE_EQ(e.chip_idle_J, chip.idle_W * 2.5 * 64);
  EXPECT_DOUBLE_EQ(e.host_J, chip.host_W_per_chip * 2.5 * 64);
  EXPECT_DOUBLE_EQ(e.facility_overhead_J, 0);
}

TEST(Energy, OneMatmulByHand) {
  SimulationInput in = tiny_input();
  double t = 0;
  const StepResult r = one_matmul_step(in, t);
  StepEnergy e = step_energy(in, r, 1.2);
  const ChipSpec& chip = in.cluster.chip();
  const double achieved = 1e13 / t, best = chip.peak_flops_bf16 * in.profile.matmul.values.back();
  const double activity = std::min(1.0, achieved / best);
  EXPECT_NEAR(e.chip_compute_J, (chip.busy_W - chip.idle_W) * t * activity * 64, 1e-9);
  EXPECT_NEAR(e.chip_idle_J, chip.idle_W * 2 * t * 64, 1e-9);
  EXPECT_NEAR(e.total_J(), 1.2 * e.it_J(), 1e-9);
  EXPECT_NEAR(e.it_J(), e.chip_compute_J + e.chip_idle_J + e.host_J + e.network_J, 1e-9);
  EXPECT_NEAR(e.average_power_per_chip_W, e.it_J() / (2 * t) / 64, 1e-9);
}

// A profile that measured the chip's power (glamexec calibrate's [power]) replaces the chip kind's.
TEST(Energy, AMeasuredProfilePowerReplacesTheChipKinds) {
  SimulationInput in = tiny_input();
  double t = 0;
  const StepResult r = one_matmul_step(in, t);
  const StepEnergy datasheet = step_energy(in, r, 1.0);
  in.profile.idle_W = 50, in.profile.busy_W = 250;
  const StepEnergy measured = step_energy(in, r, 1.0);
  const ChipSpec& chip = in.cluster.chip();
  EXPECT_NEAR(measured.chip_idle_J, 50 * 2 * t * 64, 1e-9);
  EXPECT_NEAR(measured.chip_compute_J, datasheet.chip_compute_J * 200 / (chip.busy_W - chip.idle_W), 1e-9);
  EXPECT_DOUBLE_EQ(measured.host_J, datasheet.host_J);  // the host share is not the chip's
}

TEST(Energy, TwiceTheTokensTwiceTheEnergy) {
  SimulationInput in = tiny_input();
  StepResult r = simulate_step(in);
  FacilityParameters f{1.1, 0.1, std::nullopt};
  TrainingEstimate a = estimate_training(in, r, 1e9 * 65536, f), b = estimate_training(in, r, 2e9 * 65536, f);
  EXPECT_DOUBLE_EQ(b.steps, 2 * a.steps);
  EXPECT_NEAR(b.facility_energy_MWh(), 2 * a.facility_energy_MWh(), 1e-9 * b.facility_energy_MWh());
  EXPECT_NEAR(b.tco2e, 2 * a.tco2e, 1e-9 * b.tco2e);
  EXPECT_NEAR(a.tco2e, a.facility_energy_MWh() * 0.1, 1e-9);
  EXPECT_NEAR(a.facility_energy_MWh(), 1.1 * a.it_energy_MWh(), 1e-9 * a.it_energy_MWh());
}

// With failures: the chips draw the step's power while computing (the steps and the work done again)
// and its idle, host and network power while writing checkpoints and restarting.
TEST(Energy, InterruptionsChargeComputeAtStepPowerAndWaitingAtIdlePower) {
  SimulationInput in = tiny_input();
  StepResult r = simulate_step(in);
  FacilityParameters f{1.2, 0.1, std::nullopt};
  InterruptionParameters p;
  p.chip_mtbf_hours = 64 * 2.0;  // a failure every 2 hours on the 64 chips
  p.checkpoint_Bps = 1e9;
  const double tokens = 1e5 * 65536;
  const TrainingEstimate plain = estimate_training(in, r, tokens, f);
  const TrainingEstimate with = estimate_training(in, r, tokens, f, p);
  ASSERT_TRUE(with.interruptions.has_value());
  const InterruptedRun& run = *with.interruptions;
  ASSERT_GT(run.lost_work_s, 0);
  ASSERT_GT(run.idle_s(), 0);
  const double T = r.step_time_s, J_per_MWh = 3.6e9;
  const StepEnergy& e = with.step_energy;
  EXPECT_NEAR(plain.energy.total() * J_per_MWh, e.total_J() * plain.steps, 1e-9 * e.total_J() * plain.steps);
  EXPECT_NEAR(with.energy.chip_compute * J_per_MWh, e.chip_compute_J * run.busy_s() / T, 1e-6 * e.chip_compute_J);
  EXPECT_NEAR(with.energy.chip_idle * J_per_MWh, e.chip_idle_J * (run.busy_s() + run.idle_s()) / T, 1e-6 * e.chip_idle_J);
  EXPECT_NEAR(with.energy.host * J_per_MWh, e.host_J * (run.busy_s() + run.idle_s()) / T, 1e-6 * e.host_J);
  EXPECT_NEAR(with.facility_energy_MWh(), 1.2 * with.it_energy_MWh(), 1e-9 * with.it_energy_MWh());
  EXPECT_NEAR(with.train_hours, run.wall_s / 3600, 1e-12 * with.train_hours);
  EXPECT_NEAR(with.chip_hours, 64 * with.train_hours, 1e-9 * with.chip_hours);
  EXPECT_GT(with.facility_energy_MWh(), plain.facility_energy_MWh());
  EXPECT_NEAR(with.tco2e, 0.1 * with.facility_energy_MWh(), 1e-9 * with.tco2e);
}

// Pipeline stages split the chips: the same work costs the same busy energy whether a replica's blocks
// run on 16 chips (one stage) or on 4 stages of 16. Same replicas (so the same optimizer work), same
// micro-batch shapes (32,768 tokens per pass); a small vocabulary keeps the embedding's update, which
// both end stages make, a rounding error.
TEST(Energy, PipelineStagesShareTheChips) {
  const fs::path two_nodes = fs::temp_directory_path() / "glam-energy-dgx-h100-16.toml";
  std::string text = testing::read_whole_file(fs::path(GLAM_SOURCE_DIR) / "topologies/dgx-h100-64.toml");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"chips = 64", "chips = 16"}, {"down_ports = [8, 8]", "down_ports = [2, 8]"}, {"dgx-h100-64", "dgx-h100-16"}})
    text.replace(text.find(from), from.size(), to);
  std::ofstream(two_nodes) << text;
  auto input = [](const std::string& cluster, int64_t pp) {
    ParallelPlan p;
    p.dp = 2, p.tp = 8, p.pp = pp, p.batch_tokens = 1 << 20, p.microbatches = 16;
    SimulationInput in{load_model("glam-1.7b"), load_cluster(cluster), p, {}, Fidelity::kAnalytical,
                       default_profile("h100")};
    in.model.vocab_size = 256;
    return in;
  };
  const SimulationInput flat = input(two_nodes.string(), 1), piped = input("dgx-h100-64", 4);
  const StepEnergy a = step_energy(flat, simulate_step(flat), 1.0), b = step_energy(piped, simulate_step(piped), 1.0);
  EXPECT_NEAR(b.chip_compute_J, a.chip_compute_J, 1e-4 * a.chip_compute_J);
  fs::remove(two_nodes);
}

}  // namespace
}  // namespace glam
