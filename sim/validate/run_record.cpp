#include "validate/run_record.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/json_file.h"
#include "common/record_fields.h"
#include "moe_load.h"

namespace glam {

namespace {

// The node at a dotted key ("device.energy.seconds"), or nullptr when a part is missing.
const nlohmann::json* find(const nlohmann::json& j, const std::string& key) {
  const nlohmann::json* node = &j;
  for (size_t start = 0; start <= key.size();) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!node->is_object() || !node->contains(part)) return nullptr;
    node = &(*node)[part];
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return node;
}

const nlohmann::json& need(const nlohmann::json& j, const std::string& path, const std::string& key,
                           const std::string& expected) {
  const nlohmann::json* node = find(j, key);
  if (!node) throw ConfigError(path, key, "(missing)", expected);
  return *node;
}

// Optional fields of a given JSON type: the fallback when absent, a ConfigError naming the key when
// present with another type (nlohmann's own error names neither file nor key).
std::string text_or(const nlohmann::json& j, const std::string& path, const std::string& key,
                    const std::string& fallback) {
  const nlohmann::json* v = find(j, key);
  if (!v) return fallback;
  if (!v->is_string()) throw ConfigError(path, key, v->dump(), "a string");
  return v->get<std::string>();
}
int64_t count_or(const nlohmann::json& j, const std::string& path, const std::string& key, int64_t fallback) {
  const nlohmann::json* v = find(j, key);
  if (!v) return fallback;
  if (!v->is_number_integer() || v->get<int64_t>() < 0) throw ConfigError(path, key, v->dump(), "a non-negative integer");
  return v->get<int64_t>();
}

double number(const nlohmann::json& j, const std::string& path, const std::string& key) {
  const auto& v = need(j, path, key, "a number");
  if (!v.is_number()) throw ConfigError(path, key, v.dump(), "a number");
  return v.get<double>();
}

// A whole number in [lo, hi]: a fraction or an out-of-range value is named, not cast.
int64_t whole(const nlohmann::json& j, const std::string& path, const std::string& key, int64_t lo, int64_t hi) {
  const auto& v = need(j, path, key, "an integer");
  if (!v.is_number_integer() || v.get<int64_t>() < lo || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) ||
      v.get<int64_t>() > hi)
    throw ConfigError(path, key, v.dump(), "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return v.get<int64_t>();
}

// A measured time: glamexec's timers read microseconds to hours.
double seconds(const nlohmann::json& j, const std::string& path, const std::string& key) {
  const auto& v = need(j, path, key, "a time in seconds");
  if (!v.is_number() || !(v.get<double>() >= 1e-9 && v.get<double>() <= 1e6))
    throw ConfigError(path, key, v.dump(), "a time from 1e-9 to 1e6 s");
  return v.get<double>();
}

// How a model differs from the configuration the record ran with ("" when it is that configuration,
// or the record has none): the first keys that differ, with both values. The model is cut to the
// record's first K layers, as glamexec ran it.
std::string differences_from_run(const nlohmann::json& record, const ModelConfig& m, int64_t layers_run) {
  if (!record.contains("model_config")) return "";
  const ModelConfig ran = layers_run > 0 && layers_run < m.layers ? first_layers(m, layers_run) : m;
  std::string out;
  const auto diffs = computed_differences(record["model_config"], model_to_json(ran));
  for (size_t i = 0; i < diffs.size() && i < 3; ++i)
    out += (i ? ", " : "") + diffs[i].key + " " + (diffs[i].now.empty() ? "(absent)" : diffs[i].now) + " (record: " +
           (diffs[i].saved.empty() ? "absent" : diffs[i].saved) + ")";
  if (diffs.size() > 3) out += ", ...";
  return out;
}

// The model a record ran: the first of the file as written (relative to the folder glamexec ran in),
// the file beside the record, and the catalogue's model of its id that is still the configuration
// the record holds (model_config). A file edited since the run is refused, naming what changed: a
// validation of another model would look like a bad prediction.
ModelConfig model_as_run(const nlohmann::json& j, const std::string& path) {
  if (j.contains("model_config") && !j["model_config"].is_object())
    throw ConfigError(path, "model_config", j["model_config"].dump(), "an object: the model's configuration as run");
  const std::string model_file = text_or(j, path, "model.file", "");
  const std::string model_id = text_or(j, path, "model.id", "");
  // The run's first layers (0: all) are what model_config describes.
  const int64_t layers_run = count_or(j, path, "model.layers_run", 0);
  const std::string of_layers =
      layers_run > 0 ? "'s first " + std::to_string(layers_run) + " layers now have " : " now has ";
  std::vector<std::string> candidates;
  if (!model_file.empty()) {
    const std::filesystem::path p(model_file);
    if (std::filesystem::exists(p)) candidates.push_back(p.string());
    const std::filesystem::path beside = std::filesystem::path(path).parent_path() / p;
    if (p.is_relative() && std::filesystem::exists(beside)) candidates.push_back(beside.string());
  }
  std::string mismatch;
  for (const std::string& file : candidates) {
    ModelConfig m = load_model(file);
    const std::string diff = differences_from_run(j, m, layers_run);
    if (diff.empty()) return m;
    if (mismatch.empty()) mismatch = file + of_layers + diff;
  }
  if (!model_id.empty() && (model_file.empty() || j.contains("model_config"))) {
    try {
      ModelConfig m = load_model(model_id);
      const std::string diff = differences_from_run(j, m, layers_run);
      if (diff.empty()) return m;
      if (mismatch.empty()) mismatch = "the catalogue's " + model_id + of_layers + diff;
    } catch (const std::exception&) {  // not a catalogue id
    }
  }
  if (!mismatch.empty())
    throw ConfigError(path, "model_config", "(the run's configuration)",
                      "the model the run used, but " + mismatch + "; restore the file the run used");
  if (!model_file.empty())
    throw ConfigError(path, "model.file", "\"" + model_file + "\"",
                      "the model file the run used, but it no longer exists (here or beside the record), and the "
                      "catalogue has no model '" + model_id + "' with the record's model_config");
  return load_model(model_id);  // names the missing id
}

RunRecord parse_run_record(const nlohmann::json& j, const std::string& path) {
  const auto& schema = need(j, path, "schema", std::string("\"") + kRunRecordSchema + "\"");
  if (schema != kRunRecordSchema)
    throw ConfigError(path, "schema", schema.dump(),
                      std::string("\"") + kRunRecordSchema + "\" (a record from another version of glamexec)");
  RunRecord r;
  r.file = path;
  const auto& model = need(j, path, "model", "the model the run used");
  if (!model.is_object()) throw ConfigError(path, "model", model.dump(), "an object: {id, file, layers_run}");
  r.model = model_as_run(j, path);
  // 0 (or absent): every layer, as glamexec writes it for a whole model.
  r.layers_run = count_or(j, path, "model.layers_run", 0);
  if (r.layers_run > r.model.layers)
    throw ConfigError(path, "model.layers_run", std::to_string(r.layers_run),
                      "at most the " + std::to_string(r.model.layers) + " layers of " + r.model.id);
  constexpr int64_t kMaxRanks = 1 << 20;
  r.ranks = whole(j, path, "plan.ranks", 1, kMaxRanks);
  r.dp = whole(j, path, "plan.dp", 1, kMaxRanks);
  r.ep = whole(j, path, "plan.ep", 1, kMaxRanks);
  r.tp = whole(j, path, "plan.tp", 1, kMaxRanks);
  r.microbatches = find(j, "plan.microbatches") ? whole(j, path, "plan.microbatches", 1, int64_t{1} << 20) : 1;
  // Records before pipeline stages: one stage.
  r.pp = find(j, "plan.pp") ? whole(j, path, "plan.pp", 1, kMaxRanks) : 1;
  r.virtual_stages = find(j, "plan.virtual_stages") ? whole(j, path, "plan.virtual_stages", 1, kMaxRanks) : 1;
  if (r.dp * r.tp * r.pp != r.ranks)
    throw ConfigError(path, "plan.ranks", std::to_string(r.ranks),
                      "dp x tp x pp = " + std::to_string(r.dp) + " x " + std::to_string(r.tp) + " x " + std::to_string(r.pp) +
                          " ranks");
  const auto& kind = need(j, path, "device.kind", "\"cpu\" or \"cuda\"");
  if (kind != "cpu" && kind != "cuda") throw ConfigError(path, "device.kind", kind.dump(), "\"cpu\" or \"cuda\"");
  r.device_kind = kind.get<std::string>();
  r.device_name = text_or(j, path, "device.name", "");
  r.host = text_or(j, path, "device.host", "");
  // Bounded before the narrowing to int (2^32 + 1 cores would read as 1).
  const int64_t threads = count_or(j, path, "device.threads", 0);
  const int64_t host_cores = count_or(j, path, "device.host_cores", 0);
  if (threads > 4096 || (threads == 0 && find(j, "device.threads")))
    throw ConfigError(path, "device.threads", std::to_string(threads),
                      "1 to 4096 threads per rank (or no device.threads: not recorded)");
  if (host_cores > 65536) throw ConfigError(path, "device.host_cores", std::to_string(host_cores), "at most 65536");
  r.threads = static_cast<int>(threads);
  r.host_cores = static_cast<int>(host_cores);
  r.gemm_precision = record_gemm_precision(j, path);
  r.activation_precision = text_or(j, path, "device.activation_precision", "float32");
  if (r.activation_precision != "float32" && r.activation_precision != "bfloat16")
    throw ConfigError(path, "device.activation_precision", "\"" + r.activation_precision + "\"",
                      "\"float32\" or \"bfloat16\"");
  if (find(j, "device.energy")) {
    r.measured_power_W = number(j, path, "device.energy.mean_power_W");
    r.energy_window_s = number(j, path, "device.energy.seconds");
    r.energy_steps = whole(j, path, "device.energy.timed_steps", 1, int64_t{1} << 40);
    if (r.measured_power_W <= 0)
      throw ConfigError(path, "device.energy.mean_power_W", std::to_string(r.measured_power_W), "a power > 0 (W)");
    if (r.energy_window_s <= 0 || r.energy_steps <= 0)
      throw ConfigError(path, "device.energy.seconds", std::to_string(r.energy_window_s),
                        "a window > 0 s holding timed_steps > 0 steps");
  }
  r.free_bytes_before = count_or(j, path, "device.memory.free_bytes_before", 0);
  r.device_total_bytes = count_or(j, path, "device.memory.total_bytes", 0);
  if (r.device_total_bytes > 0 && r.free_bytes_before > r.device_total_bytes)
    throw ConfigError(path, "device.memory.free_bytes_before", std::to_string(r.free_bytes_before),
                      "at most device.memory.total_bytes (" + std::to_string(r.device_total_bytes) + ")");
  r.global_batch_tokens = whole(j, path, "global_batch_tokens", 1, int64_t{1} << 40);
  // Each data-parallel rank's batch (all its micro-batches) and the sequence length, where the record
  // has them (older ones do not): what the run's global batch is made of.
  if (find(j, "batch_tokens")) {
    const int64_t per_rank = whole(j, path, "batch_tokens", 1, int64_t{1} << 40);
    if (per_rank * r.dp != r.global_batch_tokens)
      throw ConfigError(path, "batch_tokens", std::to_string(per_rank),
                        "global_batch_tokens / plan.dp = " + std::to_string(r.global_batch_tokens) + " / " +
                            std::to_string(r.dp) + " (the tokens of each data-parallel rank)");
  }
  if (find(j, "seq_len") && whole(j, path, "seq_len", 1, int64_t{1} << 40) != r.model.seq_len)
    throw ConfigError(path, "seq_len", j["seq_len"].dump(),
                      std::to_string(r.model.seq_len) + ", the sequence length of " + r.model.id);
  r.step_median_s = seconds(j, path, "step_time_s.median");
  r.step_p10_s = seconds(j, path, "step_time_s.p10");
  r.step_p90_s = seconds(j, path, "step_time_s.p90");
  const auto& ops = need(j, path, "ops", "per-op timings");
  if (!(r.step_median_s > 0))
    throw ConfigError(path, "step_time_s.median", std::to_string(r.step_median_s), "a step time > 0 s");
  if (!ops.is_array() || ops.empty())
    throw ConfigError(path, "ops", ops.is_array() ? "[]" : std::string("a JSON ") + ops.type_name(),
                      "an array of per-op timings, at least one");
  std::set<std::string> ids;
  for (size_t i = 0; i < ops.size(); ++i) {
    const auto& op = ops[i];
    const std::string at = "ops[" + std::to_string(i) + "]";
    if (!op.is_object() || !op.contains("id") || !op["id"].is_string())
      throw ConfigError(path, at, op.dump(), "{\"id\": string, \"median_s\": number, ...}");
    r.ops.push_back({op["id"].get<std::string>(), record_op_time(op, "median_s", true, path, at),
                     record_op_time(op, "p10_s", false, path, at), record_op_time(op, "p90_s", false, path, at)});
    if (!ids.insert(r.ops.back().id).second)
      throw ConfigError(path, at + ".id", op["id"].dump(), "an op id not timed before in the record (each op once)");
  }
  r.has_moe_loads = j.contains("moe_layers") && j["moe_layers"].is_array() && !j["moe_layers"].empty();
  // The routing histograms: one per MoE block the run held, in block order, none counting more copies
  // than were routed. Anything else is a record edited by hand or from another model, and would be
  // simulated as if it were the run's routing.
  if (r.has_moe_loads) recorded_routings(j["moe_layers"], r.model_run(), path);
  return r;
}

}  // namespace

RunRecord load_run_record(const std::string& path) {
  const nlohmann::json j = read_json_file(path, "an executor run record");
  if (!j.is_object())
    throw ConfigError(path, "(top level)", std::string("a JSON ") + j.type_name(), "an object (an executor run record)");
  // The checks above name the key; a value of the wrong type anywhere else still names the file.
  try {
    return parse_run_record(j, path);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path, "(record)", e.what(), "a run record as glamexec train --record writes it");
  }
}

}  // namespace glam
