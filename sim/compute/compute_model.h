#pragma once
// Time of a compute op on one chip: a roofline (peak FLOP/s, HBM bandwidth) scaled by the
// calibration profile's efficiency for the op's kind and size, plus a fixed per-op overhead.
#include "cluster.h"
#include "compute/calibration_profile.h"
#include "step_graph.h"

namespace glam {

// Arithmetic of the matrix products, which sets their peak: "bf16" (tensor cores / MXUs), "tf32"
// (tensor cores, half the bf16 rate on Ampere and Hopper) or "fp32" (the chip's fp32 peak, or the
// bf16 one on chips without a separate figure).
double product_peak_flops(const ChipSpec& chip, const std::string& product_precision);

class ComputeModel {
 public:
  ComputeModel(const ChipSpec& chip, CalibrationProfile profile, const std::string& product_precision);
  double op_time_s(const StepOp& op) const;
  // Whether the op's time comes from a curve measured for that op (the profile's [ops]) at sizes more
  // than `factor` away from its size: the curve is held at its nearest point there, a guess.
  bool beyond_measured_sizes(const StepOp& op, double factor) const;
  // How hard the op drives the chip, 0..1, for the energy model: its achieved FLOP/s (or HBM
  // bandwidth, for memory-bound ops) relative to the best the profile says the chip reaches.
  // A chip running its largest matrix products flat out draws its busy power.
  double activity(const StepOp& op) const;
  double peak_flops() const { return peak_flops_; }
  const CalibrationProfile& profile() const { return profile_; }

 private:
  const EfficiencyCurve* op_curve(const StepOp& op) const;  // the profile's curve for this op, if any
  ChipSpec chip_;
  CalibrationProfile profile_;
  double peak_flops_;
};

}  // namespace glam
