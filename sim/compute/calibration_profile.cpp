#include "compute/calibration_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/catalogue.h"
#include "common/errors.h"
#include "common/schema.h"
#include "common/text_table.h"
#include "op_names.h"
#include "step_graph.h"

namespace glam {

double EfficiencyCurve::at(double size, bool hold_time) const {
  if (values.empty()) return 1.0;
  if (size <= sizes.front())
    return hold_time && size > 0 ? values.front() * size / sizes.front() : values.front();
  // Within an interval the log-linear efficiency makes size / efficiency fall, then rise (or only
  // rise), so the slowest smaller size is at a point or at this size: keep the points' running
  // maximum of size / efficiency.
  double slowest = sizes.front() / values.front();
  for (size_t i = 1; i < sizes.size(); ++i) {
    if (size <= sizes[i]) {
      double f = (std::log(size) - std::log(sizes[i - 1])) / (std::log(sizes[i]) - std::log(sizes[i - 1]));
      const double efficiency = values[i - 1] + f * (values[i] - values[i - 1]);
      return std::min(efficiency, size / slowest);
    }
    slowest = std::max(slowest, sizes[i] / values[i]);
  }
  return std::min(values.back(), size / slowest);
}

const CollectiveCurve* CalibrationProfile::collective_curve(CollectiveKind kind, int ranks) const {
  const CollectiveCurve* best = nullptr;
  double best_distance = 0;
  for (const auto& c : collectives) {
    if (c.kind != kind) continue;
    const double d = std::fabs(std::log(static_cast<double>(std::max(ranks, 1)) / c.ranks));
    if (!best || d < best_distance) best = &c, best_distance = d;
  }
  return best;
}

nlohmann::json CalibrationProfile::to_json() const {
  auto curve = [](const EfficiencyCurve& c) { return nlohmann::json{{"sizes", c.sizes}, {"values", c.values}}; };
  return {{"source", source},
          {"device", device},
          {"host", host},
          {"device_name", device_name},
          {"matmul", curve(matmul)},
          {"attention", curve(attention)},
          {"memory", curve(memory)},
          {"op_overhead_s", op_overhead_s},
          {"network_bandwidth", curve(network_bandwidth)},
          {"network_latency_factor", network_latency_factor},
          {"collective_base_latency_s", collective_base_latency_s},
          {"precision", precision},
          {"peak_flops", peak_flops},
          {"memory_bandwidth_Bps", memory_bandwidth_Bps},
          {"threads", threads},
          {"speedup_threads", speedup_threads},
          {"thread_speedup", thread_speedup},
          {"link_bandwidth_Bps", link_bandwidth_Bps},
          {"link_latency_s", link_latency_s},
          {"idle_W", idle_W},
          {"busy_W", busy_W},
          {"collectives", [&] {
             nlohmann::json o = nlohmann::json::array();
             for (const auto& c : collectives)
               o.push_back({{"kind", collective_name(c.kind)}, {"ranks", c.ranks}, {"bus_efficiency", curve(c.bus_efficiency)}});
             return o;
           }()},
          {"ops", [&] {
             nlohmann::json o = nlohmann::json::object();
             for (const auto& [name, c] : ops) o[name] = curve(c);
             return o;
           }()},
          {"ops_alone", [&] {
             nlohmann::json o = nlohmann::json::object();
             for (const auto& [name, c] : ops_alone) o[name] = curve(c);
             return o;
           }()}};
}

// Defaults until a measured profile exists. Matrix-unit efficiencies are set once per chip
// family from published large-run figures, never per model:
//  - TPU v4: PaLM 540B reached 46% model-FLOPs utilisation on 6,144 TPU v4 chips, with its
//    matrix products around 60% of peak at large shapes (Chowdhery et al. 2022);
//  - NVIDIA A100: MosaicML's llm-foundry benchmarks (8 A100-80GB, bf16, FlashAttention, no
//    recompute) report 60-64% MFU for 1B-7B models; products at 0.66 of peak put the catalogue's
//    glam-1.7b and glam-8b on dgx-a100-8, with fused attention as those runs had, at 61.8% and 63.1%;
//  - NVIDIA H100/H200: the same stack reaches a smaller share of the larger peak. The same
//    benchmarks on 8 H100s give 42-46% MFU, 0.70-0.74 of the A100 rows model for model, and
//    Megatron-LM reports up to 47% on H100; products at 0.49 of peak (0.74 of the A100's) put the
//    same plans on dgx-h100-8 at 44.7% and 45.8% (the H200 has the H100's tensor cores).
// Small products lose efficiency (curve over FLOPs); HBM-bound ops reach about 80% of
// the datasheet bandwidth. GPU collectives pay NCCL's base latency per call: its cost model charges
// 6.6 us (ring) and 6.8 us (tree) for the low-latency protocol (tuning.cc); TPU collectives none
// published.
CalibrationProfile default_profile(const std::string& chip_kind) {
  CalibrationProfile p;
  p.source = "default for " + chip_kind;
  p.device = chip_kind;
  const bool tpu = chip_kind.rfind("tpu", 0) == 0;
  const bool hopper = chip_kind == "h100" || chip_kind == "h200";
  const double large = tpu ? 0.578 : hopper ? 0.49 : 0.66;
  p.matmul = {{1e8, 1e10, 1e12}, {0.15, large * 0.75, large}};
  p.attention = {{1e8, 1e10, 1e12}, {0.10, large * 0.6, large * 0.8}};
  p.memory = {{1e5, 1e7, 1e9}, {0.2, 0.7, 0.8}};
  p.op_overhead_s = tpu ? 1e-6 : 4e-6;
  p.network_bandwidth = {{1e3, 1e6, 1e8}, {0.3, 0.8, 0.9}};
  p.network_latency_factor = 1.0;
  p.collective_base_latency_s = tpu || chip_kind == "cpu" ? 0.0 : 6.7e-6;
  return p;
}

namespace {

struct ProfileFile {
  std::string device, precision, host, device_name;
  std::vector<double> matmul_flops, matmul_eff, attention_flops, attention_eff, memory_bytes, memory_eff;
  std::vector<double> network_bytes, network_eff;
  double op_overhead_s = 0, latency_factor = 1, base_latency_s = -1;
  double peak_flops = 0, memory_bandwidth_Bps = 0, link_bandwidth_Bps = 0, link_latency_s = 0;
  int64_t threads = 0, speedup_threads = 0;
  double thread_speedup = 1;
  double idle_W = 0, busy_W = 0;
};

const Schema<ProfileFile>& profile_schema() {
  static const Schema<ProfileFile> s = [] {
    Schema<ProfileFile> sc;
    using P = ProfileFile;
    sc.add("device", &P::device, "", "Chip kind the profile was measured on", required)
        .add("measured.host", &P::host, "", "Host the profile was measured on (empty: not recorded)", std::string{})
        .add("measured.device_name", &P::device_name, "",
             "CPU model or GPU name the profile measured (empty: not recorded)", std::string{})
        .add("measured.precision", &P::precision, "",
             "Arithmetic of the products measured (fp32, tf32, bf16; empty: not recorded)", std::string{})
        .add("compute.matmul_flops", &P::matmul_flops, "FLOP", "Sizes of the matmul efficiency points", required)
        .add("compute.matmul_efficiency", &P::matmul_eff, "", "Fraction of peak at those sizes", required)
        .add("compute.attention_flops", &P::attention_flops, "FLOP", "Sizes of the attention points",
             std::vector<double>{})
        .add("compute.attention_efficiency", &P::attention_eff, "", "Fraction of peak", std::vector<double>{})
        .add("memory.bytes", &P::memory_bytes, "B", "Sizes of the memory-bound points", required)
        .add("memory.efficiency", &P::memory_eff, "", "Fraction of HBM bandwidth", required)
        .add("compute.op_overhead_s", &P::op_overhead_s, "s", "Fixed cost per op", 0.0, non_negative<double>())
        .add("network.bytes", &P::network_bytes, "B", "Message sizes of the bandwidth points", std::vector<double>{})
        .add("network.bandwidth_efficiency", &P::network_eff, "", "Fraction of link bandwidth",
             std::vector<double>{})
        .add("network.latency_factor", &P::latency_factor, "", "Multiplies link latencies", 1.0,
             positive<double>())
        .add("network.collective_base_latency_s", &P::base_latency_s, "s",
             "Fixed cost of every collective call beyond its routes' latencies (absent: the chip kind's)", -1.0,
             Check<double>([](const double& v) -> std::optional<std::string> {
               if (v == -1.0 || (v >= 0 && v <= 1e-3)) return std::nullopt;
               return std::string("seconds from 0 to 1e-3");
             }))
        .add("measured.peak_flops", &P::peak_flops, "FLOP/s", "Measured compute peak (0: the chip kind's datasheet)",
             0.0, zero_or_between(1e6, 1e18))
        .add("measured.memory_bandwidth_Bps", &P::memory_bandwidth_Bps, "B/s",
             "Measured memory bandwidth (0: the datasheet)", 0.0, zero_or_between(1e6, 1e17))
        .add("measured.threads", &P::threads, "", "Threads per rank during the measurement (0: not recorded)",
             int64_t{0}, zero_or_between<int64_t>(1, 4096))
        .add("measured.speedup_threads", &P::speedup_threads, "",
             "Threads of the thread_speedup measurement (0: not measured)", int64_t{0},
             zero_or_between<int64_t>(1, 4096))
        .add("measured.thread_speedup", &P::thread_speedup, "",
             "Product speed with speedup_threads threads in one rank over the profile's threads", 1.0,
             positive<double>())
        .add("network.link_bandwidth_Bps", &P::link_bandwidth_Bps, "B/s",
             "Measured point-to-point bandwidth between ranks (0: the cluster file's)", 0.0, zero_or_between(1e3, 1e15))
        .add("network.link_latency_s", &P::link_latency_s, "s", "Measured point-to-point latency between ranks", 0.0,
             between(0.0, 1.0))
        .add("power.idle_W", &P::idle_W, "W", "Measured chip power when idle (0: the chip kind's)", 0.0,
             between(0.0, 1e5))
        .add("power.busy_W", &P::busy_W, "W", "Measured chip power running products back to back (0: the chip kind's)",
             0.0, between(0.0, 1e5));
    return sc;
  }();
  return s;
}

// `max_value` is 1 for fractions of a peak; per-op curves relate a measured rate to the
// StepGraph's nominal count, which may exceed the peak (an op touching fewer bytes than counted).
EfficiencyCurve curve_from(const std::vector<double>& sizes, const std::vector<double>& values,
                           const std::string& file, const std::string& key, const std::string& sizes_key,
                           double max_value = 1.0) {
  if (sizes.size() != values.size())
    throw ConfigError(file, key, std::to_string(values.size()) + " values",
                      "as many values as sizes (" + std::to_string(sizes.size()) + ")");
  for (size_t i = 0; i < values.size(); ++i) {
    if (!(values[i] > 0 && values[i] <= max_value))
      throw ConfigError(file, key, std::to_string(values[i]),
                        max_value == 1.0 ? "efficiencies in (0, 1]" : "positive efficiencies up to " + std::to_string(max_value));
    if (!(sizes[i] > 0) || (i && sizes[i] <= sizes[i - 1]))
      throw ConfigError(file, sizes_key, std::to_string(sizes[i]), "positive, increasing sizes");
  }
  return {sizes, values};
}

// A list of numbers at `field` of table c (`key` names c in errors).
std::vector<double> number_list(const toml::table& c, const char* field, const std::string& path, const std::string& key) {
  std::vector<double> v;
  const toml::array* arr = c.get_as<toml::array>(field);
  if (!arr) throw ConfigError(path, key + "." + field, "(missing)", "a list of numbers");
  for (const auto& x : *arr) {
    // Integers convert as integers (value<double>() is empty past 2^53).
    const std::optional<double> d = x.is_integer() ? std::optional<double>(static_cast<double>(*x.value_exact<int64_t>()))
                                                   : x.value<double>();
    if (!x.is_number() || !d || !std::isfinite(*d))
      throw ConfigError(path, key + "." + field, toml_value_text(x), "finite numbers");
    v.push_back(*d);
  }
  return v;
}

// [<table_name>.<op>.<phase>] (or [<table_name>.<op>] for every phase): one curve per op, keyed
// "op.phase" or "op". Removed from `table` once read.
std::map<std::string, EfficiencyCurve> read_op_curves(toml::table& table, const std::string& table_name,
                                                      const std::string& path) {
  std::map<std::string, EfficiencyCurve> curves;
  const toml::node* ops = table.get(table_name);
  if (!ops) return curves;
  auto read_curve = [&](const std::string& name, const toml::table& c) {
    const std::string key = table_name + "." + name;
    curves[name] = curve_from(number_list(c, "sizes", path, key), number_list(c, "efficiency", path, key), path,
                              key + ".efficiency", key + ".sizes", 100.0);
  };
  const toml::table* t = ops->as_table();
  if (!t) throw ConfigError(path, table_name, toml_value_text(*ops), "a table of [" + table_name + ".<name>.<phase>] curves");
  for (const auto& [name, node] : *t) {
    const std::string op(name.str());
    // A misspelt op would be read and never used: refuse it.
    if (!op_name::is_compute_op(op))
      throw ConfigError(path, table_name + "." + op, toml_value_text(node),
                        "a curve of one of the step's compute ops, named " + op_name::compute_op_list());
    const toml::table* c = node.as_table();
    if (!c) throw ConfigError(path, table_name + "." + op, toml_value_text(node), "a table with sizes and efficiency");
    if (c->contains("sizes") || c->contains("efficiency")) {
      read_curve(op, *c);
      continue;
    }
    for (const auto& [phase, sub] : *c) {
      const std::string key = op + "." + std::string(phase.str());
      const toml::table* pc = sub.as_table();
      const auto phases = op_name::phases_of(op);
      if (!pc || std::find(phases.begin(), phases.end(), phase.str()) == phases.end()) {
        std::string expected;
        for (std::string_view p : phases) expected += (expected.empty() ? "" : " or ") + std::string(p);
        throw ConfigError(path, table_name + "." + key, toml_value_text(sub),
                          "a phase that " + op + " runs in (" + expected + ") with sizes and efficiency");
      }
      read_curve(key, *pc);
    }
  }
  table.erase(table_name);
  return curves;
}

// A [[network.collective]] table: its curve, and the seconds measured at its sizes (empty if none).
struct MeasuredCollective {
  CollectiveCurve curve;
  std::vector<double> seconds;
};

// [[network.collective]]: one table per measured collective and group size. Removed once read.
std::vector<MeasuredCollective> read_collective_curves(toml::table& table, const std::string& path) {
  std::vector<MeasuredCollective> out;
  toml::table* network = table.get_as<toml::table>("network");
  const toml::node* list = network ? network->get("collective") : nullptr;
  if (!list) return out;
  const toml::array* arr = list->as_array();
  if (!arr || !arr->is_array_of_tables())
    throw ConfigError(path, "network.collective", toml_value_text(*list), "[[network.collective]] tables");
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::table& c = *arr->get(i)->as_table();
    const std::string key = "network.collective[" + std::to_string(i) + "]";
    auto text_of = [&](const char* field) { return c.contains(field) ? toml_value_text(*c.get(field)) : "(missing)"; };
    for (const auto& [name, node] : c)
      if (name != "kind" && name != "ranks" && name != "bytes" && name != "seconds" && name != "bus_efficiency")
        throw ConfigError(path, key + "." + std::string(name.str()), toml_value_text(node),
                          "one of kind, ranks, bytes, seconds and bus_efficiency");
    CollectiveCurve cc;
    const std::string kind = c["kind"].value_or(std::string());
    bool known = false;
    for (CollectiveKind k : {CollectiveKind::kAllToAll, CollectiveKind::kAllReduce, CollectiveKind::kReduceScatter,
                             CollectiveKind::kAllGather})
      if (kind == collective_name(k)) cc.kind = k, known = true;
    if (!known) throw ConfigError(path, key + ".kind", text_of("kind"), "all_to_all, all_reduce, reduce_scatter or all_gather");
    const int64_t ranks = c["ranks"].value_or(int64_t{0});
    if (ranks < 2) throw ConfigError(path, key + ".ranks", text_of("ranks"), "the group size measured, at least 2");
    cc.ranks = static_cast<int>(ranks);
    cc.bus_efficiency = curve_from(number_list(c, "bytes", path, key), number_list(c, "bus_efficiency", path, key), path,
                                   key + ".bus_efficiency", key + ".bytes");
    std::vector<double> seconds = c.contains("seconds") ? number_list(c, "seconds", path, key) : std::vector<double>{};
    if (!seconds.empty() && seconds.size() != cc.bus_efficiency.sizes.size())
      throw ConfigError(path, key + ".seconds", text_of("seconds"),
                        std::to_string(cc.bus_efficiency.sizes.size()) + " times, one per entry of bytes");
    out.push_back({std::move(cc), std::move(seconds)});
  }
  network->erase("collective");
  return out;
}

// The simulator reads a measured collective's bus_efficiency; the seconds beside it are the measurement
// it came from (bus factor x bytes / seconds / link bandwidth, within [1e-6, 1], as glamexec calibrate
// writes it). An edit to one that the other does not follow would be silently ignored or misread:
// refused, naming both.
void check_collective_seconds(const std::vector<MeasuredCollective>& collectives, double link_bandwidth_Bps,
                              const std::string& path) {
  auto four_digits = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return std::string(buf);
  };
  for (size_t i = 0; i < collectives.size(); ++i) {
    const auto& [curve, seconds] = collectives[i];
    const auto& e = curve.bus_efficiency;
    for (size_t k = 0; k < seconds.size(); ++k) {
      const std::string key = "network.collective[" + std::to_string(i) + "]";
      if (!(seconds[k] > 0))
        throw ConfigError(path, key + ".seconds[" + std::to_string(k) + "]", format_shortest(seconds[k]), "a positive time");
      if (link_bandwidth_Bps <= 0) continue;
      const double implied = std::clamp(
          bus_factor(curve.kind, curve.ranks) * e.sizes[k] / seconds[k] / link_bandwidth_Bps, 1e-6, 1.0);
      if (std::fabs(implied - e.values[k]) > 1e-3 * implied)
        throw ConfigError(path, key + ".bus_efficiency[" + std::to_string(k) + "]", format_shortest(e.values[k]),
                          four_digits(implied) + ", what seconds[" + std::to_string(k) + "] = " + format_shortest(seconds[k]) +
                              " s gives for " + format_shortest(e.sizes[k]) + " bytes over " +
                              std::to_string(curve.ranks) + " ranks (its bus factor) at link_bandwidth_Bps " +
                              format_shortest(link_bandwidth_Bps) +
                              " (the simulator reads bus_efficiency: edit both, or delete seconds)");
    }
  }
}

}  // namespace

CalibrationProfile load_profile(const std::string& path) {
  toml::table table = load_toml_file(path);
  // Curves by op and by collective are read apart from the fixed fields of the schema.
  std::map<std::string, EfficiencyCurve> op_curves = read_op_curves(table, "ops", path);
  std::map<std::string, EfficiencyCurve> alone_curves = read_op_curves(table, "ops_alone", path);
  std::vector<MeasuredCollective> collectives = read_collective_curves(table, path);
  ProfileFile f = profile_schema().parse(table, path);
  CalibrationProfile p = default_profile(f.device);
  p.source = path;
  p.from_file = true;
  p.host = f.host, p.device_name = f.device_name;
  p.matmul = curve_from(f.matmul_flops, f.matmul_eff, path, "compute.matmul_efficiency", "compute.matmul_flops");
  p.attention = f.attention_eff.empty() ? p.matmul
                                        : curve_from(f.attention_flops, f.attention_eff, path, "compute.attention_efficiency",
                                                     "compute.attention_flops");
  p.memory = curve_from(f.memory_bytes, f.memory_eff, path, "memory.efficiency", "memory.bytes");
  p.op_overhead_s = f.op_overhead_s;
  if (!f.network_eff.empty())
    p.network_bandwidth = curve_from(f.network_bytes, f.network_eff, path, "network.bandwidth_efficiency",
                                            "network.bytes");
  p.network_latency_factor = f.latency_factor;
  if (f.base_latency_s >= 0) p.collective_base_latency_s = f.base_latency_s;
  if (!f.precision.empty() && f.precision != "fp32" && f.precision != "tf32" && f.precision != "bf16")
    throw ConfigError(path, "measured.precision", "\"" + f.precision + "\"", "\"fp32\", \"tf32\" or \"bf16\"");
  p.precision = f.precision;
  p.peak_flops = f.peak_flops;
  p.memory_bandwidth_Bps = f.memory_bandwidth_Bps;
  p.threads = static_cast<int>(f.threads);
  p.speedup_threads = static_cast<int>(f.speedup_threads);
  p.thread_speedup = f.thread_speedup;
  p.link_bandwidth_Bps = f.link_bandwidth_Bps;
  p.link_latency_s = f.link_latency_s;
  if ((f.idle_W > 0) != (f.busy_W > 0))
    throw ConfigError(path, f.idle_W > 0 ? "power.busy_W" : "power.idle_W", "(missing)",
                      "power.idle_W and power.busy_W together");
  if (f.busy_W < f.idle_W)
    throw ConfigError(path, "power.busy_W", std::to_string(f.busy_W), "at least power.idle_W");
  p.idle_W = f.idle_W;
  p.busy_W = f.busy_W;
  p.ops = std::move(op_curves);
  p.ops_alone = std::move(alone_curves);
  check_collective_seconds(collectives, p.link_bandwidth_Bps, path);
  for (auto& c : collectives) p.collectives.push_back(std::move(c.curve));
  return p;
}

}  // namespace glam
