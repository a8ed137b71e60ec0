#include "compute/compute_model.h"

#include <algorithm>

namespace glam {

double product_peak_flops(const ChipSpec& chip, const std::string& product_precision) {
  if (product_precision == "bf16" || chip.peak_flops_fp32 <= 0) return chip.peak_flops_bf16;
  if (product_precision == "tf32") return chip.peak_flops_bf16 / 2;
  return chip.peak_flops_fp32;
}

ComputeModel::ComputeModel(const ChipSpec& chip, CalibrationProfile profile, const std::string& product_precision)
    : chip_(chip), profile_(std::move(profile)), peak_flops_(product_peak_flops(chip, product_precision)) {}

const EfficiencyCurve* ComputeModel::op_curve(const StepOp& op) const {
  // A curve measured for this very op and phase wins over one for the op in every phase (older
  // profiles), which wins over the curve of its kind.
  auto it = profile_.ops.find(op_curve_key(op));
  if (it == profile_.ops.end()) it = profile_.ops.find(op.name);
  return it == profile_.ops.end() ? nullptr : &it->second;
}

bool ComputeModel::beyond_measured_sizes(const StepOp& op, double factor) const {
  const EfficiencyCurve* curve = op.kind == OpKind::kCollective ? nullptr : op_curve(op);
  if (!curve || curve->sizes.empty()) return false;
  const double size = op.kind == OpKind::kElementwise ? op.bytes : op.flops;
  return size > curve->sizes.back() * factor || size < curve->sizes.front() / factor;
}

double ComputeModel::op_time_s(const StepOp& op) const {
  if (op.kind == OpKind::kCollective) return 0;
  if (const EfficiencyCurve* curve = op_curve(op)) {
    if (op.kind == OpKind::kElementwise) return op.bytes / (chip_.hbm_bandwidth_Bps * curve->at(op.bytes));
    return op.flops / (peak_flops_ * curve->at(op.flops));
  }
  double flop_time = 0;
  if (op.kind == OpKind::kMatmul) flop_time = op.flops / (peak_flops_ * profile_.matmul.at(op.flops));
  if (op.kind == OpKind::kAttention) flop_time = op.flops / (peak_flops_ * profile_.attention.at(op.flops));
  double memory_time = op.bytes / (chip_.hbm_bandwidth_Bps * profile_.memory.at(op.bytes));
  return std::max(flop_time, memory_time) + profile_.op_overhead_s;
}

double ComputeModel::activity(const StepOp& op) const {
  if (op.kind == OpKind::kCollective) return 0;
  const double t = op_time_s(op);
  if (t <= 0) return 0;
  const double best_flops = peak_flops_ * profile_.matmul.values.back();
  const double best_bytes = chip_.hbm_bandwidth_Bps * profile_.memory.values.back();
  return std::min(1.0, std::max(op.flops / t / best_flops, op.bytes / t / best_bytes));
}

}  // namespace glam
