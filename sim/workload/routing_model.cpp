#include "workload/routing_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
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
    // strtod rather than stod: a tiny skew (1e-320) underflows to a denormal, which stod refuses.
    const std::string value = arg.substr(5);
    char* end = nullptr;
    // Decimal only (strtod also reads 0x10 as 16), without leading space.
    const bool decimal = !value.empty() && !std::isspace(static_cast<unsigned char>(value[0])) &&
                         value.find_first_of("xX") == std::string::npos;
    spec.skew = decimal ? std::strtod(value.c_str(), &end) : -1;
    if (!end || *end != '\0' || !(spec.skew >= 0) || !std::isfinite(spec.skew))
      throw UsageError("--routing " + arg + ": expected skew=X with X a non-negative number (0 is uniform)");
    spec.kind = "skew";
    return spec;
  }
  spec.kind = "file";
  spec.file = arg;
  return spec;
}

namespace {

// Reads {"moe_layers": [{"layer": L, "expert_load": [...], "expert_dropped": [...]}, ...]} (the
// executor's run record): the copies routed to each expert, kept or dropped. The kept copies carry
// over only to a model routing in the same groups under the same capacity (the record's model_config
// says which it ran); to another they are expected from the routed shares.
std::vector<ExpertRouting> routing_from_file(const std::string& path, const ModelConfig& m, int moe_blocks) {
  nlohmann::json j = read_json_file(path, "uniform, skew=X or a routing histogram file");
  if (!j.contains("moe_layers") || !j["moe_layers"].is_array())
    throw ConfigError(path, "moe_layers", "(missing)", "a list of {layer, expert_load} per MoE block");
  const auto& layers = j["moe_layers"];
  if (static_cast<int>(layers.size()) < moe_blocks)
    throw ConfigError(path, "moe_layers", std::to_string(layers.size()) + " blocks",
                      "one entry per MoE block of " + m.id + " (" + std::to_string(moe_blocks) + ")");
  const bool kept_carries_over = j.contains("model_config") && same_routing_groups(j["model_config"], m);
  std::vector<ExpertRouting> out = recorded_routings(layers, m, path);
  out.resize(static_cast<size_t>(moe_blocks));  // the blocks simulated (--layers K: the first K)
  if (!kept_carries_over)
    for (auto& block : out) block.kept.clear();
  return out;
}

}  // namespace

std::vector<ExpertRouting> expert_routing(const RoutingSpec& spec, const ModelConfig& m, int moe_blocks) {
  if (!m.is_moe() || moe_blocks == 0) return {};
  if (spec.kind == "file") return routing_from_file(spec.file, m, moe_blocks);
  ExpertRouting r;
  r.routed.resize(static_cast<size_t>(m.experts));
  for (size_t e = 0; e < r.routed.size(); ++e) r.routed[e] = std::pow(static_cast<double>(e + 1), -spec.skew);
  double total = std::accumulate(r.routed.begin(), r.routed.end(), 0.0);
  for (double& v : r.routed) v /= total;
  return std::vector<ExpertRouting>(static_cast<size_t>(moe_blocks), r);
}

}  // namespace glam
