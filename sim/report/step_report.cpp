#include "report/step_report.h"

#include <algorithm>
#include <sys/resource.h>

#include <cstdio>
#include <sstream>

#include "common/text_table.h"
#include "energy/energy_model.h"
#include "model_config.h"

namespace glam {
namespace {

// A collective's buffer bytes per chip, 0 where its group is the chip alone (an all-to-all with ep = 1
// moves nothing, as the summary's all-to-all bytes say).
double crossing_bytes(const ParallelPlan& plan, const StepOp& op) {
  return plan.group_size(op.axis) > 1 ? op.comm_bytes : 0;
}

// gem5-style statistics: "name  value  # description (unit)".
class Stats {
 public:
  void add(const std::string& name, double value, const std::string& description, const std::string& unit) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.9g", value);
    lines_.push_back({name, buf, description + " (" + unit + ")"});
  }
  std::string render() const {
    size_t w = 0, v = 0;
    for (const auto& l : lines_) w = std::max(w, l[0].size()), v = std::max(v, l[1].size());
    std::string out = "---------- Begin Simulation Statistics ----------\n";
    for (const auto& l : lines_)
      out += l[0] + std::string(w - l[0].size() + 2, ' ') + l[1] + std::string(v - l[1].size() + 2, ' ') + "# " +
             l[2] + "\n";
    return out + "---------- End Simulation Statistics   ----------\n";
  }

 private:
  std::vector<std::array<std::string, 3>> lines_;
};

std::string kind_key(LinkKind k) { return link_kind_name(k); }

// The share of token copies past their expert's capacity, averaged over the MoE blocks.
double mean_dropped_fraction(const StepResult& r) {
  double dropped = 0;
  for (const auto& l : r.moe_loads) dropped += l.dropped_fraction;
  return r.moe_loads.empty() ? 0.0 : dropped / static_cast<double>(r.moe_loads.size());
}

}  // namespace

double peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;
}

std::string calibration_line(const CalibrationProfile& cal) {
  if (!cal.from_file)
    return "calibration: " + cal.source + " (large products at " + format_fixed(100 * cal.matmul.values.back(), 1) +
           "% of peak, HBM-bound ops at " + format_fixed(100 * cal.memory.values.back(), 0) +
           "% of bandwidth; --calibration FILE for measured ones)\n";
  return "calibration: " + cal.source + (cal.device_name.empty() ? "" : " (" + cal.device_name + ")") + "\n";
}

void add_memory_breakdown_rows(TextTable& t, const MemoryFootprint& mem) {
  t.add_row({"  weights, gradients, optimizer", format_bytes(mem.weights_bytes) + ", " +
                                                    format_bytes(mem.gradients_bytes) + ", " +
                                                    format_bytes(mem.optimizer_bytes)});
  t.add_row({"  activations, working buffers",
             format_bytes(mem.activations_bytes) + ", " + format_bytes(mem.working_bytes)});
  if (mem.communication_bytes > 0) t.add_row({"  all-to-all channels (NCCL)", format_bytes(mem.communication_bytes)});
}

nlohmann::json memory_breakdown_json(const MemoryFootprint& m) {
  return {{"weights", m.weights_bytes},         {"gradients", m.gradients_bytes}, {"optimizer", m.optimizer_bytes},
          {"activations", m.activations_bytes}, {"working", m.working_bytes},
          {"communication", m.communication_bytes}};
}

nlohmann::json step_summary_json(const SimulationInput& in, const StepResult& r, const HostFigures& host) {
  nlohmann::json links = nlohmann::json::object();
  for (const auto& [k, b] : r.link_bytes) links[kind_key(k)] = b;
  const double dropped = mean_dropped_fraction(r);
  nlohmann::json plan = plan_to_json(in.plan);
  plan["rank_map"] = r.rank_map;
  return {
      {"model", in.model.id},
      {"blocks", in.layers_run > 0 ? std::min(in.layers_run, in.model.layers) : in.model.layers},
      {"cluster", in.cluster.id()},
      {"fidelity", fidelity_name(in.fidelity)},
      {"routing", in.routing.describe()},
      {"calibration", in.profile.source},
      {"step_time_s", r.step_time_s},
      {"compute_s", r.compute_s},
      {"comm_s", r.comm_s},
      {"exposed_comm_s", r.exposed_comm_s},
      {"pipeline_bubble_s", r.pipeline_bubble_s},
      {"alltoall_s", r.alltoall_s},
      {"alltoall_bytes", r.alltoall_bytes},
      {"mfu", r.mfu},
      {"tokens_per_s", static_cast<double>(in.plan.batch_tokens) / r.step_time_s},
      {"memory_per_chip_bytes", r.memory.total_bytes()},
      {"memory_breakdown_bytes", memory_breakdown_json(r.memory)},
      {"hbm_bytes", in.cluster.chip().hbm_bytes},
      {"runtime_reserved_bytes", in.cluster.chip().runtime_reserved_bytes},
      {"usable_hbm_bytes", in.usable_hbm_bytes()},
      {"fits_memory", r.fits_memory},
      {"mean_dropped_fraction", dropped},
      {"link_bytes", links},
      {"energy", step_energy(in, r, in.cluster.pue()).to_json()},
      {"plan", plan},
      {"ops", r.graph.ops.size()},
      {"simulated_flows", r.network_events},
      {"routed_flows", r.flows_routed},
      {"collective_schedules", r.schedules_built},
      {"flow_phases_simulated", r.flow_phases_simulated},
      {"flow_phases_analytical", r.flow_phases_analytical},
      {"wall_time_s", host.wall_time_s},
      {"peak_rss_bytes", host.peak_rss_bytes},
  };
}

std::string step_summary_text(const SimulationInput& in, const StepResult& r, const HostFigures& host) {
  std::ostringstream o;
  const auto& p = in.plan;
  o << in.model.id;
  if (in.layers_run > 0 && in.layers_run < in.model.layers)
    o << " (its first " << in.layers_run << " of " << in.model.layers << " blocks)";
  o << " on " << in.cluster.id() << " (" << format_chips(in.cluster.num_chips()) << "), "
    << fidelity_name(in.fidelity) << " fidelity, routing " << in.routing.describe() << "\n"
    << "plan: " << plan_description(p, in.model_held().is_moe())
    << "; " << p.batch_tokens << " tokens per step; " << r.rank_map << "\n\n";
  TextTable t({"figure", "value"}, {false, true});
  auto pct = [&](double v) { return format_fixed(100 * v / r.step_time_s, 1) + "% of step"; };
  t.add_row({"step time", format_seconds(r.step_time_s)});
  t.add_row({"compute", format_seconds(r.compute_s) + " (" + pct(r.compute_s) + ")"});
  t.add_row({"exposed communication", format_seconds(r.exposed_comm_s) + " (" + pct(r.exposed_comm_s) + ")"});
  if (p.pp > 1)
    t.add_row({"pipeline bubble", format_seconds(r.pipeline_bubble_s) + " (" + pct(r.pipeline_bubble_s) + "; stage " +
                                      std::to_string(r.busiest_stage) + ", the busiest)"});
  const ModelConfig held = in.model_held();  // --layers K: the blocks run, which may all be dense
  if (held.is_moe())
    t.add_row({"all-to-all", format_seconds(r.alltoall_s) + ", " + format_bytes(r.alltoall_bytes) + " sent per chip"});
  if (r.flow_phases_analytical > 0)
    t.add_row({"flow phases", std::to_string(r.flow_phases_simulated) + " played in SimGrid, " +
                                  std::to_string(r.flow_phases_analytical) + " costed analytically (more than --flow-max-flows " +
                                  std::to_string(in.flow_max_flows) + " flows each)"});
  // Copies routed past the experts' capacity: the step may be as fast, the tokens are not all trained.
  // The slots are shown beside the copies routed to them, since conventions differ on whether the
  // capacity factor counts the top-k copies.
  const double dropped = mean_dropped_fraction(r);
  if (held.is_moe()) {
    const ModelConfig& m = held;
    const double mean_copies = static_cast<double>(m.top_k * m.group_tokens) / static_cast<double>(m.experts);
    t.add_row({"expert capacity", std::to_string(m.capacity_per_group()) + " slots for " + format_shortest(mean_copies) +
                                      " copies per " + std::to_string(m.group_tokens) + "-token group (" +
                                      m.capacity_convention + ", factor " + format_shortest(m.capacity_factor) + ")"});
  }
  if (dropped > 0)
    t.add_row({"dropped at capacity",
               (dropped < 5e-4 ? std::string("under 0.1") : format_fixed(100 * dropped, 1)) + "% of token copies"});
  // Model FLOPs count every routed copy, so dropping many makes a step look more efficient than it is.
  t.add_row({"MFU", format_fixed(100 * r.mfu, 1) + "%" +
                        (dropped > 0.1 ? " (its model FLOPs count the dropped copies)" : "")});
  t.add_row({"tokens/s", format_count(static_cast<double>(p.batch_tokens) / r.step_time_s)});
  // A plan within a hair of a chip that keeps nothing back for its runtime (TPUs: not published) says so.
  const double spare = in.usable_hbm_bytes() - r.memory.total_bytes();
  const bool tight = r.fits_memory && !in.keeps_hbm_back() && spare < 0.01 * in.usable_hbm_bytes();
  t.add_row({"memory per chip", format_bytes(r.memory.total_bytes()) + " of " + format_bytes(in.usable_hbm_bytes()) +
                                    (in.keeps_hbm_back() ? " usable" : "") +
                                    (!r.fits_memory ? " (DOES NOT FIT)"
                                     : tight ? " (fits, " + format_bytes(spare) + " spare, none kept back for the runtime)"
                                             : " (fits)")});
  if (in.keeps_hbm_back())
    t.add_row({"  kept back of " + format_bytes(in.cluster.chip().hbm_bytes) + " HBM", hbm_kept_back(in)});
  add_memory_breakdown_rows(t, r.memory);
  const StepEnergy e = step_energy(in, r, in.cluster.pue());
  const double J = e.total_J();
  // Four digits in each unit (546.1 J, 154.0 kJ, 2.644 MJ), each from where four digits round up to
  // it (999.96 J is 1.000 kJ, not 1000 J).
  const std::string energy = J >= 999.95e3 ? format_digits(J / 1e6, 4) + " MJ"
                             : J >= 999.95 ? format_digits(J / 1e3, 4) + " kJ"
                                           : format_digits(J, 4) + " J";
  t.add_row({"energy per step", energy + " at PUE " + format_fixed(in.cluster.pue(), 2) +
                                    ", " + format_fixed(e.average_power_per_chip_W, 0) + " W per chip (IT)"});
  t.add_row({"simulator wall time", format_fixed(host.wall_time_s, 3) + " s"});
  o << t.render();
  o << calibration_line(in.profile);
  return o.str();
}

std::map<std::string, std::string> step_output_files(const SimulationInput& in, const StepResult& r,
                                                     const HostFigures& host) {
  std::map<std::string, std::string> files;
  // config.json: every resolved parameter, defaults included.
  nlohmann::json config = {{"model", model_to_json(in.model)},
                           {"cluster", in.cluster.resolved_config()},
                           {"plan", plan_to_json(in.plan)},
                           {"rank_map", r.rank_map},
                           {"routing", in.routing.describe()},
                           {"fidelity", fidelity_name(in.fidelity)},
                           {"layers_run", in.layers_run},
                           {"calibration", in.profile.to_json()}};
  files["config.json"] = config.dump(2) + "\n";

  Stats s;
  s.add("step.time", r.step_time_s, "Simulated time of one training step", "s");
  // With pipeline stages, the figures of one rank are those of its busiest stage.
  s.add("step.compute", r.compute_s, "Compute time on one rank", "s");
  s.add("step.comm", r.comm_s, "Collective time, overlapped or not", "s");
  s.add("step.exposed_comm", r.exposed_comm_s, "Step time not covered by compute, nor by the pipeline bubble", "s");
  if (in.plan.pp > 1) {
    s.add("step.pipeline_bubble", r.pipeline_bubble_s, "The rank idle waiting for other pipeline stages", "s");
    s.add("step.pipeline_stage", r.busiest_stage, "The stage the rank's figures describe (the most compute)", "index");
  }
  s.add("step.mfu", r.mfu, "Model FLOPs utilisation", "fraction");
  s.add("step.tokens", static_cast<double>(in.plan.batch_tokens), "Tokens per step", "tokens");
  s.add("step.model_flops_per_chip", r.graph.model_flops, "Useful training FLOPs per chip", "FLOP");
  s.add("memory.weights", r.memory.weights_bytes, "Weights per chip", "bytes");
  s.add("memory.gradients", r.memory.gradients_bytes, "Gradients per chip", "bytes");
  s.add("memory.optimizer", r.memory.optimizer_bytes, "Optimizer state per chip", "bytes");
  s.add("memory.activations", r.memory.activations_bytes, "Saved activations per chip", "bytes");
  s.add("memory.working", r.memory.working_bytes,
        "Transient buffers of the busiest block's backward pass per chip (recomputed activations, gathered "
        "weights and their gradients, all-to-all staging)",
        "bytes");
  s.add("memory.communication", r.memory.communication_bytes,
        "The collective library's buffers per chip beyond the runtime's reserve (NCCL's all-to-all channels to "
        "the expert group's peers in the node)",
        "bytes");
  s.add("memory.usable", in.usable_hbm_bytes(),
        "HBM a plan may use per chip: the chip's less the runtime's reserve and any headroom", "bytes");
  s.add("memory.fits", r.fits_memory ? 1 : 0, "Whether the footprint fits in the usable HBM", "bool");
  // per collective kind and axis
  std::map<std::string, std::pair<double, double>> per_collective;
  std::map<std::string, double> per_op_kind;
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const auto& op = r.graph.ops[i];
    if (op.stage != r.busiest_stage) continue;
    if (op.kind == OpKind::kCollective) {
      auto& e = per_collective[std::string(collective_name(op.collective)) + "." + axis_name(op.axis)];
      e.first += r.timing[i].duration();
      e.second += crossing_bytes(in.plan, op);
    } else {
      per_op_kind[op_kind_name(op.kind)] += r.timing[i].duration();
    }
  }
  for (const auto& [k, v] : per_op_kind) s.add("compute." + k + ".time", v, "Time in " + k + " ops per chip", "s");
  for (const auto& [k, v] : per_collective) {
    s.add("collective." + k + ".time", v.first, "Time in these collectives", "s");
    s.add("collective." + k + ".bytes", v.second, "Buffer bytes per chip", "bytes");
  }
  for (const auto& [k, b] : r.link_bytes)
    s.add("network." + kind_key(k) + ".bytes", b, "Bytes over " + kind_key(k) + " links, whole cluster", "bytes");
  if (in.fidelity == Fidelity::kFlow) {
    s.add("network.flow.phases_simulated", r.flow_phases_simulated, "Collective phases played in SimGrid", "count");
    s.add("network.flow.phases_analytical", r.flow_phases_analytical,
          "Phases above the flow limit, costed by the analytical model", "count");
    s.add("network.flow.flows", r.network_events, "Flows simulated in SimGrid", "count");
  }
  // The whole cluster's energy for this step, at the cluster's PUE (glamsim plan scales it to a run).
  const StepEnergy e = step_energy(in, r, in.cluster.pue());
  s.add("energy.chips_above_idle", e.chip_compute_J, "Chips' energy above idle, whole cluster", "J");
  s.add("energy.chips_idle", e.chip_idle_J, "Chips' idle power over the step, whole cluster", "J");
  s.add("energy.hosts", e.host_J, "Hosts, NICs and fans, whole cluster", "J");
  s.add("energy.network", e.network_J, "Links and switches, whole cluster", "J");
  s.add("energy.facility_overhead", e.facility_overhead_J, "Cooling and power delivery: (PUE - 1) x IT", "J");
  s.add("energy.total", e.total_J(), "Facility energy of the step, whole cluster", "J");
  s.add("energy.power_per_chip", e.average_power_per_chip_W, "Average IT power per chip", "W");
  for (size_t i = 0; i < r.moe_loads.size(); ++i)
    s.add("moe.block" + std::to_string(i) + ".dropped", r.moe_loads[i].dropped_fraction,
          "Token copies dropped at capacity", "fraction");
  files["stats.txt"] = s.render();
  files["host.txt"] = "wall_time_s " + format_fixed(host.wall_time_s, 6) + "\npeak_rss_bytes " +
                      format_fixed(host.peak_rss_bytes, 0) + "\n";

  // Chrome trace: one lane for the compute stream, one per collective axis; microseconds. One
  // process per pipeline stage.
  nlohmann::json events = nlohmann::json::array();
  std::map<std::string, int> lanes = {{"compute", 1}};
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const auto& op = r.graph.ops[i];
    std::string lane = op.kind == OpKind::kCollective && !op.blocking ? std::string("overlapped ") + axis_name(op.axis)
                                                                     : "compute";
    if (!lanes.count(lane)) lanes[lane] = static_cast<int>(lanes.size()) + 1;
    nlohmann::json args = {{"flops", op.flops}, {"bytes", op.bytes}};
    if (op.kind == OpKind::kCollective)
      args = {{"collective", collective_name(op.collective)}, {"axis", axis_name(op.axis)},
              {"bytes", crossing_bytes(in.plan, op)}, {"algorithm", r.timing[i].algorithm}};
    events.push_back({{"name", op.id},
                      {"cat", op.kind == OpKind::kCollective ? "comm" : op_kind_name(op.kind)},
                      {"ph", "X"},
                      {"pid", op.stage + 1},
                      {"tid", lanes[lane]},
                      {"ts", r.timing[i].start_s * 1e6},
                      {"dur", r.timing[i].duration() * 1e6},
                      {"args", args}});
  }
  for (int64_t stage = 0; stage < in.plan.pp; ++stage) {
    const int pid = static_cast<int>(stage) + 1;
    for (const auto& [name, tid] : lanes)
      events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{"name", name}}}});
    const std::string rank = "rank " + std::to_string(stage * in.plan.dp * in.plan.tp);
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", pid},
                      {"args", {{"name", (in.plan.pp > 1 ? "stage " + std::to_string(stage) + ", " : "") + rank + " (" +
                                             in.cluster.id() + ")"}}}});
  }
  files["trace.json"] = nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n";

  // layers.csv: per block, forward and backward compute, communication, exposed and bytes. The
  // compute stream's time goes to the block of each op it runs, including the wait before it for an
  // overlapped collective (a weight gather, the gradient reductions before the optimizer), so the
  // rows' forward + backward add up to the step and their exposed communication to the step's. With
  // pipeline stages each stage has its rows, and its waits for other stages are their own column:
  // a stage's forward + backward + pipeline wait add up to the step.
  struct Row { double fwd = 0, bwd = 0, compute = 0, comm = 0, bytes = 0, pipeline_wait = 0; };
  std::map<std::pair<int, int>, Row> rows;  // (stage, layer)
  std::vector<double> stream_end(static_cast<size_t>(in.plan.pp), 0.0);
  for (size_t i = 0; i < r.graph.ops.size(); ++i) {
    const auto& op = r.graph.ops[i];
    Row& row = rows[{op.stage, op.layer}];
    double d = r.timing[i].duration();
    if (op.kind == OpKind::kCollective) {
      row.comm += d;
      row.bytes += crossing_bytes(in.plan, op);
    } else {
      row.compute += d;
    }
    if (op.kind == OpKind::kCollective && !op.blocking) continue;
    double& end = stream_end[static_cast<size_t>(op.stage)];
    // The simulator tells the pipeline's part of the wait (for another stage's op) from the rest.
    const double wait = std::max(0.0, r.timing[i].start_s - end - r.timing[i].stage_wait_s);
    row.pipeline_wait += r.timing[i].stage_wait_s;
    end = std::max(end, r.timing[i].end_s);
    (op.phase == StepPhase::kForward ? row.fwd : row.bwd) += wait + d;
  }
  // What ends the step after the stream belongs to no block: ranks taking turns on shared cores, or
  // with pipeline stages, the wait for the other stages to finish.
  for (int stage = 0; stage < static_cast<int>(in.plan.pp); ++stage) {
    const double tail = r.step_time_s - stream_end[static_cast<size_t>(stage)];
    if (tail <= 0) continue;
    if (in.plan.pp > 1) rows[{stage, -1}].pipeline_wait += tail;
    else rows[{stage, -1}].bwd += tail;
  }
  std::string csv = "layer,kind,forward_s,backward_s,compute_s,comm_s,exposed_comm_s,comm_bytes,stage,pipeline_wait_s\n";
  for (const auto& [key, row] : rows) {
    const auto [stage, layer] = key;
    double exposed = row.fwd + row.bwd - row.compute;
    std::string kind = layer < 0 ? "other" : in.model.is_moe_layer(layer) ? "moe" : "dense";
    char buf[320];
    std::snprintf(buf, sizeof buf, "%d,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%d,%.9g\n", layer, kind.c_str(), row.fwd,
                  row.bwd, row.compute, row.comm, exposed, row.bytes, stage, row.pipeline_wait);
    csv += buf;
  }
  files["layers.csv"] = csv;
  return files;
}

}  // namespace glam
