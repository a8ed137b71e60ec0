#pragma once
// Per-op efficiency points from executor run records: each measured op id is looked up in the
// StepGraph built for the same model, first layers, plan, batch and routing histogram, and gives
// one point (size, efficiency) for its op name and phase (op_curve_key):
//   matrix ops (matmul, attention kinds): size = FLOPs,  efficiency = FLOPs / (t x peak_flops)
//   memory-bound ops (elementwise):       size = bytes,  efficiency = bytes / (t x bandwidth)
// which is exactly what the simulator's ComputeModel inverts (sim/compute/compute_model.cpp).
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_config.h"
#include "step_graph.h"

namespace glam::exec {

struct CurvePoint {
  double size = 0, efficiency = 0;
};

// The model a run record ran (its file or catalogue id), as the simulator reads it.
ModelConfig model_of_record(const nlohmann::json& record, const std::string& where);

// The MoE loads the simulator derives from a record's routing histograms (models/moe_load.h,
// shared with the simulator's routing model); ConfigError naming `where` for a malformed one.
std::vector<MoeLayerLoad> record_moe_loads(const ModelConfig& m, const StepShape& s, const nlohmann::json& record,
                                           const std::string& where);

// The StepGraph of a record, as `glamsim validate` builds it (float32 activations, as glamexec stores them).
StepGraph record_step_graph(const nlohmann::json& record, const std::string& where);

// Appends the record's points to `points` (by op_curve_key: name and phase). Collectives and ops with no time are
// skipped; `peak_flops` and `bandwidth_Bps` are the rates of one rank with the record's threads.
void add_op_points(const nlohmann::json& record, const std::string& where, double peak_flops, double bandwidth_Bps,
                   std::map<std::string, std::vector<CurvePoint>>& points);

// Sorts by size and merges points of equal size (within 0.1%) into their median: strictly
// increasing sizes, as profiles require. Efficiencies are clamped to [lo, hi].
std::vector<CurvePoint> merge_curve(std::vector<CurvePoint> points, double lo, double hi);

}  // namespace glam::exec
