#pragma once
// Simulates one training step: builds the StepGraph for the plan and routing, times every op
// (compute by the roofline model, collectives by the chosen network fidelity) and schedules
// them on one rank's compute stream plus one network lane per plan axis for the collectives
// that overlap compute (gradient reductions, weight prefetches); with pipeline stages, one rank of
// each stage, each with its own stream and lanes.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster.h"
#include "compute/calibration_profile.h"
#include "model_config.h"
#include "network/routed_schedule.h"
#include "plan/parallel_plan.h"
#include "step_graph.h"
#include "workload/routing_model.h"

namespace glam {

class NetworkModel;

enum class Fidelity { kAnalytical, kFlow };
Fidelity parse_fidelity(const std::string& s);  // throws UsageError
const char* fidelity_name(Fidelity f);
// The network model of a fidelity over a rank map (flow: SimGrid, phases above max_flows costed
// analytically); `routed`: routed schedules shared with other simulations of the cluster (analytical).
std::unique_ptr<NetworkModel> make_network(Fidelity f, const Cluster& cluster, const RankMap& ranks,
                                           const CalibrationProfile& profile, size_t flow_max_flows,
                                           std::shared_ptr<RoutedScheduleCache> routed = nullptr);

struct SimulationInput {
  ModelConfig model;
  Cluster cluster;
  ParallelPlan plan;
  RoutingSpec routing;
  Fidelity fidelity = Fidelity::kAnalytical;
  CalibrationProfile profile;
  int64_t layers_run = 0;  // first K blocks only (0: all) (to match executor runs of part of a model)
  // What the chips hold: the first layers_run blocks of the model (as the executor's --layers), or all.
  ModelConfig model_held() const { return layers_run > 0 ? first_layers(model, layers_run) : model; }
  size_t flow_max_flows = 16384;  // flow fidelity: larger phases are costed analytically
  // Arithmetic of the matrix products ("bf16", "tf32", "fp32"); "" : as the model's activations
  // (bfloat16 runs multiply in bf16). Executor records set it from their --precision.
  std::string product_precision;
  // Ranks sharing one core (CPU hosts with more ranks x threads than cores) take turns in scheduler
  // slices: an op longer than a slice is time-sliced (ranks_per_core times slower); a shorter one
  // usually runs at full speed, and the others' share of it is waited for at the rank's next
  // blocking collective (OpenMPI yields the core while it waits).
  double ranks_per_core = 1;
  double scheduler_slice_s = 1.5e-3;
  std::function<void(double)> progress;  // called with the fraction of ops done, when set
  // Collectives routed over this cluster by other simulations (a plan search's layouts), when set; the
  // plan chooser makes one for its search, freed with it. A simulation that routes through it reports
  // only the routing it did itself (StepResult::flows_routed).
  std::shared_ptr<RoutedScheduleCache> routed_schedules;
  // The share of each chip's HBM, beyond the runtime's reserve (ChipSpec::runtime_reserved_bytes), a plan
  // leaves free: a plan fits when its footprint is at most usable_hbm_bytes().
  double hbm_headroom = 0;
  double usable_hbm_bytes() const {
    return (cluster.chip().hbm_bytes - cluster.chip().runtime_reserved_bytes) * (1 - hbm_headroom);
  }
  // Whether usable_hbm_bytes() is less than the chip's HBM.
  bool keeps_hbm_back() const { return hbm_headroom > 0 || cluster.chip().runtime_reserved_bytes > 0; }
};

struct OpTiming {
  double start_s = 0, end_s = 0;
  std::string algorithm;  // collectives only
  std::map<LinkKind, double> link_bytes;  // collectives only, whole cluster
  double stage_wait_s = 0;  // ops on a stream: its idle time before the op, waiting for another stage
  double duration() const { return end_s - start_s; }
};

struct StepResult {
  StepGraph graph;
  std::vector<OpTiming> timing;  // parallel to graph.ops
  std::vector<MoeLayerLoad> moe_loads;
  // With pipeline stages, the rank's figures are those of the stage with the most compute.
  double step_time_s = 0;
  double compute_s = 0;        // sum of compute op times on the rank
  double comm_s = 0;           // sum of collective times
  double exposed_comm_s = 0;   // step time not covered by compute, nor by the pipeline bubble
  double pipeline_bubble_s = 0;  // the rank idle waiting for other stages (fill, drain, imbalance)
  int busiest_stage = 0;
  double alltoall_s = 0;
  double alltoall_bytes = 0;   // sent by the rank to other chips (its own experts' share stays)
  double mfu = 0;
  MemoryFootprint memory;
  bool fits_memory = true;
  std::map<LinkKind, double> link_bytes;  // whole cluster, per step
  std::string rank_map;
  int schedules_built = 0;
  double network_events = 0;  // flow fidelity: flows played in SimGrid
  double flows_routed = 0;    // flows routed hop by hop to build the collective schedules' link loads
  int flow_phases_simulated = 0;   // distinct collective phases played in SimGrid
  int flow_phases_analytical = 0;  // phases too large for SimGrid, costed analytically
};

StepResult simulate_step(const SimulationInput& in);

// " (79.65 GiB of HBM less 2.00 GiB runtime reserve)" after a usable HBM figure; empty when nothing is
// kept back.
std::string usable_hbm_note(const SimulationInput& in);
// What of each chip's HBM a plan may not use: "2.00 GiB runtime reserve, 10% headroom (7.77 GiB)"; empty
// when nothing is kept back.
std::string hbm_kept_back(const SimulationInput& in);

// in.product_precision, or the one the model's activation precision implies.
std::string products_precision(const SimulationInput& in);

}  // namespace glam
