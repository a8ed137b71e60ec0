// The step simulator's scheduling rules that the closed-form collective tests do not reach.
#include <gtest/gtest.h>

#include "engine/step_simulator.h"
#include "network/collective_schedule.h"
#include "support/host_cluster.h"

namespace glam {
namespace {

// A host of 4 CPU ranks, expert- and data-parallel, with blocking collectives only (as glamexec).
SimulationInput host_input(double ranks_per_core) {
  Cluster c = testing::host_cluster(4);
  ParallelPlan p;
  p.dp = 4, p.ep = 4, p.tp = 1, p.batch_tokens = 2048;
  p.overlap_grad_reduction = false;
  SimulationInput in{load_model("glam-tiny-8e"), c, p, {}, Fidelity::kAnalytical, default_profile("cpu")};
  in.model.activation_precision = "float32";
  in.ranks_per_core = ranks_per_core;
  return in;
}

// Ranks taking turns on shared cores: ops longer than a scheduler slice are time-sliced (k times
// slower), shorter ones keep their duration and the others' share of them is waited for at the next
// blocking collective; either way the step grows by exactly (k - 1) x the rank's compute.
TEST(StepSimulator, RanksTakingTurnsOnSharedCores) {
  SimulationInput one = host_input(1.0), two = host_input(2.0);
  two.scheduler_slice_s = one.scheduler_slice_s = 1e-3;
  const StepResult alone = simulate_step(one);
  const StepResult shared = simulate_step(two);
  ASSERT_EQ(alone.graph.ops.size(), shared.graph.ops.size());
  double wait = 0, short_compute = 0;
  int long_ops = 0, short_ops = 0;
  for (size_t i = 0; i < alone.graph.ops.size(); ++i) {
    const double d1 = alone.timing[i].duration(), d2 = shared.timing[i].duration();
    if (alone.graph.ops[i].kind != OpKind::kCollective) {
      const bool sliced = d1 >= 1e-3;
      EXPECT_NEAR(d2, sliced ? 2 * d1 : d1, 1e-9 * d1) << alone.graph.ops[i].id;
      (sliced ? long_ops : short_ops) += 1;
      if (!sliced) short_compute += d1;
    } else {
      EXPECT_GE(d2, d1 * (1 - 1e-9)) << alone.graph.ops[i].id;
      wait += d2 - d1;
    }
  }
  ASSERT_GT(long_ops, 0);
  ASSERT_GT(short_ops, 0);
  EXPECT_GT(wait, 0.5 * short_compute);  // most of the others' short ops are waited for inside collectives
  EXPECT_NEAR(shared.step_time_s, alone.step_time_s + alone.compute_s, 1e-9 * alone.step_time_s);
}

// The all-to-all bytes a rank sends to other chips: none with every expert on the chip, (ep-1)/ep of
// the buffers under uniform routing, and under skew, when only kept copies travel, what leaves the
// hottest rank (rank 0); padded dispatch sends every slot whatever the routing.
TEST(StepSimulator, AllToAllBytesCountOnlyWhatLeavesTheChip) {
  SimulationInput in = host_input(1.0);
  double buffers = 0;
  const StepResult uniform = simulate_step(in);
  for (const StepOp& op : uniform.graph.ops)
    if (op.kind == OpKind::kCollective && op.collective == CollectiveKind::kAllToAll) buffers += op.comm_bytes;
  ASSERT_GT(buffers, 0);
  EXPECT_NEAR(uniform.alltoall_bytes, buffers * 3 / 4, 1e-9 * buffers);

  in.plan.dp = in.plan.ep = 1;
  in.plan.batch_tokens = 512;  // the same tokens per rank
  EXPECT_EQ(simulate_step(in).alltoall_bytes, 0.0);

  in = host_input(1.0);
  in.routing = parse_routing_spec("skew=1.5");
  ASSERT_TRUE(in.model.padded_dispatch());
  EXPECT_NEAR(simulate_step(in).alltoall_bytes, uniform.alltoall_bytes, 1e-9 * uniform.alltoall_bytes);
  in.model.moe_dispatch = "kept";
  const StepResult skewed = simulate_step(in);
  // Expected: the flows out of rank 0 in the network model's schedule of each exchange.
  double expected = 0;
  for (const StepOp& op : skewed.graph.ops)
    if (op.kind == OpKind::kCollective && op.collective == CollectiveKind::kAllToAll) {
      ASSERT_EQ(op.a2a_dest_share.size(), 4u);
      const CollectiveSchedule s = plan_collective(in.cluster, CollectiveKind::kAllToAll, {{0, 1, 2, 3}},
                                                   op.a2a_dest_share, op.a2a_transposed);
      for (const CommPhase& ph : s.phases)
        for (const Flow& f : ph.flows)
          if (f.src == 0) expected += op.comm_bytes * f.share * ph.repeat;
    }
  EXPECT_NEAR(skewed.alltoall_bytes, expected, 1e-9 * expected);
  EXPECT_GT(expected, 0);
}

}  // namespace
}  // namespace glam
