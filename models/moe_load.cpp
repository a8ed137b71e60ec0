#include "moe_load.h"

#include <algorithm>
#include <numeric>

#include "common/errors.h"
#include "common/text_table.h"

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

namespace {

// The largest count a record holds exactly (a double's integers).
constexpr double kMaxCount = 9007199254740992.0;  // 2^53

// A number of copies, 0 to 2^53, at `at` (a hand-written histogram may give shares); ConfigError naming
// the file and key otherwise.
double copy_count(const nlohmann::json& v, const std::string& file, const std::string& at) {
  if (!v.is_number() || !(v.get<double>() >= 0) || v.get<double>() > kMaxCount)
    throw ConfigError(file, at, v.dump(), "a number of copies from 0 to 2^53");
  return v.get<double>();
}

}  // namespace

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
    for (size_t e = 0; e < copies.size(); ++e) copies[e] = copy_count(counts[e], file, at + "[" + std::to_string(e) + "]");
  };
  if (!layer.is_object() || !layer.contains("expert_load"))
    throw ConfigError(file, key + ".expert_load", "(missing)", "a list of per-expert copy counts");
  read("expert_load", kept);
  if (layer.contains("expert_dropped")) read("expert_dropped", dropped);
  // The counts in all, where the record has them: copies the router was asked for (routed_tokens:
  // tokens x k, second copies that random routing skipped included), those skipped, those dropped.
  auto count = [&](const char* name) {
    return layer.contains(name) ? copy_count(layer[name], file, key + "." + name) : -1.0;
  };
  const double asked_in_all = count("routed_tokens"), dropped_in_all = count("dropped_tokens"),
               skipped = count("skipped_second_copies");
  ExpertRouting r;
  r.routed = kept;
  for (size_t e = 0; e < dropped.size(); ++e) r.routed[e] += dropped[e];
  const double total = std::accumulate(r.routed.begin(), r.routed.end(), 0.0);
  if (total <= 0) throw ConfigError(file, key + ".expert_load", "all zero", "at least one routed copy");
  const double kept_in_all = std::accumulate(kept.begin(), kept.end(), 0.0);
  if (asked_in_all >= 0) {
    const std::string most = "at most the " + format_shortest(asked_in_all) + " copies routed (routed_tokens)";
    if (total > asked_in_all)
      throw ConfigError(file, key + (dropped.empty() ? ".expert_load" : ".expert_dropped"),
                        format_shortest(total) + " copies in all" + (dropped.empty() ? "" : " (kept and dropped)"),
                        most);
    if (kept_in_all + std::max(0.0, dropped_in_all) > asked_in_all)
      throw ConfigError(file, key + ".dropped_tokens", layer["dropped_tokens"].dump(),
                        most + ", less the " + format_shortest(kept_in_all) + " kept (expert_load)");
    if (skipped > asked_in_all)
      throw ConfigError(file, key + ".skipped_second_copies", layer["skipped_second_copies"].dump(), most);
  }
  for (double& v : r.routed) v /= total;
  // The kept shares are of every copy the router was asked for, as moe_layer_load scales them by
  // k x S. Records from before expert_dropped still count the copies dropped in all (dropped_tokens):
  // their kept shares are known, though not whom the dropped copies were sent to.
  if (dropped.empty() && dropped_in_all < 0) return r;
  const double asked = std::max({asked_in_all, total, kept_in_all + std::max(0.0, dropped_in_all)});
  r.kept = kept;
  for (double& v : r.kept) v /= asked;
  return r;
}

std::vector<ExpertRouting> recorded_routings(const nlohmann::json& layers, const ModelConfig& m,
                                             const std::string& file) {
  if (!layers.is_array())
    throw ConfigError(file, "moe_layers", layers.dump(), "a list of {layer, expert_load, ...}, one per MoE block");
  std::vector<int64_t> blocks;
  for (int64_t l = 0; l < m.layers; ++l)
    if (m.is_moe_layer(l)) blocks.push_back(l);
  std::vector<ExpertRouting> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const nlohmann::json& entry = layers[i];
    const std::string at = "moe_layers[" + std::to_string(i) + "]";
    if (i >= blocks.size())
      throw ConfigError(file, at, "(an entry)", "at most " + std::to_string(blocks.size()) + " entries, one per MoE block of " +
                                                    m.id + "'s " + std::to_string(m.layers) + " blocks");
    if (entry.is_object() && entry.contains("layer") &&
        !(entry["layer"].is_number_integer() && entry["layer"].get<int64_t>() == blocks[i]))
      throw ConfigError(file, at + ".layer", entry["layer"].dump(),
                        std::to_string(blocks[i]) + ", MoE block number " + std::to_string(i + 1) + " of " + m.id);
    out.push_back(recorded_routing(entry, m, file, at));
  }
  return out;
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
