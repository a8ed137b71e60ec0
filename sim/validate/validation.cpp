#include "validate/validation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "chip_kinds.h"
#include "common/catalogue.h"
#include "common/errors.h"
#include "common/text_table.h"
#include "compute/compute_model.h"
#include "energy/energy_model.h"
#include "validate/child_process.h"

namespace glam {

namespace {

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// More ranks x threads than the host has cores (the record's device.host_cores): how many ranks
// take turns on each core.
double ranks_per_core(const RunRecord& r) {
  if (r.device_kind != "cpu" || r.host_cores <= 0 || r.threads <= 0) return 1.0;
  return std::max(1.0, static_cast<double>(r.ranks * r.threads) / r.host_cores);
}

// Whether a CPU record ran as one rank alone with the threads the profile's [ops_alone] curves
// were measured with: those curves then describe it, against the unscaled one-rank rates.
bool runs_alone(const RunRecord& r, const CalibrationProfile& profile) {
  return r.device_kind == "cpu" && r.ranks == 1 && !profile.ops_alone.empty() && profile.speedup_threads > 0 &&
         r.threads == profile.speedup_threads;
}

// The catalogue's one-node GPU cluster (dgx-*-8) of a chip kind, whose NVLink a record of several
// GPUs ran over when the profile did not measure it.
Cluster dgx_node_of(const std::string& chip_kind, const std::string& record_file) {
  for (const std::string& id : catalogue_ids("topologies"))
    if (id.rfind("dgx-", 0) == 0 && id.size() > 2 && id.substr(id.size() - 2) == "-8")
      if (Cluster node = load_cluster(id); node.chip().kind == chip_kind) return node;
  throw UsageError(record_file + " ran on " + chip_kind +
                   " GPUs, which no 8-GPU node of the cluster catalogue has: calibrate the links with glamexec "
                   "calibrate under mpirun -np 2 or more and give the profile with --calibration");
}

// The catalogue's chip kind a record ran on ("cpu", "h200", ...), from its device's name.
std::string chip_kind_of(const RunRecord& r) {
  if (r.device_kind == "cpu") return "cpu";
  const std::string kind = gpu_chip_kind(r.device_name);
  if (kind.empty())
    throw ConfigError(r.file, "device.name", "\"" + r.device_name + "\"",
                      "a GPU the chip catalogue has (topologies/chips: A100 80GB, H100 or H200, SXM)");
  return kind;
}

// The cluster a record ran on, as a cluster file: `ranks` devices of `chip_kind` on one node, with
// the profile's measured figures where it has them.
Cluster cluster_for(const RunRecord& r, const std::string& chip_kind, const CalibrationProfile& profile) {
  std::ostringstream t;
  const bool cpu = chip_kind == "cpu";
  t << "id = \"host-" << chip_kind << "-" << r.ranks << "\"\n";
  t << "description = \"the executor's host for " << r.file << "\"\n";
  t << "[chip]\nkind = \"" << chip_kind << "\"\n";
  // Products use the rank's BLAS threads: between the profile's threads and speedup_threads, the
  // measured speedup is interpolated; elsewhere rates scale with the thread count. The CPU's
  // memory-bound kernels run on one thread whatever the count, so bandwidth does not scale. A GPU
  // record's host threads do not run its products (glamexec records the host's cores there).
  double threads =
      cpu && profile.threads > 0 && r.threads > 0 ? static_cast<double>(r.threads) / profile.threads : 1.0;
  if (cpu && profile.threads > 0 && profile.speedup_threads > profile.threads && r.threads > profile.threads &&
      r.threads <= profile.speedup_threads)
    threads = 1 + (profile.thread_speedup - 1) * (r.threads - profile.threads) /
                      static_cast<double>(profile.speedup_threads - profile.threads);
  const bool alone = runs_alone(r, profile);
  const double scale = alone ? 1.0 : threads;
  char buf[128];
  if (profile.peak_flops > 0) {
    std::snprintf(buf, sizeof buf, "peak_flops_bf16 = %.6e\npeak_flops_fp32 = %.6e\n", profile.peak_flops * scale,
                  profile.peak_flops * scale);
    t << buf;
  }
  if (profile.memory_bandwidth_Bps > 0) {
    std::snprintf(buf, sizeof buf, "hbm_bandwidth_Bps = %.6e\n", profile.memory_bandwidth_Bps);
    t << buf;
  }
  t << "[topology]\nkind = \"single-node\"\nchips = " << r.ranks << "\n";
  if (cpu && r.ranks > 1 && profile.link_bandwidth_Bps <= 0)
    throw UsageError(r.file + " ran on " + std::to_string(r.ranks) + " ranks, but the calibration profile (" +
                     profile.source + ") has no figures for the links between ranks: its [network] section is " +
                     "measured when glamexec calibrate runs under mpirun -np 2 or more");
  double link_Bps = profile.link_bandwidth_Bps, link_latency_s = profile.link_latency_s;
  if (!cpu && r.ranks > 1 && link_Bps <= 0) {
    // No measured links: the NVLink of the catalogue's 8-GPU node of this chip.
    for (const Link& l : dgx_node_of(chip_kind, r.file).links())
      if (l.kind == LinkKind::kNvlink) link_Bps = l.bandwidth_Bps, link_latency_s = l.latency_s;
  }
  if (r.ranks > 1 && link_Bps > 0) {
    std::snprintf(buf, sizeof buf, "[links.nvlink]\nbandwidth_Bps = %.6e\nlatency_s = %.6e\n", link_Bps,
                  std::max(link_latency_s, 1e-9));
    t << buf;
  }
  return parse_cluster(t.str(), r.file + " (host cluster)");
}

}  // namespace

SimulationInput simulation_for(const RunRecord& r, const std::optional<CalibrationProfile>& given, Fidelity fidelity) {
  const std::string chip_kind = chip_kind_of(r);
  if (given && given->device != chip_kind)
    throw UsageError("calibration profile " + given->source + " was measured on a " + given->device +
                     " device, but run record " + r.file + " ran on " + chip_kind);
  // Products measured in another arithmetic run at another rate (bf16 on a CPU: +38% on the same
  // host); profiles from before the key have no precision and are taken as they are.
  if (given && !given->precision.empty() && given->precision != r.gemm_precision)
    throw UsageError("calibration profile " + given->source + " was measured with " + given->precision +
                     " products, but run record " + r.file + " ran with " + r.gemm_precision +
                     " (device.gemm_precision): calibrate with --precision " + r.gemm_precision);
  if (!given && r.device_kind == "cpu")
    throw UsageError("run record " + r.file +
                     " ran on a CPU: give the host's calibration profile (glamexec calibrate --device cpu) "
                     "with --calibration");
  CalibrationProfile profile = given ? *given : default_profile(chip_kind);
  if (runs_alone(r, profile)) profile.ops = profile.ops_alone;
  ModelConfig model = r.model;
  // Activations as the executor stored them (bfloat16 with --precision bf16, float32 otherwise); its
  // products run in its --precision.
  model.activation_precision = r.activation_precision;
  ParallelPlan plan;
  plan.dp = r.dp, plan.ep = r.ep, plan.tp = r.tp, plan.batch_tokens = r.global_batch_tokens;
  plan.microbatches = r.microbatches;
  plan.pp = r.pp, plan.virtual_stages = r.virtual_stages;
  plan.overlap_grad_reduction = false;  // glamexec reduces all gradients at once after the backward pass
  plan.narrow_weight_copy = true;       // and writes the bf16 copy of the weights (when it has one)
  plan.attention = "materialised";      // its attention: products and softmax over the [S, S] scores
  RoutingSpec routing;
  if (r.has_moe_loads) routing.kind = "file", routing.file = r.file;
  Cluster cluster = cluster_for(r, chip_kind, profile);
  // NCCL's all-to-all channels on the host's GPUs, in the memory the record's plan holds.
  plan.all_to_all_peer_bytes = cluster.chip().all_to_all_peer_bytes;
  plan.chips_per_node = cluster.chips_per_node();
  SimulationInput in{model, cluster, plan, routing, fidelity, profile, r.layers_run};
  in.product_precision = r.gemm_precision;
  in.ranks_per_core = ranks_per_core(r);
  // Linux's default scheduler slice: 0.75 ms x (1 + log2 of the CPUs, at most 8), EEVDF's base_slice.
  if (r.host_cores > 0) in.scheduler_slice_s = 0.75e-3 * (1 + std::floor(std::log2(std::min(r.host_cores, 8))));
  try {
    // The plan's stages cut the blocks the record ran (--layers K), as the executor cut them.
    validate_plan(plan, in.model_held(), cluster);
  } catch (const UsageError& e) {
    throw ConfigError(r.file, "plan",
                      "dp " + std::to_string(r.dp) + ", ep " + std::to_string(r.ep) + ", pp " + std::to_string(r.pp),
                      std::string("a plan the simulator can run: ") + e.what());
  }
  return in;
}

namespace {

// What the simulation of one record gives the comparison: its step, the energy model's chip power
// over the record's energy window, and each op id's simulated seconds, stage, kind and axis.
struct SimulatedRecord {
  double step_s = 0, chip_power_W = 0;
  std::map<std::string, OpComparison> ops;
  int64_t ops_beyond_measured = 0;  // RecordValidation::ops_beyond_measured
};

// A collective's (measured, simulated) seconds per step as the relative error of the simulation;
// nullopt where nothing was measured.
std::optional<double> collective_error(const std::pair<double, double>& measured_simulated) {
  const auto [measured, simulated] = measured_simulated;
  if (measured <= 0) return std::nullopt;
  return (simulated - measured) / measured;
}

// RecordValidation::machine_note: how the machine the profile measured differs from the record's,
// or that a profile file names none; "" where they agree, the record names none, or the chip kind's
// defaults stand in for a profile.
std::string machine_note(const RunRecord& record, const CalibrationProfile& profile) {
  std::string differences;
  auto compare = [&](const char* what, const std::string& ran, const std::string& measured) {
    if (ran.empty() || measured.empty() || ran == measured) return;
    differences += std::string(differences.empty() ? "" : ", ") + what + " '" + ran + "' against the profile's '" + measured + "'";
  };
  compare("host", record.host, profile.host);
  compare("device", record.device_name, profile.device_name);
  if (!differences.empty())
    return "the calibration profile measured another machine than this record's (" + differences +
           "): its times are of that machine";
  if (profile.from_file && profile.host.empty() && profile.device_name.empty() && !record.device_name.empty())
    return "the calibration profile names no machine ([measured] host and device_name), so nothing says its times "
           "are of this record's '" + record.device_name + "'";
  return "";
}

// How far from the sizes a profile measured an op at its curve is taken as a guess.
constexpr double kMeasuredSizeReach = 2.0;

SimulatedRecord simulate_record(const RunRecord& record, const SimulationInput& in) {
  const StepResult sim = simulate_step(in);
  SimulatedRecord out;
  out.step_s = sim.step_time_s;
  if (record.measured_power_W > 0) {
    const StepEnergy e = step_energy(in, sim, 1.0);
    const double chips = in.cluster.num_chips();
    const double idle_W = e.chip_idle_J / sim.step_time_s / chips, above_W = e.chip_compute_J / sim.step_time_s / chips;
    const double busy_share =
        std::min(1.0, static_cast<double>(record.energy_steps) * record.step_median_s / record.energy_window_s);
    out.chip_power_W = idle_W + above_W * busy_share;
  }
  const ComputeModel compute(in.cluster.chip(), in.profile, products_precision(in));
  std::set<std::string> beyond;
  for (size_t i = 0; i < sim.graph.ops.size(); ++i) {
    const StepOp& op = sim.graph.ops[i];
    if (compute.beyond_measured_sizes(op, kMeasuredSizeReach)) beyond.insert(op.id);
    // A collective over the two end stages (the tied embedding's sum) waits inside itself for the
    // other stage's last backward pass; the executor times it from the moment it is called, so the
    // wait is part of its measured time. A wait for another stage before any other op is a receive
    // (the StepGraph hangs it on the op that uses the message, such as pp_recv_allgather), which the
    // executor leaves untimed: the bubble.
    const bool waits_inside = op.kind == OpKind::kCollective && op.blocking && op.axis == CommAxis::kPipelineEnds;
    OpComparison& c = out.ops[op.id];
    c.simulated_s += sim.timing[i].duration() + (waits_inside ? sim.timing[i].stage_wait_s : 0.0);
    c.stage = op.stage;
    if (op.kind == OpKind::kCollective) c.collective = collective_name(op.collective), c.axis = axis_name(op.axis);
  }
  out.ops_beyond_measured = static_cast<int64_t>(beyond.size());
  return out;
}

nlohmann::json to_json(const SimulatedRecord& r) {
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& [id, c] : r.ops) ops.push_back({id, c.stage, json_figure(c.simulated_s), c.collective, c.axis});
  return {{"step_s", json_figure(r.step_s)},
          {"chip_power_W", json_figure(r.chip_power_W)},
          {"ops", ops},
          {"ops_beyond_measured", r.ops_beyond_measured}};
}

SimulatedRecord from_json(const nlohmann::json& j) {
  SimulatedRecord r;
  r.step_s = figure_of(j.at("step_s")), r.chip_power_W = figure_of(j.at("chip_power_W"));
  r.ops_beyond_measured = j.at("ops_beyond_measured").get<int64_t>();
  for (const auto& op : j.at("ops")) {
    OpComparison& c = r.ops[op.at(0).get<std::string>()];
    c.stage = op.at(1).get<int>(), c.simulated_s = figure_of(op.at(2));
    c.collective = op.at(3).get<std::string>(), c.axis = op.at(4).get<std::string>();
  }
  return r;
}

// Every record simulated, in order. SimGrid holds one platform per process, so at flow fidelity
// the records of each host cluster are simulated in a child process of their own when there are
// several; JSON carries the figures back (doubles round-trip exactly).
std::vector<SimulatedRecord> simulate_records(const std::vector<std::pair<RunRecord, SimulationInput>>& inputs,
                                              Fidelity fidelity) {
  std::vector<SimulatedRecord> out(inputs.size());
  std::map<std::string, std::vector<size_t>> by_cluster;
  for (size_t i = 0; i < inputs.size(); ++i) by_cluster[inputs[i].second.cluster.id()].push_back(i);
  if (fidelity != Fidelity::kFlow || by_cluster.size() < 2) {
    for (size_t i = 0; i < inputs.size(); ++i) out[i] = simulate_record(inputs[i].first, inputs[i].second);
    return out;
  }
  for (const auto& [cluster, indices] : by_cluster) {
    const std::string text = run_in_child_process([&] {
      nlohmann::json results = nlohmann::json::array();
      for (size_t i : indices) results.push_back(to_json(simulate_record(inputs[i].first, inputs[i].second)));
      return results.dump();
    });
    const nlohmann::json results = nlohmann::json::parse(text);
    for (size_t k = 0; k < indices.size(); ++k) out[indices[k]] = from_json(results.at(k));
  }
  return out;
}

}  // namespace

Cluster profile_host_cluster(const CalibrationProfile& profile) {
  const std::vector<std::string> kinds = chip_kinds();
  if (std::find(kinds.begin(), kinds.end(), profile.device) == kinds.end())
    throw UsageError(profile.source + " was measured on a GPU the chip catalogue has no kind of (device = \"" +
                     profile.device + "\"): give --cluster, a cluster file of that GPU's figures");
  RunRecord host;
  host.file = profile.source;
  host.device_kind = profile.device == "cpu" ? "cpu" : "cuda";
  host.threads = profile.threads;
  for (const auto& c : profile.collectives) host.ranks = std::max<int64_t>(host.ranks, c.ranks);
  if (host.ranks < 2)
    throw UsageError(profile.source + " measured no collectives (glamexec calibrate ran on one rank): give --cluster, "
                     "or calibrate under mpirun -np 2 or more");
  return cluster_for(host, profile.device, profile);
}

ValidationSummary validate_records(const std::vector<std::string>& files, const std::optional<std::string>& profile_file,
                                   Fidelity fidelity) {
  std::optional<CalibrationProfile> profile;
  if (profile_file) profile = load_profile(*profile_file);
  // Load and check everything before simulating anything.
  std::vector<std::pair<RunRecord, SimulationInput>> inputs;
  for (const auto& f : files) {
    RunRecord r = load_run_record(f);
    SimulationInput in = simulation_for(r, profile, fidelity);
    inputs.emplace_back(std::move(r), std::move(in));
  }
  ValidationSummary s;
  s.calibration = profile_file.value_or("");
  s.fidelity = fidelity_name(fidelity);
  std::vector<double> step_errors, op_errors, collective_errors;
  const std::vector<SimulatedRecord> simulated = simulate_records(inputs, fidelity);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& [record, in] = inputs[i];
    const SimulatedRecord& sim = simulated[i];
    RecordValidation v{record, in.cluster.id(), sim.step_s, sim.chip_power_W, in.cluster.chip().kind,
                       in.cluster.chip().runtime_reserved_bytes, {}, {}, sim.ops_beyond_measured,
                       machine_note(record, in.profile)};
    for (const auto& op : record.ops) {
      auto it = sim.ops.find(op.id);
      if (it == sim.ops.end() || op.median_s <= 0) {
        v.unmatched.push_back(op.id);
        continue;
      }
      OpComparison c = it->second;
      c.id = op.id, c.measured_s = op.median_s;
      v.ops.push_back(std::move(c));
      op_errors.push_back(std::fabs(v.ops.back().error()));
    }
    step_errors.push_back(std::fabs(v.step_error()));
    for (const auto& [kind, time] : v.collectives())
      if (const auto e = collective_error(time)) collective_errors.push_back(std::fabs(*e));
    s.records.push_back(std::move(v));
  }
  auto largest = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  s.median_abs_step_error = median_of(step_errors);
  s.max_abs_step_error = largest(step_errors);
  s.median_abs_op_error = median_of(op_errors);
  s.median_abs_collective_error = median_of(collective_errors);
  s.max_abs_collective_error = largest(collective_errors);
  return s;
}

std::map<std::string, std::pair<double, double>> RecordValidation::collectives() const {
  std::map<std::string, std::pair<double, double>> out;
  for (const auto& op : ops)
    if (!op.collective.empty()) {
      auto& t = out[op.collective + " over " + op.axis];
      t.first += op.measured_s, t.second += op.simulated_s;
    }
  return out;
}

std::vector<std::pair<double, double>> RecordValidation::stage_busy() const {
  std::vector<std::pair<double, double>> out(static_cast<size_t>(std::max<int64_t>(1, record.pp)));
  for (const auto& op : ops) {
    auto& s = out.at(static_cast<size_t>(op.stage));
    s.first += op.measured_s, s.second += op.simulated_s;
  }
  return out;
}

nlohmann::json ValidationSummary::to_json() const {
  nlohmann::json out = {{"command", command()},
                        {"calibration", calibration.empty() ? nlohmann::json(nullptr) : nlohmann::json(calibration)},
                        {"fidelity", fidelity},
                        {"records", nlohmann::json::array()},
                        {"median_abs_step_error", median_abs_step_error},
                        {"max_abs_step_error", max_abs_step_error},
                        {"median_abs_op_error", median_abs_op_error},
                        {"median_abs_collective_error", median_abs_collective_error},
                        {"max_abs_collective_error", max_abs_collective_error}};
  for (const auto& v : records) {
    nlohmann::json ops = nlohmann::json::array();
    for (const auto& op : v.ops)
      ops.push_back({{"id", op.id},
                     {"stage", op.stage},
                     {"measured_s", op.measured_s},
                     {"simulated_s", op.simulated_s},
                     {"error", op.error()},
                     {"collective", op.collective.empty() ? nlohmann::json(nullptr) : nlohmann::json(op.collective)},
                     {"axis", op.axis.empty() ? nlohmann::json(nullptr) : nlohmann::json(op.axis)}});
    out["records"].push_back({{"file", v.record.file},
                              {"model", v.record.model.id},
                              {"layers_run", v.record.layers_run},
                              {"ranks", v.record.ranks},
                              {"device", v.record.device_kind},
                              {"cluster", v.cluster},
                              {"measured_step_s", v.record.step_median_s},
                              {"simulated_step_s", v.simulated_step_s},
                              {"step_error", v.step_error()},
                              {"measured_power_W", v.record.measured_power_W > 0 ? nlohmann::json(v.record.measured_power_W)
                                                                                 : nlohmann::json(nullptr)},
                              {"simulated_chip_power_W", v.record.measured_power_W > 0
                                                             ? nlohmann::json(v.simulated_chip_power_W)
                                                             : nlohmann::json(nullptr)},
                              {"ops", ops},
                              {"unmatched_ops", v.unmatched},
                              {"measured_runtime_held_bytes", v.record.runtime_held_bytes() > 0
                                                                  ? nlohmann::json(v.record.runtime_held_bytes())
                                                                  : nlohmann::json(nullptr)},
                              {"chip_runtime_reserved_bytes", v.chip_runtime_reserved_bytes},
                              {"chip", v.chip_kind},
                              {"notes", v.notes()}});
    nlohmann::json collectives = nlohmann::json::object();
    for (const auto& [kind, t] : v.collectives())
      collectives[kind] = {{"measured_s", t.first}, {"simulated_s", t.second}};
    out["records"].back()["collectives"] = collectives;
    if (v.record.pp > 1) {
      nlohmann::json stages = nlohmann::json::array();
      for (const auto& [measured, simulated] : v.stage_busy())
        stages.push_back({{"measured_busy_s", measured},
                          {"simulated_busy_s", simulated},
                          {"measured_idle_s", v.record.step_median_s - measured},
                          {"simulated_idle_s", v.simulated_step_s - simulated}});
      out["records"].back()["pipeline_stages"] = stages;
    }
  }
  return out;
}

std::string ValidationSummary::command() const {
  std::string c = "glamsim validate";
  for (const auto& v : records) c += " " + v.record.file;
  if (!calibration.empty()) c += " --calibration " + calibration;
  if (fidelity != "analytical") c += " --fidelity " + fidelity;
  return c;
}

std::vector<std::string> RecordValidation::notes() const {
  std::vector<std::string> out;
  if (!unmatched.empty()) {
    std::string ids;
    for (size_t i = 0; i < unmatched.size() && i < 4; ++i) ids += (i ? ", " : "") + unmatched[i];
    if (unmatched.size() > 4) ids += ", ...";
    out.push_back(std::to_string(unmatched.size()) + " measured op(s) not in the simulated step, not compared: " + ids);
  }
  if (!machine_note.empty()) out.push_back(machine_note);
  if (ops_beyond_measured > 0)
    out.push_back(std::to_string(ops_beyond_measured) + " op(s) are more than " + format_fixed(kMeasuredSizeReach, 0) +
                  "x larger or smaller than any size the profile measured them at, where their curves are held at the "
                  "nearest point: calibrate at this record's " + std::to_string(record.global_batch_tokens / std::max<int64_t>(record.dp, 1)) +
                  " tokens per rank (glamexec calibrate --tokens), or pass the record to it (--records)");
  const ModelConfig ran = record.model_run();
  if (ran.moe_layers() > 0 && !record.has_moe_loads)
    out.push_back("routing simulated uniform over the experts: the record holds no routing histograms (moe_layers)");
  if (record.device_kind == "cuda" && record.runtime_held_bytes() > 0) {
    const double held = static_cast<double>(record.runtime_held_bytes());
    out.push_back("the GPU's runtime held " + format_bytes(held) + " of " +
                  format_bytes(static_cast<double>(record.device_total_bytes)) +
                  " before the step's buffers (CUDA context, cuBLAS" + (record.ranks > 1 ? ", NCCL" : "") + "): " +
                  (held > chip_runtime_reserved_bytes ? "more than" : "within") + " the " +
                  format_bytes(chip_runtime_reserved_bytes) + " plans keep back (" + chip_kind +
                  "'s runtime_reserved_bytes)");
  }
  return out;
}

namespace {

std::string notes_text(const std::vector<RecordValidation>& records, const std::string& bullet) {
  std::string out;
  for (const auto& v : records)
    for (const auto& n : v.notes()) out += bullet + v.record.file + ": " + n + "\n";
  return out;
}

}  // namespace

std::string ValidationSummary::to_text() const {
  TextTable t({"record", "model", "ranks", "measured step", "simulated", "error", "ops", "median op error"},
              {false, false, true, true, true, true, true, true});
  for (const auto& v : records) {
    std::vector<double> errs;
    for (const auto& op : v.ops) errs.push_back(std::fabs(op.error()));
    t.add_row({v.record.file, v.record.model.id, std::to_string(v.record.ranks), format_seconds(v.record.step_median_s),
               format_seconds(v.simulated_step_s), format_percent(v.step_error()), std::to_string(v.ops.size()),
               fixed(100 * median_of(errs), 1) + "%"});
  }
  std::string power;
  for (const auto& v : records)
    if (v.record.measured_power_W > 0)
      power += v.record.file + ": GPU power measured " + fixed(v.record.measured_power_W, 0) + " W, simulated " +
               fixed(v.simulated_chip_power_W, 0) + " W (" + format_percent(v.power_error()) + ")\n";
  // Collectives per step by kind and the ranks they run over, as the Markdown report gives them.
  TextTable c({"record", "collective", "measured", "simulated", "error"}, {false, false, true, true, true});
  for (const auto& v : records)
    for (const auto& [kind, time] : v.collectives())
      c.add_row({v.record.file, kind, format_seconds(time.first), format_seconds(time.second),
                 collective_error(time) ? format_percent(*collective_error(time)) : std::string("-")});
  const std::string collectives =
      c.empty() ? ""
                : "\ncollectives per step, summed over their op ids:\n" + c.render() + "median |collective error| " +
                      fixed(100 * median_abs_collective_error, 1) + "%, largest " +
                      fixed(100 * max_abs_collective_error, 1) + "%\n";
  const std::string notes = notes_text(records, "");
  return t.render() + "\nmedian |step error| " + fixed(100 * median_abs_step_error, 1) + "%, largest " +
         fixed(100 * max_abs_step_error, 1) + "%, median |op error| " + fixed(100 * median_abs_op_error, 1) + "%\n" +
         collectives + (power.empty() ? "" : "\n" + power) + (notes.empty() ? "" : "\nnotes:\n" + notes);
}

std::string ValidationSummary::to_markdown(const std::string& plot_file) const {
  std::ostringstream o;
  o << "# Simulated against measured\n\n"
    << "Generated by `" << command() << "` (" << (calibration.empty() ? "the chip kind's default calibration"
                                                                       : "calibration profile " + calibration)
    << ", " << fidelity << " fidelity); rerun it to refresh this report.\n\n"
    << "Median absolute step-time error **" << fixed(100 * median_abs_step_error, 1) << "%**, largest **"
    << fixed(100 * max_abs_step_error, 1) << "%**; median absolute per-op error **" << fixed(100 * median_abs_op_error, 1)
    << "%**.\n\n![simulated against measured](" << plot_file << ")\n\n"
    << "| record | model | layers | ranks | device | measured step (s) | simulated (s) | error | ops compared |\n"
    << "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& v : records)
    o << "| " << v.record.file << " | " << v.record.model.id << " | "
      << (v.record.layers_run > 0 ? std::to_string(v.record.layers_run) : "all") << " | " << v.record.ranks << " | "
      << v.record.device_kind << " | " << fixed(v.record.step_median_s, 4) << " | " << fixed(v.simulated_step_s, 4)
      << " | " << format_percent(v.step_error()) << " | " << v.ops.size() << " |\n";
  // Chip power, where the record measured it (the energy model's idle + above-idle chip power).
  bool any_power = false;
  for (const auto& v : records) any_power |= v.record.measured_power_W > 0;
  if (any_power) {
    o << "\nMean GPU power over the timed steps (energy counters) against the energy model's chip power:\n\n"
      << "| record | measured (W) | simulated (W) | error |\n|---|---|---|---|\n";
    for (const auto& v : records)
      if (v.record.measured_power_W > 0)
        o << "| " << v.record.file << " | " << fixed(v.record.measured_power_W, 0) << " | "
          << fixed(v.simulated_chip_power_W, 0) << " | " << format_percent(v.power_error()) << " |\n";
  }
  // Collectives per kind (the waits for other ranks included, as the executor times them).
  bool any_collective = false;
  for (const auto& v : records) any_collective |= !v.collectives().empty();
  if (any_collective) {
    o << "\nCollectives per step by kind and the ranks they run over (tp: tensor-parallel, dp: data-parallel, "
         "ep: expert-parallel, pp: pipeline), summed over their op ids:\n\n"
      << "| record | collective | measured (ms) | simulated (ms) | error |\n|---|---|---|---|---|\n";
    for (const auto& v : records)
      for (const auto& [kind, t] : v.collectives())
        o << "| " << v.record.file << " | " << kind << " | " << fixed(t.first * 1e3, 3) << " | " << fixed(t.second * 1e3, 3)
          << " | " << (collective_error(t) ? format_percent(*collective_error(t)) : std::string("-")) << " |\n";
    o << "\nMedian absolute collective error **" << fixed(100 * median_abs_collective_error, 1) << "%**, largest **"
      << fixed(100 * max_abs_collective_error, 1)
      << "%** (measured from each call to its return, the wait for the other ranks included).\n";
  }
  // Pipelined records: where each stage's step goes (its ops, and its waits: bubble and imbalance).
  bool any_pipeline = false;
  for (const auto& v : records) any_pipeline |= v.record.pp > 1;
  if (any_pipeline) {
    o << "\nPipeline stages: each stage's time in its ops per step, and the rest of the step, which it waits "
         "(the schedule's bubble and the other stages' longer passes):\n\n"
      << "| record | stage | ops measured (ms) | ops simulated (ms) | waits measured (ms) | waits simulated (ms) |\n"
      << "|---|---|---|---|---|---|\n";
    for (const auto& v : records) {
      if (v.record.pp <= 1) continue;
      const auto busy = v.stage_busy();
      for (size_t st = 0; st < busy.size(); ++st)
        o << "| " << v.record.file << " | " << st << " | " << fixed(busy[st].first * 1e3, 1) << " | "
          << fixed(busy[st].second * 1e3, 1) << " | " << fixed((v.record.step_median_s - busy[st].first) * 1e3, 1)
          << " | " << fixed((v.simulated_step_s - busy[st].second) * 1e3, 1) << " |\n";
    }
  }
  // The ops with the largest errors point at what the model gets wrong.
  std::vector<std::pair<double, std::string>> worst;
  for (const auto& v : records)
    for (const auto& op : v.ops)
      worst.push_back({std::fabs(op.error()), v.record.file + " `" + op.id + "`: measured " +
                                                  fixed(op.measured_s * 1e3, 3) + " ms, simulated " +
                                                  fixed(op.simulated_s * 1e3, 3) + " ms (" + format_percent(op.error()) + ")"});
  std::sort(worst.rbegin(), worst.rend());
  if (const std::string notes = notes_text(records, "- "); !notes.empty()) o << "\nNotes:\n\n" << notes;
  if (!worst.empty()) {
    o << "\nLargest per-op errors:\n\n";
    for (size_t i = 0; i < std::min<size_t>(10, worst.size()); ++i) o << "- " << worst[i].second << "\n";
  }
  return o.str();
}

std::string ValidationSummary::plot_svg() const {
  // Log-log scatter; the diagonal is perfect agreement.
  double lo = 1e300, hi = 0;
  auto extend = [&](double v) {
    if (v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  };
  for (const auto& v : records) {
    extend(v.record.step_median_s), extend(v.simulated_step_s);
    for (const auto& op : v.ops) extend(op.measured_s), extend(op.simulated_s);
  }
  if (hi <= 0) lo = 1e-6, hi = 1;
  const double l0 = std::floor(std::log10(lo)), l1 = std::ceil(std::log10(hi));
  const double W = 560, H = 560, pad = 60;
  auto x = [&](double v) { return pad + (std::log10(v) - l0) / (l1 - l0) * (W - 2 * pad); };
  auto y = [&](double v) { return H - pad - (std::log10(v) - l0) / (l1 - l0) * (H - 2 * pad); };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (double d = l0; d <= l1; d += 1) {
    const double v = std::pow(10.0, d);
    o << "<line x1=\"" << x(v) << "\" y1=\"" << pad << "\" x2=\"" << x(v) << "\" y2=\"" << H - pad
      << "\" stroke=\"#ddd\"/><line x1=\"" << pad << "\" y1=\"" << y(v) << "\" x2=\"" << W - pad << "\" y2=\"" << y(v)
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << x(v) << "\" y=\"" << H - pad + 18 << "\" text-anchor=\"middle\">1e"
      << d << "</text><text x=\"" << pad - 8 << "\" y=\"" << y(v) + 4 << "\" text-anchor=\"end\">1e" << d << "</text>\n";
  }
  o << "<line x1=\"" << x(std::pow(10, l0)) << "\" y1=\"" << y(std::pow(10, l0)) << "\" x2=\"" << x(std::pow(10, l1))
    << "\" y2=\"" << y(std::pow(10, l1)) << "\" stroke=\"#888\" stroke-dasharray=\"4 4\"/>\n";
  for (const auto& v : records) {
    for (const auto& op : v.ops)
      if (op.measured_s > 0 && op.simulated_s > 0)
        o << "<circle cx=\"" << x(op.measured_s) << "\" cy=\"" << y(op.simulated_s)
          << "\" r=\"2.5\" fill=\"#1f77b4\" fill-opacity=\"0.6\"><title>" << op.id << "</title></circle>\n";
    if (v.simulated_step_s > 0 && v.record.step_median_s > 0)
      o << "<rect x=\"" << x(v.record.step_median_s) - 5 << "\" y=\"" << y(v.simulated_step_s) - 5
        << "\" width=\"10\" height=\"10\" fill=\"#d62728\"><title>" << v.record.file << "</title></rect>\n";
  }
  o << "<text x=\"" << W / 2 << "\" y=\"" << H - 15 << "\" text-anchor=\"middle\">measured (s)</text>\n"
    << "<text x=\"18\" y=\"" << H / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " << H / 2
    << ")\">simulated (s)</text>\n"
    << "<text x=\"" << pad << "\" y=\"30\">blue: ops, red: steps; dashed: simulated = measured</text>\n</svg>\n";
  return o.str();
}

}  // namespace glam
