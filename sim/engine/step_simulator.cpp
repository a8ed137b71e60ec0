#include "engine/step_simulator.h"

#include <algorithm>

#include "common/errors.h"
#include "compute/compute_model.h"
#include "network/flow_network.h"
#include "network/network_model.h"

namespace glam {

Fidelity parse_fidelity(const std::string& s) {
  if (s == "analytical") return Fidelity::kAnalytical;
  if (s == "flow") return Fidelity::kFlow;
  throw UsageError("unknown fidelity '" + s + "': expected analytical or flow");
}

const char* fidelity_name(Fidelity f) { return f == Fidelity::kFlow ? "flow" : "analytical"; }

StepResult simulate_step(const SimulationInput& in) {
  StepResult r;
  const ModelConfig& m = in.model;
  StepShape shape = in.plan.step_shape();
  shape.layers_run = in.layers_run;
  const int64_t blocks = blocks_run(m, shape);
  int moe_blocks = 0;
  for (int64_t l = 0; l < blocks; ++l) moe_blocks += m.is_moe_layer(l) ? 1 : 0;
  for (const auto& share : expert_shares(in.routing, m, moe_blocks)) r.moe_loads.push_back(moe_layer_load(m, shape, share));
  r.graph = build_step_graph(m, shape, r.moe_loads);

  RankMap ranks(in.plan, in.cluster);
  r.rank_map = ranks.describe();
  ComputeModel compute(in.cluster.chip(), in.profile, m.activation_precision == "bfloat16");
  std::unique_ptr<NetworkModel> network;
  if (in.fidelity == Fidelity::kFlow) network = std::make_unique<FlowNetwork>(in.cluster, ranks, in.profile, in.flow_max_flows);
  else network = std::make_unique<AnalyticalNetwork>(in.cluster, ranks, in.profile);

  // Schedule: compute ops and blocking collectives in program order on the compute stream;
  // overlapped collectives on one lane per axis, from the moment they are issued.
  const auto& ops = r.graph.ops;
  r.timing.resize(ops.size());
  double stream = 0;
  std::map<CommAxis, double> lane;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (in.progress && i % 64 == 0) in.progress(static_cast<double>(i) / static_cast<double>(ops.size()));
    const StepOp& op = ops[i];
    OpTiming& t = r.timing[i];
    double ready = 0;
    for (int d : op.deps) ready = std::max(ready, r.timing[static_cast<size_t>(d)].end_s);
    double duration = 0;
    if (op.kind == OpKind::kCollective) {
      CollectiveRequest req{op.collective, op.axis, op.comm_bytes, op.a2a_dest_share, op.a2a_transposed};
      CollectiveCost c = network->cost(req);
      duration = c.time_s;
      t.algorithm = c.algorithm;
      t.link_bytes = c.link_bytes;
      for (const auto& [kind, bytes] : c.link_bytes) r.link_bytes[kind] += bytes;
      r.comm_s += duration;
      if (op.collective == CollectiveKind::kAllToAll) {
        r.alltoall_s += duration;
        r.alltoall_bytes += op.comm_bytes;
      }
    } else {
      duration = compute.op_time_s(op);
      r.compute_s += duration;
    }
    if (op.kind != OpKind::kCollective || op.blocking) {
      t.start_s = std::max(stream, ready);
      t.end_s = t.start_s + duration;
      stream = t.end_s;
    } else {
      double& free_at = lane[op.axis];
      t.start_s = std::max({stream, ready, free_at});
      t.end_s = t.start_s + duration;
      free_at = t.end_s;
    }
    r.step_time_s = std::max(r.step_time_s, t.end_s);
  }
  r.exposed_comm_s = r.step_time_s - r.compute_s;
  r.mfu = r.graph.model_flops / (r.step_time_s * compute.peak_flops());
  r.memory = plan_memory(m, in.plan);
  r.fits_memory = r.memory.total_bytes() <= in.cluster.chip().hbm_bytes;
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
