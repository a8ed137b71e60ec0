#pragma once
// MoE routing as an input: how the router spreads token copies over experts, and what that
// does to each rank under the capacity rules the executor's router applies
// (kernels/routing_rules.h: first choices before second choices, copies beyond C dropped).
#include <string>
#include <vector>

#include "model_config.h"
#include "moe_load.h"
#include "step_graph.h"

namespace glam {

struct RoutingSpec {
  std::string kind = "uniform";  // "uniform", "skew" or "file"
  double skew = 0;               // Zipf exponent: expert e gets a share proportional to (e+1)^-skew
  std::string file;              // run record (JSON) or histogram file with per-layer expert loads
  std::string describe() const;
};

// "uniform", "skew=0.8" or a file path; throws UsageError otherwise.
RoutingSpec parse_routing_spec(const std::string& arg);

// Per MoE block run, the share of routed copies each expert receives (sums to 1) and, from a run
// record of the same routing groups and capacity (same_routing_groups), the share each kept.
std::vector<ExpertRouting> expert_routing(const RoutingSpec& spec, const ModelConfig& m, int moe_blocks);


}  // namespace glam
