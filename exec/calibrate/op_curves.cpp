#include "calibrate/op_curves.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "common/errors.h"
#include "common/record_fields.h"
#include "moe_load.h"

namespace glam::exec {

namespace {

int64_t int_at(const nlohmann::json& j, const char* a, const char* b, const std::string& where) {
  if (!j.contains(a) || !j[a].contains(b) || !j[a][b].is_number())
    throw ConfigError(where, std::string(a) + "." + b, "(missing)", "a number (an executor run record)");
  return j[a][b].get<int64_t>();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

ModelConfig model_of_record(const nlohmann::json& record, const std::string& where) {
  if (!record.contains("model") || !record["model"].is_object())
    throw ConfigError(where, "model", "(missing)", "the model the run used (an executor run record)");
  const auto& model = record["model"];
  std::string file = model.value("file", "");
  if (!file.empty()) {
    std::filesystem::path p(file);
    if (!std::filesystem::exists(p) && p.is_relative()) p = std::filesystem::path(where).parent_path() / p;
    if (std::filesystem::exists(p)) return load_model(p.string());
  }
  return load_model(model.value("id", file));
}

std::vector<MoeLayerLoad> record_moe_loads(const ModelConfig& m, const StepShape& s, const nlohmann::json& record,
                                           const std::string& where) {
  std::vector<MoeLayerLoad> out;
  if (!m.is_moe() || !record.contains("moe_layers") || !record["moe_layers"].is_array()) return out;
  const auto& layers = record["moe_layers"];
  // The record's own run: its kept copies are those of the step being costed, unless the model file
  // has changed its routing groups since.
  const bool kept_carries_over = record.contains("model_config") && same_routing_groups(record["model_config"], m);
  for (ExpertRouting& r : recorded_routings(layers, m, where)) {
    if (!kept_carries_over) r.kept.clear();
    out.push_back(moe_layer_load(m, s, r.routed, r.kept));
  }
  return out;
}

StepGraph record_step_graph(const nlohmann::json& record, const std::string& where) {
  ModelConfig m = model_of_record(record, where);
  // glamexec stores activations in bfloat16 with --precision bf16, in float32 otherwise
  m.activation_precision =
      record.value("device", nlohmann::json::object()).value("activation_precision", std::string("float32"));
  StepShape s;
  const int64_t dp = int_at(record, "plan", "dp", where);
  s.dp = dp;
  s.ep = int_at(record, "plan", "ep", where);
  // Micro-batches, pipeline stages and tensor slices as the record ran them (older records: one of
  // each), so that each measured op meets the StepGraph op of its own shape ("mb1." and stage ids
  // included, a slice's share of the products).
  const auto& plan = record.value("plan", nlohmann::json::object());
  s.tp = plan.value("tp", int64_t{1});
  s.microbatches = plan.value("microbatches", int64_t{1});
  s.pp = plan.value("pp", int64_t{1});
  s.virtual_stages = plan.value("virtual_stages", int64_t{1});
  if (s.microbatches < 1 || s.pp < 1 || s.virtual_stages < 1 || s.tp < 1)
    throw ConfigError(where, "plan", plan.dump(), "microbatches, pp, virtual_stages and tp of at least 1");
  s.overlap_grad_reduction = false;  // the executor reduces all gradients at once, as glamsim validate models it
  s.narrow_weight_copy = true;       // and writes the bf16 copy of the weights (when it has one)
  if (!record.contains("global_batch_tokens") || !record["global_batch_tokens"].is_number())
    throw ConfigError(where, "global_batch_tokens", "(missing)", "a number (an executor run record)");
  s.tokens_per_rank = record["global_batch_tokens"].get<int64_t>() / dp;
  s.layers_run = record["model"].value("layers_run", int64_t{0});
  return build_step_graph(m, s, record_moe_loads(m, s, record, where));
}

void add_op_points(const nlohmann::json& record, const std::string& where, double peak_flops, double bandwidth_Bps,
                   std::map<std::string, std::vector<CurvePoint>>& points) {
  StepGraph g = record_step_graph(record, where);
  std::map<std::string, const StepOp*> by_id;
  for (const auto& op : g.ops) by_id.emplace(op.id, &op);
  if (!record.contains("ops") || !record["ops"].is_array())
    throw ConfigError(where, "ops", "(missing)", "per-op timings (an executor run record)");
  const auto& ops = record["ops"];
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& m = ops[i];
    auto it = by_id.find(m.value("id", ""));
    const double t = record_op_time(m, "median_s", true, where, "ops[" + std::to_string(i) + "]");
    if (it == by_id.end() || t == 0) continue;
    const StepOp& op = *it->second;
    if (op.kind == OpKind::kCollective) continue;
    if (op.kind == OpKind::kElementwise) {
      if (op.bytes > 0) points[op_curve_key(op)].push_back({op.bytes, op.bytes / (t * bandwidth_Bps)});
    } else if (op.flops > 0) {
      points[op_curve_key(op)].push_back({op.flops, op.flops / (t * peak_flops)});
    }
  }
}

std::vector<CurvePoint> merge_curve(std::vector<CurvePoint> points, double lo, double hi) {
  std::sort(points.begin(), points.end(), [](const CurvePoint& a, const CurvePoint& b) { return a.size < b.size; });
  std::vector<CurvePoint> out;
  for (size_t i = 0; i < points.size();) {
    size_t j = i;
    std::vector<double> effs;
    while (j < points.size() && points[j].size <= points[i].size * 1.001) effs.push_back(points[j++].efficiency);
    out.push_back({points[i].size, std::clamp(median(effs), lo, hi)});
    i = j;
  }
  return out;
}

}  // namespace glam::exec
