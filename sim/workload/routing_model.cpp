#include "workload/routing_model.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/errors.h"
#include "common/json_file.h"
#include "common/text_table.h"

namespace glam {

std::string RoutingSpec::describe() const {
  if (kind == "skew") return "skew=" + format_shortest(skew);  // skew=2, skew=0.5, skew=1e+09
  if (kind == "file") return file;
  return kind;
}

RoutingSpec parse_routing_spec(const std::string& arg) {
  RoutingSpec spec;
  if (arg == "uniform") return spec;
  if (arg.rfind("skew=", 0) == 0) {
    try {
      size_t used = 0;
      spec.skew = std::stod(arg.substr(5), &used);
      if (used != arg.size() - 5 || spec.skew < 0 || !std::isfinite(spec.skew)) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw UsageError("--routing " + arg + ": expected skew=X with X a non-negative number (0 is uniform)");
    }
    spec.kind = "skew";
    return spec;
  }
  spec.kind = "file";
  spec.file = arg;
  return spec;
}

namespace {

// Reads {"moe_layers": [{"layer": L, "expert_load": [...]}, ...]} (the executor's run record).
std::vector<std::vector<double>> shares_from_file(const std::string& path, const ModelConfig& m, int moe_blocks) {
  nlohmann::json j = read_json_file(path, "uniform, skew=X or a routing histogram file");
  if (!j.contains("moe_layers") || !j["moe_layers"].is_array())
    throw ConfigError(path, "moe_layers", "(missing)", "a list of {layer, expert_load} per MoE block");
  const auto& layers = j["moe_layers"];
  if (static_cast<int>(layers.size()) < moe_blocks)
    throw ConfigError(path, "moe_layers", std::to_string(layers.size()) + " blocks",
                      "one entry per MoE block of " + m.id + " (" + std::to_string(moe_blocks) + ")");
  std::vector<std::vector<double>> out;
  for (int i = 0; i < moe_blocks; ++i) {
    const auto& entry = layers[static_cast<size_t>(i)];
    std::string key = "moe_layers[" + std::to_string(i) + "].expert_load";
    if (!entry.contains("expert_load") || !entry["expert_load"].is_array())
      throw ConfigError(path, key, "(missing)", "a list of per-expert token counts");
    std::vector<double> load;
    for (const auto& v : entry["expert_load"]) {
      if (!v.is_number() || v.get<double>() < 0) throw ConfigError(path, key, v.dump(), "non-negative counts");
      load.push_back(v.get<double>());
    }
    if (static_cast<int64_t>(load.size()) != m.experts)
      throw ConfigError(path, key, std::to_string(load.size()) + " experts",
                        std::to_string(m.experts) + " experts as in " + m.id);
    double total = std::accumulate(load.begin(), load.end(), 0.0);
    if (total <= 0) throw ConfigError(path, key, "all zero", "at least one routed token");
    for (double& v : load) v /= total;
    out.push_back(std::move(load));
  }
  return out;
}

}  // namespace

std::vector<std::vector<double>> expert_shares(const RoutingSpec& spec, const ModelConfig& m, int moe_blocks) {
  if (!m.is_moe() || moe_blocks == 0) return {};
  if (spec.kind == "file") return shares_from_file(spec.file, m, moe_blocks);
  std::vector<double> share(static_cast<size_t>(m.experts));
  for (size_t e = 0; e < share.size(); ++e) share[e] = std::pow(static_cast<double>(e + 1), -spec.skew);
  double total = std::accumulate(share.begin(), share.end(), 0.0);
  for (double& v : share) v /= total;
  return std::vector<std::vector<double>>(static_cast<size_t>(moe_blocks), share);
}

}  // namespace glam
