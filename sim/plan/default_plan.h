#pragma once
// Picks a parallel plan for (model, cluster, batch) when the user gives none: every layout the
// cluster admits (tp a power of two up to one node or 16 chips, pp a power of two up to 8 that
// divides the blocks, with 1, 2 or 4 interleaved chunks per stage, ep the largest divisor of the
// experts that divides dp, weights replicated or sharded (replicated with pipelines unless the user
// asks for sharding), recompute on or off (on when the user asks for it), with the fewest
// micro-batches that make it fit, and with pipelines up to 4 per stage) is simulated at analytical
// fidelity, then smaller expert groups where they can win (choose_plan); the fastest wins.
#include <optional>
#include <vector>

#include "common/errors.h"
#include "engine/step_simulator.h"

namespace glam {

// One layout the chooser looked at. Layouts that do not fit in HBM are not simulated.
struct LayoutTrial {
  ParallelPlan plan;
  double memory_bytes = 0;  // per chip
  bool fits = false;
  double step_time_s = 0, compute_s = 0, exposed_comm_s = 0, pipeline_bubble_s = 0, alltoall_s = 0, mfu = 0;  // if it fits
};

// No layout of the model fits the cluster's memory (a usage error: exit code 2).
class PlanDoesNotFit : public UsageError {
 public:
  PlanDoesNotFit(const std::string& what, double needed, double hbm)
      : UsageError(what), needed_bytes(needed), hbm_bytes(hbm) {}
  double needed_bytes, hbm_bytes;  // the smallest footprint per chip, and what a chip holds for it
};

struct PlanChoice {
  ParallelPlan plan;
  int candidates = 0;  // layouts considered
  int fitting = 0;     // of which fit in memory
  // Every layout looked at: the fitting ones fastest first, then the others smallest first. The
  // micro-batched retries of layouts that did not fit in one pass are included.
  std::vector<LayoutTrial> trials;
};

// The expert parallelism of a layout that leaves it open: the largest divisor of the experts that
// divides dp (1 for a dense model).
int64_t default_expert_parallelism(const ModelConfig& m, int64_t dp);

// `base` carries the batch and any axis the user fixed (0 = free), and sharded weights or
// recomputation when asked for (then every layout has them); throws UsageError when no layout fits
// and `allow_oom` is false (then the smallest footprint is returned).
PlanChoice choose_plan(const SimulationInput& in, const ParallelPlan& base, bool allow_oom);

inline constexpr int64_t kMaxChosenStages = 8;
inline constexpr int64_t kMaxChosenVirtualStages = 4;  // interleaved chunks per stage: 1, 2 or 4

// A pipeline's micro-batches when the user gives none: the most, up to 4 per stage (the bubble is then
// at most (pp - 1) / (4 pp + pp - 1), a fifth), that split each rank's sequences evenly (powers of two).
int64_t pipeline_microbatches(const ParallelPlan& plan, const ModelConfig& m);

// The fewest micro-batches (a power of two that splits each rank's sequences evenly) with which
// the plan fits in HBM; the plan's own count when none does.
int64_t fitting_microbatches(const ParallelPlan& plan, const ModelConfig& m, double usable_hbm_bytes);

}  // namespace glam
