#include "moe_load.h"

#include <algorithm>
#include <numeric>

#include "common/errors.h"

namespace glam {

MoeLayerLoad with_padded_slots(const ModelConfig& m, const StepShape& s, MoeLayerLoad load) {
  // Every rank sends every slot of every expert (C per group and expert), and each rank's experts
  // compute all the slots the ep ranks send them: the uniform load of a full capacity.
  const double groups_per_rank = static_cast<double>(s.tokens_per_rank) / static_cast<double>(m.group_tokens);
  const double slots = groups_per_rank * static_cast<double>(m.capacity_per_group() * m.experts);
  load.a2a_send_tokens = slots;
  load.expert_tokens = slots;  // (E / ep experts) x C x groups, from each of the ep ranks
  load.dest_share.clear();     // uniform
  return load;
}

MoeLayerLoad moe_layer_load(const ModelConfig& m, const StepShape& s, const std::vector<double>& expert_share) {
  const double S = static_cast<double>(m.group_tokens), k = static_cast<double>(m.top_k);
  const double C = static_cast<double>(m.capacity_per_group());
  const double groups_per_rank = static_cast<double>(s.tokens_per_rank) / S;
  const int64_t ep = s.ep, per_rank = m.experts / ep;
  std::vector<double> kept_by_rank(static_cast<size_t>(ep), 0.0);
  double kept = 0;
  for (int64_t e = 0; e < m.experts; ++e) {
    double copies = std::min(k * S * expert_share[static_cast<size_t>(e)], C);
    kept_by_rank[static_cast<size_t>(e / per_rank)] += copies;
    kept += copies;
  }
  MoeLayerLoad load;
  load.dropped_fraction = 1 - kept / (k * S);
  if (m.padded_dispatch()) return with_padded_slots(m, s, load);
  load.a2a_send_tokens = kept * groups_per_rank;
  // Every rank of the ep group sends the same mix, so rank r receives ep times its share.
  double hottest = *std::max_element(kept_by_rank.begin(), kept_by_rank.end());
  load.expert_tokens = hottest * groups_per_rank * static_cast<double>(ep);
  for (double v : kept_by_rank) load.dest_share.push_back(kept > 0 ? v / kept : 0);
  return load;
}

std::vector<double> routed_shares(const nlohmann::json& layer, const ModelConfig& m, const std::string& file,
                                  const std::string& key) {
  std::vector<double> copies(static_cast<size_t>(m.experts), 0.0);
  auto add = [&](const char* name, bool required) {
    const std::string at = key + "." + name;
    if (!layer.is_object() || !layer.contains(name)) {
      if (required) throw ConfigError(file, at, "(missing)", "a list of per-expert copy counts");
      return;
    }
    const nlohmann::json& counts = layer[name];
    if (!counts.is_array() || counts.size() != copies.size())
      throw ConfigError(file, at, counts.is_array() ? std::to_string(counts.size()) + " experts" : counts.dump(),
                        std::to_string(m.experts) + " per-expert counts, as " + m.id + " has experts");
    for (size_t e = 0; e < copies.size(); ++e) {
      if (!counts[e].is_number() || counts[e].get<double>() < 0)
        throw ConfigError(file, at, counts[e].dump(), "non-negative counts");
      copies[e] += counts[e].get<double>();
    }
  };
  add("expert_load", true);
  add("expert_dropped", false);
  const double total = std::accumulate(copies.begin(), copies.end(), 0.0);
  if (total <= 0) throw ConfigError(file, key + ".expert_load", "all zero", "at least one routed copy");
  for (double& v : copies) v /= total;
  return copies;
}

}  // namespace glam
