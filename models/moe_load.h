#pragma once
// What a routing distribution does to the ranks of an expert-parallel group, under the capacity
// rule of kernels/routing_rules.h. Shared by the simulator's routing model and the executor's
// calibration, which must agree on it.
#include <vector>

#include "model_config.h"
#include "step_graph.h"

namespace glam {

// The busiest rank's load and the all-to-all shares for one MoE block, as expected values: each
// routing group of S tokens sends k*S*share_e copies to expert e, of which at most C are kept.
// `expert_share` has one entry per expert and sums to 1.
// With padded dispatch (ModelConfig::padded_dispatch) the costs are those of every capacity slot,
// whatever the routing; the dropped fraction is still the routing's.
MoeLayerLoad moe_layer_load(const ModelConfig& m, const StepShape& s, const std::vector<double>& expert_share);

// `load` with the costs of padded dispatch: every capacity slot sent, and computed by its expert.
MoeLayerLoad with_padded_slots(const ModelConfig& m, const StepShape& s, MoeLayerLoad load);

// The shares of the copies the router sent each expert in one MoE block of a run record (`layer`, an
// entry of its moe_layers): those kept (expert_load) and those dropped for capacity (expert_dropped;
// records from before it hold the kept copies alone, which understate a hot expert). This is the
// demand moe_layer_load takes. Throws ConfigError naming `file` and the key (`key` + ".expert_load")
// for a missing list, a count that is not a non-negative number, a length other than m's experts, or
// no copies at all.
std::vector<double> routed_shares(const nlohmann::json& layer, const ModelConfig& m, const std::string& file,
                                  const std::string& key);

}  // namespace glam
