#include "plan/default_plan.h"

#include <limits>

#include "common/errors.h"
#include "common/text_table.h"

namespace glam {

PlanChoice choose_plan(const SimulationInput& in, const ParallelPlan& base, bool allow_oom) {
  const int64_t n = in.cluster.num_chips();
  const ModelConfig& m = in.model;
  const int64_t max_tp = std::min<int64_t>(in.cluster.chips_per_node() > 1 ? in.cluster.chips_per_node() : 16, m.heads);
  PlanChoice best;
  double best_time = std::numeric_limits<double>::infinity();
  std::optional<ParallelPlan> smallest;
  double smallest_bytes = std::numeric_limits<double>::infinity();
  std::string last_reason;
  for (int64_t tp = 1; tp <= max_tp; tp *= 2) {
    if (base.tp && tp != base.tp) continue;
    if (n % tp) continue;
    const int64_t dp = n / tp;
    if (base.dp && dp != base.dp) continue;
    int64_t ep = 1;
    if (m.is_moe())
      for (int64_t e = 1; e <= std::min(m.experts, dp); ++e)
        if (m.experts % e == 0 && dp % e == 0) ep = e;
    if (base.ep) ep = base.ep;
    for (int shard = 0; shard < 2; ++shard)
      for (int recompute = 0; recompute < 2; ++recompute) {
        ParallelPlan p = base;
        p.dp = dp, p.tp = tp, p.ep = ep, p.shard_weights = shard, p.recompute = recompute;
        try {
          validate_plan(p, m, in.cluster);
        } catch (const UsageError& e) {
          last_reason = e.what();
          continue;
        }
        ++best.candidates;
        double bytes = plan_memory(m, p).total_bytes();
        if (bytes < smallest_bytes) smallest_bytes = bytes, smallest = p;
        if (bytes > in.cluster.chip().hbm_bytes) continue;
        ++best.fitting;
        SimulationInput trial = in;
        trial.plan = p;
        trial.fidelity = Fidelity::kAnalytical;
        double t = simulate_step(trial).step_time_s;
        if (t < best_time) best_time = t, best.plan = p;
      }
  }
  if (best.candidates == 0)
    throw UsageError("no parallel layout of " + m.id + " on " + in.cluster.id() + " is valid: " + last_reason);
  if (best.fitting == 0) {
    if (!allow_oom)
      throw UsageError("no parallel layout of " + m.id + " fits " + in.cluster.id() + ": the smallest needs " +
                       format_bytes(smallest_bytes) + " per chip, HBM holds " +
                       format_bytes(in.cluster.chip().hbm_bytes) +
                       " (use more chips, a smaller batch, or --allow-oom to simulate it anyway)");
    best.plan = *smallest;
  }
  return best;
}

}  // namespace glam
