#include "moe_load.h"

#include <algorithm>
#include <cmath>
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

double expected_kept_copies(int64_t group_tokens, double q, int64_t capacity) {
  const double S = static_cast<double>(group_tokens), C = static_cast<double>(capacity);
  if (q <= 0) return 0;
  if (q >= 1) return std::min(S, C);
  if (capacity >= group_tokens) return S * q;
  // E[min(X, C)] = C - sum over x < C of (C - x) P(X = x), the binomial terms by their ratio in logs
  // (P(X = 0) = (1-q)^S underflows for large groups; its log does not).
  double log_p = S * std::log1p(-q), short_of_capacity = 0;
  const double log_odds = std::log(q / (1 - q));
  for (int64_t x = 0; x < capacity; ++x) {
    short_of_capacity += static_cast<double>(capacity - x) * std::exp(log_p);
    log_p += std::log((S - static_cast<double>(x)) / static_cast<double>(x + 1)) + log_odds;
  }
  return std::max(0.0, C - short_of_capacity);
}

MoeLayerLoad moe_layer_load(const ModelConfig& m, const StepShape& s, const std::vector<double>& routed_share,
                            const std::vector<double>& kept_share) {
  const double S = static_cast<double>(m.group_tokens), k = static_cast<double>(m.top_k);
  const double groups_per_rank = static_cast<double>(s.tokens_per_rank) / S;
  const int64_t ep = s.ep;
  if (ep < 1 || m.experts % ep != 0)
    throw UsageError("expert parallelism ep = " + std::to_string(ep) + ": expected a divisor of the " +
                     std::to_string(m.experts) + " experts of " + m.id);
  const int64_t per_rank = m.experts / ep;
  std::vector<double> kept_by_rank(static_cast<size_t>(ep), 0.0);
  double kept = 0;  // copies kept per group
  double last_share = -1, last_kept = 0;  // even shares are the common case: one sum for them all
  for (int64_t e = 0; e < m.experts; ++e) {
    const double share = routed_share[static_cast<size_t>(e)];
    if (kept_share.empty() && share != last_share)
      last_share = share, last_kept = expected_kept_copies(m.group_tokens, k * share, m.capacity_per_group());
    const double copies = kept_share.empty() ? last_kept : k * S * kept_share[static_cast<size_t>(e)];
    kept_by_rank[static_cast<size_t>(e / per_rank)] += copies;
    kept += copies;
  }
  MoeLayerLoad load;
  load.dropped_fraction = std::max(0.0, 1 - kept / (k * S));
  if (m.padded_dispatch()) return with_padded_slots(m, s, load);
  load.a2a_send_tokens = kept * groups_per_rank;
  // Every rank of the ep group sends the same mix, so rank r receives ep times its share.
  double hottest = *std::max_element(kept_by_rank.begin(), kept_by_rank.end());
  load.expert_tokens = hottest * groups_per_rank * static_cast<double>(ep);
  for (double v : kept_by_rank) load.dest_share.push_back(kept > 0 ? v / kept : 0);
  return load;
}

MoeLayerLoad uniform_moe_load(const ModelConfig& m, const StepShape& s) {
  if (!m.is_moe()) return {};
  return moe_layer_load(m, s, std::vector<double>(static_cast<size_t>(m.experts), 1.0 / static_cast<double>(m.experts)));
}

ExpertRouting recorded_routing(const nlohmann::json& layer, const ModelConfig& m, const std::string& file,
                               const std::string& key) {
  std::vector<double> kept(static_cast<size_t>(m.experts), 0.0), dropped;
  auto read = [&](const char* name, std::vector<double>& copies) {
    const std::string at = key + "." + name;
    const nlohmann::json& counts = layer[name];
    if (!counts.is_array() || counts.size() != kept.size())
      throw ConfigError(file, at, counts.is_array() ? std::to_string(counts.size()) + " experts" : counts.dump(),
                        std::to_string(m.experts) + " per-expert counts, as " + m.id + " has experts");
    copies.assign(kept.size(), 0.0);
    for (size_t e = 0; e < copies.size(); ++e) {
      if (!counts[e].is_number() || counts[e].get<double>() < 0)
        throw ConfigError(file, at, counts[e].dump(), "non-negative counts");
      copies[e] = counts[e].get<double>();
    }
  };
  if (!layer.is_object() || !layer.contains("expert_load"))
    throw ConfigError(file, key + ".expert_load", "(missing)", "a list of per-expert copy counts");
  read("expert_load", kept);
  if (layer.contains("expert_dropped")) read("expert_dropped", dropped);
  ExpertRouting r;
  r.routed = kept;
  for (size_t e = 0; e < dropped.size(); ++e) r.routed[e] += dropped[e];
  const double total = std::accumulate(r.routed.begin(), r.routed.end(), 0.0);
  if (total <= 0) throw ConfigError(file, key + ".expert_load", "all zero", "at least one routed copy");
  for (double& v : r.routed) v /= total;
  // The kept shares are of every copy the router was asked for (routed_tokens: tokens x k, second
  // copies that random routing skipped included), as moe_layer_load scales them by k x S. Records
  // from before expert_dropped still count the copies dropped in all (dropped_tokens): their kept
  // shares are known, though not whom the dropped copies were sent to.
  auto count = [&](const char* name) {
    return layer.contains(name) && layer[name].is_number() && layer[name].get<double>() >= 0 ? layer[name].get<double>()
                                                                                               : -1.0;
  };
  if (dropped.empty() && count("dropped_tokens") < 0) return r;
  const double kept_in_all = std::accumulate(kept.begin(), kept.end(), 0.0);
  const double asked = std::max({count("routed_tokens"), total, kept_in_all + std::max(0.0, count("dropped_tokens"))});
  r.kept = kept;
  for (double& v : r.kept) v /= asked;
  return r;
}

bool same_routing_groups(const nlohmann::json& model_config, const ModelConfig& m) {
  if (!model_config.is_object() || !model_config.contains("moe") || !model_config["moe"].is_object()) return false;
  const nlohmann::json ran = model_json_with_defaults(model_config)["moe"];  // a record from before a key
  const nlohmann::json wanted = model_to_json(m)["moe"];
  for (const char* key : {"experts", "group_tokens", "top_k", "capacity_factor", "capacity_convention",
                          "second_expert_policy"})
    if (!ran.contains(key) || ran[key] != wanted[key]) return false;
  const char* threshold = "second_expert_threshold";  // used by the random policy alone
  return m.second_expert_policy != "random" || (ran.contains(threshold) && ran[threshold] == wanted[threshold]);
}

}  // namespace glam
