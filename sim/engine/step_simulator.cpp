#include "engine/step_simulator.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common/errors.h"
#include "common/text_table.h"
#include "compute/compute_model.h"
#include "network/flow_network.h"
#include "network/network_model.h"

namespace glam {

Fidelity parse_fidelity(const std::string& s) {
  if (s == "analytical") return Fidelity::kAnalytical;
  if (s == "flow") return Fidelity::kFlow;
  throw UsageError("--fidelity " + s + ": expected analytical or flow");
}

const char* fidelity_name(Fidelity f) { return f == Fidelity::kFlow ? "flow" : "analytical"; }

std::unique_ptr<NetworkModel> make_network(Fidelity f, const Cluster& cluster, const RankMap& ranks,
                                           const CalibrationProfile& profile, size_t flow_max_flows,
                                           std::shared_ptr<RoutedScheduleCache> routed) {
  if (f == Fidelity::kFlow) return std::make_unique<FlowNetwork>(cluster, ranks, profile, flow_max_flows);
  return std::make_unique<AnalyticalNetwork>(cluster, ranks, profile, std::move(routed));
}

std::string hbm_kept_back(const SimulationInput& in) {
  const ChipSpec& chip = in.cluster.chip();
  std::string kept;
  if (chip.runtime_reserved_bytes > 0) kept = format_bytes(chip.runtime_reserved_bytes) + " runtime reserve";
  if (in.hbm_headroom > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.4g", 100 * in.hbm_headroom);
    kept += std::string(kept.empty() ? "" : ", ") + pct + "% headroom (" +
            format_bytes((chip.hbm_bytes - chip.runtime_reserved_bytes) * in.hbm_headroom) + ")";
  }
  return kept;
}

std::string usable_hbm_note(const SimulationInput& in) {
  if (!in.keeps_hbm_back()) return "";
  return " (" + format_bytes(in.cluster.chip().hbm_bytes) + " of HBM less " + hbm_kept_back(in) + ")";
}

std::string products_precision(const SimulationInput& in) {
  if (!in.product_precision.empty()) return in.product_precision;
  return in.model.activation_precision == "bfloat16" ? "bf16" : "fp32";
}

namespace {

// What an all-to-all of the simulated rank (rank 0 of its ep group) sends to other chips: the share
// for its own experts stays. Forward, it sends dest_share[j] of its buffer to each rank j; the
// transposed exchange (backward) returns to each rank what that rank sent, dest_share[0] of a buffer.
double alltoall_bytes_leaving(const StepOp& op, int64_t ep) {
  const double n = static_cast<double>(ep);
  const std::vector<double>& share = op.a2a_dest_share;
  if (share.size() != static_cast<size_t>(ep)) return op.comm_bytes * (n - 1) / n;
  return op.comm_bytes * (op.a2a_transposed ? (n - 1) * share[0] : 1 - share[0]);
}

}  // namespace

StepResult simulate_step(const SimulationInput& in) {
  StepResult r;
  const ModelConfig& m = in.model;
  StepShape shape = in.plan.step_shape();
  shape.layers_run = in.layers_run;
  const int64_t blocks = blocks_run(m, shape);
  int moe_blocks = 0;
  for (int64_t l = 0; l < blocks; ++l) moe_blocks += m.is_moe_layer(l) ? 1 : 0;
  for (const auto& routing : expert_routing(in.routing, m, moe_blocks))
    r.moe_loads.push_back(moe_layer_load(m, shape, routing.routed, routing.kept));
  r.graph = build_step_graph(m, shape, r.moe_loads);

  RankMap ranks(in.plan, in.cluster);
  r.rank_map = ranks.describe();
  ComputeModel compute(in.cluster.chip(), in.profile, products_precision(in));
  const std::unique_ptr<NetworkModel> network = make_network(in.fidelity, in.cluster, ranks, in.profile, in.flow_max_flows, in.routed_schedules);

  // Schedule: compute ops and blocking collectives in program order on the compute stream;
  // overlapped collectives on one lane per axis, from the moment they are issued. Collectives that
  // run at the same time on different lanes share links: a collective starting while others are
  // in flight gets what their average traffic leaves of each link, and each of those is delayed by
  // the time the newcomer's bytes take on its own busiest link. Each pipeline stage has its own
  // stream and lanes; its ops wait for other stages only through their dependencies.
  const auto& ops = r.graph.ops;
  r.timing.resize(ops.size());
  struct InFlight {
    size_t op;
    // Its rate on each link: share x bytes / duration (the network model keeps the shares).
    const std::vector<std::pair<int, double>>* shares = nullptr;
    double bytes = 0, duration = 0;
    int bottleneck = -1;
    double rate(double share) const { return share * bytes / duration; }
  };
  const auto& links = in.cluster.links();
  struct Stage {
    double stream = 0;
    double turn_taking = 0;  // short compute ops since the last blocking collective (ranks_per_core > 1)
    std::map<CommAxis, double> lane;
    std::vector<InFlight> in_flight;
    std::vector<double> background;  // bytes per second on each link from its collectives in flight
    std::vector<int> sharers;        // how many collectives in flight use each link
    // What a newcomer sees of that traffic: at most k / (k + 1) of a link the k collectives share, so it
    // gets at least a fair share (max-min fairness between them).
    std::vector<double> fair_background;
  };
  const size_t stage_count = static_cast<size_t>(std::max<int64_t>(1, r.graph.stages));
  std::vector<Stage> stages(stage_count);
  for (auto& st : stages)
    st.background.assign(links.size(), 0.0), st.sharers.assign(links.size(), 0), st.fair_background = st.background;
  // A collective joins (+1) or leaves (-1) a link with its rate.
  auto load_link = [&](Stage& st, int link, double rate, int joins) {
    const size_t l = static_cast<size_t>(link);
    st.background[l] += joins * rate;
    st.sharers[l] += joins;
    const int k = st.sharers[l];
    st.fair_background[l] = k > 0 ? std::min(st.background[l], links[l].bandwidth_Bps * k / (k + 1.0)) : 0.0;
  };
  auto retire_before = [&](Stage& st, double t) {
    for (size_t k = 0; k < st.in_flight.size();) {
      if (r.timing[st.in_flight[k].op].end_s > t) {
        ++k;
        continue;
      }
      const InFlight& f = st.in_flight[k];
      for (const auto& [l, share] : *f.shares) load_link(st, l, f.rate(share), -1);
      st.in_flight.erase(st.in_flight.begin() + static_cast<std::ptrdiff_t>(k));
    }
  };
  for (size_t i = 0; i < ops.size(); ++i) {
    if (in.progress && i % 64 == 0) in.progress(static_cast<double>(i) / static_cast<double>(ops.size()));
    const StepOp& op = ops[i];
    OpTiming& t = r.timing[i];
    Stage& st = stages[static_cast<size_t>(op.stage)];
    double ready = 0;
    bool ready_from_other_stage = false;
    for (int d : op.deps) {
      const double end = r.timing[static_cast<size_t>(d)].end_s;
      if (end > ready) ready = end, ready_from_other_stage = ops[static_cast<size_t>(d)].stage != op.stage;
    }
    const bool on_stream = op.kind != OpKind::kCollective || op.blocking;
    t.start_s = on_stream ? std::max(st.stream, ready) : std::max({st.stream, ready, st.lane[op.axis]});
    if (on_stream && ready_from_other_stage && ready > st.stream) t.stage_wait_s = ready - st.stream;
    double duration = 0;
    if (op.kind == OpKind::kCollective) {
      CollectiveRequest req{op.collective, op.axis, op.comm_bytes, op.a2a_dest_share, op.a2a_transposed, op.send_wraps};
      retire_before(st, t.start_s);
      // Whatever is in flight runs beside this one and shares its links: the non-blocking collectives
      // (in_flight holds those alone), whatever their lane, as a blocking one on the stream does not
      // wait for them.
      const bool contended = !st.in_flight.empty();
      CollectiveCost c = contended ? network->cost_in_background(req, st.fair_background) : network->cost(req);
      duration = c.time_s;
      if (on_stream) duration += (in.ranks_per_core - 1) * std::exchange(st.turn_taking, 0.0);
      t.algorithm = c.algorithm;
      t.link_bytes = c.link_bytes;
      // A stage's collective is costed as if every stage ran one (its groups cover them all), a
      // pipeline send as if every stage sent, and the end stages' sync is one op on each of the two:
      // count this op's own share of the traffic.
      const double senders = static_cast<double>(op.send_wraps ? stage_count : std::max<size_t>(1, stage_count - 1));
      const double own_share = op.axis == CommAxis::kPipeline ? 1.0 / senders
                               : op.axis == CommAxis::kPipelineEnds ? 0.5
                                                                     : 1.0 / static_cast<double>(stage_count);
      for (auto& [kind, bytes] : t.link_bytes) bytes *= own_share;
      for (const auto& [kind, bytes] : t.link_bytes) r.link_bytes[kind] += bytes;
      if (duration > 0) {
        const auto& shares = network->link_shares(req);
        // The newcomer delays each collective in flight by its bytes on that one's busiest link, or by
        // what that one has left, whichever is less: sharing a link fairly, two transfers are each
        // delayed by the shorter one's time alone (work conserved on the shared bottleneck).
        for (const auto& f : st.in_flight) {
          if (f.bottleneck < 0) continue;
          auto hit = std::lower_bound(shares.begin(), shares.end(), std::make_pair(f.bottleneck, 0.0),
                                      [](const auto& x, const auto& y) { return x.first < y.first; });
          if (hit == shares.end() || hit->first != f.bottleneck) continue;
          OpTiming& other = r.timing[f.op];
          const double delay =
              std::min(hit->second * req.bytes / links[static_cast<size_t>(f.bottleneck)].bandwidth_Bps,
                       std::max(0.0, other.end_s - t.start_s));
          double& other_lane = st.lane[ops[f.op].axis];
          if (!ops[f.op].blocking && other_lane == other.end_s) other_lane += delay;
          other.end_s += delay;
          r.step_time_s = std::max(r.step_time_s, other.end_s);
        }
        if (!on_stream) {
          InFlight f{i, &shares, req.bytes, duration, -1};
          double top = 0;
          for (const auto& [l, share] : shares) {
            const double rate = f.rate(share);
            load_link(st, l, rate, +1);
            if (rate / links[static_cast<size_t>(l)].bandwidth_Bps > top)
              top = rate / links[static_cast<size_t>(l)].bandwidth_Bps, f.bottleneck = l;
          }
          st.in_flight.push_back(std::move(f));
        }
      }
    } else {
      duration = compute.op_time_s(op);
      if (in.ranks_per_core > 1) {
        if (duration >= in.scheduler_slice_s) duration *= in.ranks_per_core;
        else st.turn_taking += duration;
      }
    }
    t.end_s = t.start_s + duration;
    if (on_stream) st.stream = t.end_s;
    else st.lane[op.axis] = t.end_s;
    r.step_time_s = std::max(r.step_time_s, t.end_s);
  }
  // The others' share of the stretch after the last blocking collective ends the step.
  for (const auto& st : stages) r.step_time_s = std::max(r.step_time_s, st.stream + (in.ranks_per_core - 1) * st.turn_taking);
  // Figures of each stage; the step reports the stage with the most compute.
  struct StageFigures {
    double compute = 0, comm = 0, alltoall = 0, alltoall_bytes = 0, end = 0, stage_waits = 0;
  };
  std::vector<StageFigures> figures(stage_count);
  for (size_t i = 0; i < ops.size(); ++i) {
    StageFigures& f = figures[static_cast<size_t>(ops[i].stage)];
    const double d = r.timing[i].duration();
    f.end = std::max(f.end, r.timing[i].end_s);
    f.stage_waits += r.timing[i].stage_wait_s;
    if (ops[i].kind != OpKind::kCollective) {
      f.compute += d;
      continue;
    }
    f.comm += d;
    if (ops[i].collective == CollectiveKind::kAllToAll) {
      f.alltoall += d;
      f.alltoall_bytes += alltoall_bytes_leaving(ops[i], in.plan.ep);
    }
  }
  size_t busiest = 0;
  for (size_t k = 1; k < stage_count; ++k)
    if (figures[k].compute > figures[busiest].compute) busiest = k;
  const StageFigures& f = figures[busiest];
  r.busiest_stage = static_cast<int>(busiest);
  r.compute_s = f.compute, r.comm_s = f.comm, r.alltoall_s = f.alltoall, r.alltoall_bytes = f.alltoall_bytes;
  // Its idle time waiting for other stages, and after its last op until the step ends (the drain).
  if (stage_count > 1) r.pipeline_bubble_s = f.stage_waits + (r.step_time_s - f.end);
  r.exposed_comm_s = r.step_time_s - r.compute_s - r.pipeline_bubble_s;
  r.mfu = r.graph.model_flops / (r.step_time_s * compute.peak_flops());
  r.memory = plan_memory(in.model_held(), in.plan);
  r.fits_memory = r.memory.total_bytes() <= in.usable_hbm_bytes();
  r.schedules_built = network->schedules_built();
  if (auto* analytical = dynamic_cast<AnalyticalNetwork*>(network.get())) r.flows_routed = analytical->flows_routed();
  if (auto* flow = dynamic_cast<FlowNetwork*>(network.get())) {
    r.flows_routed = flow->flows_routed();
    r.network_events = flow->flows_simulated();
    r.flow_phases_simulated = flow->phases_simulated();
    r.flow_phases_analytical = flow->phases_analytical();
  }
  return r;
}

}  // namespace glam
