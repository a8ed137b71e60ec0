#pragma once
// What a routing distribution does to the ranks of an expert-parallel group, under the capacity
// rule of kernels/routing_rules.h. Shared by the simulator's routing model and the executor's
// calibration, which must agree on it.
#include <vector>

#include "model_config.h"
#include "step_graph.h"

namespace glam {

// Expected copies one expert keeps of a routing group of `group_tokens` tokens, when each token sends
// it a copy with probability q (a token's k copies go to k different experts: q = k x the expert's
// share) and it keeps at most `capacity`: E[min(X, C)] with X ~ Binomial(S, q). A group is small
// enough that its own variance drops copies even when the shares are even: at GLaM's capacity
// (C = 2S/E, the mean) uniform routing drops 7% of copies with 64 experts, 14% with 256.
double expected_kept_copies(int64_t group_tokens, double q, int64_t capacity);

// The busiest rank's load and the all-to-all shares for one MoE block, as expected values: each
// routing group of S tokens sends expert e its copies (`routed_share`, one entry per expert, summing
// to 1, of the k x S copies), of which it keeps expected_kept_copies. `kept_share`, where given: the
// share of all routed copies each expert kept, as a run with the same routing groups and capacity
// measured them; it replaces the expected kept copies.
// With padded dispatch (ModelConfig::padded_dispatch) the costs are those of every capacity slot,
// whatever the routing; the dropped fraction is still the routing's.
MoeLayerLoad moe_layer_load(const ModelConfig& m, const StepShape& s, const std::vector<double>& routed_share,
                            const std::vector<double>& kept_share = {});

// The load of uniform routing (every expert an equal share).
MoeLayerLoad uniform_moe_load(const ModelConfig& m, const StepShape& s);

// `load` with the costs of padded dispatch: every capacity slot sent, and computed by its expert.
MoeLayerLoad with_padded_slots(const ModelConfig& m, const StepShape& s, MoeLayerLoad load);

// One MoE block's routing, in shares of all the copies routed.
struct ExpertRouting {
  std::vector<double> routed;  // the copies the router sent each expert, kept or dropped
  // Those each expert kept, as a run measured them; empty where unknown (synthetic routing, records
  // that count no dropped copies): moe_layer_load then takes the expected kept copies.
  std::vector<double> kept;
};

// The routing of one MoE block of a run record (`layer`, an entry of its moe_layers): the copies kept
// (expert_load) and those dropped for capacity (expert_dropped; records from before it hold the kept
// copies per expert and the dropped ones in all (dropped_tokens): their kept shares are known, and
// their kept copies are taken as the routed ones, which understates a hot expert). Throws ConfigError
// naming `file` and the key (`key` + ".expert_load", ...) for a missing list, a count that is not a
// number from 0 to 2^53, a length other than m's experts, no copies at all, or counts beyond
// the copies routed (routed_tokens: kept and dropped per expert, dropped_tokens, skipped_second_copies).
ExpertRouting recorded_routing(const nlohmann::json& layer, const ModelConfig& m, const std::string& file,
                               const std::string& key);

// Every entry of a run record's moe_layers, as recorded_routing reads it, checked to be m's MoE blocks
// in order: at most one per block of m, each `layer` (where given) the block's number.
std::vector<ExpertRouting> recorded_routings(const nlohmann::json& layers, const ModelConfig& m,
                                             const std::string& file);

// Whether a run whose record holds `model_config` (the model as run) routed in the groups and under
// the capacity of `m` (experts, group size, top-k, capacity rule, second-expert policy), so that the
// copies it kept carry over to m. False for a record without it.
bool same_routing_groups(const nlohmann::json& model_config, const ModelConfig& m);

}  // namespace glam
