// The interruption model: Daly's optimum and expected time, against his published approximations and
// against a simulation of the failure process itself.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "accounting.h"
#include "planner/interruptions.h"
#include "planner/training_estimate.h"

namespace glam {
namespace {

// T_w / T_s as a function of the interval, for the optimum's neighbours.
double wall_per_compute(double M, double delta, double tau) { return expected_wall_time(1, M, delta, 0, tau); }

TEST(Interruptions, OptimumIntervalIsTheMinimumOfTheExpectedTime) {
  for (double ratio : {1e-6, 1e-3, 0.1, 1.0, 5.0}) {
    const double M = 3600, delta = ratio * M;
    const double tau = optimal_checkpoint_interval(M, delta);
    ASSERT_GT(tau, 0) << ratio;
    ASSERT_LT(tau, M) << ratio;
    EXPECT_LT(wall_per_compute(M, delta, tau), wall_per_compute(M, delta, 0.99 * tau)) << ratio;
    EXPECT_LT(wall_per_compute(M, delta, tau), wall_per_compute(M, delta, 1.01 * tau)) << ratio;
  }
}

// Young (1974): sqrt(2 delta M) when checkpoints are short; Daly (2006, eq. 37) to higher order:
// sqrt(2 delta M) (1 + sqrt(delta / 2M) / 3 + delta / 18M) - delta for delta < 2M.
TEST(Interruptions, OptimumAgreesWithYoungAndDalysApproximations) {
  const double M = 86400;
  const double young_delta = 1e-6 * M;
  EXPECT_NEAR(optimal_checkpoint_interval(M, young_delta) / std::sqrt(2 * young_delta * M), 1, 1e-3);
  for (double ratio : {1e-4, 1e-2, 0.1}) {
    const double delta = ratio * M, y = std::sqrt(2 * delta * M);
    const double daly = y * (1 + std::sqrt(delta / (2 * M)) / 3 + delta / (18 * M)) - delta;
    EXPECT_NEAR(optimal_checkpoint_interval(M, delta) / daly, 1, ratio < 0.05 ? 2e-5 : 1e-3) << ratio;
  }
}

// One run of the failure process: failures at exponential times of mean M, during compute,
// checkpoints and restarts alike; a failure sends the run back to its last checkpoint after a restart.
struct SimulatedRun {
  double wall = 0, lost = 0, restart = 0, failures = 0;
};
SimulatedRun simulate_run(std::mt19937_64& rng, int segments, double tau, double delta, double R, double M) {
  std::exponential_distribution<double> failure(1 / M);
  SimulatedRun run;
  for (int s = 0; s < segments; ++s) {
    for (;;) {
      const double x = failure(rng);
      if (x >= tau + delta) {
        run.wall += tau + delta;
        break;
      }
      run.wall += x, run.lost += x, ++run.failures;
      for (;;) {  // the restart, which can fail too
        const double y = failure(rng);
        if (y >= R) {
          run.wall += R, run.restart += R;
          break;
        }
        run.wall += y, run.restart += y, ++run.failures;
      }
    }
  }
  return run;
}

TEST(Interruptions, ExpectedTimesMatchASimulationOfTheFailures) {
  // 100 h of steps of 36 s in 1 h segments; a failure every 4 h; 6 min checkpoints; 20 min restarts.
  InterruptionParameters p;
  p.chip_mtbf_hours = 4 * 64;
  p.checkpoint_Bps = 1e9;
  const double checkpoint_bytes = 360e9;  // 360 s at 1 GB/s, written and read
  p.restart_s = 20 * 60 - 360;
  p.interval_s = 3600;
  const InterruptedRun r = interrupted_run(10000, 36, 64, checkpoint_bytes, p);
  ASSERT_EQ(r.interval_steps, 100);
  ASSERT_DOUBLE_EQ(r.checkpoint_write_s, 360);
  ASSERT_DOUBLE_EQ(r.restart_s, 1200);
  ASSERT_DOUBLE_EQ(r.system_mtbf_s, 4 * 3600);
  std::mt19937_64 rng(2006);
  SimulatedRun mean;
  const int runs = 4000;
  for (int i = 0; i < runs; ++i) {
    const SimulatedRun one = simulate_run(rng, 100, 3600, 360, 1200, 4 * 3600);
    mean.wall += one.wall / runs, mean.lost += one.lost / runs, mean.restart += one.restart / runs;
    mean.failures += one.failures / runs;
  }
  // About 0.2% standard error on the wall time over 4,000 runs, 1% on the parts.
  EXPECT_NEAR(r.wall_s / mean.wall, 1, 0.01);
  EXPECT_NEAR(r.expected_failures / mean.failures, 1, 0.03);
  EXPECT_NEAR(r.restart_total_s / mean.restart, 1, 0.03);
  EXPECT_NEAR(r.lost_work_s / mean.lost, 1, 0.03);
  EXPECT_DOUBLE_EQ(r.checkpoint_total_s, 100 * 360);
  // The parts add up to the whole, as the derivation says.
  EXPECT_NEAR(r.compute_s + r.checkpoint_total_s + r.restart_total_s + r.lost_work_s, r.wall_s, 1e-9 * r.wall_s);
}

TEST(Interruptions, WithoutFailuresOnlyTheCheckpointsCost) {
  InterruptionParameters p;
  p.chip_mtbf_hours = 1e12;
  p.checkpoint_Bps = 1e9;
  p.interval_s = 1000;
  const InterruptedRun r = interrupted_run(1000, 10, 8, 20e9, p);  // 10,000 s of steps, 20 s checkpoints
  EXPECT_NEAR(r.wall_s, 10000 + 10 * 20, 1e-3);
  EXPECT_NEAR(r.expected_failures, 0, 1e-6);
  EXPECT_NEAR(r.goodput(), 10000.0 / 10200, 1e-9);
  EXPECT_TRUE(r.finishes());
}

TEST(Interruptions, IntervalFallsOnWholeStepsAndAtLeastOne) {
  InterruptionParameters p;
  p.chip_mtbf_hours = 1e6;
  p.checkpoint_Bps = 1e9;
  p.interval_s = 14;
  EXPECT_EQ(interrupted_run(1000, 10, 8, 1e9, p).interval_steps, 1);
  p.interval_s = 3;
  const InterruptedRun r = interrupted_run(1000, 10, 8, 1e9, p);
  EXPECT_EQ(r.interval_steps, 1);
  EXPECT_DOUBLE_EQ(r.interval_s, 10);
  p.interval_s = 1e9;  // no more than the run
  EXPECT_EQ(interrupted_run(1000, 10, 8, 1e9, p).interval_steps, 1000);
  p.interval_s.reset();
  const InterruptedRun optimum = interrupted_run(1e6, 10, 8, 1e9, p);  // the optimum, 30,000 s, to 10 s steps
  EXPECT_TRUE(optimum.interval_is_optimum);
  EXPECT_NEAR(optimum.interval_s, optimal_checkpoint_interval(optimum.system_mtbf_s, 1), 5);
  EXPECT_EQ(interrupted_run(1000, 10, 8, 1e9, p).interval_steps, 1000);  // or the whole run when shorter
}

TEST(Interruptions, FailuresFasterThanARestartMeanTheRunDoesNotFinish) {
  InterruptionParameters p;
  p.chip_mtbf_hours = 100;
  p.checkpoint_Bps = 1e9;
  p.restart_s = 3600;
  const InterruptedRun r = interrupted_run(1e5, 1, 4096, 1e12, p);  // a failure every 88 s
  EXPECT_FALSE(r.finishes());
  EXPECT_NE(r.why_it_does_not_finish().find("a failure every 88 s"), std::string::npos) << r.why_it_does_not_finish();
}

TEST(Interruptions, CheckpointHoldsTheWeightsAndTheOptimizerState) {
  const ModelConfig m = load_model("glam-64b-64e");
  const double params = count_params(m).total;
  const double bytes = checkpoint_bytes(m);
  EXPECT_GT(bytes, 4 * params);             // float32 weights and Adafactor's factored moments
  EXPECT_LT(bytes, 4 * params * 1.01);      // which are small
}

}  // namespace
}  // namespace glam
