#pragma once
// Energy of one simulated step, integrated over its timeline (the same for both fidelities,
// since it reads only op durations and bytes):
//  - chip: idle power all step long, plus (busy - idle) x activity while an op runs, where the
//    activity of an op is its achieved FLOP/s or HBM bandwidth relative to the best the chip
//    reaches (ComputeModel::activity); idle and busy power are the chip kind's, or the calibration
//    profile's [power] where it measured them;
//  - host share: the per-chip share of CPU hosts, NICs and fans, constant;
//  - network: every link's idle power, plus (busy - idle) while it carries bytes (bytes / bandwidth);
//    switches at their rated power;
//  - facility: (PUE - 1) x everything above.
#include <string>

#include <nlohmann/json.hpp>

#include "cluster.h"
#include "compute/compute_model.h"
#include "engine/step_simulator.h"

namespace glam {

struct StepEnergy {
  double chip_compute_J = 0;  // above-idle chip energy
  double chip_idle_J = 0;     // idle power of every chip over the step
  double host_J = 0;
  double network_J = 0;
  double facility_overhead_J = 0;
  double it_J() const { return chip_compute_J + chip_idle_J + host_J + network_J; }
  double total_J() const { return it_J() + facility_overhead_J; }
  double average_power_per_chip_W = 0;  // IT power / chips (comparable to measured "system power")
  nlohmann::json to_json() const;
};

StepEnergy step_energy(const SimulationInput& in, const StepResult& r, double pue);

}  // namespace glam
